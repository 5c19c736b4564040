//! Keeps secret values out of everything handoff writes.
//!
//! Two layers. The first is structural: a field that is secret (declared, or
//! written from a template that read a secret) shows as `***`, and so does any
//! value a step computed from a secret; nothing searches for it. The second is
//! this [`Redactor`]: it hunts the *root* secrets (declared values, literals in
//! the flow, secrets a server handed over, such as an app token) in the forms
//! they travel in: raw, reversed, in any letter case, percent- and
//! form-encoded as both handoff and the `url` crate encode, JSON-escaped, hex,
//! and base64 or base64url at every alignment. That catches what structure
//! cannot see, such as a server echoing a token in an error body.
//!
//! Roots are few and fixed for a run, so the hunt is one Aho-Corasick pass,
//! whatever the run does: the cost stays flat.
//!
//! Handoff's own wording is never searched with a short secret (see
//! [`Redactor::redact_wording`]): data put into a message is redacted before
//! it is put there.

use std::collections::HashMap;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use base64::Engine as _;
use percent_encoding::{AsciiSet, CONTROLS, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

pub const MASK: &str = "***";

/// Secrets shorter than this are hunted only in data, never in handoff's own
/// wording, where `wrong` or `c` would mask letters of a sentence. The run
/// warns about them (see [`is_short`]).
pub const MIN_SECRET_LEN: usize = 8;

/// A value received into a secret field (an app token's answer) has many
/// leaves; only those this long are credentials worth hunting.
const MIN_RECEIVED_LEN: usize = 8;

/// What the `url` crate leaves alone in a query (`form_urlencoded`).
const FORM: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'*')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_');
/// What the `url` crate encodes in a path.
const PATH: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');
/// What the `url` crate encodes in a query it parses.
const QUERY: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'\'');

/// Every form of every root, as one automaton: a DFA unless `kind` says.
fn automaton(roots: &[String], kind: Option<aho_corasick::AhoCorasickKind>) -> Option<AhoCorasick> {
    let mut patterns: Vec<String> = roots.iter().flat_map(|r| forms(r)).collect();
    patterns.sort();
    patterns.dedup();
    AhoCorasickBuilder::new()
        .ascii_case_insensitive(true)
        .match_kind(MatchKind::LeftmostLongest)
        .kind(kind)
        .build(&patterns)
        .ok()
}

/// Automata already built, by their sorted roots. Building one is costly
/// (every form of every secret, as a DFA), and the runs of a batch or a
/// worker mostly share their secrets: the same token, the same header.
static BUILT: std::sync::LazyLock<std::sync::Mutex<HashMap<Vec<String>, Option<AhoCorasick>>>> =
    std::sync::LazyLock::new(Default::default);

/// The most automata kept; past it the cache starts again.
const MAX_BUILT: usize = 256;

fn cached(roots: Vec<String>) -> Option<AhoCorasick> {
    if let Some(found) = BUILT.lock().ok().and_then(|b| b.get(&roots).cloned()) {
        return found;
    }
    let built = automaton(&roots, None);
    if let Ok(mut b) = BUILT.lock() {
        if b.len() >= MAX_BUILT {
            b.clear();
        }
        b.insert(roots, built.clone());
    }
    built
}

#[derive(Debug, Clone, Default)]
pub struct Redactor {
    roots: Vec<String>,
    /// A root only this run has (a resume URL's signature): its automata
    /// are not shared through the cache, which they would only fill, and
    /// are built small rather than fast.
    own: bool,
    /// Every form of every root.
    all: Option<AhoCorasick>,
    /// Every form of the roots of at least [`MIN_SECRET_LEN`] characters.
    long: Option<AhoCorasick>,
}

impl Redactor {
    /// A secret value: hunted from now on, whatever its length.
    pub fn add_secret(&mut self, value: &str) {
        if value.is_empty() || self.roots.iter().any(|r| r == value) {
            return;
        }
        self.roots.push(value.to_string());
        self.rebuild();
    }

    /// A secret only this run has, such as a resume URL's signature.
    pub fn add_own_secret(&mut self, value: &str) {
        self.own = true;
        self.add_secret(value);
    }

    /// Takes in the secrets another redactor met (an item's, run on the side).
    pub fn merge(&mut self, other: &Redactor) {
        let new: Vec<&String> = other
            .roots
            .iter()
            .filter(|r| !self.roots.contains(r))
            .collect();
        if new.is_empty() {
            return;
        }
        self.roots.extend(new.into_iter().cloned());
        self.own |= other.own;
        self.rebuild();
    }

