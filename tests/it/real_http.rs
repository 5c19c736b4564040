//! Real runs over real HTTP: the binary against a small server on a loopback
//! port, so reqwest, timeouts and refused connections are exercised for real;
//! and the client itself, sending where a request's URL says.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

const TOKEN: &str = "canary-real-http-token-4411";

/// What the server saw: method, path with query, authorization, body.
type Seen = Arc<Mutex<Vec<(String, String, String, String)>>>;

/// Serves the tasks API: an empty list for the first `empty_polls` lists, then one task.
fn serve(empty_polls: usize) -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen: Seen = Arc::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { break };
            let (method, path, auth, body) = read_request(&stream);
            let lists = log.lock().unwrap().iter().filter(|r| r.0 == "GET").count();
            log.lock()
                .unwrap()
                .push((method.clone(), path.clone(), auth, body));
            let (status, body) = match method.as_str() {
                "GET" if path == "/workflows/v2/tasks/task-42" => (
                    "200 OK",
                    r#"{"id":"task-42","status":"active","outcomes":["Completed"],"taskAssignments":[{"id":"as-1","assignee":"svc-worker@contoso.com","status":"active"}]}"#
                        .to_string(),
                ),
                "GET" if lists < empty_polls => ("200 OK", r#"{"tasks":[]}"#.to_string()),
                "GET" => (
                    "200 OK",
                    r#"{"tasks":[{"id":"task-42","status":"active"}]}"#.to_string(),
                ),
                "PATCH" if path == "/workflows/v2/tasks/task-42/assignments/as-1" => {
                    ("204 No Content", String::new())
                }
                _ => (
                    "404 Not Found",
                    r#"{"title":"Not Found","status":404}"#.to_string(),
                ),
            };
            let mut s = stream;
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (base, seen)
}

fn read_request(stream: &TcpStream) -> (String, String, String, String) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let (mut auth, mut length) = (String::new(), 0usize);
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).unwrap();
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').unwrap();
        match name.to_ascii_lowercase().as_str() {
            "authorization" => auth = value.trim().to_string(),
            "content-length" => length = value.trim().parse().unwrap(),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    (method, path, auth, String::from_utf8(body).unwrap())
}

fn handoff(base: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_handoff"))
        .args(args)
        .env("NWC_TOKEN", TOKEN)
        .env("NWC_BASE_URL", base)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    let s = String::from_utf8(bytes.to_vec()).unwrap();
    assert!(!s.contains(TOKEN), "the token leaked");
    s
}

#[test]
fn a_real_run_polls_then_completes_the_task_once() {
    let (base, seen) = serve(2);
    let out = handoff(
        &base,
        &[
            "run",
            "flows/complete-nwc-task.yaml",
            "--set",
            "instance_id=inst-7",
            "--set",
            "poll_interval=10ms",
        ],
    );
    let stdout = text(&out.stdout);
    text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout
            .lines()
            .last()
            .unwrap()
            .contains("task_ready → complete on try 3"),
        "{stdout}"
    );
    let seen = seen.lock().unwrap();
    let methods: Vec<&str> = seen.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(methods, ["GET", "GET", "GET", "GET", "PATCH"]);
    assert_eq!(seen[0].1, "/workflows/v2/tasks?workflowInstanceId=inst-7");
    assert_eq!(seen[3].1, "/workflows/v2/tasks/task-42");
    assert!(seen.iter().all(|r| r.2 == format!("Bearer {TOKEN}")));
    assert_eq!(seen[4].3, r#"{"outcome":"Completed"}"#);
}

#[test]
fn a_refused_connection_fails_the_step_with_a_hint() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let out = handoff(&base, &["run", "tests/files/short-timeout.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("✗ find_task (get_tasks) failed: GET "),
        "{stdout}"
    );
    assert!(stdout.contains("could not connect"), "{stdout}");
    assert!(
        stdout.contains("↻ attempt 1 of 2: could not connect"),
        "{stdout}"
    );
    assert!(stdout.contains("hint: is the base URL right"), "{stdout}");
}

#[test]
fn a_server_that_never_answers_times_out() {
    let base = crate::common::hanging_server();
    let out = handoff(&base, &["run", "tests/files/short-timeout.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("failed: GET "), "{stdout}");
    assert!(
        stdout.contains("↻ attempt 1 of 2: timed out after 300ms; retrying in 50ms"),
        "{stdout}"
    );
    assert!(
        stdout.contains("timed out after 300ms (attempt 2 of 2)"),
        "{stdout}"
    );
}

/// A request goes to its URL: the parse it carries (so the client need not
/// parse it again) is used only when it is that very URL.
#[test]
fn a_request_goes_where_its_url_says_whatever_parse_it_carries() {
    use crate::common::{Loopback, json_answer};
    use handoff::run::transport::{HttpRequest, ReqwestTransport, Transport};
    let meant = Loopback::start(|_, _| json_answer(200, &serde_json::json!({ "to": "meant" })));
    let other = Loopback::start(|_, _| json_answer(200, &serde_json::json!({ "to": "other" })));
    let url = format!("{}/workflows/v2/tasks?workflowInstanceId=i-1", meant.base);
    let request = |parsed: &str| HttpRequest {
        step: "find".into(),
        method: "GET".into(),
        url: url.clone(),
        parsed: Some(reqwest::Url::parse(parsed).unwrap()),
        shown_url: url.clone(),
        headers: Vec::new(),
        body: None,
        timeout: std::time::Duration::from_secs(10),
        max_body: 1 << 20,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let transport = ReqwestTransport::new().unwrap();
    for parsed in [url.clone(), format!("{}/elsewhere", other.base)] {
        let answer = rt.block_on(transport.send(&request(&parsed))).unwrap();
        assert_eq!(answer.json().unwrap()["to"], "meant", "parsed as {parsed}");
    }
    assert_eq!(meant.seen().len(), 2);
    assert_eq!(
        meant.seen()[1].target,
        "/workflows/v2/tasks?workflowInstanceId=i-1"
    );
    assert!(other.seen().is_empty());
}
