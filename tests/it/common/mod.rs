//! A simulator on ephemeral ports for the end-to-end tests, and what they
//! share: running the binary against it, and reading its state back.
#![allow(dead_code)]

pub mod browser;
pub mod pg;

use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::Arc;

use handoff::run::clock::VirtualClock;
use handoff::sim::shared::SimConfig;
use handoff::sim::{self, SimServer};
use serde_json::{Value, json};

pub const TOKEN: &str = "canary-sim-token-5c1d";

/// A simulator on its own runtime, so the test thread can run the binary.
pub struct Sim {
    pub rt: tokio::runtime::Runtime,
    server: Option<SimServer>,
    pub base: String,
    /// One client for the control calls: a new one each time costs its TLS setup.
    control_client: reqwest::Client,
}

impl Sim {
    pub fn start(config: SimConfig) -> Sim {
        Sim::start_clocked(config, Arc::new(VirtualClock::fixed()))
    }

    /// On a clock the test moves, for token lifetimes.
    pub fn start_clocked(config: SimConfig, clock: Arc<VirtualClock>) -> Sim {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server = rt
            .block_on(sim::start(config, clock, "127.0.0.1:0".parse().unwrap()))
            .unwrap();
        let base = server.base_url.clone();
        Sim {
            rt,
            server: Some(server),
            base,
            control_client: client(),
        }
    }

    pub fn new() -> Sim {
        Sim::start(config())
    }

    /// Calls a control endpoint over HTTP.
    pub fn control(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        self.rt.block_on(async {
            let client = &self.control_client;
            let request = match method {
                "POST" => client.post(url).json(&body),
                "DELETE" => client.delete(url),
                _ => client.get(url),
            };
            request.send().await.unwrap().json().await.unwrap()
        })
    }

    /// Starts one waiting instance; returns its id and its task's id.
    pub fn instance(&self, spec: Value) -> (String, String) {
        let created = self.control("POST", "/_sim/instances", spec);
        let first = &created["instances"][0];
        (
            first["id"].as_str().unwrap().to_string(),
            first["taskId"].as_str().unwrap().to_string(),
        )
    }

    /// One entry of `GET /_sim/state`: `list` is `tasks` or `instances`.
    fn state_of(&self, list: &str, key: &str, id: &str) -> Value {
        let state = self.control("GET", "/_sim/state", json!(null));
        state[list]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t[key] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no {list} entry `{id}`"))
    }

    pub fn task(&self, task_id: &str) -> Value {
        self.state_of("tasks", "id", task_id)
    }

    pub fn instance_state(&self, id: &str) -> Value {
        self.state_of("instances", "instanceId", id)
    }

    pub fn requests(&self) -> Vec<Value> {
        let log = self.control("GET", "/_sim/requests", json!(null));
        log["requests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| !r["path"].as_str().unwrap().starts_with("/_sim/"))
            .cloned()
            .collect()
    }

    pub fn run(&self, flow: &str, token: &str, sets: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_handoff"));
        cmd.args(["--color", "never", "run", flow])
            .env("NWC_BASE_URL", &self.base)
            .env("NWC_TOKEN", token);
        for set in sets {
            cmd.args(["--set", set]);
        }
        cmd.output().unwrap()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.rt.block_on(server.stop());
        }
    }
}

/// An HTTP client for tests to call servers with.
pub fn client() -> reqwest::Client {
    handoff::run::transport::install_crypto();
    reqwest::Client::new()
}

pub fn config() -> SimConfig {
    SimConfig {
        token: TOKEN.to_string(),
        seed: 42,
        ..SimConfig::default()
    }
}

pub fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// Real runs print real times and the simulator's port; nothing else varies.
pub fn stable(text: &str, base: &str) -> String {
    let text = text.replace(base, "http://sim");
    // Wall-clock times, such as a timer's `until`.
    let time = |word: &str| {
        let t = word.trim_end_matches([',', ')']);
        if t.len() == 24 && t.ends_with('Z') && humantime::parse_rfc3339_weak(t).is_ok() {
            format!("[time]{}", &word[t.len()..])
        } else {
            word.to_string()
        }
    };
    let text: String = text
        .lines()
        .map(|line| line.split(' ').map(time).collect::<Vec<_>>().join(" ") + "\n")
        .collect();
    let mut out = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        let line = match trimmed.split_once("s  ") {
            Some((time, rest)) if time.parse::<f64>().is_ok() => format!("  T  {rest}"),
            _ => line.to_string(),
        };
        // A response line ends with its real duration, when it took 1ms or more.
        let line = match line.rsplit_once("  (") {
            Some((head, tail))
                if tail
                    .strip_suffix(')')
                    .is_some_and(|d| handoff::language::duration::parse_duration(d).is_ok()) =>
            {
                head.to_string()
            }
            _ => line,
        };
        let line = match line.rfind(" · ") {
            Some(i)
                if handoff::language::duration::parse_duration(&line[i + " · ".len()..])
                    .is_ok() =>
            {
                format!("{} · T", &line[..i])
            }
            _ => line,
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

pub fn assert_no_token(out: &Output, token: &str) {
    for stream in [&out.stdout, &out.stderr] {
        assert!(!text(stream).contains(token), "the token leaked");
    }
}

pub fn gets_and_patches(requests: &[Value]) -> (usize, usize) {
    let count = |m: &str| requests.iter().filter(|r| r["method"] == m).count();
    (count("GET"), count("PATCH"))
}

/// A server that accepts connections and never answers: the base URL.
pub fn hanging_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        // Hold what was accepted; later connections wait in the backlog.
        let held: Vec<TcpStream> = listener.incoming().take(1).filter_map(Result::ok).collect();
        std::thread::park();
        drop(held);
    });
    base
}

