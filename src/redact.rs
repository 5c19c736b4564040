//! Keeps secret values out of everything handoff writes.
//!
//! Two layers: fields that are secret (declared, or holding a value derived
//! from one) are shown as `***` by the trace; and the [`Redactor`] replaces any
//! known secret text, raw, URL-encoded or base64, wherever it appears in a
//! string we are about to write. The second layer catches the paths the first
//! cannot see, such as a server echoing a token back in an error body.

use base64::Engine as _;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

pub const MASK: &str = "***";

/// Derived values shorter than this are masked where they are stored, but not
/// hunted down in free text: replacing every `36` in a trace helps no one.
const MIN_DERIVED_LEN: usize = 4;

#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Longest first, so `Bearer abc` is replaced before `abc`.
    needles: Vec<String>,
}

impl Redactor {
    /// A value declared secret: always hunted, whatever its length.
    pub fn add_secret(&mut self, value: &str) {
        if !value.is_empty() {
            self.add_forms(value);
        }
    }

    /// Every text leaf of a secret value: a header map's values, a JSON body's strings.
    pub fn add_secret_value(&mut self, value: &Value) {
        for_each_text(value, &mut |text| self.add_secret(text));
    }

    /// Every text leaf of a value computed from a secret.
    pub fn add_derived_value(&mut self, value: &Value) {
        for_each_text(value, &mut |text| self.add_derived(text));
    }

    /// A value computed from a secret, such as a header built from the token.
    pub fn add_derived(&mut self, value: &str) {
        if value.chars().count() >= MIN_DERIVED_LEN {
            self.add_forms(value);
        }
    }

    fn add_forms(&mut self, value: &str) {
        let b64 = base64::engine::general_purpose::STANDARD;
        let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let forms = [
            value.to_string(),
            utf8_percent_encode(value, NON_ALPHANUMERIC).to_string(),
            form_encode(value),
            b64.encode(value),
            b64url.encode(value),
            serde_json::to_string(value)
                .unwrap_or_default()
                .trim_matches('"')
                .to_string(),
        ];
        for form in forms {
            if !form.is_empty() && !self.needles.contains(&form) {
                self.needles.push(form);
            }
        }
        self.needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
    }

    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for needle in &self.needles {
            if out.contains(needle.as_str()) {
                out = out.replace(needle.as_str(), MASK);
            }
        }
        out
    }

    pub fn redact_json(&self, value: &Value) -> Value {
        match value {
            Value::String(s) => Value::String(self.redact(s)),
            Value::Array(items) => {
                Value::Array(items.iter().map(|v| self.redact_json(v)).collect())
            }
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (self.redact(k), self.redact_json(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

/// Calls `f` with every string (and number, as text) inside a value.
fn for_each_text(value: &Value, f: &mut dyn FnMut(&str)) {
    match value {
        Value::String(s) => f(s),
        Value::Number(n) => f(&n.to_string()),
        Value::Array(items) => items.iter().for_each(|v| for_each_text(v, f)),
        Value::Object(map) => map.values().for_each(|v| for_each_text(v, f)),
        Value::Null | Value::Bool(_) => {}
    }
}

/// `application/x-www-form-urlencoded`: like percent-encoding, but space is `+`.
fn form_encode(value: &str) -> String {
    utf8_percent_encode(value, NON_ALPHANUMERIC)
        .to_string()
        .replace("%20", "+")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_every_encoding() {
        let mut r = Redactor::default();
        r.add_secret("s3cr/t t");
        let b64 = base64::engine::general_purpose::STANDARD.encode("s3cr/t t");
        let text = format!("a s3cr/t t b s3cr%2Ft%20t c s3cr%2Ft+t d {b64}");
        assert_eq!(r.redact(&text), "a *** b *** c *** d ***");
    }

    #[test]
    fn longer_derived_values_go_first() {
        let mut r = Redactor::default();
        r.add_secret("tok");
        r.add_derived("Bearer tok");
        assert_eq!(r.redact("Authorization: Bearer tok"), "Authorization: ***");
        r.add_derived("12");
        assert_eq!(r.redact("12"), "12");
    }
}
