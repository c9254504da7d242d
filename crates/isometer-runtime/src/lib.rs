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
//!   to stderr; stdout and stderr together are capped by [`Limits::max_output_bytes`];
//! - exit code 0 (returning from `_start`, or `proc_exit(0)`) means success, any other exit
//!   code means the tool reports a failure;
//! - it sees no environment variables, no arguments beyond its name, no files and no
//!   sockets.
//!
//! One [`wasmtime::Engine`] and one [`wasmtime::Linker`] are shared by every attempt; each
//! attempt gets a fresh [`wasmtime::Store`] with fuel, an epoch deadline and a memory
//! limiter, so nothing survives from one attempt to the next.

mod error;
mod limits;
mod output;
mod report;
mod runtime;

pub use error::RuntimeError;
pub use limits::Limits;
pub use report::ExecutionReport;
pub use runtime::{Artifact, Runtime, RuntimeOptions};
