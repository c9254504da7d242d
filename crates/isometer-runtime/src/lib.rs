//! Runs one attempt of a tool in a fresh WebAssembly instance, under limits, and meters it.
//!
//! **Architecture Invariant:** this is the only crate that knows wasmtime. Everything above it
//! speaks in [`Artifact`], [`Limits`] and [`ExecutionReport`].
//!
//! # Guest ABI
//!
//! A tool is a WASI preview 1 *command* module (it exports `_start`):
//!
//! - its input (JSON) arrives on stdin, its result is what it writes to stdout, its logs go
//!   to stderr or to `isometer.log`; stdout, stderr and log records together are capped by
//!   [`Limits::max_output_bytes`];
//! - exit code 0 (returning from `_start`, or `proc_exit(0)`) means success, any other exit
//!   code means the tool reports a failure;
//! - it sees no environment variables, no arguments beyond its name, no files and no
//!   sockets: the network is reached only through `isometer.http_request`.
//!
//! Host functions of import module `isometer` (pointers and lengths are offsets into the
//! exported `memory`; a range outside it traps):
//!
//! ```wat
//! ;; The task context, a JSON object (see [`TaskContext`]). Returns its length; writes it
//! ;; to [ptr, ptr+cap) only when it fits.
//! (import "isometer" "context" (func (param $ptr i32) (param $cap i32) (result i32)))
//!
//! ;; A structured log record. level: 0 trace, 1 debug, 2 info, 3 warn, 4 error. The bytes
//! ;; are a JSON object of fields, or plain text (kept as {"message": text}).
//! (import "isometer" "log" (func (param $level i32) (param $ptr i32) (param $len i32)))
//!
//! ;; An HTTP request through the attempt's egress gateway. The request is a u32 LE head
//! ;; length H, H bytes of JSON {"method","url","headers":[[name,value],...]}, then the
//! ;; body. Returns 0 (a response is pending), 1 (invalid request) or 2 (upstream failed;
//! ;; the reason is pending) and writes the pending message's length, u32 LE, at
//! ;; out_len_ptr. A denied request, or one past the attempt's egress limits, does not
//! ;; return: the attempt ends with outcome `egress_denied`.
//! (import "isometer" "http_request"
//!   (func (param $req_ptr i32) (param $req_len i32) (param $out_len_ptr i32) (result i32)))
//!
//! ;; Copies the pending message to [ptr, ptr+cap) and clears it; returns its length, or -1
//! ;; when nothing is pending or it does not fit. A response is a u32 LE head length H,
//! ;; H bytes of JSON {"status","headers":[[name,value],...]}, then the body.
//! (import "isometer" "take_pending" (func (param $ptr i32) (param $cap i32) (result i32)))
//! ```
//!
//! Egress is metered per attempt (bytes out and in, requests) against
//! [`Limits::max_egress_bytes`] and [`Limits::max_egress_requests`]; the
//! [`EgressGateway`] decides on each request and every request is recorded, with its
//! verdict, in [`ExecutionReport::egress`].
//!
//! One [`wasmtime::Engine`] and one [`wasmtime::Linker`] are shared by every attempt; each
//! attempt gets a fresh [`wasmtime::Store`] with fuel, an epoch deadline and a memory
//! limiter, so nothing survives from one attempt to the next. Loaded modules are kept by
//! sha256, and compiled code is cached on disk when [`RuntimeOptions::cache_dir`] is set.

mod cache;
mod egress;
mod env;
mod error;
mod host;
mod limits;
mod output;
mod report;
mod runtime;

pub use egress::{
    EgressBudget, EgressError, EgressGateway, EgressRecord, EgressRequest, EgressResponse,
    NoEgress, Verdict,
};
pub use env::{AttemptEnv, LogLevel, LogRecord, TaskContext};
pub use error::RuntimeError;
pub use limits::Limits;
pub use report::ExecutionReport;
pub use runtime::{Artifact, Origin, Runtime, RuntimeOptions};
