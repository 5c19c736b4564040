//! `handoff lsp`, the real binary, driven over stdio by a JSON-RPC client
//! as an editor would: open a flow with a mistake, see `check`'s diagnostic,
//! fix it with the quick fix offered, edit across multi-byte text, complete,
//! hover, go to a definition, rename, list the outline; a request that cannot
//! be answered gets an error and the server goes on. No answer carries the
//! secret the flow's text holds.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::assert_clean;

const SECRET: &str = "s3cr3t-canary-9f2e71";

struct Client {
    child: Child,
    stdin: ChildStdin,
    incoming: Receiver<Value>,
    next: i64,
    /// Everything the server sent, for the canary scan.
    seen: Vec<Value>,
}

impl Client {
    fn start() -> Client {
        let mut child = Command::new(env!("CARGO_BIN_EXE_handoff"))
            .arg("lsp")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, incoming) = channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            loop {
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    if let Some(n) = line.strip_prefix("Content-Length: ") {
                        length = n.parse().unwrap();
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                if tx.send(serde_json::from_slice(&body).unwrap()).is_err() {
                    return;
                }
            }
        });
        let mut client = Client {
            child,
            stdin,
            incoming,
            next: 0,
            seen: Vec::new(),
        };
        let init = client.request(
            "initialize",
            json!({ "processId": null, "rootUri": null, "capabilities": {} }),
        );
        assert_eq!(
            init["capabilities"]["textDocumentSync"]["change"], 2,
            "{init}"
        );
        client.notify("initialized", json!({}));
        client
    }

    fn send(&mut self, message: Value) {
        let body = serde_json::to_vec(&message).unwrap();
        write!(self.stdin, "Content-Length: {}\r\n\r\n", body.len()).unwrap();
        self.stdin.write_all(&body).unwrap();
        self.stdin.flush().unwrap();
    }

    fn notify(&mut self, method: &str, params: Value) {
        self.send(json!({ "jsonrpc": "2.0", "method": method, "params": params }));
    }

    /// `didOpen` of a YAML document.
    fn open(&mut self, uri: &str, text: &str) {
        self.notify(
            "textDocument/didOpen",
            json!({ "textDocument": { "uri": uri, "languageId": "yaml", "version": 1, "text": text } }),
        );
    }

    /// `didChange` to `version`: `text` in place of `range`, or of all of it.
    fn change(&mut self, uri: &str, version: i64, range: Option<Value>, text: &str) {
        let mut change = json!({ "text": text });
        if let Some(r) = range {
            change["range"] = r;
        }
        self.notify(
            "textDocument/didChange",
            json!({ "textDocument": { "uri": uri, "version": version }, "contentChanges": [change] }),
        );
    }

    fn receive(&mut self) -> Value {
        let m = self
            .incoming
            .recv_timeout(Duration::from_secs(20))
            .expect("the server answers");
        self.seen.push(m.clone());
        m
    }

    /// The whole answer (`result` or `error`) to a request.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        self.send(json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }));
        loop {
            let m = self.receive();
            if m["id"] == id {
                return m;
            }
        }
    }

    fn request(&mut self, method: &str, params: Value) -> Value {
        let answer = self.call(method, params);
        assert!(answer.get("error").is_none(), "{method}: {answer}");
        answer["result"].clone()
    }

    /// The next diagnostics published for a version of the document.
    fn diagnostics(&mut self, version: i64) -> Vec<Value> {
        loop {
            let m = self.receive();
            if m["method"] == "textDocument/publishDiagnostics" && m["params"]["version"] == version
            {
                return m["params"]["diagnostics"].as_array().unwrap().clone();
            }
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const URI: &str = "file:///work/flows/lsp-demo.yaml";

fn flow() -> String {
    format!(
        r#"flow: lsp-demo
fields:
  token: {{ type: text, secret: true, env: NWC_TOKEN, default: "{SECRET}" }}
  tries: {{ type: number, default: 0 }}
  note:  {{ type: text, input: true, description: "naïve 𝄞 note" }}
steps:
  - id: count
    set: {{ tries: "{{{{ tries + 1 }}}}" }}
  - id: call
    htp: {{ method: GET, url: "https://api.example.com/x?n={{{{ tries }}}}", headers: {{ Authorization: "Bearer {{{{ token }}}}" }} }}
    goto: check
  - id: check
    decision:
      - when: "tries < 3"
        goto: count
      - otherwise: end
"#
    )
}

/// An LSP position of the first `needle` in `text`, `skip` characters in.
fn position(text: &str, needle: &str, skip: usize) -> Value {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle} not in the text"));
    let before = &text[..at];
    let line = before.matches('\n').count();
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    let character: usize = before[start..].chars().map(char::len_utf16).sum::<usize>() + skip;
    json!({ "line": line, "character": character })
}

#[test]
fn an_editing_session_over_stdio() {
    let mut c = Client::start();
    let mut text = flow();
    let doc = json!({ "uri": URI });
    c.open(URI, &text);

    // Open: `check`'s error, where `check` puts it, with its help.
    let found = c.diagnostics(1);
    let error = found
        .iter()
        .find(|d| d["severity"] == 1)
        .unwrap_or_else(|| panic!("{found:?}"))
        .clone();
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .starts_with("unknown step kind `htp`"),
        "{error}"
    );
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("did you mean `http`?"),
        "{error}"
    );
    assert_eq!(
        error["range"]["start"],
        position(&text, "htp:", 0),
        "{error}"
    );
    // And the literal secret's warning, which never quotes it.
    assert!(
        found
            .iter()
            .any(|d| d["severity"] == 2
                && d["message"].as_str().unwrap().contains("literal password"))
    );

    // The quick fix: `htp` → `http`, applied as an editor applies it.
    let actions = c.request(
        "textDocument/codeAction",
        json!({ "textDocument": doc, "range": error["range"], "context": { "diagnostics": [error] } }),
    );
    let fix = &actions[0];
    assert_eq!(fix["title"], "Change `htp` to `http`");
    let edit = fix["edit"]["changes"][URI][0].clone();
    assert_eq!(edit["newText"], "http");
    text = text.replacen("htp:", "http:", 1);
    c.change(URI, 2, Some(edit["range"].clone()), "http");
    let found = c.diagnostics(2);
    assert!(found.iter().all(|d| d["severity"] != 1), "fixed: {found:?}");

    // An edit by range after multi-byte text: the description's `𝄞` (two
    // UTF-16 units) comes before the word replaced on its line.
    let at = position(&text, "note\"", 0);
    let end = json!({ "line": at["line"], "character": at["character"].as_u64().unwrap() + 4 });
    c.change(URI, 3, Some(json!({ "start": at, "end": end })), "remark");
    text = text.replacen("note\"", "remark\"", 1);
    // Then a mistake typed in a template, and at once (superseding) a second.
    let tries = position(&text, "n={{ tries", 5);
    let after =
        json!({ "line": tries["line"], "character": tries["character"].as_u64().unwrap() + 5 });
    c.change(
        URI,
        4,
        Some(json!({ "start": tries, "end": after })),
        "trys",
    );
    let four =
        json!({ "line": tries["line"], "character": tries["character"].as_u64().unwrap() + 4 });
    c.change(
        URI,
        5,
        Some(json!({ "start": tries, "end": four })),
        "tries",
    );
    let found = c.diagnostics(5);
    assert!(
        found.iter().all(|d| d["severity"] != 1),
        "the text the server holds is right: {found:?}"
    );
    // (The two edits together leave `text` as it was.)

    // Completion inside `{{`: the fields, the secret one marked.
    let inside = position(&text, "{{ token }}", 3);
    let items = c.request(
        "textDocument/completion",
        json!({ "textDocument": doc, "position": inside }),
    );
    let token = items
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["label"] == "token")
        .expect("token offered");
    assert_eq!(token["detail"], "text, secret");
    assert!(
        items
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["label"] == "tries")
    );
    // After `goto:`: the steps and `end`.
    let goto = position(&text, "goto: check", 6);
    let items = c.request(
        "textDocument/completion",
        json!({ "textDocument": doc, "position": goto }),
    );
    let labels: Vec<&str> = items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["count", "call", "check", "end"]);

    // Hover: a secret field says so, and never its value; a kind its doc.
    let hover = c.request(
        "textDocument/hover",
        json!({ "textDocument": doc, "position": inside }),
    );
    let said = hover["contents"]["value"].as_str().unwrap();
    assert!(
        said.starts_with("field `token`: text, **secret**"),
        "{said}"
    );
    assert!(said.contains("from `$NWC_TOKEN`"), "{said}");
    let kind = c.request(
        "textDocument/hover",
        json!({ "textDocument": doc, "position": position(&text, "http:", 1) }),
    );
    assert!(
        kind["contents"]["value"]
            .as_str()
            .unwrap()
            .starts_with("**http**"),
        "{kind}"
    );

    // Go to definition: `goto: check` → the step; a template's field → its declaration.
    let def = c.request(
        "textDocument/definition",
        json!({ "textDocument": doc, "position": goto }),
    );
    assert_eq!(
        def["range"]["start"],
        position(&text, "check\n    decision", 0)
    );
    let def = c.request(
        "textDocument/definition",
        json!({ "textDocument": doc, "position": position(&text, "{{ tries + 1", 4) }),
    );
    assert_eq!(def["range"]["start"], position(&text, "tries: {", 0));

    // Rename a field everywhere it stands.
    let renamed = c.request(
        "textDocument/rename",
        json!({ "textDocument": doc, "position": position(&text, "tries: {", 1), "newName": "attempts" }),
    );
    let edits = renamed["changes"][URI].as_array().unwrap();
    assert_eq!(
        edits.len(),
        5,
        "declaration, `set`'s key, two templates, the condition: {edits:?}"
    );
    let refused = c.call("textDocument/rename", json!({ "textDocument": doc, "position": position(&text, "tries: {", 1), "newName": "2 bad" }));
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("is not a name"),
        "{refused}"
    );

    // The outline: the steps, then the fields.
    let symbols = c.request(
        "textDocument/documentSymbol",
        json!({ "textDocument": doc }),
    );
    let names: Vec<&str> = symbols
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["count", "call", "check", "token", "tries", "note"]);
    // The multi-byte line's edit landed where the editor put it.
    let note = c.request(
        "textDocument/hover",
        json!({ "textDocument": doc, "position": position(&text, "note:", 1) }),
    );
    assert!(
        note["contents"]["value"]
            .as_str()
            .unwrap()
            .ends_with("naïve 𝄞 remark\n\nused in 0 place(s) of this flow"),
        "{note}"
    );

    // A request it cannot answer is an error, and the server goes on.
    let unknown = c.call("textDocument/formatting", json!({ "textDocument": doc }));
    assert!(unknown["error"].is_object(), "{unknown}");
    let outside = c.call(
        "textDocument/hover",
        json!({ "textDocument": doc, "position": { "line": 999, "character": 0 } }),
    );
    assert!(outside["error"].is_object(), "{outside}");
    let again = c.request(
        "textDocument/documentSymbol",
        json!({ "textDocument": doc }),
    );
    assert_eq!(again, symbols);

    let shutdown = c.call("shutdown", Value::Null);
    assert!(shutdown.get("error").is_none(), "{shutdown}");
    c.notify("exit", Value::Null);
    let status = c.child.wait().unwrap();
    assert!(status.success());
    let all: String = c.seen.iter().map(|m| m.to_string() + "\n").collect();
    assert_clean(SECRET, &[("everything the server sent", &all)]);
}

