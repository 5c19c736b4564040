//! The run page in real headless Chromium (Debian's chromium and
//! chromium-driver, which `.ci/run` installs): sign in with the API token,
//! find a run by its instance, watch it finish without reloading, read what
//! it sent; cancel one and retry another from the page, by keyboard alone;
//! and check both pages with axe-core (an npm package, installed into
//! `target/npm` when missing). No secret is in a page or its cookie.

use crate::common::browser::Browser;
use crate::common::{Served, Sim, TOKEN, scratch, until};
use serde_json::{Value, json};

const API_TOKEN: &str = "page-api-token-for-tests-4e11";

/// Starts a run of `flow` through the API with `body`; its id.
fn start_run(served: &Served, flow: &str, body: &str) -> String {
    let bearer = format!("Bearer {API_TOKEN}");
    let (code, _, created) = served.call(
        "POST",
        &format!("/v1/flows/{flow}/runs"),
        &[("Authorization", bearer.as_str())],
        Some(body.as_bytes()),
    );
    assert_eq!(code, 201, "{created}");
    serde_json::from_str::<Value>(&created).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `serve` with one flow, written from `text`, behind the API token; and the
/// scratch folder to remove after.
fn serve_one(scratch_name: &str, file: &str, text: &str) -> (std::path::PathBuf, Served) {
    let dir = scratch(scratch_name);
    let flows = dir.join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    std::fs::write(flows.join(file), text).unwrap();
    let served = Served::start(
        &flows,
        &dir.join("handoff.db"),
        &[("HANDOFF_API_TOKEN", API_TOKEN)],
    );
    (dir, served)
}

#[test]
#[cfg_attr(
    handoff_no_chromium,
    ignore = "needs Chromium: apt-get install chromium chromium-driver"
)]
fn the_run_page_shows_a_waiting_run_until_it_succeeds() {
    let browser = Browser::start().unwrap_or_else(|why| panic!("{why}"));
    let sim = Sim::new();
    // The task appears on the second poll; between the two, the run waits.
    let (instance, task) = sim.instance(json!({ "delay": "0s", "after_polls": 1 }));
    let dir = scratch("page");
    let flows = dir.join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    std::fs::copy(
        "flows/complete-nwc-task.yaml",
        flows.join("complete-nwc-task.yaml"),
    )
    .unwrap();
    let db = dir.join("handoff.db");
    let served = Served::start(
        &flows,
        &db,
        &[
            ("HANDOFF_API_TOKEN", API_TOKEN),
            ("NWC_BASE_URL", sim.base.as_str()),
            ("NWC_TOKEN", TOKEN),
        ],
    );
    let bearer = format!("Bearer {API_TOKEN}");
    let auth = [("Authorization", bearer.as_str())];
    let body = json!({ "inputs": { "instance_id": instance, "poll_interval": "4s" } }).to_string();
    let run = start_run(&served, "complete-nwc-task", &body);
    let status = || {
        let (_, _, body) = served.call("GET", &format!("/v1/runs/{run}"), &auth, None);
        serde_json::from_str::<Value>(&body).unwrap()["status"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert!(until(|| status() == "waiting"), "{}", served.log());
    // Another run, for an instance NWC has no task for: the search tells them apart.
    let other =
        json!({ "inputs": { "instance_id": "0bd2-other-instance", "poll_interval": "4s" } })
            .to_string();
    let other_run = start_run(&served, "complete-nwc-task", &other);
    // The API finds a run by its instance, in any case.
    let query = format!("/v1/runs?q=INSTANCE%20{}", instance.to_uppercase());
    let (_, _, found) = served.call("GET", &query, &auth, None);
    let found: Vec<String> = serde_json::from_str::<Value>(&found).unwrap()["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(found, std::slice::from_ref(&run));

    // Without the token, the page asks for it.
    browser.goto(&format!("{}/", served.base));
    let field = browser.find("input#token").expect("the sign-in form");
    browser.type_into(&field, API_TOKEN);
    browser.click(&browser.find("#sign-in").unwrap());
    let row = format!("tr.run.waiting[data-run=\"{run}\"] a");
    assert!(
        until(|| browser.find(&row).is_some()),
        "no waiting run on the page: {}",
        browser.source()
    );
    assert_eq!(browser.title(), "Runs · handoff");
    // Both runs are listed; searching for the instance leaves the one about it.
    let other_row = format!("tr.run[data-run=\"{other_run}\"]");
    assert!(
        until(|| browser.find(&other_row).is_some()),
        "{}",
        browser.source()
    );
    // The filters count the runs: two in all, each in one status. Read from
    // one rendering of the page, which refreshes itself.
    let html = browser.source();
    let count = |anchor: &str| -> u64 {
        let at = html
            .find(anchor)
            .unwrap_or_else(|| panic!("{anchor} not in {html}"));
        let rest = &html[at..];
        let open = rest.find("<span class=\"count\">").unwrap() + "<span class=\"count\">".len();
        rest[open..open + rest[open..].find('<').unwrap()]
            .parse()
            .unwrap()
    };
    assert_eq!(count("<a href=\"/\""), 2);
    let by_status: u64 = ["waiting", "running", "succeeded", "failed", "canceled"]
        .iter()
        .map(|s| count(&format!("id=\"filter-{s}\"")))
        .sum();
    assert_eq!(by_status, 2);
    browser.type_into(&browser.find("input#q").expect("the search box"), &instance);
    browser.click(&browser.find("#find").unwrap());
    assert!(
        until(|| browser.find(&other_row).is_none() && browser.find(&row).is_some()),
        "the search did not narrow the list: {}",
        browser.source()
    );
    // The runs list names the run by its title, and so does its page. Both
    // pages follow the run by swapping parts of themselves, so each text is
    // read in one step (an element found in one call may be gone by the next).
    assert_eq!(
        browser.text_of(&format!("tr.run[data-run=\"{run}\"] td.title")),
        Some(format!("instance {instance}"))
    );
    browser.click(&browser.find(&row).unwrap());
    assert!(
        until(|| browser.text_of("#title") == Some(format!("instance {instance}"))),
        "the run's title: {}",
        browser.source()
    );
    let diagram = browser.text_of("svg#diagram").expect("the flow's diagram");
    assert!(diagram.contains("find_task"), "{diagram}");
    assert_eq!(browser.text_of("#status").as_deref(), Some("waiting"));
    // While it waits, the page says until when, counting down.
    let outcome = browser.text_of("#outcome").expect("the outcome");
    assert!(outcome.contains("Waiting at wait"), "{outcome}");
    assert!(browser.find("#outcome time[data-until]").is_some());
    // The page follows the run without reloading: a mark set in this
    // window's script state survives until the run has ended.
    browser.execute("window.handoffMark = 'still the same page'; return null;");
    assert!(
        until(|| browser.find("#status.succeeded").is_some()),
        "the run page never showed the run succeeded: {}",
        browser.source()
    );
    assert_eq!(
        browser.execute("return window.handoffMark || null;"),
        "still the same page",
        "the page was reloaded, not updated"
    );
    let problems = violations(&browser, &axe_source());
    assert!(
        problems.is_empty(),
        "the page of a run that succeeded: {problems:#?}"
    );
    // It leads with what it sent to NWC and what NWC said.
    let outcome = browser.text(&browser.find("#outcome").unwrap());
    assert!(outcome.starts_with("Sent PATCH "), "{outcome}");
    assert!(outcome.contains("in step complete"), "{outcome}");
    let sent = browser.find("#sent-status").expect("the PATCH's status");
    assert_eq!(browser.text(&sent), "204 No Content");
    // The inputs, and the requests with their statuses in the trace.
    let input = browser
        .find("tr[data-input=\"instance_id\"]")
        .expect("the instance among the inputs");
    assert!(browser.text(&input).contains(&instance));
    assert!(
        browser
            .find("li.http[data-method=\"GET\"][data-status=\"200\"]")
            .is_some()
    );
    assert!(
        browser
            .find("li.http[data-method=\"PATCH\"][data-status=\"204\"]")
            .is_some()
    );
    let png = browser.screenshot();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let shot = std::path::Path::new("target").join("run-page.png");
    std::fs::write(&shot, &png).unwrap();

    let page = browser.source();
    assert!(
        page.contains("class=\"step current\" data-step=\"complete\""),
        "the path ends at `complete`: {page}"
    );
    assert!(page.contains("id=\"trace\"") && page.contains("id=\"ending\""));
    assert!(
        page.contains("class=\"edge taken\""),
        "the path taken is drawn: {page}"
    );
    for secret in [TOKEN, API_TOKEN, "4e11", "5c1d"] {
        assert!(!page.contains(secret), "a secret is in the page");
    }
    let cookies = browser.cookies();
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    assert_eq!(cookies[0]["httpOnly"], true);
    let value = cookies[0]["value"].as_str().unwrap().to_string();
    assert!(!value.contains(API_TOKEN) && !value.contains("4e11"));
    // Cancel from the page: a forged form (no token, though signed in by
    // header) is refused and changes nothing; the page's own form works once.
    let (code, _, refused) = served.call(
        "POST",
        &format!("/runs/{other_run}/cancel"),
        &[
            ("Authorization", bearer.as_str()),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        Some(b"csrf=forged"),
    );
    assert_eq!(code, 403, "{refused}");
    let other_status = || {
        let (_, _, body) = served.call("GET", &format!("/v1/runs/{other_run}"), &auth, None);
        serde_json::from_str::<Value>(&body).unwrap()["status"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert!(matches!(other_status().as_str(), "waiting" | "running"));
    browser.goto(&format!("{}/runs/{other_run}", served.base));
    browser.click(
        &browser
            .find("#cancel")
            .expect("a cancel link on an unfinished run"),
    );
    let confirm = browser.find("#confirm-cancel").expect("a confirmation");
    browser.click(&confirm);
    assert!(
        until(|| browser.find("#status.canceled").is_some()),
        "the run page does not show the run canceled: {}",
        browser.source()
    );
    assert_eq!(other_status(), "canceled");
    let (_, _, trace) = served.call("GET", &format!("/v1/runs/{other_run}/trace"), &auth, None);
    let last: Value = serde_json::from_str(trace.lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "flow_finished");
    assert_eq!(last["status"], "canceled");
    assert!(
        last["reason"].as_str().unwrap().contains("the run page"),
        "{last}"
    );
    // Ended: no cancel link, and the form says there is nothing to cancel.
    assert!(browser.find("#cancel").is_none());
    browser.goto(&format!("{}/runs/{other_run}/cancel", served.base));
    assert!(browser.find("#ended").is_some(), "{}", browser.source());
    browser.goto(&format!("{}/", served.base));

    // No inline script runs: the refresh above came from a script file.
    let (_, headers, _) = served.call("GET", "/", &auth, None);
    let csp = headers
        .iter()
        .find(|(n, _)| n == "content-security-policy")
        .unwrap();
    assert!(
        csp.1.contains("script-src 'self'") && !csp.1.contains("script-src 'unsafe-inline'"),
        "{csp:?}"
    );
    // Signing out revokes the session: its cookie opens nothing any more.
    let session = [("Cookie", format!("handoff_session={value}"))];
    let session: Vec<(&str, &str)> = session.iter().map(|(n, v)| (*n, v.as_str())).collect();
    assert_eq!(served.call("GET", "/", &session, None).0, 200);
    browser.click(&browser.find("#sign-out").unwrap());
    assert!(
        until(|| browser.find("input#token").is_some()),
        "{}",
        browser.source()
    );
    assert_eq!(served.call("GET", "/", &session, None).0, 401);
    assert_eq!(sim.task(&task)["completions"], 1);
    drop(browser);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The vetting of a customer: refused when the key came through, so a run
/// fails at `refused` only if its secret input reached it.
const VETTING: &str = r#"flow: vetting
title: "customer {{ customer }}"
fields:
  customer: { type: text, input: true }
  api_key:  { type: text, input: true, secret: true }
steps:
  - id: check
    decision:
      - when: "api_key | length == 26"
        goto: refused
      - otherwise: no_key
  - id: refused
    fail: "the vetting service refused customer {{ customer }}"
  - id: no_key
    fail: "no key came through"
"#;

/// 26 characters: what `check` looks for.
const API_KEY: &str = "vet-key-7f3a9c2e5b1d8f4a6c";

/// axe-core's script, installed with npm into `target/npm` when missing.
fn axe_source() -> String {
    let path = std::path::Path::new("target/npm/node_modules/axe-core/axe.min.js");
    if !path.exists() {
        let status = std::process::Command::new("npm")
            .args([
                "install",
                "--prefix",
                "target/npm",
                "--no-audit",
                "--no-fund",
                "--no-save",
                "axe-core@4.10.3",
            ])
            .status()
            .unwrap_or_else(|e| panic!("npm is needed to install axe-core: {e}"));
        assert!(status.success(), "npm install axe-core failed");
    }
    std::fs::read_to_string(path).unwrap()
}

/// axe-core's serious and critical violations of the page open now.
fn violations(browser: &Browser, axe: &str) -> Vec<Value> {
    let script = format!(
        "{axe}\n;var done = arguments[arguments.length - 1];\
         axe.run(document, {{ runOnly: {{ type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] }} }})\
         .then(function (r) {{ done(r.violations.map(function (v) {{ return {{ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(function (n) {{ return n.target.join(' '); }}) }}; }})); }})\
         .catch(function (e) {{ done([{{ id: 'axe-error', impact: 'critical', help: String(e) }}]); }});"
    );
    let found = browser.execute_async(&script);
    found
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
        .cloned()
        .collect()
}

const TAB: &str = "\u{E004}";
const ENTER: &str = "\u{E007}";

/// Tabs through the page until `id` has the focus; false when it never does.
fn tab_to(browser: &Browser, id: &str) -> bool {
    for _ in 0..60 {
        browser.press(TAB);
        if browser.execute("return document.activeElement && document.activeElement.id;") == id {
            return true;
        }
    }
    false
}

#[test]
#[cfg_attr(
    handoff_no_chromium,
    ignore = "needs Chromium: apt-get install chromium chromium-driver"
)]
fn an_operator_retries_a_failed_run_by_keyboard_and_the_pages_pass_axe() {
    let axe = axe_source();
    let browser = Browser::start().unwrap_or_else(|why| panic!("{why}"));
    let (dir, served) = serve_one("page-retry", "vetting.yaml", VETTING);
    let bearer = format!("Bearer {API_TOKEN}");
    let auth = [("Authorization", bearer.as_str())];
    let body = json!({ "inputs": { "customer": "ACME-0042", "api_key": API_KEY } }).to_string();
    let run = start_run(&served, "vetting", &body);
    let get = |id: &str| {
        let (_, _, body) = served.call("GET", &format!("/v1/runs/{id}"), &auth, None);
        serde_json::from_str::<Value>(&body).unwrap()
    };
    assert!(
        until(|| get(&run)["status"] == "failed"),
        "{}",
        served.log()
    );

    // Sign in by keyboard: type the token, Enter.
    browser.goto(&format!("{}/", served.base));
    browser.type_into(&browser.find("input#token").unwrap(), API_TOKEN);
    browser.press(ENTER);
    assert!(
        until(|| browser.find("table#runs").is_some()),
        "{}",
        browser.source()
    );
    // axe-core runs, and finds what it should: a button with no name.
    browser.execute("document.body.appendChild(document.createElement('button')); return null;");
    assert!(
        violations(&browser, &axe)
            .iter()
            .any(|v| v["id"] == "button-name"),
        "axe-core did not run"
    );
    browser.goto(&format!("{}/", served.base));
    let list_problems = violations(&browser, &axe);
    assert!(
        list_problems.is_empty(),
        "the runs list: {list_problems:#?}"
    );

    browser.goto(&format!("{}/runs/{run}", served.base));
    let page = browser.source();
    let outcome = browser.text(&browser.find("#outcome").unwrap());
    assert!(
        outcome.contains("Nothing was sent to change anything")
            && outcome.contains("refused customer ACME-0042"),
        "{outcome}"
    );
    // The secret input is masked; the other shown as given.
    let key_row = browser.find("tr[data-input=\"api_key\"]").unwrap();
    assert!(browser.text(&key_row).contains("(secret)"));
    let customer = browser.find("tr[data-input=\"customer\"]").unwrap();
    assert!(browser.text(&customer).contains("ACME-0042"));
    assert!(
        page.contains("class=\"block failed\" data-step=\"refused\""),
        "{page}"
    );
    let run_problems = violations(&browser, &axe);
    assert!(run_problems.is_empty(), "the run page: {run_problems:#?}");

    // A forged retry (no form token) starts nothing.
    let (code, _, _) = served.call(
        "POST",
        &format!("/runs/{run}/retry"),
        &[
            ("Authorization", bearer.as_str()),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        Some(b"csrf=forged"),
    );
    assert_eq!(code, 403);
    let count = || {
        let (_, _, body) = served.call("GET", "/v1/runs?flow=vetting", &auth, None);
        serde_json::from_str::<Value>(&body).unwrap()["runs"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(count(), 1);

    // Retry by keyboard alone: Tab to the link, Enter; Tab to the button, Enter.
    assert!(tab_to(&browser, "retry"), "no retry link to tab to");
    browser.press(ENTER);
    assert!(
        until(|| browser.find("#confirm-retry").is_some()),
        "{}",
        browser.source()
    );
    let confirm_problems = violations(&browser, &axe);
    assert!(
        confirm_problems.is_empty(),
        "the confirmation: {confirm_problems:#?}"
    );
    assert!(tab_to(&browser, "confirm-retry"));
    browser.press(ENTER);
    // The new run's page reloads itself while the run goes on: its link is
    // read in one step, not found in one call and read in the next.
    assert!(
        until(|| browser.text_of("#retry-of").as_deref() == Some(run.as_str())),
        "the new run's page does not say it retries {run}: {}",
        browser.source()
    );
    assert_eq!(count(), 2);
    let (_, _, list) = served.call("GET", "/v1/runs?flow=vetting", &auth, None);
    let retried = serde_json::from_str::<Value>(&list).unwrap()["runs"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(retried, run);
    // It ran with the same inputs, the secret one too: it failed where only
    // the key leads, under the same title.
    assert!(until(|| get(&retried)["status"] == "failed"));
    let new = get(&retried);
    assert_eq!(new["step"], "refused", "{new}");
    assert_eq!(new["title"], "customer ACME-0042");
    let (_, _, trace) = served.call("GET", &format!("/v1/runs/{retried}/trace"), &auth, None);
    let first: Value = serde_json::from_str(trace.lines().next().unwrap()).unwrap();
    let by = first["started_by"].as_str().unwrap();
    assert!(
        by.starts_with(&format!("retry of run {run}, by the run page (session ")),
        "{by}"
    );
    // The failed run's page now links to its retry instead of offering one.
    browser.goto(&format!("{}/runs/{run}", served.base));
    let forward = browser.find("#retried-as").expect("a link to the retry");
    assert_eq!(browser.text(&forward), retried);
    assert!(browser.find("#retry").is_none());
    // A second post of the same form opens that run, and starts no third.
    browser.goto(&format!("{}/runs/{run}/retry", served.base));
    browser.click(&browser.find("#confirm-retry").unwrap());
    assert!(until(
        || browser.text_of("#retry-of").as_deref() == Some(run.as_str())
    ));
    assert_eq!(count(), 2);
    // An ended run has nothing to cancel.
    let (code, _, _) = served.call("GET", &format!("/runs/{run}/cancel"), &auth, None);
    assert_eq!(code, 409);

    // Nothing any page or answer showed holds the key.
    for page in [browser.source(), trace, served.log()] {
        assert!(!page.contains(API_KEY) && !page.contains("7f3a9c2e"));
    }
    drop(browser);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A run that waits an hour.
const NAP: &str = r#"flow: nap
steps:
  - id: sleep
    timer: { duration: 1h }
"#;

/// Opens a run page's event stream over a raw socket; the status line and
/// what came before `until` appeared (or the stream ended).
fn open_stream(base: &str, path: &str, until: &str) -> (std::net::TcpStream, String) {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut socket = std::net::TcpStream::connect(addr).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(
        socket,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {API_TOKEN}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains(until) {
        match socket.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    (socket, seen)
}

#[test]
fn a_run_page_stream_says_only_that_the_run_changed_and_ended_and_is_capped() {
    let (dir, served) = serve_one("page-live", "nap.yaml", NAP);
    let bearer = format!("Bearer {API_TOKEN}");
    let auth = [("Authorization", bearer.as_str())];
    let run = start_run(&served, "nap", "{}");
    let status = || {
        let (_, _, body) = served.call("GET", &format!("/v1/runs/{run}"), &auth, None);
        serde_json::from_str::<Value>(&body).unwrap()["status"].clone()
    };
    assert!(until(|| status() == "waiting"), "{}", served.log());
    // Without the token or a session, no stream.
    let (code, _, _) = served.call("GET", &format!("/runs/{run}/live"), &[], None);
    assert_eq!(code, 401);
    // A page that saw nothing yet is told the run changed, by number only.
    let path = format!("/runs/{run}/live?after=0");
    let mut streams = Vec::new();
    for _ in 0..64 {
        let (socket, seen) = open_stream(&served.base, &path, "event: changed");
        assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
        assert!(seen.contains("content-type: text/event-stream"), "{seen}");
        let data = seen
            .split("event: changed\ndata: ")
            .nth(1)
            .and_then(|d| d.split('\n').next())
            .unwrap_or("");
        assert!(data.parse::<u64>().is_ok(), "{seen}");
        streams.push(socket);
    }
    // The 65th is refused while the others are open.
    let (_, seen) = open_stream(&served.base, &path, "\r\n\r\n");
    assert!(seen.starts_with("HTTP/1.1 503"), "{seen}");
    // Cancelled, the run ends, and every stream says so and closes.
    let (code, _, _) = served.call("POST", &format!("/v1/runs/{run}/cancel"), &auth, None);
    assert_eq!(code, 200);
    for socket in &mut streams {
        use std::io::Read;
        let mut rest = String::new();
        let _ = socket.read_to_string(&mut rest);
        assert!(rest.contains("event: ended"), "{rest}");
    }
    drop(streams);
    // A stream for an ended run says it has ended at once.
    let (_, seen) = open_stream(&served.base, &path, "event: ended");
    assert!(seen.contains("event: ended"), "{seen}");
    std::fs::remove_dir_all(&dir).unwrap();
}
