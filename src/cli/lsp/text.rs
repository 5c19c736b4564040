//! An open document's text as the editor has it: edits applied as they come
//! (whole or by range), and positions converted between LSP's (line, UTF-16
//! code unit) and byte offsets.

use serde_json::{Value, json};

/// One open document.
#[derive(Debug, Clone)]
pub struct Document {
    pub text: String,
    pub version: i64,
}

impl Document {
    /// Applies a `didChange`'s content changes, in order. A change with a
    /// range replaces that range; one without replaces the whole text.
    pub fn apply(&mut self, changes: &[Value]) -> Result<(), String> {
        for change in changes {
            let new = change["text"]
                .as_str()
                .ok_or("a content change has no `text`")?;
            match change.get("range").filter(|r| !r.is_null()) {
                None => self.text = new.to_string(),
                Some(range) => {
                    let start = self
                        .offset(&range["start"])
                        .ok_or("a change's start is not in the document")?;
                    let end = self
                        .offset(&range["end"])
                        .ok_or("a change's end is not in the document")?;
                    if start > end {
                        return Err("a change's range ends before it starts".into());
                    }
                    self.text.replace_range(start..end, new);
                }
            }
        }
        Ok(())
    }

    /// The byte offset of an LSP position; a character past a line's end
    /// is its end, as the protocol says.
    pub fn offset(&self, position: &Value) -> Option<usize> {
        let line = usize::try_from(position["line"].as_u64()?).ok()?;
        let character = usize::try_from(position["character"].as_u64()?).ok()?;
        let mut start = 0;
        for _ in 0..line {
            start += self.text[start..].find('\n')? + 1;
        }
        let end = self.text[start..]
            .find('\n')
            .map_or(self.text.len(), |i| start + i);
        let mut units = 0;
        for (i, c) in self.text[start..end].char_indices() {
            if units >= character {
                return Some(start + i);
            }
            units += c.len_utf16();
        }
        Some(end)
    }

    /// The LSP position of a byte offset (clamped to the text, and to a
    /// character boundary).
    pub fn position(&self, offset: usize) -> Value {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line = before.matches('\n').count();
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let character: usize = before[line_start..].chars().map(char::len_utf16).sum();
        json!({ "line": line, "character": character })
    }

    /// An LSP range over bytes `start..end`.
    pub fn range(&self, start: usize, end: usize) -> Value {
        json!({ "start": self.position(start), "end": self.position(end) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> Document {
        Document {
            text: text.into(),
            version: 1,
        }
    }

    #[test]
    fn positions_count_utf16_units_as_lsp_does() {
        // `é` is one unit and two bytes; `𝄞` is two units and four bytes.
        let d = doc("a: é𝄞x\nb: y\n");
        assert_eq!(d.offset(&json!({"line": 0, "character": 4})), Some(5));
        assert_eq!(d.offset(&json!({"line": 0, "character": 6})), Some(9));
        assert_eq!(d.position(9), json!({"line": 0, "character": 6}));
        assert_eq!(d.offset(&json!({"line": 1, "character": 99})), Some(15));
        assert_eq!(d.offset(&json!({"line": 5, "character": 0})), None);
        // Inside a character: the position of its start.
        assert_eq!(d.position(7), json!({"line": 0, "character": 4}));
    }

    #[test]
    fn edits_by_range_and_whole() {
        let mut d = doc("id: ç𝄞\nkind: x\n");
        d.apply(&[json!({"range": {"start": {"line": 0, "character": 5}, "end": {"line": 0, "character": 7}}, "text": "ab"})])
            .unwrap();
        assert_eq!(d.text, "id: çab\nkind: x\n");
        d.apply(&[json!({"text": "new"})]).unwrap();
        assert_eq!(d.text, "new");
        assert!(d
            .apply(&[json!({"range": {"start": {"line": 3, "character": 0}, "end": {"line": 3, "character": 1}}, "text": ""})])
            .is_err());
    }
}
