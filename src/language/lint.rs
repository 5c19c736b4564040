//! Warnings about what a flow file itself holds: literal bearer tokens, JWTs,
//! Basic credentials and passwords, which belong in the environment.
//!
//! [`crate::language::analyze`] runs this first. When it finds a literal, every
//! diagnostic of the file is rendered from a copy of the source with the
//! literal blanked out, so the warning does not spread the secret it warns
//! about into CI logs.

use std::sync::Arc;

use crate::language::diagnostic::Diagnostic;
use crate::language::raw::{Node, NodeValue};
use crate::language::source::{Source, Span};

/// Keys whose literal value is a credential.
const SENSITIVE_KEYS: [&str; 12] = [
    "password",
    "passwd",
    "pwd",
    "secret",
    "client_secret",
    "api_key",
    "apikey",
    "x_api_key",
    "access_token",
    "refresh_token",
    "token",
    "authorization",
];

/// What the lint found.
pub struct Literals {
    /// The source to render diagnostics from: masked when anything was found.
    pub shown: Arc<Source>,
    pub warnings: Vec<Diagnostic>,
    /// The literal values, for the run's redactor: masked in traces too.
    pub values: Vec<String>,
}

/// Finds literal credentials in a parsed flow.
pub fn literal_secrets(source: &Arc<Source>, root: &Node) -> Literals {
    let mut found: Vec<(Span, &'static str, &str)> = Vec::new();
    // An explicit stack: a deeply nested document must not overflow ours.
    let mut stack: Vec<(&Node, Option<String>, Option<String>)> = vec![(root, None, None)];
    while let Some((node, parent, grandparent)) = stack.pop() {
        match &node.value {
            NodeValue::Str(text) => {
                if let Some(what) = classify(text, parent.as_deref(), grandparent.as_deref()) {
                    found.push((node.span, what, text));
                }
            }
            NodeValue::Seq(items) => {
                for item in items {
                    stack.push((item, parent.clone(), grandparent.clone()));
                }
            }
            NodeValue::Map(entries) => {
                for (key, value) in entries {
                    let name = key.as_str().map(normalise);
                    stack.push((value, name, parent.clone()));
                }
            }
            _ => {}
        }
    }
    if found.is_empty() {
        return Literals {
            shown: source.clone(),
            warnings: Vec::new(),
            values: Vec::new(),
        };
    }
    found.sort_by_key(|(span, _, _)| span.offset);
    let mut values = Vec::new();
    for (_, _, text) in &found {
        // `Bearer X`: X alone is the secret, wherever it shows up.
        if let Some((_, token)) = text.trim().split_once(' ') {
            values.push(token.trim().to_string());
        }
        values.push(text.to_string());
    }
    let shown = masked(source, found.iter().map(|(s, _, _)| *s));
    let warnings = found
        .into_iter()
        .map(|(span, what, _)| {
            Diagnostic::warning(format!("this looks like {what} written into the flow"))
                .at(&shown, span)
                .label("masked here; anyone who can read the file can use it")
                .help("read it from the environment: a field `{ type: text, secret: true, env: NWC_TOKEN }`, then `{{ token }}`")
        })
        .collect();
    Literals {
        shown,
        warnings,
        values,
    }
}

fn normalise(key: &str) -> String {
    key.trim().to_ascii_lowercase().replace('-', "_")
}

/// An Arazzo runtime expression (`$response.body#/access_token`) or text
/// holding one (`Bearer {$inputs.token}`): a value read, not written.
fn runtime_expression(text: &str) -> bool {
    const WORDS: &[&str] = &[
        "inputs",
        "steps",
        "outputs",
        "workflows",
        "response",
        "request",
        "statusCode",
        "url",
        "method",
        "sourceDescriptions",
        "components",
    ];
    let starts = |t: &str| {
        WORDS.iter().any(|w| {
            t.strip_prefix(w)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '#', ' ']))
        })
    };
    text.strip_prefix('$').is_some_and(starts)
        || text
            .match_indices("{$")
            .any(|(i, _)| starts(&text[i + 2..]))
}

fn classify(text: &str, parent: Option<&str>, grandparent: Option<&str>) -> Option<&'static str> {
    let text = text.trim();
    if text.contains("{{") || text.contains("{%") || runtime_expression(text) {
        return None;
    }
    let token_like = |s: &str| {
        s.len() >= 8
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._~+/=".contains(c))
    };
    for (prefix, what) in [
        ("bearer ", "a literal bearer token"),
        ("basic ", "literal Basic credentials"),
    ] {
        if text.len() > prefix.len()
            && text.is_char_boundary(prefix.len())
            && text[..prefix.len()].eq_ignore_ascii_case(prefix)
            && token_like(text[prefix.len()..].trim())
        {
            return Some(what);
        }
    }
    if is_jwt(text) {
        return Some("a literal JWT");
    }
    let sensitive = |k: Option<&str>| k.is_some_and(|k| SENSITIVE_KEYS.contains(&k));
    // `client_secret: s3cr3t` in a body, or `password: { default: hunter2 }` in a field.
    if text.len() >= 4
        && (sensitive(parent) || (parent == Some("default") && sensitive(grandparent)))
    {
        return Some("a literal password or secret");
    }
    None
}

fn is_jwt(text: &str) -> bool {
    let parts: Vec<&str> = text.split('.').collect();
    parts.len() == 3
        && parts[0].starts_with("eyJ")
        && parts.iter().all(|p| {
            p.len() >= 4
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// The same text with each span's characters replaced by `*`, byte for byte,
/// so every other span still points at the same place.
fn masked(source: &Source, spans: impl Iterator<Item = Span>) -> Arc<Source> {
    let mut bytes = source.text.clone().into_bytes();
    for span in spans {
        let text = source.slice(span);
        let start = span.offset.min(bytes.len());
        let end = (start + text.len()).min(bytes.len());
        for b in &mut bytes[start..end] {
            // Only ASCII bytes are replaced, so the text stays valid UTF-8.
            if b.is_ascii() && !b.is_ascii_whitespace() && *b != b'"' && *b != b'\'' {
                *b = b'*';
            }
        }
    }
    let text = String::from_utf8(bytes).unwrap_or_else(|_| source.text.clone());
    Source::new(source.name.clone(), text)
}

#[cfg(test)]
mod tests {
    use super::classify;

    #[test]
    fn spots_literals_and_leaves_templates() {
        assert!(classify("Bearer abcdef123456", Some("authorization"), None).is_some());
        assert!(classify("Bearer {{ token }}", Some("value"), None).is_none());
        assert!(classify("eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl", None, None).is_some());
        assert!(classify("hunter22", Some("default"), Some("password")).is_some());
        assert!(classify("s3cr3t-value", Some("client_secret"), None).is_some());
        assert!(classify("Completed", Some("outcome"), None).is_none());
        assert!(classify("NWC_TOKEN", Some("env"), Some("token")).is_none());
    }
}
