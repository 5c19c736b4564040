//! Reading an API description from disk: the document and every sibling file
//! its `$ref`s name, each parsed once, as JSON values with their text kept
//! for diagnostics. An OpenAPI 3.0 document is brought to 3.1's shapes
//! (`nullable`, boolean `exclusiveMinimum`) so one validator reads both.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::language::diagnostic::Diagnostic;
use crate::language::source::{Source, Span};

/// The largest API description handoff reads. Real ones run to a few
/// megabytes (GitHub's is about 10 MB of JSON).
pub const MAX_API_BYTES: u64 = 32 * 1024 * 1024;

/// At most this many files one description may pull in through `$ref`s.
const MAX_FILES: usize = 64;

/// One file of a description.
pub struct ApiFile {
    /// Its absolute path, as a `file://` URI: the base its `$ref`s resolve against.
    pub uri: String,
    pub path: PathBuf,
    pub source: Arc<Source>,
    pub value: Arc<Value>,
}

/// Which OpenAPI a document says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V30,
    V31,
}

/// A description's files, the document first.
pub struct Files {
    pub version: Version,
    pub files: Vec<ApiFile>,
}

/// Why a description did not load: a message, and where when known.
pub struct LoadError {
    pub message: String,
    pub at: Option<(Arc<Source>, Span)>,
}

impl LoadError {
    /// The error, placed at `span` of the file that names the document
    /// (labelled `label`), with the document's own place as a note.
    pub fn diagnostic(self, source: &Arc<Source>, span: Span, label: String) -> Diagnostic {
        let d = Diagnostic::error(self.message)
            .at(source, span)
            .label(label);
        match self.at {
            Some((src, at)) => d.note_at(&src, at, "here"),
            None => d,
        }
    }

    fn new(message: impl Into<String>) -> LoadError {
        LoadError {
            message: message.into(),
            at: None,
        }
    }
}

/// Reads `path` (shown as `shown`) and the files its `$ref`s name.
pub fn load(path: &Path, shown: &str) -> Result<Files, LoadError> {
    let root = read(path, shown)?;
    let version = match root.value.get("openapi").and_then(Value::as_str) {
        Some(v) if v.starts_with("3.0") => Version::V30,
        Some(v) if v.starts_with("3.1") || v.starts_with("3.2") => Version::V31,
        Some(v) => {
            return Err(LoadError::new(format!(
                "`{shown}` is OpenAPI {v}; handoff reads OpenAPI 3.0 and 3.1"
            )));
        }
        None if root.value.get("swagger").is_some() => {
            return Err(LoadError::new(format!(
                "`{shown}` is Swagger 2.0; handoff reads OpenAPI 3.0 and 3.1 (convert it with swagger2openapi)"
            )));
        }
        None => {
            return Err(LoadError::new(format!(
                "`{shown}` has no `openapi:` version: is it an OpenAPI document?"
            )));
        }
    };
    let mut files = vec![root];
    let mut next = 0;
    while next < files.len() {
        let mut refs = Vec::new();
        collect_refs(&files[next].value, &mut refs);
        let dir = files[next]
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        for r in refs {
            let file_part = r.split('#').next().unwrap_or("");
            if file_part.is_empty() {
                continue;
            }
            if file_part.contains("://") {
                return Err(LoadError::new(format!(
                    "`{}` refers to `{r}`: handoff reads local files only, never fetches a `$ref`",
                    files[next].source.name
                )));
            }
            let target = normalize(&dir.join(file_part));
            if files.iter().any(|f| f.path == target) {
                continue;
            }
            if files.len() >= MAX_FILES {
                return Err(LoadError::new(format!(
                    "`{shown}` refers to more than {MAX_FILES} files"
                )));
            }
            let shown_child = display_path(&target);
            files.push(read(&target, &shown_child)?);
        }
        next += 1;
    }
    if version == Version::V30 {
        for file in &mut files {
            let mut value = (*file.value).clone();
            upgrade_schemas(&mut value);
            file.value = Arc::new(value);
        }
    }
    Ok(Files { version, files })
}

fn display_path(path: &Path) -> String {
    let cwd = std::env::current_dir().unwrap_or_default();
    path.strip_prefix(&cwd)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

/// `a/./b/../c` as `a/c`, made absolute: files are known by this path.
fn normalize(path: &Path) -> PathBuf {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    tidy(&absolute)
}

/// `a/./b/../c` as `a/c`, as written otherwise: how a path is shown.
pub fn tidy(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => match out.components().next_back() {
                Some(std::path::Component::Normal(_)) => {
                    out.pop();
                }
                Some(std::path::Component::RootDir) => {}
                _ => out.push(".."),
            },
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn read(path: &Path, shown: &str) -> Result<ApiFile, LoadError> {
    let cannot = |e: std::io::Error| {
        LoadError::new(format!(
            "cannot read `{shown}`: {}",
            crate::language::source::io_reason(&e)
        ))
    };
    let size = std::fs::metadata(path).map_err(cannot)?.len();
    if size > MAX_API_BYTES {
        return Err(LoadError::new(format!(
            "`{shown}` is {:.1} MB; handoff reads API descriptions of at most 32 MB",
            size as f64 / (1024.0 * 1024.0)
        )));
    }
    let bytes = std::fs::read(path).map_err(cannot)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| LoadError::new(format!("`{shown}` is not UTF-8 text")))?;
    let source = Source::new(shown, text);
    let value = parse_value(&source)?;
    let path = normalize(path);
    Ok(ApiFile {
        uri: file_uri(&path),
        path,
        source,
        value: Arc::new(value),
    })
}

/// `file:///…`, with the characters a URI cannot hold escaped.
fn file_uri(path: &Path) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    format!(
        "file://{}",
        percent_encoding::utf8_percent_encode(&path.to_string_lossy(), KEEP)
    )
}

