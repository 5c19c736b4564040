//! Hostile and broken input: each file under `tests/broken/` goes through the
//! real binary (`handoff check FILE`, or `handoff run FILE ARGS` when its first
//! line is `# run: ARGS`), and must exit 2 with a diagnostic, never a panic.
//! The whole output is snapshotted. Inputs too big or too binary to commit are
//! generated here, into a temporary folder, and held to the same rules.

use std::path::Path;
use std::process::Command;

fn handoff(path: &Path, args: &[&str]) -> (Option<i32>, String) {
    // Relative to the package, so snapshots read the same on every machine.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = path.strip_prefix(root).unwrap_or(path).to_str().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_handoff"));
    cmd.current_dir(root);
    cmd.args(["--color", "never"]);
    if args.is_empty() {
        cmd.args(["check", path]);
    } else {
        cmd.args(["run", path]).args(args);
    }
    let out = cmd.output().unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

fn assert_refused(name: &str, code: Option<i32>, output: &str) {
    assert_eq!(code, Some(2), "{name} must exit 2:\n{output}");
    assert!(
        !output.contains("panicked") && !output.contains("internal error"),
        "{name}:\n{output}"
    );
    assert!(output.contains('×'), "{name} has no diagnostic:\n{output}");
    assert!(
        output.len() < 20_000,
        "{name}: {} bytes of diagnostics",
        output.len()
    );
}

#[test]
fn committed_inputs() {
    insta::glob!("../broken", "*.yaml", |path| {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let args: Vec<&str> = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# run:"))
            .map(|a| a.split_whitespace().collect())
            .unwrap_or_default();
        let (code, output) = handoff(path, &args);
        let name = path.file_name().unwrap().to_string_lossy();
        assert_refused(&name, code, &output);
        insta::assert_snapshot!(output);
    });
}

/// Deterministic bytes, without a random-number dependency.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 56) as u8
        })
        .collect()
}

#[test]
fn generated_inputs() {
    let dir = std::env::temp_dir().join(format!("handoff-broken-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let long_line = format!(
        "flow: x\nsteps: [{{id: a, log: \"{}\"}}, {{id: b, log: hi, goto: nowhere}}]\n",
        "z".repeat(400_000)
    );
    let many_steps = {
        let mut t = String::from("flow: x\nsteps:\n");
        for i in 0..20_000 {
            t.push_str(&format!("  - {{ id: s{i}, log: \"{i}\" }}\n"));
        }
        t.push_str("  - { id: last, log: end, goto: s99999 }\n");
        t
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("binary_garbage", noise(4096, 7)),
        (
            "nul_bytes",
            b"flow: x\x00\nsteps: [{id: a, log: \"\x00\"}]\n".to_vec(),
        ),
        ("invalid_utf8_mid_file", {
            let mut b = b"flow: x\nsteps:\n  - id: a\n    log: \"".to_vec();
            b.extend([0xff, 0xfe, 0xc3]);
            b.extend(b"\"\n");
            b
        }),
        ("bom_then_garbage", {
            let mut b = vec![0xef, 0xbb, 0xbf];
            b.extend(b"{{{ ]]] :::\n");
            b
        }),
        ("huge_document", {
            let mut b = b"flow: x\ndescription: \"".to_vec();
            b.extend(std::iter::repeat_n(b'a', 3 * 1024 * 1024));
            b.extend(b"\"\nsteps: [{id: a, log: hi}]\n");
            b
        }),
        (
            "deep_sequence_nesting",
            format!(
                "flow: x\nsteps: {}{}\n",
                "[".repeat(100_000),
                "]".repeat(100_000)
            )
            .into_bytes(),
        ),
        (
            "deep_flow_mapping_nesting",
            format!(
                "flow: x\nsteps: {}{}\n",
                "{a: ".repeat(50_000),
                "}".repeat(50_000)
            )
            .into_bytes(),
        ),
        ("one_400kb_line", long_line.into_bytes()),
        (
            "twenty_thousand_steps_one_bad_goto",
            many_steps.into_bytes(),
        ),
    ];
    let mut outputs = String::new();
    for (name, bytes) in &cases {
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, bytes).unwrap();
        let (code, output) = handoff(&path, &[]);
        assert_refused(name, code, &output);
        let shown = output.replace(dir.to_str().unwrap(), "TMP");
        outputs.push_str(&format!("=== {name}\n{shown}\n"));
    }
    std::fs::remove_dir_all(&dir).unwrap();
    insta::assert_snapshot!(outputs);
}
