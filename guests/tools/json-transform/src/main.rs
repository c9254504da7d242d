//! Projects, filters and totals an array of records.
//!
//! Input: `{"records": [{...}], "fields": ["a", "b"], "where": {"field": "x", "equals": v},
//! "sum": "amount"}`; every key but `records` is optional.

use isometer_guest::{Map, ToolError, Value, json};

fn main() {
    isometer_guest::run(transform);
}

fn transform(input: Value) -> Result<Value, ToolError> {
    let records = input
        .get("records")
        .and_then(Value::as_array)
        .ok_or_else(|| ToolError("input field `records` (an array) is required".into()))?;
    let fields: Option<Vec<&str>> = input
        .get("fields")
        .and_then(Value::as_array)
        .map(|f| f.iter().filter_map(Value::as_str).collect());
    let filter = input.get("where");
    let sum_field = input.get("sum").and_then(Value::as_str);

    let mut kept = Vec::new();
    let mut total = 0.0f64;
    for record in records {
        if let Some(filter) = filter {
            let field = filter
                .get("field")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if record.get(field) != filter.get("equals") {
                continue;
            }
        }
        if let Some(name) = sum_field {
            total += record.get(name).and_then(Value::as_f64).unwrap_or(0.0);
        }
        kept.push(match &fields {
            Some(fields) => {
                let projected: Map<String, Value> = fields
                    .iter()
                    .filter_map(|f| record.get(*f).map(|v| ((*f).to_owned(), v.clone())))
                    .collect();
                Value::Object(projected)
            }
            None => record.clone(),
        });
    }
    Ok(json!({ "count": kept.len(), "total": total, "records": kept }))
}
