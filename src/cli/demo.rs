//! `handoff demo`: the seed story on one machine, over real HTTP.
//!
//! It starts the simulator in-process on a free port, starts a waiting
//! instance through the NWC API, and runs the shipped
//! `flows/complete-nwc-task.yaml` against it with the engine, clock and
//! transport a real run uses. Only the poll interval is shortened. It ends by
//! reading the instance back from the simulator: resumed, with its outcome.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::cli::console::{Look, Printer, run_live};
use crate::cli::report::{Style, TraceFormat};
use crate::engine::Engine;
use crate::language::analyze::analyze;
use crate::language::diagnostic::{Diagnostic, render_all};
use crate::language::source::Source;
use crate::run::clock::{SystemClock, format_duration};
use crate::run::inputs::{Inputs, initial_state};
use crate::run::trace::RunStatus;
use crate::run::transport::ReqwestTransport;
use crate::sim;
use crate::sim::shared::SimConfig;

use crate::cli::common::{
    Colors, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, TraceArg, duration_arg, trace_format,
};

/// The flow a user runs, built in so the demo works from any directory.
pub const FLOW_PATH: &str = "flows/complete-nwc-task.yaml";
const FLOW_TEXT: &str = include_str!("../../flows/complete-nwc-task.yaml");

pub struct DemoOptions {
    pub task_delay: Duration,
    pub poll_interval: Duration,
    pub outcome: String,
    pub format: TraceFormat,
    /// For stdout.
    pub style: Style,
    /// For stderr.
    pub err_style: Style,
}

/// What the demo ended with; the CLI turns it into an exit code.
pub enum DemoEnd {
    Resumed,
    Failed,
    Interrupted,
}

pub async fn run(options: DemoOptions) -> Result<DemoEnd, String> {
    let style = options.style;
    // A fresh token each time: nothing to configure, and nothing worth stealing.
    let mut ids = sim::model::Ids::new(seed_from_time());
    let token = ids.token("demo-");
    let config = SimConfig {
        token: token.clone(),
        task_delay: options.task_delay,
        seed: ids.next_u64(),
        // As current NWC may: only the assignment form completes a task.
        legacy_task_patch: false,
        ..SimConfig::default()
    };
    let server = sim::start(
        config,
        Arc::new(SystemClock::new()),
        "127.0.0.1:0".parse().expect("static address parses"),
    )
    .await
    .map_err(|e| format!("cannot start the simulator: {e}"))?;
    let base = server.base_url.clone();
    crate::run::transport::install_crypto();
    let client = reqwest::Client::new();
    let instance_id = start_instance(&client, &base, options.task_delay).await?;

    println!(
        "{} a local NWC simulator is listening on {base}",
        style.bold("handoff demo ·")
    );
    println!(
        "  started instance {instance_id}; NWC creates its task in {}, assigned to {SERVICE_ACCOUNT} and {PERSON}",
        format_duration(options.task_delay)
    );
    println!(
        "  running {FLOW_PATH} with instance_id={instance_id}, poll_interval={}, outcome={}",
        format_duration(options.poll_interval),
        options.outcome
    );
    println!(
        "  {}",
        style.dim("(NWC_BASE_URL and NWC_TOKEN point at the simulator; the token is generated and never shown)")
    );
    println!();

    let source = Source::new(FLOW_PATH, FLOW_TEXT);
    let checked = analyze(&source).map_err(|d| diagnostics(&d))?;
    let flow = checked.flow;
    let inputs = Inputs {
        set: vec![
            ("instance_id".into(), instance_id.clone()),
            (
                "poll_interval".into(),
                format_duration(options.poll_interval),
            ),
            ("outcome".into(), options.outcome.clone()),
        ],
        ..Inputs::default()
    };
    let env = |name: &str| match name {
        "NWC_BASE_URL" => Some(base.clone()),
        "NWC_TOKEN" => Some(token.clone()),
        "NWC_ASSIGNEE" => Some(SERVICE_ACCOUNT.into()),
        _ => std::env::var(name).ok(),
    };
    let state = initial_state(&flow, &inputs, &env).map_err(|d| diagnostics(&d))?;
    let transport = ReqwestTransport::new().map_err(|e| e.to_string())?;
    let clock = SystemClock::new();
    let engine = Engine {
        run_id: crate::run::trace::new_run_id(std::time::SystemTime::now()),
        flow: &flow,
        clock: &clock,
        transport: &transport,
        dry_run: false,
        durable: None,
        stop: None,
        tokens: None,
        traced: true,
        signals: None,
    };
    let look = Look {
        format: options.format,
        out: style,
        err: options.err_style,
        quiet: false,
    };
    let mut printer = Printer::new(look, None, false);
    let Some(result) = run_live(&engine, state, &mut printer).await else {
        return Ok(DemoEnd::Interrupted);
    };

    let polls = server
        .shared
        .log
        .since(0)
        .iter()
        .filter(|r| {
            r["method"] == "GET"
                && r["path"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("/workflows/v2/tasks?"))
        })
        .count();
    let instance = get_instance(&client, &base, &token, &instance_id).await?;
    let state = crate::sim::control::state_json(&server.shared);
    let task = state["tasks"].as_array().and_then(|tasks| {
        tasks
            .iter()
            .find(|t| t["workflowInstanceId"] == instance_id.as_str())
    });
    let completions = task.and_then(|t| t["completions"].as_u64()).unwrap_or(0);
    // Whose assignment was completed, as the simulator saw it.
    let completed_by = task
        .and_then(|t| t["taskAssignments"].as_array())
        .and_then(|list| list.iter().find(|a| a["status"] == "complete"))
        .and_then(|a| a["assignee"].as_str())
        .unwrap_or("nobody")
        .to_string();
    server.stop().await;
    println!();
    let status = instance["status"].as_str().unwrap_or("unknown");
    let outcome = instance["outcome"].as_str();
    match (result.outcome.status, outcome) {
        (RunStatus::Succeeded, Some(outcome)) => {
            println!(
                "{} instance {instance_id} resumed: status {status}, continued down the `{outcome}` branch",
                style.green("✔")
            );
            println!(
                "  its task was found on poll {polls} ({} empty, {} apart) and completed {} through {completed_by}'s assignment",
                polls.saturating_sub(1),
                format_duration(options.poll_interval),
                match completions {
                    1 => "once".to_string(),
                    n => format!("{n} times"),
                }
            );
            Ok(DemoEnd::Resumed)
        }
        _ => {
            println!(
                "{} instance {instance_id} did not resume: status {status} after {polls} poll{}",
                style.red("✘"),
                if polls == 1 { "" } else { "s" }
            );
            Ok(DemoEnd::Failed)
        }
    }
}

