//! The run page in real headless Chromium (Debian's chromium and
//! chromium-driver, which `.ci/run` installs): sign in with the API token,
//! see a waiting run, watch it finish as the page refreshes itself, and take
//! a screenshot. No secret is in the page or its cookie.

use crate::common::browser::Browser;
use crate::common::{Served, Sim, TOKEN, scratch, until};
use serde_json::{Value, json};

const API_TOKEN: &str = "page-api-token-for-tests-4e11";

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
    let (code, _, created) = served.call(
        "POST",
        "/v1/flows/complete-nwc-task/runs",
        &auth,
        Some(body.as_bytes()),
    );
    assert_eq!(code, 201, "{created}");
    let run = serde_json::from_str::<Value>(&created).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
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
    let (code, _, created) = served.call(
        "POST",
        "/v1/flows/complete-nwc-task/runs",
        &auth,
        Some(other.as_bytes()),
    );
    assert_eq!(code, 201, "{created}");
    let other_run = serde_json::from_str::<Value>(&created).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
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
    // The runs list names the run by its title, and so does its page.
    let title_cell = browser
        .find(&format!("tr.run[data-run=\"{run}\"] td.title"))
        .expect("a title cell");
    assert_eq!(browser.text(&title_cell), format!("instance {instance}"));
    browser.click(&browser.find(&row).unwrap());
    let title = browser.find("#title").expect("the run's title");
    assert_eq!(browser.text(&title), format!("instance {instance}"));
    let diagram = browser.find("svg#diagram").expect("the flow's diagram");
    assert!(browser.text(&diagram).contains("find_task"));
    let badge = browser.find("#status").unwrap();
    assert_eq!(browser.text(&badge), "waiting");
    // The page refreshes itself while the run is unfinished.
    assert!(
        until(|| browser.find("#status.succeeded").is_some()),
        "the run page never showed the run succeeded: {}",
        browser.source()
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
    assert!(page.contains("id=\"trace\"") && page.contains("flow finished"));
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