/// Reads a child's stdout until a line contains `marker`: the lines so far,
/// and the rest of the stream. Fails when the stream ends first.
pub fn read_until(
    child: &mut std::process::Child,
    marker: &str,
) -> (
    Vec<String>,
    std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
) {
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let found = line.contains(marker);
        seen.push(line);
        if found {
            return (seen, lines);
        }
    }
    panic!("the trace ended before `{marker}`: {seen:#?}");
}

/// One request a [`Loopback`] server received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// An answer a [`Loopback`] script gives: status, headers, body.
pub type Answer = (u16, Vec<(String, String)>, Vec<u8>);

/// A scripted HTTP/1.1 server on an ephemeral loopback port: each request
/// goes to the script with its number (from 0), and every request is kept
/// for the test to read. One connection per request (`Connection: close`).
pub struct Loopback {
    pub base: String,
    seen: Arc<std::sync::Mutex<Vec<Seen>>>,
}

impl Loopback {
    /// A server that holds request `held` (counted from 0) forever, open and
    /// unanswered (a request in flight at a kill), and answers every other
    /// with `answer`.
    pub fn holding(held: usize, answer: Answer) -> Loopback {
        Loopback::start(move |n, _| {
            if n == held {
                loop {
                    std::thread::park();
                }
            }
            answer.clone()
        })
    }

    pub fn start(script: impl Fn(usize, &Seen) -> Answer + Send + Sync + 'static) -> Loopback {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let script = Arc::new(script);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                // Each connection on its own thread: a script may hold one forever.
                let (log, script) = (log.clone(), script.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream);
                    let mut first = String::new();
                    if reader.read_line(&mut first).is_err() || first.is_empty() {
                        return;
                    }
                    let mut parts = first.split_whitespace();
                    let method = parts.next().unwrap_or("").to_string();
                    let target = parts.next().unwrap_or("").to_string();
                    let mut headers = Vec::new();
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).is_err() || line.trim().is_empty() {
                            break;
                        }
                        if let Some((n, v)) = line.trim_end().split_once(':') {
                            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
                        }
                    }
                    let length = headers
                        .iter()
                        .find(|(n, _)| n == "content-length")
                        .and_then(|(_, v)| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    let mut body = vec![0; length];
                    let _ = reader.read_exact(&mut body);
                    let request = Seen {
                        method,
                        target,
                        headers,
                        body,
                    };
                    let n = {
                        let mut log = log.lock().unwrap();
                        log.push(request.clone());
                        log.len() - 1
                    };
                    let (status, headers, body) = script(n, &request);
                    let mut out = reader.into_inner();
                    let mut head = format!(
                        "HTTP/1.1 {status} X\r\nConnection: close\r\nContent-Length: {}\r\n",
                        body.len()
                    );
                    for (k, v) in headers {
                        head.push_str(&format!("{k}: {v}\r\n"));
                    }
                    head.push_str("\r\n");
                    let _ = out.write_all(head.as_bytes());
                    let _ = out.write_all(&body);
                });
            }
        });
        Loopback { base, seen }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

pub fn json_answer(status: u16, body: &Value) -> Answer {
    (
        status,
        vec![("Content-Type".into(), "application/json".into())],
        serde_json::to_vec(body).unwrap(),
    )
}

