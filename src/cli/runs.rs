//! The durable-run commands: `handoff resume` goes on from a run's last
//! checkpoint, and `handoff runs` lists, shows and cancels what the store
//! holds.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use clap::Subcommand;

use crate::cli::common::{
    Colors, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_INVALID, EXIT_OK, TraceArg, exit_code,
    open_trace_file, trace_format,
};
use crate::cli::console::{Look, Printer, run_live};
use crate::cli::report::{self, Style, TraceFormat};
use crate::engine::checkpoint::DurableStatus;
use crate::engine::{Durable, Engine};
use crate::run::clock::SystemClock;
use crate::run::clock::unix_ms;
use crate::run::trace::TraceEvent;
use crate::run::transport::ReqwestTransport;
use crate::store::RunFilter;
use crate::store::durable::DurableRuns;
use crate::store::seal::KeySource;

/// Where durable runs are kept.
#[derive(clap::Args, Debug)]
pub struct StoreArg {
    /// The run store: a SQLite file (its key file sits beside it), or a
    /// Postgres URL (`postgres://…`; also from $HANDOFF_STORE_URL) that
    /// several workers share. Default: handoff.db.
    #[arg(long, value_name = "PATH|URL", env = "HANDOFF_STORE", global = true)]
    pub store: Option<PathBuf>,
}

impl StoreArg {
    /// What to open: `--store`, else $HANDOFF_STORE_URL, else `handoff.db`.
    pub fn target(&self) -> PathBuf {
        self.store
            .clone()
            .or_else(|| {
                std::env::var("HANDOFF_STORE_URL")
                    .ok()
                    .filter(|u| !u.is_empty())
                    .map(PathBuf::from)
            })
            .unwrap_or_else(|| PathBuf::from("handoff.db"))
    }
}

#[derive(clap::Args, Debug)]
pub struct ResumeArgs {
    /// The run to go on with.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub id: Option<String>,
    /// Every run in the store that has not finished.
    #[arg(long)]
    pub all: bool,
    /// How the trace is printed (with --all, only each run's final line is).
    #[arg(long, value_enum, default_value_t = TraceArg::Pretty)]
    pub trace: TraceArg,
    /// Also write the trace to a file.
    #[arg(long, value_name = "PATH")]
    pub trace_file: Option<PathBuf>,
    #[command(flatten)]
    pub store: StoreArg,
}

#[derive(clap::Args, Debug)]
pub struct RunsArgs {
    #[command(subcommand)]
    pub action: Option<RunsAction>,
    /// Only runs with this status: waiting, running, succeeded, failed or canceled.
    #[arg(long, value_parser = status_arg)]
    pub status: Option<DurableStatus>,
    /// Only runs of this flow (its `flow:` name).
    #[arg(long)]
    pub flow: Option<String>,
    /// At most this many, newest first.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Only runs whose id or inputs hold this text (any case): an instance id finds its run.
    #[arg(long, value_name = "TEXT")]
    pub find: Option<String>,
    #[command(flatten)]
    pub store: StoreArg,
}

#[derive(Subcommand, Debug)]
pub enum RunsAction {
    /// A run's status, and its trace so far.
    Show {
        id: String,
        #[arg(long, value_enum, default_value_t = TraceArg::Pretty)]
        trace: TraceArg,
    },
    /// Cancel a run that has not finished: it stops at its next checkpoint.
    Cancel { id: String },
    /// Print a run's answers as a mock file, from its stored trace, to replay it offline with --mock.
    Record { id: String },
}

fn status_arg(text: &str) -> Result<DurableStatus, String> {
    DurableStatus::parse(text)
        .ok_or_else(|| "expected waiting, running, succeeded, failed or canceled".to_string())
}

/// Opens a store that must exist already: looking creates nothing.
pub async fn existing_store(path: &Path) -> Result<DurableRuns, i32> {
    let url = path.to_str().is_some_and(crate::store::postgres::is_url);
    if !url && !path.exists() {
        eprintln!(
            "error: there is no run store at `{}`; `handoff run --durable` creates one (or name it with --store)",
            path.display()
        );
        return Err(EXIT_INVALID);
    }
    open_store(path).await
}

/// Opens the store and its key; says where a new key file went.
pub async fn open_store(path: &Path) -> Result<DurableRuns, i32> {
    match DurableRuns::open_target(path, &|var| std::env::var(var).ok(), 4).await {
        Ok(runs) => {
            if let KeySource::NewFile(file) = &runs.key {
                eprintln!(
                    "note: created the key that seals secrets in the store: `{}` (mode 0600); keep it with the store, or set HANDOFF_STORE_KEY",
                    file.display()
                );
            }
            Ok(runs)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Err(EXIT_FAILED)
        }
    }
}

