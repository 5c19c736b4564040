//! `handoff signal RUN NAME --data JSON`: signals a durable run that waits
//! in a `wait_for`, through its store. The run's own process (a durable
//! `handoff run`) reads its row and goes on; a run under `serve` is woken by
//! any worker on the store.

use std::path::PathBuf;

use serde_json::Value;

use crate::cli::common::{Colors, EXIT_FAILED, EXIT_INVALID, EXIT_OK};
use crate::cli::runs::StoreArg;
use crate::engine::checkpoint::DurableStatus;

#[derive(clap::Args, Debug)]
pub struct SignalArgs {
    /// The run's id.
    pub run: String,
    /// The signal's name, as its `wait_for` says.
    pub name: String,
    /// The signal's data: a JSON object, checked against the wait's `data:`.
    #[arg(long, value_name = "JSON", default_value = "{}")]
    pub data: String,
    #[command(flatten)]
    pub store: StoreArg,
}

pub async fn signal_command(args: SignalArgs, _color: Colors) -> i32 {
    let data: Value = match serde_json::from_str(&args.data) {
        Ok(v) => v,
        Err(e) => {
            eprintln!(
                "error: `--data` is not JSON: {}",
                e.to_string().split(" at line").next().unwrap_or("")
            );
            return EXIT_INVALID;
        }
    };
    let target: PathBuf = args.store.target();
    let runs = match crate::cli::runs::open_store(&target).await {
        Ok(r) => r,
        Err(code) => return code,
    };
    let run = match runs.store.load(&args.run).await {
        Ok(Some(run)) => run,
        Ok(None) => {
            eprintln!("error: there is no run `{}` in the store", args.run);
            return EXIT_INVALID;
        }
        Err(e) => {
            eprintln!("error: {}", e.0);
            return EXIT_FAILED;
        }
    };
    let flow = match crate::store::durable::pinned_flow(&run) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_FAILED;
        }
    };
    let Some(shape) = flow.steps.iter().find_map(|s| match &s.kind {
        crate::steps::StepKind::WaitFor(w) if w.signal == args.name => Some(&w.data),
        _ => None,
    }) else {
        eprintln!(
            "error: flow `{}` waits for no signal `{}`",
            flow.name, args.name
        );
        return EXIT_INVALID;
    };
    if let Err(problems) = shape.check(&data) {
        eprintln!(
            "error: the data does not fit `{}`'s `data:`: {}",
            args.name,
            problems.join("; ")
        );
        return EXIT_INVALID;
    }
    let n = run
        .waiting_for
        .as_deref()
        .filter(|_| run.status == DurableStatus::Waiting)
        .and_then(|w| w.split_once('#'))
        .filter(|(name, _)| *name == args.name)
        .and_then(|(_, k)| k.parse::<u64>().ok());
    let Some(n) = n else {
        eprintln!(
            "error: run `{}` is not waiting for signal `{}` ({})",
            run.id,
            args.name,
            run.status.as_str()
        );
        return EXIT_FAILED;
    };
    match runs.signal(&run.id, &args.name, n, data, "cli").await {
        Ok(true) => {
            eprintln!("signalled `{}` to run {}", args.name, run.id);
            EXIT_OK
        }
        Ok(false) => {
            eprintln!(
                "error: run `{}` has a signal `{}` already, or stopped waiting",
                run.id, args.name
            );
            EXIT_FAILED
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_FAILED
        }
    }
}
