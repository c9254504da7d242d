//! Sends an email through a mail service: a write that must not be repeated blindly.
//!
//! Input: `{"endpoint": "http://host:port", "to": "a@example.com", "subject": "...",
//! "body": "..."}`. POSTs `{"to", "subject", "body", "task_id"}` to `{endpoint}/messages`.
//! Output: `{"sent": true, "status": 201, "id": ...}`, `id` being the service's message id
//! or null. A non-2xx status is a failure.

use isometer_guest::{ToolError, Value, http, json, str_field};

fn main() {
    isometer_guest::run(send);
}

fn send(input: Value) -> Result<Value, ToolError> {
    let endpoint = str_field(&input, "endpoint")?;
    let to = str_field(&input, "to")?;
    let subject = str_field(&input, "subject")?;
    let body = str_field(&input, "body")?;
    if !to.contains('@') {
        return Err(ToolError(format!("`to` is not an email address: {to:?}")));
    }
    // The task id lets the service deduplicate retries of the same task.
    let task_id = isometer_guest::context()
        .get("task_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let url = format!("{}/messages", endpoint.trim_end_matches('/'));
    let message = json!({ "to": to, "subject": subject, "body": body, "task_id": task_id });
    let response = http::post_json(&url, &message)?;
    if !response.is_success() {
        return Err(ToolError(format!(
            "POST {url} answered status {}",
            response.status
        )));
    }
    let id = response
        .json()
        .ok()
        .and_then(|reply| reply.get("id").cloned())
        .unwrap_or(Value::Null);
    Ok(json!({ "sent": true, "status": response.status, "id": id }))
}
