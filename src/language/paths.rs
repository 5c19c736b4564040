//! What a template reads by path (`event.startData.container`), and which
//! paths it tests for truth (`'Completed' if event.passed else …`).
//!
//! A trigger declares each event key it reads, so the analyser needs the
//! keys, not only the top-level name `event`. And a truth test of text is a
//! trap: the text `"false"` is true, so an event's `"passed": "false"` would
//! take the `Completed` branch. This reads the tags' tokens, not minijinja's
//! syntax tree: a path is a name followed by `.name` or `['name']` steps.

/// A name and the keys after it: `event.passed` is `["event", "passed"]`.
pub type Path = Vec<String>;

#[derive(Debug, Clone, PartialEq)]
enum Token<'a> {
    Name(&'a str),
    Str(String),
    Other(&'a str),
}

/// Every path the template reads, in order (duplicates kept). `whole`: the
/// text is one expression (a condition), not a template with tags.
pub fn reads(text: &str, whole: bool) -> Vec<Path> {
    let mut out = Vec::new();
    for tag in tags(text, whole) {
        let tokens = tokenize(tag.0);
        let mut i = 0;
        while i < tokens.len() {
            if is_root(&tokens, i) {
                let (path, next) = path_at(&tokens, i);
                out.push(path);
                i = next;
            } else {
                i += 1;
            }
        }
    }
    out
}

/// The paths the template tests for truth: a path standing alone as a
/// condition (after `if`, `elif`, `and`, `or`, `not`, or as the whole
/// condition), not compared, filtered or tested with `is`.
pub fn truth_tests(text: &str, whole: bool) -> Vec<Path> {
    let mut out = Vec::new();
    for (tag, _) in tags(text, whole) {
        let tokens = tokenize(tag);
        let mut starts = Vec::new();
        if whole {
            starts.push(0);
        }
        for (i, t) in tokens.iter().enumerate() {
            let after_is = i > 0 && tokens[i - 1] == Token::Name("is");
            let opens = match t {
                Token::Name("if" | "elif" | "and" | "or") => true,
                Token::Name("not") => !after_is,
                Token::Other("(") => starts.contains(&i),
                _ => false,
            };
            if opens {
                starts.push(i + 1);
            }
        }
        for start in starts {
            if !is_root(&tokens, start) {
                continue;
            }
            let (path, next) = path_at(&tokens, start);
            let alone = match tokens.get(next) {
                None => true,
                Some(Token::Name(w)) => matches!(*w, "else" | "and" | "or"),
                Some(Token::Other(p)) => matches!(*p, ")" | "-"),
                _ => false,
            };
            if alone {
                out.push(path);
            }
        }
    }
    out
}

const WORDS: [&str; 17] = [
    "and", "or", "not", "in", "if", "elif", "else", "is", "true", "false", "none", "True", "False",
    "None", "for", "set", "endif",
];

/// A name that starts a path: not a keyword, not after `.`, `|` or `is`.
fn is_root(tokens: &[Token], i: usize) -> bool {
    let Some(Token::Name(n)) = tokens.get(i) else {
        return false;
    };
    if WORDS.contains(n) {
        return false;
    }
    !matches!(
        i.checked_sub(1).and_then(|p| tokens.get(p)),
        Some(Token::Other("." | "|")) | Some(Token::Name("is"))
    )
}

fn path_at(tokens: &[Token], i: usize) -> (Path, usize) {
    walk_path(tokens, i, false)
}

/// In a path that goes through lists, a number's place: `jobs[0].id` is
/// `["jobs", "[]", "id"]`.
pub const ITEM: &str = "[]";

/// A path from `tokens[i]`; with `items`, through `[0]` and `.0` too.
fn walk_path(tokens: &[Token], i: usize, items: bool) -> (Path, usize) {
    let Some(Token::Name(root)) = tokens.get(i) else {
        return (Vec::new(), i + 1);
    };
    let mut path = vec![root.to_string()];
    let mut j = i + 1;
    loop {
        match (tokens.get(j), tokens.get(j + 1), tokens.get(j + 2)) {
            (Some(Token::Other(".")), Some(Token::Name(n)), _) => {
                path.push(n.to_string());
                j += 2;
            }
            (Some(Token::Other("[")), Some(Token::Str(s)), Some(Token::Other("]"))) => {
                path.push(s.clone());
                j += 3;
            }
            (Some(Token::Other("[")), Some(Token::Other("0")), Some(Token::Other("]")))
                if items =>
            {
                path.push(ITEM.to_string());
                j += 3;
            }
            (Some(Token::Other(".")), Some(Token::Other("0")), _) if items => {
                path.push(ITEM.to_string());
                j += 2;
            }
            _ => return (path, j),
        }
    }
}

/// What a template reads of a JSON value, for holding it against a schema:
/// every path through keys and list items, and each literal text a path is
/// compared with (`==`, `!=`, either side). Names the template binds itself
/// (`{% for job in … %}`, `{% set … %}`) are left out: they are not fields.
#[derive(Debug, Default, PartialEq)]
pub struct Reading {
    pub paths: Vec<Path>,
    pub compared: Vec<(Path, String)>,
}

pub fn reading(text: &str, whole: bool) -> Reading {
    let mut out = Reading::default();
    let mut all: Vec<Vec<Token>> = Vec::new();
    let mut bound: Vec<&str> = Vec::new();
    for (tag, statement) in tags(text, whole) {
        let mut tokens = tokenize(tag);
        for (i, t) in tokens.iter().enumerate() {
            if let Token::Name("for" | "set" | "with") = t {
                let mut j = i + 1;
                while let Some(Token::Name(n)) = tokens.get(j) {
                    bound.push(n);
                    match tokens.get(j + 1) {
                        Some(Token::Other(",")) => j += 2,
                        _ => break,
                    }
                }
            }
        }
        // A statement's first word is its keyword (`endfor`), never a name.
        if statement && matches!(tokens.first(), Some(Token::Name(_))) {
            tokens[0] = Token::Other("%");
        }
        all.push(tokens);
    }
    for tokens in &all {
        let mut i = 0;
        while i < tokens.len() {
            if !is_root(tokens, i) || matches!(&tokens[i], Token::Name(n) if bound.contains(n)) {
                i += 1;
                continue;
            }
            let (path, next) = walk_path(tokens, i, true);
            let after = match (tokens.get(next), tokens.get(next + 1)) {
                (Some(Token::Other("==" | "!=")), Some(Token::Str(s))) => Some(s.clone()),
                _ => None,
            };
            let before = match (
                i.checked_sub(2).map(|k| &tokens[k]),
                i.checked_sub(1).map(|k| &tokens[k]),
            ) {
                (Some(Token::Str(s)), Some(Token::Other("==" | "!="))) => Some(s.clone()),
                _ => None,
            };
            for literal in after.into_iter().chain(before) {
                out.compared.push((path.clone(), literal));
            }
            out.paths.push(path);
            i = next;
        }
    }
    out
}

/// The inside of each tag, and whether it is a statement (`{% … %}`).
fn tags(text: &str, whole: bool) -> Vec<(&str, bool)> {
    if whole {
        return vec![(text, false)];
    }
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = match after.as_bytes().first() {
            Some(b'{') => "}}",
            Some(b'%') => "%}",
            _ => {
                rest = after;
                continue;
            }
        };
        let inner = &after[1..];
        let end = inner.find(close).unwrap_or(inner.len());
        out.push((inner[..end].trim_matches('-'), close == "%}"));
        rest = &inner[(end + 2).min(inner.len())..];
    }
    out
}

