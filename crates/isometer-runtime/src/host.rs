//! The host functions of import module `isometer`, and the per-attempt state behind them.

use crate::egress::{EgressBudget, EgressError, EgressRecord, EgressRequest, Verdict};
use crate::env::{AttemptEnv, LogLevel, LogRecord};
use crate::limits::MeteredLimiter;
use crate::output::OutputBudget;
use std::sync::Arc;
use std::time::Instant;
use wasmtime::{Caller, Extern, Linker, Memory};
use wasmtime_wasi::p1::WasiP1Ctx;

/// `http_request` answered: a response is pending.
const ERRNO_OK: i32 = 0;
/// `http_request` refused a malformed request: its reason is pending.
const ERRNO_INVALID: i32 = 1;
/// `http_request` was allowed but the upstream failed: the reason is pending.
const ERRNO_UPSTREAM: i32 = 2;

/// Per-attempt host state.
pub(crate) struct AttemptState {
    pub(crate) wasi: WasiP1Ctx,
    pub(crate) limiter: MeteredLimiter,
    pub(crate) host: HostState,
}

/// What the `isometer` functions need and record during one attempt.
pub(crate) struct HostState {
    env: AttemptEnv,
    max_egress_bytes: u64,
    max_egress_requests: u64,
    deadline: Instant,
    output: Arc<OutputBudget>,
    /// The message `take_pending` hands over next.
    pending: Option<Vec<u8>>,
    pub(crate) egress_bytes: u64,
    pub(crate) egress_requests: u64,
    pub(crate) egress: Vec<EgressRecord>,
    pub(crate) logs: Vec<LogRecord>,
    /// Bytes of log records, counted in the output budget.
    pub(crate) log_bytes: u64,
}

impl HostState {
    pub(crate) fn new(
        env: AttemptEnv,
        limits: &crate::Limits,
        deadline: Instant,
        output: Arc<OutputBudget>,
    ) -> Self {
        HostState {
            env,
            max_egress_bytes: limits.max_egress_bytes,
            max_egress_requests: limits.max_egress_requests,
            deadline,
            output,
            pending: None,
            egress_bytes: 0,
            egress_requests: 0,
            egress: Vec::new(),
            logs: Vec::new(),
            log_bytes: 0,
        }
    }
}

/// A request the gateway denied, or one past the attempt's egress limits: ends the attempt
/// with outcome `egress_denied`.
#[derive(Debug, thiserror::Error)]
#[error("egress denied: {0}")]
pub(crate) struct EgressDenied(pub(crate) String);

/// The attempt's wall-time deadline passed while a host call waited: `timed_out`.
#[derive(Debug, thiserror::Error)]
#[error("wall-time deadline reached during an egress request")]
pub(crate) struct DeadlineReached;

/// The guest broke the ABI (no exported memory, a pointer out of bounds): a trap.
#[derive(Debug, thiserror::Error)]
#[error("isometer ABI misuse: {0}")]
struct AbiMisuse(String);

/// The output budget ran out while logging: the attempt ends as `output_exceeded`.
#[derive(Debug, thiserror::Error)]
#[error("output limit reached")]
struct OutputLimitReached;

type Ctx<'a> = Caller<'a, AttemptState>;

pub(crate) fn add_to_linker(linker: &mut Linker<AttemptState>) -> wasmtime::Result<()> {
    linker.func_wrap("isometer", "context", context)?;
    linker.func_wrap("isometer", "log", log)?;
    linker.func_wrap("isometer", "take_pending", take_pending)?;
    linker.func_wrap_async(
        "isometer",
        "http_request",
        |caller: Ctx<'_>, (ptr, len, out_len_ptr): (i32, i32, i32)| {
            Box::new(http_request(caller, ptr, len, out_len_ptr))
        },
    )?;
    Ok(())
}

fn context(mut caller: Ctx<'_>, ptr: i32, cap: i32) -> wasmtime::Result<i32> {
    let json = serde_json::to_vec(&caller.data().host.env.context)?;
    let len = abi_len(json.len())?;
    if len <= cap {
        write_guest(&mut caller, ptr, &json)?;
    }
    Ok(len)
}

fn log(mut caller: Ctx<'_>, level: i32, ptr: i32, len: i32) -> wasmtime::Result<()> {
    let bytes = read_guest(&mut caller, ptr, len)?;
    if bytes.is_empty() {
        return Ok(());
    }
    let host = &mut caller.data_mut().host;
    if !host.output.take(bytes.len()) {
        return Err(OutputLimitReached.into());
    }
    host.log_bytes += bytes.len() as u64;
    let fields = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(object @ serde_json::Value::Object(_)) => object,
        _ => serde_json::json!({ "message": String::from_utf8_lossy(&bytes) }),
    };
    host.logs.push(LogRecord {
        level: LogLevel::from_abi(level),
        fields,
    });
    Ok(())
}

fn take_pending(mut caller: Ctx<'_>, ptr: i32, cap: i32) -> wasmtime::Result<i32> {
    let Some(pending) = caller.data_mut().host.pending.take() else {
        return Ok(-1);
    };
    let len = abi_len(pending.len())?;
    if len > cap {
        caller.data_mut().host.pending = Some(pending);
        return Ok(-1);
    }
    write_guest(&mut caller, ptr, &pending)?;
    Ok(len)
}

