//! HTTP through the host's egress gateway.
//!
//! A request the gateway denies (host not allowed, private address, budget used up) never
//! returns here: the attempt ends at once with outcome `egress_denied`.

use std::borrow::Cow;
use std::fmt;

use serde_json::{Value, json};

use crate::{ToolError, abi};

/// Errno for a pending response.
const OK: u32 = 0;
/// Errno for a request the host could not understand.
const INVALID: u32 = 1;
/// Errno for an upstream that failed to answer.
const UPSTREAM: u32 = 2;

/// An outgoing HTTP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// An absolute URL, `http://host:port/path?query`.
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// A request with no headers and no body.
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> Self {
        Request {
            method: method.into(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A `GET` of `url`.
    pub fn get(url: impl Into<String>) -> Self {
        Request::new("GET", url)
    }

    /// A `POST` of `body` to `url`.
    pub fn post(url: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        Request {
            body: body.into(),
            ..Request::new("POST", url)
        }
    }

    /// Adds a header; repeated names are all sent.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sends the request; see [`send`].
    pub fn send(&self) -> Result<Response, HttpError> {
        send(self)
    }

    /// The wire form: u32 LE head length, the JSON head, then the body.
    fn encode(&self) -> Result<Vec<u8>, HttpError> {
        let head = json!({
            "method": self.method,
            "url": self.url,
            "headers": self.headers,
        })
        .to_string();
        let head_len = u32::try_from(head.len())
            .map_err(|_| HttpError::Invalid("request head too large".into()))?;
        let mut wire = Vec::with_capacity(4 + head.len() + self.body.len());
        wire.extend_from_slice(&head_len.to_le_bytes());
        wire.extend_from_slice(head.as_bytes());
        wire.extend_from_slice(&self.body);
        Ok(wire)
    }
}

/// An upstream's answer, whatever its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first header with this name, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> Result<Value, ToolError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| ToolError(format!("response body is not JSON: {e}")))
    }

    /// The body as text, with invalid UTF-8 replaced.
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    /// Parses a pending response: u32 LE head length, the JSON head, then the body.
    fn decode(message: Vec<u8>) -> Result<Self, HttpError> {
        let malformed = |what: &str| HttpError::Upstream(format!("malformed response: {what}"));
        let (len, rest) = message
            .split_first_chunk::<4>()
            .ok_or_else(|| malformed("shorter than its head length"))?;
        let head_len = u32::from_le_bytes(*len) as usize;
        if head_len > rest.len() {
            return Err(malformed("head longer than the message"));
        }
        let (head, body) = rest.split_at(head_len);
        let head: Value =
            serde_json::from_slice(head).map_err(|_| malformed("head is not JSON"))?;
        let status = head
            .get("status")
            .and_then(Value::as_u64)
            .and_then(|s| u16::try_from(s).ok())
            .ok_or_else(|| malformed("no valid status"))?;
        let headers = match head.get("headers") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(pairs)) => pairs
                .iter()
                .map(|pair| match pair.as_array().map(Vec::as_slice) {
                    Some([Value::String(name), Value::String(value)]) => {
                        Ok((name.clone(), value.clone()))
                    }
                    _ => Err(malformed("a header is not a [name, value] pair")),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(malformed("headers are not a list")),
        };
        Ok(Response {
            status,
            headers,
            body: body.to_vec(),
        })
    }
}

/// Why a request got no response. Converts into [`ToolError`] with `?`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The host rejected the request as malformed.
    Invalid(String),
    /// The upstream could not be reached or gave no valid answer.
    Upstream(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Invalid(why) => write!(f, "invalid HTTP request: {why}"),
            HttpError::Upstream(why) => write!(f, "upstream failed: {why}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// Sends a request through the host's egress gateway.
pub fn send(request: &Request) -> Result<Response, HttpError> {
    let reply = abi::http(&request.encode()?).map_err(|why| HttpError::Upstream(why.into()))?;
    if reply.errno == OK {
        return Response::decode(reply.message);
    }
    let text = String::from_utf8_lossy(&reply.message).into_owned();
    match reply.errno {
        INVALID => Err(HttpError::Invalid(text)),
        UPSTREAM => Err(HttpError::Upstream(text)),
        other => Err(HttpError::Upstream(format!(
            "unknown host errno {other}: {text}"
        ))),
    }
}

/// `GET`s `url`.
pub fn get(url: &str) -> Result<Response, HttpError> {
    send(&Request::get(url))
}

/// `POST`s `body` to `url` as `application/json`.
pub fn post_json(url: &str, body: &Value) -> Result<Response, HttpError> {
    send(&Request::post(url, body.to_string()).header("content-type", "application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pending message with this head and body.
    fn message(head: &str, body: &[u8]) -> Vec<u8> {
        let mut bytes = (head.len() as u32).to_le_bytes().to_vec();
        bytes.extend_from_slice(head.as_bytes());
        bytes.extend_from_slice(body);
        bytes
    }

    #[test]
    fn request_wire_form() {
        let wire = Request::post("http://a:1/m", "hi")
            .header("x", "y")
            .encode()
            .unwrap();
        let (len, rest) = wire.split_first_chunk::<4>().unwrap();
        let (head, body) = rest.split_at(u32::from_le_bytes(*len) as usize);
        let head: Value = serde_json::from_slice(head).unwrap();
        assert_eq!(
            head,
            json!({ "method": "POST", "url": "http://a:1/m", "headers": [["x", "y"]] })
        );
        assert_eq!(body, b"hi");
    }

    #[test]
    fn decodes_a_response() {
        let raw = message(
            r#"{"status":201,"headers":[["Content-Type","a/b"]]}"#,
            b"{}",
        );
        let response = Response::decode(raw).unwrap();
        assert_eq!(response.status, 201);
        assert_eq!(response.header("content-type"), Some("a/b"));
        assert_eq!(response.body, b"{}");
    }

    #[test]
    fn rejects_malformed_heads() {
        let cases: &[(&str, Vec<u8>)] = &[
            ("too short", vec![1, 0]),
            ("head past the end", vec![9, 0, 0, 0, b'{']),
            ("not JSON", message("status", b"")),
            ("no status", message(r#"{"headers":[]}"#, b"")),
            ("status out of range", message(r#"{"status":70000}"#, b"")),
            (
                "headers not a list",
                message(r#"{"status":200,"headers":{}}"#, b""),
            ),
            (
                "bad pair",
                message(r#"{"status":200,"headers":[["a"]]}"#, b""),
            ),
        ];
        for (name, raw) in cases {
            let result = Response::decode(raw.clone());
            assert!(
                matches!(result, Err(HttpError::Upstream(_))),
                "{name}: {result:?}"
            );
        }
    }

    #[test]
    fn no_egress_off_the_host() {
        assert!(matches!(
            get("http://example.com/"),
            Err(HttpError::Upstream(_))
        ));
    }
}