fn tokenize(tag: &str) -> Vec<Token<'_>> {
    let bytes = tag.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'"' || c == b'\'' {
            let mut j = i + 1;
            let mut s = String::new();
            while j < bytes.len() && bytes[j] != c {
                let ch = tag[j..].chars().next().unwrap_or(' ');
                if ch == '\\' {
                    j += 1;
                    if let Some(e) = tag[j..].chars().next() {
                        s.push(e);
                        j += e.len_utf8();
                    }
                    continue;
                }
                s.push(ch);
                j += ch.len_utf8();
            }
            out.push(Token::Str(s));
            i = (j + 1).min(bytes.len());
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let mut j = i;
            while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
                j += 1;
            }
            out.push(Token::Name(&tag[i..j]));
            i = j;
        } else if c.is_ascii_digit() {
            let mut j = i;
            while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'.') {
                j += 1;
            }
            out.push(Token::Other("0"));
            i = j;
        } else {
            let len = tag[i..].chars().next().map_or(1, char::len_utf8);
            // Two-character operators stay whole, so `==` is not `=` twice.
            let two = tag
                .get(i..i + 2)
                .filter(|t| matches!(*t, "==" | "!=" | "<=" | ">=" | "//" | "**"));
            let t = two.unwrap_or(&tag[i..i + len]);
            out.push(Token::Other(t));
            i += t.len();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(parts: &[&str]) -> Path {
        parts.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn paths_follow_dots_and_quoted_keys() {
        assert_eq!(
            reads(
                "{{ event.startData.container }}-{{ event['odd key'] | default(1) }}",
                false
            ),
            [
                p(&["event", "startData", "container"]),
                p(&["event", "odd key"])
            ]
        );
        assert_eq!(
            reads("x.y | length > 0 and z", true),
            [p(&["x", "y"]), p(&["z"])]
        );
        assert_eq!(reads("{{ 'event.passed' }}", false), Vec::<Path>::new());
    }

    #[test]
    fn a_reading_goes_through_items_and_keeps_comparisons() {
        let r = reading(
            "{{ job.jobs[0].state }} {{ 'ready' == job.state }}{% for j in job.jobs %}{{ j.id }}{% endfor %}",
            false,
        );
        assert_eq!(
            r.paths,
            [
                p(&["job", "jobs", ITEM, "state"]),
                p(&["job", "state"]),
                p(&["job", "jobs"])
            ]
        );
        assert_eq!(r.compared, [(p(&["job", "state"]), "ready".to_string())]);
        let r = reading("job.state != 'failed' and job.result.passed == true", true);
        assert_eq!(r.compared, [(p(&["job", "state"]), "failed".to_string())]);
        assert_eq!(r.paths[1], p(&["job", "result", "passed"]));
    }

    #[test]
    fn a_path_alone_in_a_condition_is_a_truth_test() {
        let t = |s, whole| truth_tests(s, whole);
        assert_eq!(
            t("{{ 'Completed' if event.passed else 'Canceled' }}", false),
            [p(&["event", "passed"])]
        );
        assert_eq!(t("ready", true), [p(&["ready"])]);
        assert_eq!(
            t("not ready and (done or x == 1)", true),
            [p(&["ready"]), p(&["done"])]
        );
        assert_eq!(
            t("{% if event.ok %}a{% endif %}", false),
            [p(&["event", "ok"])]
        );
        // Compared, filtered or tested: explicit, not a truth test.
        assert!(t("{{ 'a' if event.passed == true else 'b' }}", false).is_empty());
        assert!(t("task_id | length > 0", true).is_empty());
        assert!(t("x is not none", true).is_empty());
        assert!(t("x in ['a']", true).is_empty());
        assert!(t("{{ event.passed }}", false).is_empty());
    }
}
