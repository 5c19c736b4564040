//! The code's shape, read from its source: every module imports by its full
//! path from the crate root (`crate::run::trace`, never `super::`), no two
//! files import each other (directly or round a circle), and imports go
//! down the folders only:
//!
//! `language → run → steps → engine → store → serve → sim → cli`
//!
//! with one exception: `language` names `steps` (a flow holds its steps, and
//! each kind parses itself with the analyser's helpers). Test modules
//! (`#[cfg(test)]`) and comments are not read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const FLOORS: [&str; 8] = [
    "language", "run", "steps", "engine", "store", "serve", "sim", "cli",
];

/// Every `.rs` file under `src/`, by its module path (`run::http::send`).
fn modules() -> BTreeMap<Vec<String>, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(Path::new("src"), &mut files);
    files
        .into_iter()
        .filter_map(|path| {
            let rel = path.strip_prefix("src").unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            (parts != ["lib"] && parts != ["main"]).then_some((parts, path))
        })
        .collect()
}

/// The code of a file without comments, string and character literals, and
/// test modules.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            // A raw string, `r"…"` or `r#"…"#`: up to its own closing.
            'r' if matches!(chars.peek(), Some('"' | '#')) => {
                let mut hashes = 0;
                while chars.peek() == Some(&'#') {
                    chars.next();
                    hashes += 1;
                }
                if chars.next() != Some('"') {
                    continue;
                }
                let closing = format!("\"{}", "#".repeat(hashes));
                let mut seen = String::new();
                for c in chars.by_ref() {
                    seen.push(c);
                    if seen.ends_with(&closing) {
                        break;
                    }
                }
            }
            // A character literal (`'"'`, `'\''`), not a lifetime.
            '\'' => {
                let mut ahead = chars.clone();
                match (ahead.next(), ahead.next()) {
                    (Some('\\'), _) => {
                        chars.next();
                        chars.next();
                        for c in chars.by_ref() {
                            if c == '\'' {
                                break;
                            }
                        }
                    }
                    (Some(_), Some('\'')) => {
                        chars.next();
                        chars.next();
                    }
                    _ => out.push(c),
                }
            }
            '"' => in_string = true,
            _ => out.push(c),
        }
    }
    without_tests(&out)
}

/// Code without its `#[cfg(test)]` items: each up to its closing brace.
fn without_tests(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let item = &rest[at..];
        let Some(open) = item.find(['{', ';']) else {
            return out;
        };
        let mut depth = 0usize;
        let mut end = item.len();
        if item.as_bytes()[open] == b';' {
            end = open + 1;
        } else {
            for (i, c) in item[open..].char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = open + i + 1;
                            break;
                        }
                    }
                    _ => {}
                }
            }
        }
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

/// The paths a file's code names: each `crate::a::b::…` or `super::…`.
fn paths(code: &str, keyword: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    let mut from = 0;
    while let Some(at) = code[from..].find(keyword) {
        let start = from + at;
        from = start + keyword.len();
        let before = start.checked_sub(1).map(|i| bytes[i]);
        if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':') {
            continue;
        }
        let rest = &code[from..];
        let mut segments = Vec::new();
        let mut tail = rest;
        while let Some(after) = tail.strip_prefix("::") {
            let len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if len == 0 {
                break;
            }
            segments.push(after[..len].to_string());
            tail = &after[len..];
        }
        found.push(segments);
    }
    found
}

/// The module a path lands in: the longest prefix that is a file.
fn file_of<'a>(
    path: &[String],
    modules: &'a BTreeMap<Vec<String>, PathBuf>,
) -> Option<&'a Vec<String>> {
    (1..=path.len())
        .rev()
        .find_map(|n| modules.get_key_value(&path[..n]).map(|(k, _)| k))
}

fn floor(module: &[String]) -> usize {
    FLOORS
        .iter()
        .position(|f| module.first().is_some_and(|m| m == f))
        .unwrap_or_else(|| panic!("`{}` is on no floor", module.join("::")))
}

#[test]
fn imports_go_down_the_folders_by_full_paths_and_never_round_a_circle() {
    let modules = modules();
    let mut edges: BTreeMap<&Vec<String>, BTreeSet<&Vec<String>>> = BTreeMap::new();
    let mut problems = Vec::new();
    for (module, path) in &modules {
        let code = code(path);
        if !paths(&code, "super").is_empty() {
            problems.push(format!(
                "{}: imports through `super::`, not by the full path",
                path.display()
            ));
        }
        let deps = edges.entry(module).or_default();
        for named in paths(&code, "crate") {
            if let Some(target) = file_of(&named, &modules)
                && target != module
            {
                deps.insert(target);
            }
        }
    }
    for (from, deps) in &edges {
        for to in deps {
            let (a, b) = (floor(from), floor(to));
            let accepted = from[0] == "language" && to[0] == "steps";
            if b > a && !accepted {
                problems.push(format!(
                    "{} imports {}: up from `{}` to `{}`",
                    from.join("::"),
                    to.join("::"),
                    FLOORS[a],
                    FLOORS[b]
                ));
            }
        }
    }
    // Circles: a file that reaches itself through the files it imports.
    for start in edges.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<(&Vec<String>, Vec<&Vec<String>>)> = vec![(start, vec![start])];
        while let Some((at, trail)) = stack.pop() {
            for next in edges.get(at).into_iter().flatten() {
                if next == start {
                    let names: Vec<String> = trail.iter().map(|m| m.join("::")).collect();
                    problems.push(format!(
                        "circle: {} → {}",
                        names.join(" → "),
                        start.join("::")
                    ));
                } else if seen.insert(*next) {
                    let mut longer = trail.clone();
                    longer.push(next);
                    stack.push((next, longer));
                }
            }
        }
    }
    problems.sort();
    problems.dedup();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // What this reads is the real tree, not an empty one.
    assert!(edges.len() > 80, "{} modules", edges.len());
    let send = vec!["run".to_string(), "http".into(), "send".into()];
    assert!(edges[&send].contains(&vec!["run".to_string(), "step".into()]));
}

#[test]
fn the_crate_root_only_declares_its_folders() {
    let lib = std::fs::read_to_string("src/lib.rs").unwrap();
    let items: Vec<&str> = lib
        .lines()
        .filter(|l| !l.starts_with("//") && !l.trim().is_empty())
        .collect();
    assert!(
        items.iter().all(|l| l.starts_with("pub mod ")),
        "lib.rs holds more than its folders: {items:?}"
    );
    let mut folders: Vec<&str> = items
        .iter()
        .map(|l| l.trim_start_matches("pub mod ").trim_end_matches(';'))
        .collect();
    folders.sort();
    let mut floors = FLOORS.to_vec();
    floors.sort();
    assert_eq!(folders, floors);
}

/// CI has every real part the tests drive: none of them may be ignored there.
// The constants are what build.rs found on this machine.
#[allow(clippy::assertions_on_constants)]
#[test]
fn ci_runs_every_test() {
    if std::env::var_os("CI").is_some() {
        assert!(
            !cfg!(handoff_no_postgres),
            "CI has no Postgres: .ci/run installs it"
        );
        assert!(
            !cfg!(handoff_no_chromium),
            "CI has no Chromium: .ci/run installs it"
        );
        assert!(
            !cfg!(handoff_no_nvim),
            "CI has no Neovim: .ci/run installs it"
        );
    }
}