/// End to end in a real editor: headless Neovim (Debian's, 0.7) with its
/// built-in LSP client starts `handoff lsp`, opens a flow with a mistake,
/// and writes down what it got: the diagnostics it holds for the buffer,
/// and the completion inside a template.
#[test]
#[cfg_attr(handoff_no_nvim, ignore = "needs Neovim: apt-get install neovim")]
fn neovim_shows_the_diagnostics_and_completes_fields() {
    let dir = crate::common::scratch("lsp-nvim");
    let file = dir.join("demo.yaml");
    let text = flow();
    std::fs::write(&file, &text).unwrap();
    let at = position(&text, "{{ token }}", 3);
    let out = dir.join("seen.json");
    let script = dir.join("drive.lua");
    std::fs::write(
        &script,
        r#"
local env = function(name) return vim.fn.getenv(name) end
local client = vim.lsp.start_client({ name = 'handoff', cmd = { env('HANDOFF_BIN'), 'lsp' }, root_dir = env('HANDOFF_DIR') })
vim.lsp.buf_attach_client(0, client)
local got = vim.wait(20000, function() return #vim.diagnostic.get(0) > 0 end, 20)
local diagnostics = {}
for _, d in ipairs(vim.diagnostic.get(0)) do
  table.insert(diagnostics, { line = d.lnum, col = d.col, severity = d.severity, message = d.message })
end
local params = {
  textDocument = vim.lsp.util.make_text_document_params(),
  position = { line = tonumber(env('HANDOFF_LINE')), character = tonumber(env('HANDOFF_COL')) },
}
local answers = vim.lsp.buf_request_sync(0, 'textDocument/completion', params, 20000) or {}
local labels = {}
for _, answer in pairs(answers) do
  for _, item in ipairs(answer.result or {}) do table.insert(labels, item.label) end
end
vim.fn.writefile({ vim.fn.json_encode({ waited = got, diagnostics = diagnostics, completion = labels }) }, env('HANDOFF_OUT'))
vim.cmd('qa!')
"#,
    )
    .unwrap();
    let status = Command::new("nvim")
        .args(["--headless", "--clean", "-n"])
        .arg(&file)
        .arg("-c")
        .arg(format!("luafile {}", script.display()))
        .env("HANDOFF_BIN", env!("CARGO_BIN_EXE_handoff"))
        .env("HANDOFF_DIR", &dir)
        .env("HANDOFF_OUT", &out)
        .env("HANDOFF_LINE", at["line"].to_string())
        .env("HANDOFF_COL", at["character"].to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let seen_text = std::fs::read_to_string(&out).expect("Neovim wrote what it saw");
    let seen: Value = serde_json::from_str(&seen_text).unwrap();
    assert_eq!(seen["waited"], true, "{seen}");
    let error = seen["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["severity"] == 1)
        .unwrap_or_else(|| panic!("{seen}"));
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .starts_with("unknown step kind `htp`"),
        "{error}"
    );
    let htp = position(&text, "htp:", 0);
    assert_eq!(
        (error["line"].clone(), error["col"].clone()),
        (htp["line"].clone(), htp["character"].clone())
    );
    let labels: Vec<&str> = seen["completion"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(labels, ["token", "tries", "note"], "{seen}");
    assert_clean(SECRET, &[("what Neovim got", &seen_text)]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A mock file is checked against the flow beside it (the editor's text of
/// the flow when it is open), completes the flow's step ids after `step:`,
/// and a step renamed in the flow is renamed in its mock too.
#[test]
fn a_mock_is_checked_against_its_flow_and_renamed_with_it() {
    let dir = crate::common::scratch("lsp-mock");
    let flow_path = dir.join("demo.yaml");
    let mock_path = dir.join("demo.mock.yaml");
    let flow_text = flow().replacen("htp:", "http:", 1);
    std::fs::write(&flow_path, &flow_text).unwrap();
    let mock_text = "responses:\n  - step: cal\n    replies: [{ status: 200 }]\n";
    std::fs::write(&mock_path, mock_text).unwrap();
    let test_path = dir.join("demo.test.yaml");
    let test_text = "cases:\n  - name: one\n    set: { note: hi }\n    expect: { status: succeeded, ended_at: call, fields: { tries: 2 } }\n";
    std::fs::write(&test_path, test_text).unwrap();
    let test_uri = format!("file://{}", test_path.display());
    let flow_uri = format!("file://{}", flow_path.display());
    let mock_uri = format!("file://{}", mock_path.display());
    let mut c = Client::start();
    c.open(&mock_uri, mock_text);
    let found = c.diagnostics(1);
    let error = found
        .iter()
        .find(|d| d["severity"] == 1)
        .unwrap_or_else(|| panic!("{found:?}"));
    assert!(
        error["message"].as_str().unwrap().contains("`cal`"),
        "{error}"
    );
    assert_eq!(
        error["range"]["start"],
        position(mock_text, "cal\n", 0),
        "{error}"
    );
    // Fixed by the editor: clean.
    let at = position(mock_text, "cal\n", 0);
    let three = json!({ "line": at["line"], "character": at["character"].as_u64().unwrap() + 3 });
    c.change(
        &mock_uri,
        2,
        Some(json!({ "start": at, "end": three })),
        "call",
    );
    let found = c.diagnostics(2);
    assert!(found.is_empty(), "{found:?}");
    let items = c.request(
        "textDocument/completion",
        json!({ "textDocument": { "uri": mock_uri }, "position": position(mock_text, "cal\n", 0) }),
    );
    let labels: Vec<&str> = items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["count", "call", "check"]);

    // In the test file: fields in `set:`, steps after `ended_at:`.
    c.open(&test_uri, test_text);
    assert!(c.diagnostics(1).is_empty());
    // A mistake in a case: `check`'s diagnostic, in the file.
    c.change(
        &test_uri,
        2,
        None,
        &test_text.replace("succeeded", "sucess"),
    );
    let found = c.diagnostics(2);
    let wrong = test_text.replace("succeeded", "sucess");
    assert!(
        found.iter().any(|d| d["severity"] == 1
            && d["message"]
                .as_str()
                .unwrap()
                .starts_with("`status` is one of")
            && d["range"]["start"] == position(&wrong, "sucess", 0)),
        "{found:?}"
    );
    c.change(&test_uri, 3, None, test_text);
    assert!(c.diagnostics(3).is_empty());
    let labels = |items: Value| -> Vec<String> {
        items
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["label"].as_str().unwrap().to_string())
            .collect()
    };
    let fields = c.request(
        "textDocument/completion",
        json!({ "textDocument": { "uri": test_uri }, "position": position(test_text, "{ note: hi", 2) }),
    );
    assert_eq!(labels(fields), ["token", "tries", "note"]);
    let steps = c.request(
        "textDocument/completion",
        json!({ "textDocument": { "uri": test_uri }, "position": position(test_text, "ended_at: call", 10) }),
    );
    assert_eq!(labels(steps), ["count", "call", "check"]);
    // Not a key of those mappings: nothing offered.
    let value = c.request(
        "textDocument/completion",
        json!({ "textDocument": { "uri": test_uri }, "position": position(test_text, "note: hi", 6) }),
    );
    assert!(labels(value).is_empty());

    // Rename `call` in the flow: the flow's edits, the mock's and the test file's.
    c.open(&flow_uri, &flow_text);
    let renamed = c.request(
        "textDocument/rename",
        json!({ "textDocument": { "uri": flow_uri }, "position": position(&flow_text, "call\n", 1), "newName": "ask" }),
    );
    let in_mock = renamed["changes"][mock_uri.as_str()].as_array().unwrap();
    assert_eq!(in_mock.len(), 1, "{renamed}");
    assert_eq!(
        in_mock[0]["range"]["start"],
        position("responses:\n  - step: call\n", "call", 0)
    );
    assert_eq!(
        renamed["changes"][flow_uri.as_str()]
            .as_array()
            .unwrap()
            .len(),
        1,
        "{renamed}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
