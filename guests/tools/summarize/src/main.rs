//! Summarizes a text: word and sentence counts, the most frequent words and the first
//! sentences up to a length.
//!
//! Input: `{"text": "...", "max_sentences": 2}`.

use isometer_guest::{Value, json, str_field, u64_field};
use std::collections::BTreeMap;

fn main() {
    isometer_guest::run(summarize);
}

fn summarize(input: Value) -> Result<Value, isometer_guest::ToolError> {
    let text = str_field(&input, "text")?;
    let max_sentences = u64_field(&input, "max_sentences", 2)? as usize;
    let sentences: Vec<&str> = text
        .split_inclusive(['.', '!', '?'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut words = 0u64;
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() > 3)
    {
        words += 1;
        *counts.entry(word.to_lowercase()).or_default() += 1;
    }
    let mut top: Vec<(String, u64)> = counts.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top.truncate(5);
    Ok(json!({
        "sentences": sentences.len(),
        "words": words,
        "top_words": top.into_iter().map(|(w, n)| json!({"word": w, "count": n})).collect::<Vec<_>>(),
        "summary": sentences.iter().take(max_sentences).copied().collect::<Vec<_>>().join(" "),
    }))
}
