//! Load on the NWC simulator: 10,000 task-list requests per scenario over
//! keep-alive connections, against a baseline measured in the same run.
//!
//! The baseline is `GET /_sim/health`: the same server, middleware and client
//! with no auth, no lock and no JSON to build. The ratio says what the tasks
//! API itself costs, whatever the machine. Run with:
//!
//! ```sh
//! cargo bench --bench sim_load            # or: -- --requests 50000 --connections 32
//! ```
//!
//! Server and client share the machine: each gets its own one-thread runtime,
//! so on two cores neither starves the other.

use std::sync::Arc;
use std::time::{Duration, Instant};

use handoff::run::clock::SystemClock;
use handoff::sim;
use handoff::sim::shared::SimConfig;

const TOKEN: &str = "bench-token";

struct Scenario {
    name: &'static str,
    path: String,
}

struct Figures {
    per_second: f64,
    p50: Duration,
    p99: Duration,
    failures: usize,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime")
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let requests = arg("--requests", 10_000);
    let connections = arg("--connections", 16);
    let tasks = arg("--tasks", 1_000);
    let server_rt = runtime();
    let client_rt = runtime();
    let config = SimConfig {
        token: TOKEN.into(),
        task_delay: Duration::ZERO,
        ..SimConfig::default()
    };
    let server = server_rt
        .block_on(sim::start(
            config,
            Arc::new(SystemClock::new()),
            "127.0.0.1:0".parse().expect("address"),
        ))
        .expect("the simulator starts");
    let base = server.base_url.clone();
    handoff::run::transport::install_crypto();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()
        .expect("a client");

    let last_instance = client_rt.block_on(async {
        let created: serde_json::Value = client
            .post(format!("{base}/_sim/instances"))
            .json(&serde_json::json!({ "count": tasks, "delay": "0s" }))
            .send()
            .await
            .expect("instances")
            .json()
            .await
            .expect("instances JSON");
        created["instances"][tasks - 1]["id"]
            .as_str()
            .expect("an id")
            .to_string()
    });

    let scenarios = [
        Scenario {
            name: "baseline: GET /_sim/health",
            path: "/_sim/health".into(),
        },
        Scenario {
            name: "list by workflowInstanceId (1 match)",
            path: format!("/workflows/v2/tasks?workflowInstanceId={last_instance}"),
        },
        Scenario {
            name: "list status=Active (a 50-task page)",
            path: "/workflows/v2/tasks?status=Active".into(),
        },
    ];

    println!(
        "sim_load: {requests} requests a scenario, {connections} keep-alive connections, {tasks} tasks in the simulator"
    );
    println!(
        "{:<40} {:>10} {:>9} {:>9} {:>9} {:>6}",
        "scenario", "req/s", "p50", "p99", "ratio", "fails"
    );
    let mut baseline = None;
    for scenario in &scenarios {
        let url = format!("{base}{}", scenario.path);
        // Warm the pool and the caches; not measured.
        client_rt.block_on(load(&client, &url, requests / 10, connections));
        let figures = client_rt.block_on(load(&client, &url, requests, connections));
        let base_rate = *baseline.get_or_insert(figures.per_second);
        println!(
            "{:<40} {:>10.0} {:>7.2}ms {:>7.2}ms {:>9.2} {:>6}",
            scenario.name,
            figures.per_second,
            figures.p50.as_secs_f64() * 1000.0,
            figures.p99.as_secs_f64() * 1000.0,
            figures.per_second / base_rate,
            figures.failures
        );
    }
    server_rt.block_on(server.stop());
}

/// Sends `total` GETs over `connections` concurrent workers.
async fn load(client: &reqwest::Client, url: &str, total: usize, connections: usize) -> Figures {
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..connections {
        let share = total / connections + usize::from(w < total % connections);
        let client = client.clone();
        let url = url.to_string();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(share);
            let mut failures = 0;
            for _ in 0..share {
                let t = Instant::now();
                let ok = match client.get(&url).bearer_auth(TOKEN).send().await {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                latencies.push(t.elapsed());
                failures += usize::from(!ok);
            }
            (latencies, failures)
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    let mut failures = 0;
    for w in workers {
        let (l, f) = w.await.expect("a worker");
        latencies.extend(l);
        failures += f;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Figures {
        per_second: total as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
        failures,
    }
}
