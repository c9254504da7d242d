//! The raw host imports behind safe wrappers: the only `unsafe` in the SDK.
//!
//! Off wasm32 (the SDK is also built natively for benchmarks) there is no host, and every
//! call answers as if none were there.

/// A pending message taken from the host after a request.
pub(crate) struct Reply {
    /// The host's errno for the request: 0 for a response, otherwise an error.
    pub(crate) errno: u32,
    /// The pending message: a response, or UTF-8 error text.
    pub(crate) message: Vec<u8>,
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::Reply;

    #[link(wasm_import_module = "isometer")]
    unsafe extern "C" {
        fn context(ptr: *mut u8, cap: usize) -> usize;
        fn log(level: u32, ptr: *const u8, len: usize);
        fn http_request(req_ptr: *const u8, req_len: usize, out_len_ptr: *mut u32) -> u32;
        fn take_pending(ptr: *mut u8, cap: usize) -> i32;
    }

    /// The task context's JSON bytes.
    pub(crate) fn task_context() -> Option<Vec<u8>> {
        let mut buf = Vec::<u8>::with_capacity(256);
        loop {
            // SAFETY: the host writes at most `cap` bytes to `ptr`, which is the vector's
            // spare capacity, and only when the whole context fits.
            let len = unsafe { context(buf.as_mut_ptr(), buf.capacity()) };
            if len <= buf.capacity() {
                // SAFETY: the host has just initialized the first `len` bytes.
                unsafe { buf.set_len(len) };
                return Some(buf);
            }
            buf.reserve_exact(len);
        }
    }

    /// Sends one log record.
    pub(crate) fn log_record(level: u32, record: &[u8]) {
        // SAFETY: the host only reads `record.len()` bytes from a live slice.
        unsafe { log(level, record.as_ptr(), record.len()) }
    }

    /// Sends an encoded request and takes the host's pending message.
    pub(crate) fn http(request: &[u8]) -> Result<Reply, &'static str> {
        let mut len = 0u32;
        // SAFETY: the host reads `request.len()` bytes from a live slice and writes one
        // aligned u32 to `len`.
        let errno = unsafe { http_request(request.as_ptr(), request.len(), &mut len) };
        let mut message = vec![0u8; len as usize];
        // SAFETY: the host writes at most `message.len()` bytes into the initialized buffer.
        let taken = unsafe { take_pending(message.as_mut_ptr(), message.len()) };
        if usize::try_from(taken) != Ok(message.len()) {
            return Err("the host announced a reply but did not hand it over");
        }
        Ok(Reply { errno, message })
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::Reply;

    pub(crate) fn task_context() -> Option<Vec<u8>> {
        None
    }

    pub(crate) fn log_record(_level: u32, _record: &[u8]) {}

    pub(crate) fn http(_request: &[u8]) -> Result<Reply, &'static str> {
        Err("no egress outside the isometer host")
    }
}

pub(crate) use imp::{http, log_record, task_context};