fn diagnostics(d: &[Diagnostic]) -> String {
    render_all(d, false)
}

fn seed_from_time() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    nanos ^ u64::from(std::process::id()).rotate_left(32)
}

/// The service account the worker completes as, and a person the task is
/// also assigned to, whose assignment must be left alone.
const SERVICE_ACCOUNT: &str = crate::sim::model::DEFAULT_ASSIGNEE;
const PERSON: &str = "inspector@contoso.com";

/// Starts a waiting instance through the simulator's control endpoint, which
/// can give its task two assignments.
async fn start_instance(
    client: &reqwest::Client,
    base: &str,
    delay: Duration,
) -> Result<String, String> {
    let response = client
        .post(format!("{base}/_sim/instances"))
        .json(&serde_json::json!({
            "delay": format!("{}ms", delay.as_millis()),
            "assignees": [SERVICE_ACCOUNT, PERSON],
            "start_data": { "se_container": "MSKU 123456-7" },
        }))
        .send()
        .await
        .map_err(|e| format!("cannot start an instance on the simulator: {e}"))?;
    let body: Value = response
        .json()
        .await
        .map_err(|e| format!("the simulator's answer to starting an instance: {e}"))?;
    body["instances"][0]["id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| "the simulator did not return an instance id".to_string())
}

async fn get_instance(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    id: &str,
) -> Result<Value, String> {
    client
        .get(format!("{base}/workflows/v2/instances/{id}"))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| format!("cannot read the instance back: {e}"))?
        .json()
        .await
        .map_err(|e| format!("the simulator's instance: {e}"))
}

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// How long until NWC creates the task.
    #[arg(long, default_value = "3s", value_parser = duration_arg)]
    pub task_delay: std::time::Duration,
    /// How long the flow waits between polls.
    #[arg(long, default_value = "1s", value_parser = duration_arg)]
    pub poll_interval: std::time::Duration,
    /// The outcome to complete the task with.
    #[arg(long, default_value = "Completed")]
    pub outcome: String,
    /// How the trace is printed.
    #[arg(long, value_enum, default_value_t = TraceArg::Pretty)]
    pub trace: TraceArg,
}

pub async fn demo_command(args: DemoArgs, color: Colors) -> i32 {
    let options = crate::cli::demo::DemoOptions {
        task_delay: args.task_delay,
        poll_interval: args.poll_interval,
        outcome: args.outcome,
        format: trace_format(args.trace),
        style: Style { color: color.out },
        err_style: Style { color: color.err },
    };
    match crate::cli::demo::run(options).await {
        Ok(crate::cli::demo::DemoEnd::Resumed) => EXIT_OK,
        Ok(crate::cli::demo::DemoEnd::Failed) => EXIT_FAILED,
        Ok(crate::cli::demo::DemoEnd::Interrupted) => EXIT_INTERRUPTED,
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_FAILED
        }
    }
}