pub async fn resume_command(args: ResumeArgs, color: Colors) -> i32 {
    let runs = match existing_store(&args.store.target()).await {
        Ok(r) => r,
        Err(code) => return code,
    };
    let ids: Vec<String> = match &args.id {
        Some(id) => vec![id.clone()],
        None => {
            let filter = RunFilter {
                unfinished: true,
                ..RunFilter::default()
            };
            match runs.list(&filter).await {
                Ok(list) => list.into_iter().rev().map(|r| r.id).collect(),
                Err(e) => {
                    eprintln!("error: {e}");
                    return EXIT_FAILED;
                }
            }
        }
    };
    if ids.is_empty() {
        println!(
            "no unfinished runs in `{}`",
            crate::store::postgres::shown_target(&args.store.target())
        );
        return EXIT_OK;
    }
    let quiet = args.all;
    let file = if quiet {
        None
    } else {
        match open_trace_file(args.trace_file.as_deref(), args.trace) {
            Ok(f) => f,
            Err(code) => return code,
        }
    };
    let mut file = file;
    // Runs go on side by side: a run waiting in a timer does not hold up the others.
    let results = futures_util::future::join_all(ids.iter().map(|id| {
        let look = Look {
            format: trace_format(args.trace),
            out: Style { color: color.out },
            err: Style { color: color.err },
            quiet,
        };
        let file = file.take();
        let runs = &runs;
        async move {
            let code = resume_one(runs, id, look, file).await;
            (id.clone(), code)
        }
    }))
    .await;
    // The worst exit code wins: interrupted, then invalid, then failed.
    let mut code = EXIT_OK;
    for (id, c) in results {
        if quiet && c != EXIT_OK {
            eprintln!("run {id} ended with exit code {c}");
        }
        code = match (code, c) {
            (EXIT_INTERRUPTED, _) | (_, EXIT_INTERRUPTED) => EXIT_INTERRUPTED,
            (EXIT_INVALID, _) | (_, EXIT_INVALID) => EXIT_INVALID,
            (EXIT_FAILED, _) | (_, EXIT_FAILED) => EXIT_FAILED,
            _ => EXIT_OK,
        };
    }
    code
}

async fn resume_one(
    runs: &DurableRuns,
    id: &str,
    look: Look,
    file: Option<(TraceFormat, crate::cli::offload::Offload)>,
) -> i32 {
    let resumable = match runs.load(id).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_INVALID;
        }
    };
    if resumable.run.status.is_finished() {
        eprintln!(
            "error: run `{id}` has already ended: {}",
            resumable.run.status.as_str()
        );
        return EXIT_INVALID;
    }
    // One process at a time: never run it beside the process that still does.
    if let Err(e) = runs.claim(id).await {
        eprintln!("error: {e}");
        return EXIT_INVALID;
    }
    let _held = runs.hold(id);
    let transport = match ReqwestTransport::new() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_FAILED;
        }
    };
    let clock = SystemClock::new();
    let checkpoints = runs.checkpoints(id);
    let engine = Engine {
        run_id: id.to_string(),
        flow: &resumable.flow,
        clock: &clock,
        transport: &transport,
        dry_run: false,
        durable: Some(Durable {
            resumed: Some("the run went on from its last checkpoint".to_string()),
            ..Durable::new(&checkpoints)
        }),
        stop: None,
        tokens: None,
        traced: true,
        signals: None,
    };
    let mut printer = Printer::new(look, file, false);
    match run_live(&engine, resumable.state, &mut printer).await {
        Some(r) => {
            if look.quiet {
                // Say which run the final line is about.
                eprintln!("  (run {id})");
            }
            exit_code(r.outcome.status)
        }
        None => {
            eprintln!("run {id} stopped; `handoff resume {id}` goes on from its last step");
            EXIT_INTERRUPTED
        }
    }
}

pub async fn runs_command(args: RunsArgs, color: Colors) -> i32 {
    let runs = match existing_store(&args.store.target()).await {
        Ok(r) => r,
        Err(code) => return code,
    };
    match args.action {
        None => list(&runs, &args).await,
        Some(RunsAction::Show { id, trace }) => show(&runs, &id, trace, color).await,
        Some(RunsAction::Record { id }) => record(&runs, &id).await,
        Some(RunsAction::Cancel { id }) => {
            match runs
                .store
                .cancel(&id, unix_ms(SystemTime::now()), "`handoff runs cancel`")
                .await
            {
                Ok(true) => {
                    println!("canceled run {id}: it stops at its next checkpoint");
                    EXIT_OK
                }
                Ok(false) => {
                    eprintln!("error: run `{id}` is not in the store, or has already ended");
                    EXIT_INVALID
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    EXIT_FAILED
                }
            }
        }
    }
}

