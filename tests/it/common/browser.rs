//! Just enough of a W3C WebDriver client to drive headless Chromium through
//! chromedriver: a session, navigation, elements by CSS, text, typing,
//! clicks, the page source and a screenshot. Over the reqwest the project
//! already has, so browser tests add no TLS stack (fantoccini would bring
//! aws-lc, which the build dropped for its compile time).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

/// Where Debian's chromium-driver puts it.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver, and one headless Chromium session in it.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    client: reqwest::Client,
    pub rt: tokio::runtime::Runtime,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a session, or says why not.
    pub fn start() -> Result<Browser, String> {
        if !std::path::Path::new(CHROMEDRIVER).exists() {
            return Err(format!(
                "{CHROMEDRIVER} is not installed (Debian: chromium-driver)"
            ));
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start chromedriver: {e}"))?;
        let base = format!("http://127.0.0.1:{port}");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        handoff::run::transport::install_crypto();
        let client = reqwest::Client::new();
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
            client,
            rt,
        };
        let ready = super::until(|| {
            browser
                .call("GET", "/status", None)
                .is_ok_and(|v| v["ready"] == true)
        });
        if !ready {
            return Err("chromedriver did not become ready".into());
        }
        // As the machine's notes say: headless, no sandbox as root, and no
        // background networking, which this closed network refuses.
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1100,1400",
                ],
            },
        }}});
        let session = browser.call("POST", "/session", Some(caps))?;
        browser.session = session["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no session: {session}"))?
            .to_string();
        Ok(browser)
    }

    /// A WebDriver command; its `value`, or the driver's error.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        self.rt.block_on(async {
            let request = match method {
                "POST" => self.client.post(url).json(&body.unwrap_or(json!({}))),
                "DELETE" => self.client.delete(url),
                _ => self.client.get(url),
            };
            let answer: Value = request
                .timeout(Duration::from_secs(60))
                .send()
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            match answer.get("value") {
                Some(v) if v.get("error").is_some() => Err(v.to_string()),
                Some(v) => Ok(v.clone()),
                None => Err(answer.to_string()),
            }
        })
    }

    fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    pub fn goto(&self, url: &str) {
        self.session_call("POST", "/url", Some(json!({ "url": url })))
            .unwrap();
    }

    /// The first element matching a CSS selector, if any.
    pub fn find(&self, css: &str) -> Option<String> {
        let found = self
            .session_call(
                "POST",
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .ok()?;
        found
            .as_object()?
            .values()
            .next()?
            .as_str()
            .map(str::to_string)
    }

    pub fn text(&self, element: &str) -> String {
        self.session_call("GET", &format!("/element/{element}/text"), None)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// The text of the first element matching a CSS selector, read in one
    /// step: a live page reloads itself, so an element found in one call may
    /// be gone by the next.
    pub fn text_of(&self, css: &str) -> Option<String> {
        self.session_call(
            "POST",
            "/execute/sync",
            Some(json!({
                "script": "const e = document.querySelector(arguments[0]); return e ? (e.innerText ?? e.textContent).trim() : null;",
                "args": [css],
            })),
        )
        .ok()?
        .as_str()
        .map(str::to_string)
    }

    pub fn type_into(&self, element: &str, text: &str) {
        self.session_call(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        )
        .unwrap();
    }

    pub fn click(&self, element: &str) {
        self.session_call("POST", &format!("/element/{element}/click"), None)
            .unwrap();
    }

    pub fn title(&self) -> String {
        self.session_call("GET", "/title", None)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    pub fn source(&self) -> String {
        self.session_call("GET", "/source", None)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// The current cookies, as the browser holds them.
    pub fn cookies(&self) -> Vec<Value> {
        self.session_call("GET", "/cookie", None)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    /// Runs a script in the page; its return value.
    pub fn execute(&self, script: &str) -> Value {
        self.session_call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
        .unwrap_or_else(|e| panic!("the script failed: {e}"))
    }

    /// Runs a script that calls its last argument when done; what it passed.
    pub fn execute_async(&self, script: &str) -> Value {
        self.session_call(
            "POST",
            "/execute/async",
            Some(json!({ "script": script, "args": [] })),
        )
        .unwrap_or_else(|e| panic!("the script failed: {e}"))
    }

    /// Presses a key on the keyboard (a WebDriver key code, such as
    /// `\u{E004}` for Tab), as a person would: to whatever has the focus.
    pub fn press(&self, key: &str) {
        self.session_call(
            "POST",
            "/actions",
            Some(
                json!({ "actions": [{ "type": "key", "id": "keyboard", "actions": [
                { "type": "keyDown", "value": key }, { "type": "keyUp", "value": key }
            ] }] }),
            ),
        )
        .unwrap();
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self) -> Vec<u8> {
        let b64 = self.session_call("GET", "/screenshot", None).unwrap();
        base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap_or(""))
            .unwrap()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