    /// Every text leaf of a declared secret: a header map's values, a JSON
    /// value's strings and numbers.
    pub fn add_secret_value(&mut self, value: &Value) {
        for_each_text(value, &mut |text| self.add_secret(text));
    }

    /// Every secret a run knows: the credentials written into its flow, and
    /// the values of the secret fields of each of `states` (its start, its
    /// end, which holds what it received).
    pub fn for_run(literals: &[String], states: &[&crate::run::state::RunState]) -> Redactor {
        let mut redactor = Redactor::default();
        for literal in literals {
            redactor.add_secret(literal);
        }
        for state in states {
            for name in &state.secret {
                if let Some(v) = state.get(name) {
                    redactor.add_secret_value(v);
                }
            }
        }
        redactor
    }

    /// A value a server handed over into a secret field: its longer strings.
    pub fn add_received(&mut self, value: &Value) {
        let mut long = Vec::new();
        for_each_text(value, &mut |text| {
            if text.chars().count() >= MIN_RECEIVED_LEN {
                long.push(text.to_string());
            }
        });
        for text in long {
            self.add_secret(&text);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    fn rebuild(&mut self) {
        let own = self.own;
        let build = |roots: &mut dyn Iterator<Item = &String>| {
            let mut roots: Vec<String> = roots.cloned().collect();
            roots.sort();
            if own {
                automaton(&roots, Some(aho_corasick::AhoCorasickKind::ContiguousNFA))
            } else {
                cached(roots)
            }
        };
        self.all = build(&mut self.roots.iter());
        let mut long = self
            .roots
            .iter()
            .filter(|r| r.chars().count() >= MIN_SECRET_LEN)
            .peekable();
        self.long = if long.peek().is_some() {
            build(&mut long)
        } else {
            None
        };
    }

    /// Masks every secret in data: a URL, a body, a value, a server's words.
    pub fn redact(&self, text: &str) -> String {
        replace(self.all.as_ref(), text)
    }

    /// Masks secrets in text that mixes handoff's own wording with data that
    /// was already redacted: only secrets long enough not to be a word.
    pub fn redact_wording(&self, text: &str) -> String {
        replace(self.long.as_ref(), text)
    }

    /// Masks every secret in data, in place: nothing is copied when none is there.
    pub fn redact_in_place(&self, text: &mut String) {
        if let Some(ac) = self.all.as_ref().filter(|ac| holds(ac, text)) {
            *text = replace(Some(ac), text);
        }
    }

    /// [`Redactor::redact_wording`], in place.
    pub fn redact_wording_in_place(&self, text: &mut String) {
        if let Some(ac) = self.long.as_ref().filter(|ac| holds(ac, text)) {
            *text = replace(Some(ac), text);
        }
    }

    /// Masks every string in a JSON value, keys included, in place.
    pub fn redact_json(&self, value: &mut Value) {
        if self.all.is_none() {
            return;
        }
        match value {
            Value::String(s) => {
                if let Some(r) = self.changed(s) {
                    *s = r;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact_json(v)),
            Value::Object(map) => {
                if map.keys().any(|k| self.changed(k).is_some()) {
                    let old = std::mem::take(map);
                    *map = old.into_iter().map(|(k, v)| (self.redact(&k), v)).collect();
                }
                map.values_mut().for_each(|v| self.redact_json(v));
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }

    /// The redacted text, when it differs.
    fn changed(&self, text: &str) -> Option<String> {
        let ac = self.all.as_ref()?;
        holds(ac, text).then(|| replace(Some(ac), text))
    }
}

/// Whether a secret is a plain word (letters only, and short enough to be
/// one): masking it would mask that word in ordinary text too.
pub fn is_word(value: &str) -> bool {
    let n = value.chars().count();
    n > 0 && n <= 16 && value.chars().all(|c| c.is_alphabetic())
}

/// Whether a secret is too short to be masked reliably.
pub fn is_short(value: &str) -> bool {
    !value.is_empty() && value.chars().count() < MIN_SECRET_LEN
}

/// Whether `text` holds a secret's form. Text shorter than every form
/// holds none, and is not searched: most of a response's strings (its keys,
/// a status) are shorter than a token, and each search cost ~330
/// instructions however short the text (a run of the reference flow made
/// ~190; docs/performance.md).
fn holds(ac: &AhoCorasick, text: &str) -> bool {
    text.len() >= ac.min_pattern_len() && ac.is_match(text)
}

fn replace(ac: Option<&AhoCorasick>, text: &str) -> String {
    match ac {
        Some(ac) if holds(ac, text) => {
            let mut out = String::with_capacity(text.len());
            ac.replace_all_with(text, &mut out, |_, _, dst| {
                dst.push_str(MASK);
                true
            });
            out
        }
        _ => text.to_string(),
    }
}

/// The forms a secret travels in. Case is handled by the search itself.
fn forms(value: &str) -> Vec<String> {
    let mut out = vec![
        value.to_string(),
        value.chars().rev().collect(),
        utf8_percent_encode(value, NON_ALPHANUMERIC).to_string(),
        utf8_percent_encode(value, NON_ALPHANUMERIC)
            .to_string()
            .replace("%20", "+"),
        utf8_percent_encode(value, FORM)
            .to_string()
            .replace("%20", "+"),
        utf8_percent_encode(value, PATH).to_string(),
        utf8_percent_encode(value, QUERY).to_string(),
        serde_json::to_string(value)
            .unwrap_or_default()
            .trim_matches('"')
            .to_string(),
        value.bytes().map(|b| format!("{b:02x}")).collect(),
    ];
    let bytes = value.as_bytes();
    let engines = [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::URL_SAFE,
    ];
    for engine in &engines {
        out.push(engine.encode(bytes));
        // Inside a longer encoded text the secret starts at any byte offset;
        // from its first whole 3-byte group on, its encoding is always the same.
        for skip in 0..3 {
            let rest = bytes.get(skip..).unwrap_or_default();
            let whole = rest.len() / 3 * 3;
            let core = engine.encode(&rest[..whole]);
            if core.len() >= 8 {
                out.push(core);
            }
        }
    }
    out.retain(|f| !f.is_empty());
    out
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

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};

    const SECRET: &str = "abc-7f/9c+5d=4f x";

    #[test]
    fn hides_every_encoding() {
        let mut r = Redactor::default();
        r.add_secret(SECRET);
        let mut texts = vec![
            SECRET.to_string(),
            SECRET.to_uppercase(),
            SECRET.chars().rev().collect(),
            utf8_percent_encode(SECRET, NON_ALPHANUMERIC).to_string(),
            utf8_percent_encode(SECRET, NON_ALPHANUMERIC)
                .to_string()
                .to_lowercase(),
            // What `url` writes for a query pair: `-` and `.` stay, space is `+`.
            "abc-7f%2F9c%2B5d%3D4f+x".to_string(),
            SECRET.bytes().map(|b| format!("{b:02X}")).collect(),
        ];
        for engine in [STANDARD, URL_SAFE] {
            for pad in 0..3 {
                texts.push(engine.encode(format!("{}{SECRET}", "u".repeat(pad))));
            }
        }
        for text in texts {
            let shown = r.redact(&format!("before {text} after"));
            assert!(shown.contains(MASK), "{text} → {shown}");
            // What is left of a base64 alignment is at most a couple of edge characters.
            assert!(
                shown.len() <= "before *** after".len() + 8,
                "{text} → {shown}"
            );
        }
    }

    #[test]
    fn short_secrets_spare_handoff_wording() {
        let mut r = Redactor::default();
        r.add_secret("wrong");
        r.add_secret("a-much-longer-secret");
        let wording = "the token is missing, wrong or expired: a-much-longer-secret";
        assert_eq!(
            r.redact_wording(wording),
            "the token is missing, wrong or expired: ***"
        );
        assert_eq!(r.redact("was wrong"), "was ***");
    }

    /// Text as long as a secret's shortest form is searched; shorter text
    /// cannot hold it, and is left as it is.
    #[test]
    fn text_as_short_as_a_secret_is_searched() {
        let mut r = Redactor::default();
        r.add_secret("abc");
        let mut v = serde_json::json!({"abc": "abc", "ab": "cba", "a": "b"});
        r.redact_json(&mut v);
        assert_eq!(v, serde_json::json!({"***": "***", "ab": "***", "a": "b"}));
        let mut text = "ABC".to_string();
        r.redact_in_place(&mut text);
        assert_eq!(text, "***");
    }

    #[test]
    fn json_keys_and_values_are_masked_in_place() {
        let mut r = Redactor::default();
        r.add_secret("s3cr3t-value");
        let mut v = serde_json::json!({"s3cr3t-value": ["x s3cr3t-value"], "n": 1});
        r.redact_json(&mut v);
        assert_eq!(v, serde_json::json!({"***": ["x ***"], "n": 1}));
    }

    #[test]
    fn received_values_add_only_long_strings() {
        let mut r = Redactor::default();
        r.add_received(&serde_json::json!({
            "access_token": "eyJhbGciOi.payload.sig",
            "token_type": "Bearer",
            "expires_in": 3600
        }));
        assert_eq!(
            r.redact("Bearer eyJhbGciOi.payload.sig 3600"),
            "Bearer *** 3600"
        );
    }
}
