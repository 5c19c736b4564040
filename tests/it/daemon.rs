//! `serve` as a well-kept daemon: JSON log lines filtered by `HANDOFF_LOG`,
//! `/readyz`, SIGHUP reloading the flows folder (a broken folder changes
//! nothing), and systemd's notify protocol on a real datagram socket.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use crate::common::{Served, Sim, TOKEN, assert_clean, flows, scratch, until};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

fn lines(served: &Served) -> Vec<Value> {
    served
        .log()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not a JSON line: {l}")))
        .collect()
}

#[test]
fn json_logs_readyz_and_a_reload_on_sighup() {
    let sim = Sim::new();
    let dir = scratch("daemon-json");
    let folder = flows(&dir, &["flows/complete-nwc-task.yaml"]);
    let db = dir.join("handoff.db");
    let env = [
        ("NWC_BASE_URL", sim.base.as_str()),
        ("NWC_TOKEN", TOKEN),
        ("HANDOFF_LOG", "info,handoff::serve::worker=info"),
    ];
    let served = Served::start_with(&folder, &db, &env, &["--log-format", "json"]);
    let (code, ready) = served.json("GET", "/readyz", None);
    assert_eq!(code, 200, "{ready}");
    assert_eq!(
        ready,
        json!({ "status": "ready", "store": "ok", "flows": 1 })
    );
    let version = |name: &str| {
        let (_, listed) = served.json("GET", "/v1/flows", None);
        listed["flows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .map(|f| f["version"].clone())
    };
    let first = version("complete-nwc-task").unwrap();

    // A run's ending is a line naming the run and its flow.
    let (instance, _) = sim.instance(json!({ "delay": "0s", "after_polls": 0 }));
    let (code, started) = served.json(
        "POST",
        "/v1/flows/complete-nwc-task/runs",
        Some(json!({ "inputs": { "instance_id": instance } })),
    );
    assert_eq!(code, 201, "{started}");
    let id = started["id"].as_str().unwrap().to_string();
    assert!(until(|| lines(&served).iter().any(|l| l["run"]
        == id.as_str()
        && l["flow"] == "complete-nwc-task")));
    for line in lines(&served) {
        for key in ["time", "level", "target", "message"] {
            assert!(line[key].is_string(), "{line}");
        }
        assert!(line["time"].as_str().unwrap().ends_with('Z'), "{line}");
    }

    // SIGHUP: a flow added and one changed are served; the run page's
    // versions say so.
    std::fs::copy("flows/app-token.yaml", folder.join("app-token.yaml")).unwrap();
    let file = folder.join("complete-nwc-task.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("default: 5s", "default: 6s")).unwrap();
    served.signal(Signal::SIGHUP);
    assert!(until(|| lines(&served).iter().any(|l| l["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("reloaded the flows folder")))));
    let reloaded = lines(&served)
        .into_iter()
        .find(|l| l["message"].as_str().unwrap().starts_with("reloaded"))
        .unwrap();
    assert_eq!(
        reloaded["message"],
        "reloaded the flows folder: 2 flows; `app-token` added, `complete-nwc-task` changed (runs under way keep their versions)"
    );
    let (_, ready) = served.json("GET", "/readyz", None);
    assert_eq!(ready["flows"], 2, "{ready}");
    assert_ne!(version("complete-nwc-task").unwrap(), first);
    assert!(version("app-token").is_some());

    // A folder with a broken flow: nothing changes, and the log says where.
    std::fs::write(folder.join("broken.yaml"), "flow: broken\n").unwrap();
    served.signal(Signal::SIGHUP);
    assert!(until(|| {
        lines(&served).iter().any(|l| {
            l["message"] == "the flows folder was not reloaded: the flows it had are still served"
        })
    }));
    let error = lines(&served)
        .into_iter()
        .find(|l| l["level"] == "error")
        .unwrap();
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("broken.yaml:1:1"),
        "{error}"
    );
    let (code, listed) = served.json("GET", "/v1/flows", None);
    assert_eq!(code, 200);
    assert_eq!(listed["flows"].as_array().unwrap().len(), 2, "{listed}");
    assert_clean(TOKEN, &[("log", &served.log())]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn handoff_log_keeps_what_it_names_and_drops_the_rest() {
    let dir = scratch("daemon-filter");
    let folder = flows(&dir, &["flows/complete-nwc-task.yaml"]);
    let db = dir.join("handoff.db");
    let sim = Sim::new();
    let env = [
        ("NWC_BASE_URL", sim.base.as_str()),
        ("NWC_TOKEN", TOKEN),
        // The serve command's lines, but not the worker's.
        ("HANDOFF_LOG", "info,handoff::serve::worker=warn"),
    ];
    let served = Served::start_with(&folder, &db, &env, &["--log-format", "json"]);
    let (instance, _) = sim.instance(json!({ "delay": "0s", "after_polls": 0 }));
    let (_, started) = served.json(
        "POST",
        "/v1/flows/complete-nwc-task/runs",
        Some(json!({ "inputs": { "instance_id": instance } })),
    );
    let id = started["id"].as_str().unwrap().to_string();
    assert!(until(|| {
        let (_, run) = served.json("GET", &format!("/v1/runs/{id}"), None);
        run["status"] == "succeeded"
    }));
    let all = lines(&served);
    assert!(all.iter().any(|l| l["target"] == "handoff::serve"));
    assert!(
        all.iter().all(|l| l["target"] != "handoff::serve::worker"),
        "{all:#?}"
    );
    // A filter that cannot be read stops the worker before it starts.
    let out = crate::common::handoff(
        &["serve", folder.to_str().unwrap(), "--listen", "127.0.0.1:0"],
        &[("HANDOFF_LOG", "loud")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(crate::common::text(&out.stderr).contains("`loud` in HANDOFF_LOG is not a level"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// One datagram, as text; `None` when none comes within the socket's timeout.
fn recv(socket: &UnixDatagram) -> Option<String> {
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// systemd's side of `Type=notify` and `WatchdogSec=`: a datagram socket the
/// test reads, as systemd would.
#[test]
fn systemd_hears_ready_watchdog_reloading_and_stopping() {
    let dir = scratch("daemon-notify");
    let folder = flows(&dir, &["flows/complete-nwc-task.yaml"]);
    let db = dir.join("handoff.db");
    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let path = socket_path.to_str().unwrap().to_string();
    let env = [
        ("NOTIFY_SOCKET", path.as_str()),
        ("WATCHDOG_USEC", "200000"),
        ("NWC_TOKEN", TOKEN),
    ];
    let mut served = Served::start(&folder, &db, &env);
    let mut heard = Vec::new();
    let next = || recv(&socket).expect("a datagram from the worker");
    let first = next();
    assert!(
        first.starts_with("READY=1\nSTATUS=serving 1 flow on 127.0.0.1:"),
        "{first}"
    );
    // The watchdog is petted, every 100 ms, while the store answers.
    let watchdog = (0..50).map(|_| next()).find(|m| m == "WATCHDOG=1");
    assert!(watchdog.is_some());
    served.signal(Signal::SIGHUP);
    loop {
        let m = next();
        if m == "RELOADING=1" {
            break;
        }
        heard.push(m);
    }
    loop {
        let m = next();
        if m == "READY=1" {
            break;
        }
        heard.push(m);
    }
    assert_eq!(served.terminate(), Some(0), "{}", served.log());
    let mut stopping = false;
    for _ in 0..100 {
        let Some(n) = recv(&socket) else {
            break;
        };
        if n == "STOPPING=1" {
            stopping = true;
            break;
        }
    }
    assert!(stopping, "{heard:?}");
    assert!(heard.iter().all(|m| m == "WATCHDOG=1"), "{heard:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