/// A stored run, or the exit code after saying why there is none.
async fn load_run(runs: &DurableRuns, id: &str) -> Result<crate::store::StoredRun, i32> {
    match runs.store.load(id).await {
        Ok(Some(run)) => Ok(run),
        Ok(None) => {
            eprintln!("error: there is no run `{id}` in the store");
            Err(EXIT_INVALID)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Err(EXIT_FAILED)
        }
    }
}

/// A stored run's answers as a mock file, on stdout.
async fn record(runs: &DurableRuns, id: &str) -> i32 {
    let run = match load_run(runs, id).await {
        Ok(run) => run,
        Err(code) => return code,
    };
    match runs.trace(id).await {
        Ok(events) => {
            // The inputs it started with, but never a secret one.
            let inputs = match crate::store::durable::pinned_flow(&run) {
                Ok(flow) => serde_json::from_str::<indexmap::IndexMap<String, serde_json::Value>>(
                    &run.inputs,
                )
                .unwrap_or_default()
                .into_iter()
                .filter(|(name, _)| flow.fields.get(name).is_some_and(|f| f.input && !f.secret))
                .collect(),
                Err(_) => indexmap::IndexMap::new(),
            };
            print!(
                "{}",
                crate::run::record::from_events(&run.flow, &events, &inputs)
            );
            EXIT_OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_FAILED
        }
    }
}

async fn list(runs: &DurableRuns, args: &RunsArgs) -> i32 {
    let filter = RunFilter {
        status: args.status,
        flow: args.flow.clone(),
        unfinished: false,
        limit: Some(args.limit),
        before: None,
        search: args.find.clone(),
        oldest_first: false,
    };
    let list = match runs.list(&filter).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_FAILED;
        }
    };
    if list.is_empty() {
        println!("no runs");
        return EXIT_OK;
    }
    println!(
        "{:<36}  {:<10}  {:<24}  {:<16}  {:>5}  UPDATED",
        "ID", "STATUS", "FLOW", "STEP", "STEPS"
    );
    for run in list {
        let step = match (run.status, run.wake_at_ms) {
            (DurableStatus::Waiting, Some(ms)) => format!(
                "{} until {}",
                run.step.clone().unwrap_or_default(),
                rfc3339_ms(ms)
            ),
            _ => run.step.clone().unwrap_or_default(),
        };
        println!(
            "{:<36}  {:<10}  {:<24}  {:<16}  {:>5}  {}",
            report::esc(&run.id),
            run.status.as_str(),
            report::esc(&run.flow),
            report::esc(&step),
            run.steps_taken,
            rfc3339_ms(run.updated_ms)
        );
    }
    EXIT_OK
}

async fn show(runs: &DurableRuns, id: &str, trace: TraceArg, color: Colors) -> i32 {
    let run = match load_run(runs, id).await {
        Ok(run) => run,
        Err(code) => return code,
    };
    let events = match runs.store.events(id).await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_FAILED;
        }
    };
    match trace {
        TraceArg::Jsonl => {
            for line in events {
                println!("{line}");
            }
        }
        TraceArg::Pretty => {
            println!(
                "run {} · {} · flow `{}` ({}, version {}) · {} steps",
                run.id,
                run.status.as_str(),
                report::esc(&run.flow),
                report::esc(&run.flow_path),
                crate::language::fields::clip(&run.flow_hash, 12),
                run.steps_taken
            );
            if let (DurableStatus::Waiting, Some(ms)) = (run.status, run.wake_at_ms) {
                println!(
                    "waiting in `{}` until {}",
                    run.step.unwrap_or_default(),
                    rfc3339_ms(ms)
                );
            }
            let style = Style { color: color.out };
            for line in events {
                match serde_json::from_str::<TraceEvent>(&line) {
                    Ok(event) => print!("{}", report::pretty(&event, style, None)),
                    Err(_) => println!("(an event that cannot be read)"),
                }
            }
        }
    }
    EXIT_OK
}

fn rfc3339_ms(ms: i64) -> String {
    crate::run::clock::rfc3339(crate::run::clock::from_unix_ms(ms))
}