/// Runs the binary with arguments and environment, output captured.
pub fn handoff(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_handoff"))
        .args(["--color", "never"])
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// `handoff serve` (the real binary) on an ephemeral loopback port, with
/// what it logs kept, and a client for its API.
pub struct Served {
    child: std::process::Child,
    pub base: String,
    log: Arc<std::sync::Mutex<Vec<String>>>,
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Served {
    /// Starts it and waits for the line that says it listens.
    pub fn start(flows: &std::path::Path, db: &std::path::Path, env: &[(&str, &str)]) -> Served {
        Served::start_with(flows, db, env, &[])
    }

    pub fn start_with(
        flows: &std::path::Path,
        db: &std::path::Path,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Served {
        Served::spawn(
            Command::new(env!("CARGO_BIN_EXE_handoff")),
            flows,
            db,
            env,
            args,
        )
    }

    /// Under a limit on open files, soft and hard, as `ulimit -n` sets it.
    pub fn start_limited(
        flows: &std::path::Path,
        db: &std::path::Path,
        env: &[(&str, &str)],
        args: &[&str],
        open_files: u64,
    ) -> Served {
        let mut bash = Command::new("bash");
        bash.args([
            "-c",
            &format!("ulimit -n {open_files} && exec \"$0\" \"$@\""),
            env!("CARGO_BIN_EXE_handoff"),
        ]);
        Served::spawn(bash, flows, db, env, args)
    }

    fn spawn(
        mut command: Command,
        flows: &std::path::Path,
        db: &std::path::Path,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Served {
        use std::io::BufRead;
        let mut child = command
            .args(["--color", "never", "serve"])
            .arg(flows)
            .args(["--listen", "127.0.0.1:0", "--store"])
            .arg(db)
            .args(args)
            .env_remove("HANDOFF_API_TOKEN")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                // Text, or a JSON line (`--log-format json`).
                let message = serde_json::from_str::<serde_json::Value>(&line)
                    .ok()
                    .and_then(|v| v["message"].as_str().map(str::to_string))
                    .unwrap_or_else(|| line.clone());
                if let Some(addr) = message.strip_prefix("listening on ") {
                    let _ = tx.send(addr.to_string());
                }
                kept.lock().unwrap().push(line);
            }
        });
        let Ok(base) = rx.recv_timeout(std::time::Duration::from_secs(30)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve did not start: {:#?}", log.lock().unwrap());
        };
        Served {
            child,
            base,
            log,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            client: client(),
        }
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// A request: status, headers (lower-case names) and body.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> (u16, Vec<(String, String)>, String) {
        self.rt.block_on(async {
            let mut request = self.client.request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{path}", self.base),
            );
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            if let Some(body) = body {
                request = request.body(body.to_vec());
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(n, v)| (n.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                .collect();
            (status, headers, response.text().await.unwrap())
        })
    }

    /// A JSON request with no extra headers: status and JSON answer.
    pub fn json(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string().into_bytes());
        let (status, _, text) = self.call(method, path, &[], body.as_deref());
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// SIGKILL: no chance to save anything.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends a signal: SIGSTOP to pause it, SIGCONT to let it go on.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    /// SIGTERM, and the exit code once it has stopped.
    pub fn terminate(&mut self) -> Option<i32> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        self.child.wait().unwrap().code()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls a condition on what others can observe (a server's state, the
/// store), for up to 20 s: the moment it holds, not a length of time.
pub fn until(ready: impl Fn() -> bool) -> bool {
    for _ in 0..4000 {
        if ready() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    false
}

/// A fresh folder for a test.
pub fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("handoff-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Searches every text for `secret` in the forms it leaks in, with
/// `shared/tools/secret-scan.py` beside the checkout (as CI lays it out),
/// and with a plain search when that is not there.
pub fn assert_clean(secret: &str, texts: &[(&str, &str)]) {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tools/secret-scan.py");
    for (name, text) in texts {
        assert!(!text.contains(secret), "{name} holds the secret:\n{text}");
    }
    if !script.exists() {
        eprintln!("secret-scan.py is not beside the checkout: plain search only");
        return;
    }
    static SCANS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = SCANS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = scratch(&format!("scan-{n}"));
    let mut paths = Vec::new();
    for (i, (_, text)) in texts.iter().enumerate() {
        let path = dir.join(format!("output-{i}.txt"));
        std::fs::write(&path, text).unwrap();
        paths.push(path);
    }
    let out = Command::new("python3")
        .arg(&script)
        .arg(secret)
        .args(&paths)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let names: Vec<&str> = texts.iter().map(|(n, _)| *n).collect();
    assert!(
        out.status.success(),
        "secret-scan found the secret in {names:?}: {report}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A folder `flows` in `dir` with copies of the given flows (paths in this
/// repository), for `serve`.
pub fn flows(dir: &std::path::Path, files: &[&str]) -> std::path::PathBuf {
    let flows = dir.join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    for file in files {
        let name = std::path::Path::new(file).file_name().unwrap();
        std::fs::copy(file, flows.join(name)).unwrap();
    }
    flows
}