async fn http_request(
    mut caller: Ctx<'_>,
    ptr: i32,
    len: i32,
    out_len_ptr: i32,
) -> wasmtime::Result<i32> {
    let wire = read_guest(&mut caller, ptr, len)?;
    let request = match parse_request(&wire) {
        Ok(request) => request,
        Err(reason) => return answer(&mut caller, out_len_ptr, ERRNO_INVALID, reason.into()),
    };
    let host = &mut caller.data_mut().host;
    let bytes_out = request.wire_bytes();
    let mut record = EgressRecord {
        method: request.method.clone(),
        url: request.url.clone(),
        verdict: Verdict::Deny,
        rule: None,
        reason: None,
        status: None,
        bytes_out,
        bytes_in: 0,
        duration_us: 0,
        poisoning: Vec::new(),
    };
    let over_limit = if host.egress_requests >= host.max_egress_requests {
        Some(format!(
            "the attempt's limit of {} egress requests is reached",
            host.max_egress_requests
        ))
    } else if host.egress_bytes.saturating_add(bytes_out) > host.max_egress_bytes {
        Some(format!(
            "the request's {bytes_out} bytes exceed what is left of the attempt's egress \
             budget of {} bytes",
            host.max_egress_bytes
        ))
    } else {
        None
    };
    if let Some(reason) = over_limit {
        record.rule = Some("attempt egress limits".into());
        record.reason = Some(reason.clone());
        host.egress.push(record);
        return Err(EgressDenied(reason).into());
    }
    let budget = EgressBudget {
        max_response_bytes: host.max_egress_bytes - host.egress_bytes - bytes_out,
        timeout: host.deadline.saturating_duration_since(Instant::now()),
    };
    let (gateway, context) = (host.env.egress.clone(), host.env.context.clone());

    let started = Instant::now();
    let result = gateway.request(&context, request, budget).await;
    record.duration_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    if Instant::now() >= caller.data().host.deadline {
        // The attempt's time ran out while it waited: that is the outcome, whatever the
        // gateway answered.
        let host = &mut caller.data_mut().host;
        record.reason = Some("the attempt's deadline passed during the request".into());
        host.egress.push(record);
        return Err(DeadlineReached.into());
    }

    // The gateway is held to the budget it was given.
    let result = result.and_then(|response| {
        if response.wire_bytes() > budget.max_response_bytes {
            Err(EgressError::TooLarge {
                limit: host_limit(&caller),
            })
        } else {
            Ok(response)
        }
    });
    let host = &mut caller.data_mut().host;
    match result {
        Ok(response) => {
            let bytes_in = response.wire_bytes();
            host.egress_requests += 1;
            host.egress_bytes += bytes_out + bytes_in;
            record.verdict = Verdict::Allow;
            record.rule = Some(response.rule.clone());
            record.status = Some(response.status);
            record.bytes_in = bytes_in;
            record.poisoning.clone_from(&response.poisoning);
            host.egress.push(record);
            let message = encode_response(&response)?;
            answer(&mut caller, out_len_ptr, ERRNO_OK, message)
        }
        Err(EgressError::Denied { reason, rule }) => {
            record.rule = rule;
            record.reason = Some(reason.clone());
            host.egress.push(record);
            Err(EgressDenied(reason).into())
        }
        Err(EgressError::Poisoned { rules, bytes_in }) => {
            let reason = format!(
                "the response matches instruction-poisoning rules {}; it was withheld",
                rules.join(", ")
            );
            host.egress_requests += 1;
            host.egress_bytes += bytes_out + bytes_in;
            record.bytes_in = bytes_in;
            record.rule = Some(format!("poisoning {}", rules.join(", ")));
            record.reason = Some(reason.clone());
            record.poisoning = rules;
            host.egress.push(record);
            Err(EgressDenied(reason).into())
        }
        Err(e @ EgressError::TooLarge { .. }) => {
            host.egress_requests += 1;
            host.egress_bytes += bytes_out;
            record.verdict = Verdict::Allow;
            record.reason = Some(e.to_string());
            host.egress.push(record);
            Err(EgressDenied(e.to_string()).into())
        }
        Err(EgressError::Invalid(reason)) => {
            record.reason = Some(reason.clone());
            host.egress.push(record);
            answer(&mut caller, out_len_ptr, ERRNO_INVALID, reason.into_bytes())
        }
        Err(EgressError::Upstream(reason)) => {
            host.egress_requests += 1;
            host.egress_bytes += bytes_out;
            record.verdict = Verdict::Allow;
            record.reason = Some(reason.clone());
            host.egress.push(record);
            answer(
                &mut caller,
                out_len_ptr,
                ERRNO_UPSTREAM,
                reason.into_bytes(),
            )
        }
    }
}

fn host_limit(caller: &Ctx<'_>) -> u64 {
    caller.data().host.max_egress_bytes
}

