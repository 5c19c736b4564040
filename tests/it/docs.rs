//! The docs run: every `handoff …` command in README.md and docs/tutorial.md
//! that works offline (`check`, and `run` with `--mock` or `--dry-run`) is run
//! exactly as written, through `sh`, and must succeed; every YAML block whose
//! first line names a file (`# docs/tutorial/1-fields.yaml`) must be that
//! file, byte for byte. So the pages cannot drift from the tool.

use std::process::Command;

const PAGES: [&str; 2] = ["README.md", "docs/tutorial.md"];

/// The fenced blocks of a page: (language, text).
fn blocks(page: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(page).unwrap();
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        match (&mut current, line.strip_prefix("```")) {
            (None, Some(lang)) => current = Some((lang.trim().to_string(), String::new())),
            (Some(_), Some(_)) => out.push(current.take().unwrap()),
            (Some((_, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    out
}

/// Shell commands of a block: continuations joined, trailing comments cut.
fn commands(block: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in block.lines() {
        let line = line.split("  #").next().unwrap_or("").trim_end();
        match line.strip_suffix('\\') {
            Some(head) => pending.push_str(head),
            None => {
                pending.push_str(line);
                let command = pending.split_whitespace().collect::<Vec<_>>().join(" ");
                if !command.is_empty() {
                    out.push(command);
                }
                pending.clear();
            }
        }
    }
    out
}

/// The command with its program replaced by the binary, when it runs offline.
fn offline(command: &str) -> Option<String> {
    if command.contains('…') || command.contains("FLOW") {
        return None; // a placeholder for the reader to fill in
    }
    let words: Vec<&str> = command.split(' ').collect();
    let start = words.iter().position(|w| !w.contains('='))?;
    let (env, rest) = words.split_at(start);
    let rest = rest.join(" ");
    let args = rest
        .strip_prefix("handoff ")
        .or_else(|| rest.strip_prefix("cargo run --release -- "))?;
    let runs_offline = args.starts_with("check ")
        || (args.starts_with("run ") && (args.contains("--mock") || args.contains("--dry-run")));
    runs_offline.then(|| format!("{} \"$HANDOFF\" --color never {args}", env.join(" ")))
}

#[test]
fn every_offline_command_in_the_docs_succeeds_as_written() {
    let mut ran = Vec::new();
    for page in PAGES {
        for (lang, body) in blocks(page) {
            if !matches!(lang.as_str(), "sh" | "bash" | "console") {
                continue;
            }
            for command in commands(&body) {
                let Some(shell) = offline(&command) else {
                    continue;
                };
                let out = Command::new("sh")
                    .args(["-c", &shell])
                    .env("HANDOFF", env!("CARGO_BIN_EXE_handoff"))
                    .output()
                    .unwrap();
                assert_eq!(
                    out.status.code(),
                    Some(0),
                    "{page}: `{command}` failed:\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                ran.push(format!("{page}: {command}"));
            }
        }
    }
    // The search itself must find the commands, or this test proves nothing.
    assert!(
        ran.len() >= 8,
        "only {} commands found: {ran:#?}",
        ran.len()
    );
    assert!(
        ran.iter()
            .any(|c| c.starts_with("README.md: NWC_TOKEN=dry-run-token cargo run"))
    );
}

#[test]
fn every_yaml_block_that_names_a_file_is_that_file() {
    let mut compared = 0;
    for page in PAGES {
        for (lang, body) in blocks(page) {
            let Some(path) = (lang == "yaml")
                .then(|| body.lines().next())
                .flatten()
                .and_then(|l| l.strip_prefix("# "))
                .filter(|p| std::path::Path::new(p).is_file())
            else {
                continue;
            };
            let file = std::fs::read_to_string(path).unwrap();
            assert_eq!(
                body, file,
                "{page} shows `{path}` differently from the file"
            );
            compared += 1;
        }
    }
    assert!(compared >= 3, "only {compared} blocks named a file");
}

/// Every whole flow in the reference pages (a YAML block that starts with
/// `flow:`, and is not a sketch with `…`) passes `check` and `plan`
/// without a warning, so no example there can drift.
#[test]
fn every_whole_flow_in_the_reference_checks_and_plans() {
    let dir = crate::common::scratch("docs-flows");
    let mut checked = Vec::new();
    for page in ["docs/language.md", "docs/steps.md"] {
        for (n, (lang, body)) in blocks(page).into_iter().enumerate() {
            // A sketch with `…` in it is for reading, not running.
            if lang != "yaml" || !body.starts_with("flow:") || body.contains('…') {
                continue;
            }
            let path = dir.join(format!("{}-{n}.yaml", page.replace('/', "-")));
            // A flow in the docs sits in `docs/`: its API descriptions are relative to it.
            let body = body.replace(
                "openapi: ../",
                &format!("openapi: {}/", env!("CARGO_MANIFEST_DIR")),
            );
            std::fs::write(&path, &body).unwrap();
            for command in ["check", "plan"] {
                let out = Command::new(env!("CARGO_BIN_EXE_handoff"))
                    .args(["--color", "never", command, path.to_str().unwrap()])
                    .output()
                    .unwrap();
                let said = String::from_utf8_lossy(&out.stdout).into_owned()
                    + &String::from_utf8_lossy(&out.stderr);
                assert_eq!(
                    out.status.code(),
                    Some(0),
                    "{page}, block {n}: `handoff {command}` failed:\n{body}\n{said}"
                );
                assert!(!said.contains('⚠'), "{page}, block {n} warns:\n{said}");
            }
            checked.push(format!("{page}: {}", body.lines().next().unwrap_or("")));
        }
    }
    assert!(
        checked.iter().any(|c| c.contains("sweep")) && checked.len() >= 2,
        "{checked:#?}"
    );
}

#[test]
fn the_command_reader_finds_what_it_should() {
    assert_eq!(
        commands(
            "NWC_TOKEN=x handoff run a.yaml \\\n    --mock b.yaml   # a comment\nhandoff sim\n"
        ),
        [
            "NWC_TOKEN=x handoff run a.yaml --mock b.yaml",
            "handoff sim"
        ]
    );
    assert!(offline("handoff sim").is_none());
    assert!(offline("handoff run FLOW --mock FLOW.mock.yaml --set …").is_none());
    assert!(offline("NWC_TOKEN=… handoff run x.yaml --set a=b").is_none());
    assert_eq!(
        offline("A=1 handoff check x.yaml").unwrap(),
        "A=1 \"$HANDOFF\" --color never check x.yaml"
    );
}

/// Every transcript in the docs (a `text` block whose first line is
/// `$ handoff …`) is run, and must print what the block shows after it,
/// line for line: a documented output cannot go stale.
#[test]
fn every_transcript_in_the_docs_prints_what_it_shows() {
    let mut pages: Vec<String> = std::fs::read_dir("docs")
        .unwrap()
        .map(|e| e.unwrap().path().to_string_lossy().into_owned())
        .filter(|p| p.ends_with(".md"))
        .collect();
    pages.push("README.md".to_string());
    pages.sort();
    let mut compared = Vec::new();
    for page in &pages {
        for (lang, body) in blocks(page) {
            let mut lines = body.lines();
            let Some(args) = (lang == "text")
                .then(|| lines.next())
                .flatten()
                .and_then(|l| l.strip_prefix("$ handoff "))
            else {
                continue;
            };
            let shown: String = lines.map(|l| format!("{l}\n")).collect();
            let out = Command::new("sh")
                .args(["-c", &format!("\"$HANDOFF\" --color never {args}")])
                .env("HANDOFF", env!("CARGO_BIN_EXE_handoff"))
                .output()
                .unwrap();
            let printed = String::from_utf8_lossy(&out.stdout);
            assert_eq!(
                printed, shown,
                "{page}: `handoff {args}` prints something else than the page shows"
            );
            compared.push(format!("{page}: {args}"));
        }
    }
    assert!(
        compared
            .iter()
            .any(|c| c.contains("plan flows/complete-nwc-task.yaml")),
        "{compared:?}"
    );
}
