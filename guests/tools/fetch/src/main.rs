//! Reads a URL through the host's egress gateway.
//!
//! Input: `{"url": "http://host:port/path", "headers": {"accept": "application/json"}}`,
//! `headers` optional. Output: `{"status": 200, "body": ..., "bytes": 1234}`, the body
//! parsed as JSON when it is JSON and as text otherwise. A non-2xx status is a failure.

use isometer_guest::{Level, ToolError, Value, http, json, str_field};

fn main() {
    isometer_guest::run(fetch);
}

fn fetch(input: Value) -> Result<Value, ToolError> {
    let url = str_field(&input, "url")?;
    let mut request = http::Request::get(url);
    match input.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(headers)) => {
            for (name, value) in headers {
                let value = value.as_str().ok_or_else(|| {
                    ToolError(format!("header `{name}` must have a string value"))
                })?;
                request = request.header(name.as_str(), value);
            }
        }
        Some(_) => return Err(ToolError("input field `headers` must be an object".into())),
    }
    let response = request.send()?;
    isometer_guest::log(
        Level::Info,
        json!({ "message": "fetched", "url": url, "status": response.status }),
    );
    if !response.is_success() {
        return Err(ToolError(format!(
            "GET {url} answered status {}",
            response.status
        )));
    }
    let body = response
        .json()
        .unwrap_or_else(|_| Value::String(response.text().into_owned()));
    Ok(json!({ "status": response.status, "body": body, "bytes": response.body.len() }))
}
