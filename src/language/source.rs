//! Source text and byte spans.
//!
//! Every static diagnostic points into a [`Source`] with a [`Span`]. Loading,
//! validation and the mock loader all share these, so a position means the same
//! thing everywhere.

use std::sync::Arc;

/// A file the user gave us, kept whole so diagnostics can quote it.
#[derive(Debug)]
pub struct Source {
    /// The name shown in diagnostics: the path as the user typed it.
    pub name: String,
    pub text: String,
    /// [`Source::hash`], once it was asked for.
    hash: std::sync::OnceLock<String>,
}

impl Source {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Arc<Source> {
        Arc::new(Source {
            name: name.into(),
            text: text.into(),
            hash: std::sync::OnceLock::new(),
        })
    }

    /// The text's SHA-256, in hex: the version a durable run pins. Computed
    /// once, not for each of the runs a bulk start makes.
    pub fn hash(&self) -> &str {
        self.hash.get_or_init(|| sha256_hex(&self.text))
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..floor_char_boundary(&self.text, offset)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before[line_start..].chars().count() + 1;
        (line, col)
    }

    /// The text a span covers, or "" when the span is out of range.
    pub fn slice(&self, span: Span) -> &str {
        let start = floor_char_boundary(&self.text, span.offset);
        let end = floor_char_boundary(&self.text, span.offset + span.len);
        &self.text[start..end.max(start)]
    }
}

/// Why a file could not be read, in a few lowercase words.
pub fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string().to_lowercase(),
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// A byte range in a [`Source`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub offset: usize,
    pub len: usize,
}

impl Span {
    pub fn new(offset: usize, len: usize) -> Span {
        Span { offset, len }
    }

    pub fn end(&self) -> usize {
        self.offset + self.len
    }
}

/// `text`'s SHA-256, as 64 lowercase hex digits.
pub fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = sha2::Sha256::digest(text.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_sha256_in_hex_and_kept() {
        // FIPS 180-2's example.
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_hex("abc"), abc);
        let source = Source::new("x", "abc");
        assert_eq!(source.hash(), abc);
        assert!(std::ptr::eq(source.hash(), source.hash()));
    }

    #[test]
    fn line_col_counts_characters() {
        let s = Source::new("x", "ab\ncé d\n");
        assert_eq!(s.line_col(0), (1, 1));
        assert_eq!(s.line_col(3), (2, 1));
        // `é` is two bytes; the space after it is the third character.
        assert_eq!(s.line_col(6), (2, 3));
    }
}
