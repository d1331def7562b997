//! Text made safe for the page, and what every part of it writes the same way.

use std::fmt::Write as _;

use super::super::text::duration;
use crate::aggregate::TestView;

/// The longest value text shown, in a tooltip or a table cell.
const TIP_VALUE_CHARS: usize = 300;

pub(crate) const LEGEND: [(&str, &str); 7] = [
    ("passed", "o-passed"),
    ("failed", "o-failed"),
    ("error", "o-error"),
    ("skipped", "o-skipped"),
    ("crashed", "o-crashed"),
    ("unfinished", "o-unfinished"),
    ("running", "o-running"),
];

/// Lanes sort as a person counts: `main`, `controller`, then `gw2` before `gw10`.
/// Escapes text for HTML element content and attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters other than whitespace have no business in a page.
            c if c.is_control() && !matches!(c, '\n' | '\t') => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// JSON that can sit inside `<script type="application/json">`: no `<`, `>` or `&` can
/// end the element or open a comment.
pub(crate) fn script_json(v: &serde_json::Value) -> String {
    let s = serde_json::to_string(v).unwrap_or_else(|_| "null".into());
    s.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

pub(crate) fn outcome_class(outcome: &str) -> &'static str {
    match outcome {
        "passed" => "o-passed",
        "failed" => "o-failed",
        "error" => "o-error",
        "skipped" => "o-skipped",
        "crashed" | "timeout" => "o-crashed",
        "running" => "o-running",
        "unfinished" => "o-unfinished",
        _ => "o-other",
    }
}

/// What a test's duration column says: nothing measured when no phase was reported.
pub(crate) fn test_duration(t: &TestView) -> String {
    if t.phases.is_empty() {
        "-".into()
    } else {
        duration(t.duration_s)
    }
}

pub(crate) fn value_text(v: &crate::Value) -> String {
    let text = match (v, v.json_tagged()) {
        (crate::Value::Str(s), _) => s.clone(),
        // nan, inf, -inf and the digits of a big int: what Python would print.
        (_, Some((_, text))) => text.into_owned(),
        (other, None) => other.to_json().to_string(),
    };
    if text.chars().count() > TIP_VALUE_CHARS {
        let mut cut: String = text.chars().take(TIP_VALUE_CHARS).collect();
        cut.push('…');
        cut
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn escaping_leaves_no_markup_and_no_script_end() {
        assert_eq!(
            esc("<img src=x onerror='a'>&\""),
            "&lt;img src=x onerror=&#39;a&#39;&gt;&amp;&quot;"
        );
        let j = script_json(&json!({"n": "</script><script>alert(1)</script>"}));
        assert!(!j.contains('<') && !j.contains('>'));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&j).unwrap()["n"],
            "</script><script>alert(1)</script>"
        );
    }
}