/// Leaves `message` pending, tells the guest its length and returns `errno`.
fn answer(
    caller: &mut Ctx<'_>,
    out_len_ptr: i32,
    errno: i32,
    message: Vec<u8>,
) -> wasmtime::Result<i32> {
    let len = u32::try_from(message.len())
        .map_err(|_| AbiMisuse("a message larger than 4 GiB".into()))?;
    write_guest(caller, out_len_ptr, &len.to_le_bytes())?;
    caller.data_mut().host.pending = Some(message);
    Ok(errno)
}

/// The head of a request on the wire.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestHead {
    method: String,
    url: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
}

/// Parses `u32 LE head length, JSON head, body`.
fn parse_request(wire: &[u8]) -> Result<EgressRequest, String> {
    let (len, rest) = wire
        .split_first_chunk::<4>()
        .ok_or("the request is shorter than its 4-byte head length")?;
    let head_len = u32::from_le_bytes(*len) as usize;
    if head_len > rest.len() {
        return Err(format!(
            "the head length {head_len} runs past the request's {} bytes",
            rest.len()
        ));
    }
    let (head, body) = rest.split_at(head_len);
    let head: RequestHead =
        serde_json::from_slice(head).map_err(|e| format!("the request head: {e}"))?;
    let method = head.method.to_ascii_uppercase();
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!("`{}` is not an HTTP method", head.method));
    }
    Ok(EgressRequest {
        method,
        url: head.url,
        headers: head.headers,
        body: body.to_vec(),
    })
}

fn encode_response(response: &crate::EgressResponse) -> wasmtime::Result<Vec<u8>> {
    let head = serde_json::to_vec(&serde_json::json!({
        "status": response.status,
        "headers": response.headers,
    }))?;
    let head_len =
        u32::try_from(head.len()).map_err(|_| AbiMisuse("a response head over 4 GiB".into()))?;
    let mut message = Vec::with_capacity(4 + head.len() + response.body.len());
    message.extend_from_slice(&head_len.to_le_bytes());
    message.extend_from_slice(&head);
    message.extend_from_slice(&response.body);
    Ok(message)
}

fn abi_len(len: usize) -> wasmtime::Result<i32> {
    i32::try_from(len).map_err(|_| AbiMisuse(format!("a message of {len} bytes")).into())
}

fn memory(caller: &mut Ctx<'_>) -> wasmtime::Result<Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(memory)) => Ok(memory),
        _ => Err(AbiMisuse("the module exports no memory named `memory`".into()).into()),
    }
}

/// The guest range `[ptr, ptr + len)`, checked against the memory's size.
fn guest_range(ptr: i32, len: usize, size: usize) -> wasmtime::Result<std::ops::Range<usize>> {
    let start = ptr as u32 as usize;
    start
        .checked_add(len)
        .filter(|&end| end <= size)
        .map(|end| start..end)
        .ok_or_else(|| {
            AbiMisuse(format!(
                "{len} bytes at {start} lie outside the {size}-byte memory"
            ))
            .into()
        })
}

fn read_guest(caller: &mut Ctx<'_>, ptr: i32, len: i32) -> wasmtime::Result<Vec<u8>> {
    let memory = memory(caller)?;
    let data = memory.data(&caller);
    let range = guest_range(ptr, len as u32 as usize, data.len())?;
    Ok(data[range].to_vec())
}

fn write_guest(caller: &mut Ctx<'_>, ptr: i32, bytes: &[u8]) -> wasmtime::Result<()> {
    let memory = memory(caller)?;
    let data = memory.data_mut(caller);
    let range = guest_range(ptr, bytes.len(), data.len())?;
    data[range].copy_from_slice(bytes);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(head: &str, body: &[u8]) -> Vec<u8> {
        let mut wire = (head.len() as u32).to_le_bytes().to_vec();
        wire.extend_from_slice(head.as_bytes());
        wire.extend_from_slice(body);
        wire
    }

    #[test]
    fn requests_parse_with_headers_and_body() {
        let request = parse_request(&wire(
            r#"{"method":"post","url":"http://a.test/x","headers":[["k","v"]]}"#,
            b"{}",
        ))
        .expect("parses");
        assert_eq!(request.method, "POST");
        assert_eq!(request.headers, vec![("k".to_owned(), "v".to_owned())]);
        assert_eq!(request.body, b"{}");
    }

    #[test]
    fn malformed_requests_say_why() {
        for (wire, expect) in [
            (vec![1, 0], "shorter"),
            (vec![200, 0, 0, 0, b'{'], "runs past"),
            (wire("{}", b""), "missing field"),
            (
                wire(r#"{"method":"G T","url":"x"}"#, b""),
                "not an HTTP method",
            ),
            (
                wire(r#"{"method":"GET","url":"x","k":1}"#, b""),
                "unknown field",
            ),
        ] {
            let err = parse_request(&wire).expect_err("refused");
            assert!(err.contains(expect), "{err}");
        }
    }

    #[test]
    fn guest_ranges_are_bounds_checked() {
        assert_eq!(guest_range(8, 8, 16).expect("fits"), 8..16);
        assert!(guest_range(9, 8, 16).is_err());
        assert!(guest_range(-1, 2, 16).is_err());
    }
}