/// JSON is read by serde_json (fast); anything else as YAML, with budgets
/// sized for large descriptions. A parse error is positioned in the file.
fn parse_value(source: &Arc<Source>) -> Result<Value, LoadError> {
    let text = source.text.trim_start();
    if text.starts_with('{') {
        return serde_json::from_str(&source.text).map_err(|e| {
            let offset = line_offset(&source.text, e.line(), e.column());
            LoadError {
                message: format!("invalid JSON: {}", strip_position(&e.to_string())),
                at: Some((source.clone(), Span::new(offset, 1))),
            }
        });
    }
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    let mut budget = serde_saphyr::Budget::default();
    budget.max_events = 50_000_000;
    budget.max_nodes = 50_000_000;
    options.budget = Some(budget);
    serde_saphyr::from_str_with_options::<Value>(&source.text, options).map_err(|e| {
        // The flow parser words YAML errors; ask it for the same words here.
        let d = crate::language::raw::parse(source).err();
        LoadError {
            message: d.as_ref().map_or_else(
                || format!("invalid YAML: {}", e.without_snippet()),
                |d| d.message.clone(),
            ),
            at: d.and_then(|d| Some((source.clone(), d.span?))),
        }
    })
}

fn strip_position(message: &str) -> &str {
    message
        .rfind(" at line ")
        .map_or(message, |i| &message[..i])
}

fn line_offset(text: &str, line: usize, column: usize) -> usize {
    let mut offset = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            return offset + column.saturating_sub(1).min(l.len());
        }
        offset += l.len();
    }
    text.len()
}

fn collect_refs(value: &Value, out: &mut Vec<String>) {
    collect_refs_in(value, false, out);
}

/// Maps whose keys are names the author chose (`properties`, `schemas`...):
/// there an `x-` key is a name, elsewhere an extension.
const NAMED: &[&str] = &[
    "properties",
    "patternProperties",
    "$defs",
    "definitions",
    "schemas",
    "parameters",
    "responses",
    "headers",
    "examples",
    "requestBodies",
    "securitySchemes",
    "links",
    "callbacks",
    "pathItems",
    "paths",
    "content",
    "encoding",
];

/// Extensions (`x-…`) are skipped: handoff never reads them, and their
/// `$ref`s may name anything (a Markdown page, a file left out).
fn collect_refs_in(value: &Value, names: bool, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                out.push(r.clone());
            }
            for (k, v) in map {
                if !names && k.starts_with("x-") {
                    continue;
                }
                collect_refs_in(v, !names && NAMED.contains(&k.as_str()), out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs_in(v, false, out)),
        _ => {}
    }
}

/// OpenAPI 3.0's schema dialect in 3.1's words: `nullable: true` becomes a
/// `null` in `type`, and boolean `exclusiveMinimum`/`exclusiveMaximum` the
/// number they qualify. Only objects that look like schemas change.
fn upgrade_schemas(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.remove("nullable") == Some(Value::Bool(true)) {
                match map.get_mut("type") {
                    Some(Value::String(t)) => {
                        let t = std::mem::take(t);
                        map.insert("type".into(), serde_json::json!([t, "null"]));
                    }
                    Some(_) => {}
                    None => {
                        // `nullable` on a `$ref` or a composition: null is one more choice.
                        if map.contains_key("enum")
                            && let Some(Value::Array(e)) = map.get_mut("enum")
                        {
                            e.push(Value::Null);
                        }
                    }
                }
            }
            for (flag, bound) in [
                ("exclusiveMinimum", "minimum"),
                ("exclusiveMaximum", "maximum"),
            ] {
                if let Some(Value::Bool(on)) = map.get(flag).cloned() {
                    map.remove(flag);
                    if on && let Some(b) = map.remove(bound) {
                        map.insert(flag.into(), b);
                    }
                }
            }
            for v in map.values_mut() {
                upgrade_schemas(v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(upgrade_schemas),
        _ => {}
    }
}

/// The span of the value at `pointer` in a file, found by parsing its text
/// with positions: done only when a diagnostic needs it.
pub fn span_of(source: &Arc<Source>, pointer: &str) -> Option<Span> {
    let root = crate::language::raw::parse(source).ok()?;
    let mut node = &root;
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        node = match &node.value {
            crate::language::raw::NodeValue::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.scalar_text().as_deref() == Some(token.as_str()))
                .map(|(_, v)| v)?,
            crate::language::raw::NodeValue::Seq(items) => {
                items.get(token.parse::<usize>().ok()?)?
            }
            _ => return None,
        };
    }
    Some(node.span)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_3_0_schema_reads_as_3_1() {
        let mut v = serde_json::json!({
            "a": { "type": "string", "nullable": true },
            "b": { "type": "integer", "minimum": 1, "exclusiveMinimum": true },
            "c": { "type": "integer", "maximum": 9, "exclusiveMaximum": false },
        });
        upgrade_schemas(&mut v);
        assert_eq!(
            v,
            serde_json::json!({
                "a": { "type": ["string", "null"] },
                "b": { "type": "integer", "exclusiveMinimum": 1 },
                "c": { "type": "integer", "maximum": 9 },
            })
        );
    }

    #[test]
    fn paths_are_known_without_dots() {
        assert_eq!(
            normalize(Path::new("/a/./b/../c.yaml")),
            PathBuf::from("/a/c.yaml")
        );
        assert_eq!(tidy(Path::new("a/../../b")), PathBuf::from("../b"));
        assert_eq!(tidy(Path::new("../x/./y")), PathBuf::from("../x/y"));
    }
}
