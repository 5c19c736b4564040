//! The command line: `handoff run`, `check`, `sim` and `demo`, with the
//! live [`console`] and the trace [`report`]s they print.
//!
//! [`run`] takes the arguments and returns the exit code, so `main.rs` stays
//! trivial and every exit code is decided here:
//! 0 success, 1 the run failed, 2 invalid flow, inputs or usage, 130 interrupted.

mod batch;
pub mod console;
pub mod demo;
pub mod diff;
pub mod graph;
mod offload;
pub mod plan;
pub mod report;
mod runs;
pub mod schema;
mod serve;
mod test;

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use clap::{Parser, Subcommand, ValueEnum};

use crate::analyze::{analyze, read_source};
use crate::clock::{Clock, SystemClock, VirtualClock};
use crate::console::{Look, Printer, run_live};
use crate::diagnostic::{Diagnostic, Severity, render_all};
use crate::engine::{Engine, Inputs, initial_state};
use crate::flow::Flow;
use crate::mock::{Mock, MockTransport};
use crate::report::{Style, TraceFormat};
use crate::sim::SimConfig;
use crate::trace::RunStatus;
use crate::transport::{ReqwestTransport, Transport};

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_INVALID: i32 = 2;
pub const EXIT_INTERRUPTED: i32 = 130;

#[derive(Parser, Debug)]
#[command(
    name = "handoff",
    version,
    about = "Run YAML flows that automate a worker against REST APIs, such as completing a Nintex Workflow Cloud task."
)]
pub struct Cli {
    /// When to colour output.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

/// Whether each stream gets colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Colors {
    pub out: bool,
    pub err: bool,
}

impl Colors {
    /// `--color always|never` decide; with `auto`, a non-empty `NO_COLOR`
    /// turns colour off, a `CLICOLOR_FORCE` other than `0` turns it on,
    /// and otherwise each stream is coloured when it is a terminal.
    pub fn resolve(
        choice: ColorChoice,
        env: &dyn Fn(&str) -> Option<String>,
        out_tty: bool,
        err_tty: bool,
    ) -> Colors {
        let set = |var: &str| env(var).is_some_and(|v| !v.is_empty());
        let decide = |tty: bool| match choice {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto if set("NO_COLOR") => false,
            ColorChoice::Auto
                if set("CLICOLOR_FORCE") && env("CLICOLOR_FORCE").as_deref() != Some("0") =>
            {
                true
            }
            ColorChoice::Auto => tty,
        };
        Colors {
            out: decide(out_tty),
            err: decide(err_tty),
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a flow, for real or as a dry run against scripted responses.
    #[command(after_help = "Examples:
  handoff run flows/complete-nwc-task.yaml --set instance_id=7c1e… (reads $NWC_TOKEN, $NWC_BASE_URL)
  handoff run flows/complete-nwc-task.yaml --mock flows/complete-nwc-task.mock.yaml \\
      --set instance_id=7c1e --set token=dry-run --trace jsonl")]
    Run(RunArgs),
    /// Load and validate flows (and `*.mock.yaml` and `*.test.yaml` files) without running them.
    #[command(after_help = "Example:
  handoff check flows/*.yaml")]
    Check(CheckArgs),
    /// Serve a local NWC simulator to run flows against.
    #[command(after_help = "Examples:
  handoff sim                                  (http://127.0.0.1:8787, token `sim-token`)
  handoff sim --port 0 --task-delay 10s --instances 2
  NWC_BASE_URL=http://127.0.0.1:8787 NWC_TOKEN=sim-token handoff run flows/complete-nwc-task.yaml --set instance_id=…

Control endpoints (no token): POST /_sim/instances, POST|GET|DELETE /_sim/faults,
GET /_sim/state, GET /_sim/requests. See docs/simulator.md.")]
    Sim(SimArgs),
    /// Go on with durable runs from their last checkpoint, after a crash or a restart.
    #[command(after_help = "Examples:
  handoff resume 0190b1e2-…            (one run; its trace continues here)
  handoff resume --all                 (every unfinished run in the store)")]
    Resume(runs::ResumeArgs),
    /// List the durable runs in the store; show one, or cancel it.
    #[command(after_help = "Examples:
  handoff runs --status waiting
  handoff runs show 0190b1e2-… --trace jsonl
  handoff runs cancel 0190b1e2-…")]
    Runs(runs::RunsArgs),
    /// Serve a folder of flows as a worker: runs started by the API or a webhook, kept in the store.
    #[command(after_help = "Examples:
  handoff serve flows/                              (http://127.0.0.1:8080, store ./handoff.db)
  HANDOFF_API_TOKEN=… handoff serve flows/ --listen 0.0.0.0:8080
  curl -X POST localhost:8080/v1/flows/complete-nwc-task/runs -d '{\"inputs\": {\"instance_id\": \"…\"}}'

See docs/serve.md for the API, hooks, signatures and deployment.")]
    Serve(serve::ServeArgs),
    /// Draw a flow as a Mermaid flowchart or a Graphviz graph, with the path a run took.
    #[command(after_help = "Examples:
  handoff graph flows/complete-nwc-task.yaml > flow.mmd       (paste into a ```mermaid block)
  handoff graph flows/complete-nwc-task.yaml --format dot | dot -Tsvg > flow.svg
  handoff graph flows/complete-nwc-task.yaml --trace run.jsonl  (the steps a run took)
  handoff graph flows/complete-nwc-task.yaml --run 0190b1e2-…   (a durable run, from the store)")]
    Graph(GraphArgs),
    /// Work out a flow's worst case before it runs: loops, steps, requests and time.
    #[command(after_help = "Example:
  handoff plan flows/complete-nwc-task.yaml --format json")]
    Plan(PlanArgs),
    /// Show where two runs part: two JSONL traces, aligned event by event.
    #[command(after_help = "Example:
  handoff diff recorded.jsonl replayed.jsonl          (exit 0: the same, 1: they differ)")]
    Diff(DiffArgs),
    /// Run the cases of `*.test.yaml` files: dry runs checked against what they expect.
    #[command(after_help = "Examples:
  handoff test                                   (every *.test.yaml under the current folder)
  handoff test flows/complete-nwc-task.test.yaml --case 'third poll'
  handoff test --snapshot                        (also compare each case's whole trace with its stored .trace)
  handoff test --update                          (write the stored traces)
  handoff test --report junit=results.xml        (for CI)

Exit codes: 0 every case passed, 1 a case failed, 2 a test file is invalid.")]
    Test(test::TestArgs),
    /// Print the JSON Schema of flow, mock and test files, for editors.
    #[command(after_help = "Example:
  handoff schema > schema/handoff.schema.json
Then, as the first line of a flow, a mock or a test file (VS Code's YAML extension, Neovim):
  # yaml-language-server: $schema=../schema/handoff.schema.json")]
    Schema,
    /// Print a shell's completion script: bash, zsh, fish, powershell or elvish.
    #[command(after_help = "Examples:
  handoff completions bash > ~/.local/share/bash-completion/completions/handoff
  handoff completions zsh > ~/.zfunc/_handoff        (with `fpath+=~/.zfunc` before `compinit`)
  handoff completions fish > ~/.config/fish/completions/handoff.fish")]
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff), for `man -l -` or a man directory.
    #[command(after_help = "Example:
  handoff man > ~/.local/share/man/man1/handoff.1 && man handoff")]
    Man,
    /// Run the reference flow against an in-process simulator, over real HTTP.
    #[command(after_help = "Example:
  handoff demo --task-delay 5s --poll-interval 2s")]
    Demo(DemoArgs),
}

#[derive(clap::Args, Debug)]
pub struct SimArgs {
    /// The port to listen on; 0 picks a free one.
    #[arg(long, default_value_t = 8787)]
    pub port: u16,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// The personal access token the simulator accepts.
    #[arg(long, env = "HANDOFF_SIM_TOKEN", default_value = crate::sim::DEFAULT_TOKEN, hide_env_values = true)]
    pub token: String,
    /// The client id `POST /authentication/v1/token` accepts.
    #[arg(long, default_value = "sim-client")]
    pub client_id: String,
    /// The client secret `POST /authentication/v1/token` accepts.
    #[arg(
        long,
        env = "HANDOFF_SIM_CLIENT_SECRET",
        default_value = "sim-secret",
        hide_env_values = true
    )]
    pub client_secret: String,
    /// How long after an instance starts NWC creates its task.
    #[arg(long, default_value = "2s", value_parser = duration_arg)]
    pub task_delay: std::time::Duration,
    /// Tasks per page before `nextLink`.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub page_size: u32,
    /// Seed for ids, so a session can be replayed; random when absent.
    #[arg(long)]
    pub seed: Option<u64>,
    /// How far back a task list without `from` reaches.
    #[arg(long, default_value = "30days", value_parser = duration_arg)]
    pub window: std::time::Duration,
    /// The status of a successful completion: 204 (no body) or 200 (the task).
    #[arg(long, default_value_t = 204, value_parser = complete_status)]
    pub complete_status: u16,
    /// The status for completing a task that is already complete: 409 or 400.
    #[arg(long, default_value_t = 409, value_parser = conflict_status)]
    pub conflict_status: u16,
    /// How long an app token from `POST /authentication/v1/token` is accepted.
    #[arg(long, default_value = "1h", value_parser = duration_arg)]
    pub token_ttl: std::time::Duration,
    /// Refuse the task-level completion (`PATCH /workflows/v1/tasks/{id}`),
    /// as current NWC may: only the assignment form works then.
    #[arg(long)]
    pub no_legacy_task_patch: bool,
    /// Start this many waiting instances, and print their ids.
    #[arg(long, default_value_t = 0)]
    pub instances: u32,
    /// Do not print a line per request.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(clap::Args, Debug)]
pub struct GraphArgs {
    /// The flow file.
    pub flow: PathBuf,
    /// Mermaid (for Markdown on GitHub and most editors) or Graphviz DOT.
    #[arg(long, value_enum, default_value_t = GraphFormat::Mermaid)]
    pub format: GraphFormat,
    /// Highlight the steps a run took, from its JSONL trace (`--trace-file run.jsonl`).
    #[arg(long, value_name = "FILE", conflicts_with = "run")]
    pub trace: Option<PathBuf>,
    /// Highlight the steps a durable run took, from the store.
    #[arg(long, value_name = "RUN_ID")]
    pub run: Option<String>,
    #[command(flatten)]
    pub store: runs::StoreArg,
}

#[derive(clap::Args, Debug)]
pub struct PlanArgs {
    /// The flow file.
    pub flow: PathBuf,
    /// Text for people, or JSON for scripts.
    #[arg(long, value_enum, default_value_t = DiffFormat::Text)]
    pub format: DiffFormat,
}

#[derive(clap::Args, Debug)]
pub struct DiffArgs {
    /// The first trace (JSONL, as `--trace-file run.jsonl` writes it).
    pub a: PathBuf,
    /// The second trace.
    pub b: PathBuf,
    /// Text for people, or JSON for scripts.
    #[arg(long, value_enum, default_value_t = DiffFormat::Text)]
    pub format: DiffFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum DiffFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum GraphFormat {
    Mermaid,
    Dot,
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

async fn sim_command(args: SimArgs) -> i32 {
    let custom_token = args.token != crate::sim::DEFAULT_TOKEN;
    let config = SimConfig {
        token: args.token,
        client_id: args.client_id,
        client_secret: args.client_secret,
        task_delay: args.task_delay,
        page_size: args.page_size as usize,
        seed: args.seed.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        }),
        window: args.window,
        complete_status: args.complete_status,
        conflict_status: args.conflict_status,
        print_requests: !args.quiet,
        token_ttl: args.token_ttl,
        issued_token_prefix: "sim-app-".to_string(),
        legacy_task_patch: !args.no_legacy_task_patch,
    };
    let addr = std::net::SocketAddr::new(args.host, args.port);
    let server = match crate::sim::start(config, Arc::new(SystemClock::new()), addr).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "error: cannot listen on {addr}: {}",
                crate::analyze::io_reason(&e)
            );
            if e.kind() == std::io::ErrorKind::AddrInUse {
                eprintln!("help: pick another port with `--port N`, or `--port 0` for a free one");
            }
            return EXIT_FAILED;
        }
    };
    let base = server.base_url.clone();
    // The first line is the base URL, so scripts can read it.
    println!("handoff sim listening on {base}");
    let token_shown = if custom_token {
        "$NWC_TOKEN (the value given with --token)".to_string()
    } else {
        crate::sim::DEFAULT_TOKEN.to_string()
    };
    println!("  point a flow at it: NWC_BASE_URL={base} NWC_TOKEN={token_shown}");
    println!(
        "  control: POST /_sim/instances · POST|GET|DELETE /_sim/faults · GET /_sim/state · GET /_sim/requests"
    );
    if args.instances > 0 {
        let now = server.shared.clock.now();
        let mut world = server.shared.lock_world();
        for _ in 0..args.instances {
            let spec = crate::sim::model::InstanceSpec::new(args.task_delay);
            let (id, task) = world.start_instance(spec, now);
            println!("  instance {id} waits on task {task}");
        }
    }
    println!("  Ctrl-C stops it");
    let _ = std::io::stdout().flush();
    match server
        .serve_until(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
    {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("error: the simulator stopped: {e}");
            EXIT_FAILED
        }
    }
}

async fn demo_command(args: DemoArgs, color: Colors) -> i32 {
    let options = crate::demo::DemoOptions {
        task_delay: args.task_delay,
        poll_interval: args.poll_interval,
        outcome: args.outcome,
        format: trace_format(args.trace),
        style: Style { color: color.out },
        err_style: Style { color: color.err },
    };
    match crate::demo::run(options).await {
        Ok(crate::demo::DemoEnd::Resumed) => EXIT_OK,
        Ok(crate::demo::DemoEnd::Failed) => EXIT_FAILED,
        Ok(crate::demo::DemoEnd::Interrupted) => EXIT_INTERRUPTED,
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_FAILED
        }
    }
}

fn complete_status(text: &str) -> Result<u16, String> {
    one_of(text, &[204, 200])
}

fn conflict_status(text: &str) -> Result<u16, String> {
    one_of(text, &[409, 400])
}

fn one_of(text: &str, allowed: &[u16]) -> Result<u16, String> {
    text.parse()
        .ok()
        .filter(|n| allowed.contains(n))
        .ok_or_else(|| format!("expected one of {allowed:?}"))
}

fn duration_arg(text: &str) -> Result<std::time::Duration, String> {
    crate::clock::parse_duration(text)
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The flow file.
    pub flow: PathBuf,
    /// Set an input field: NAME=VALUE. Repeatable.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub set: Vec<String>,
    /// Read input fields from a JSON or YAML mapping.
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Run on a virtual clock against scripted responses; no connection is opened.
    #[arg(long)]
    pub dry_run: bool,
    /// Scripted responses for a dry run (implies --dry-run).
    #[arg(long, value_name = "FILE")]
    pub mock: Option<PathBuf>,
    /// How the trace is printed.
    #[arg(long, value_enum, default_value_t = TraceArg::Pretty)]
    pub trace: TraceArg,
    /// Also write the trace to a file: JSONL for `.jsonl`/`.json`, else as --trace.
    #[arg(long, value_name = "PATH")]
    pub trace_file: Option<PathBuf>,
    /// Print only the final line (for cron); a --trace-file is still written whole.
    #[arg(long, short)]
    pub quiet: bool,
    /// Keep the run in the store, checkpointed after every step, so `handoff resume` can go on
    /// after a crash.
    #[arg(long)]
    pub durable: bool,
    #[command(flatten)]
    pub store: runs::StoreArg,
    /// One run per row of FILE: JSON lines, or CSV with a header (`-` reads stdin).
    /// A row's keys are the flow's inputs; `--set` fills in what a row leaves out.
    /// With --durable, a rerun skips the rows whose run succeeded.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["input", "trace_file"])]
    pub each: Option<PathBuf>,
    /// With --each: runs at a time (also the requests in flight to one host).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub jobs: u32,
    /// With --mock: every request must be the one the recording (`--record`) has, and no more.
    #[arg(long, requires = "mock")]
    pub strict: bool,
    /// Write every answer the run receives as a mock file, to replay the run offline with --mock.
    /// With --each, a folder: a file a row, `row-00042.mock.yaml`.
    #[arg(long, value_name = "FILE.mock.yaml", conflicts_with_all = ["mock", "dry_run"])]
    pub record: Option<PathBuf>,
    /// With --each: a JSONL trace file a run in this folder (`row-00042-<first input>.jsonl`).
    #[arg(long, value_name = "DIR", requires = "each")]
    pub trace_dir: Option<PathBuf>,
    /// With --each: at most this many requests a second, for the whole batch (`20` or `20/s`).
    #[arg(long, value_name = "N/s", value_parser = rate_arg, requires = "each")]
    pub rate: Option<f64>,
}

/// `20` or `20/s`: requests a second.
fn rate_arg(text: &str) -> Result<f64, String> {
    let number = text.trim().trim_end_matches("/s");
    match number.parse::<f64>() {
        Ok(n) if n > 0.0 && n.is_finite() => Ok(n),
        _ => Err("a rate is requests a second, such as `20` or `20/s`".to_string()),
    }
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum TraceArg {
    Pretty,
    Jsonl,
}

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Flow files, mock files named `NAME.mock.yaml` and test files named
    /// `NAME.test.yaml` next to `NAME.yaml`.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Also check these mock files against the flow (one flow file), whatever their names.
    #[arg(long, value_name = "MOCK")]
    pub mock: Vec<PathBuf>,
}

/// Parses the arguments and runs the command. Returns the exit code.
pub fn run<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    quiet_panics();
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                EXIT_INVALID
            } else {
                EXIT_OK
            };
        }
    };
    match &cli.command {
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut command, "handoff", &mut std::io::stdout());
            return EXIT_OK;
        }
        Command::Man => {
            let command = <Cli as clap::CommandFactory>::command();
            return match clap_mangen::Man::new(command).render(&mut std::io::stdout()) {
                Ok(()) => EXIT_OK,
                Err(e) => {
                    eprintln!("error: cannot write the man page: {e}");
                    EXIT_FAILED
                }
            };
        }
        _ => {}
    }
    let color = Colors::resolve(
        cli.color,
        &|var| std::env::var(var).ok(),
        std::io::stdout().is_terminal(),
        std::io::stderr().is_terminal(),
    );
    // `run` (one run, or a batch of thousands) waits on the network, and on
    // one thread its runs, their connections and their timers wake each
    // other without crossing threads: a batch did a third of its work in
    // the scheduler when they did. `serve` and the simulator take requests
    // from many clients at once, on every core.
    let one_thread = matches!(cli.command, Command::Run(_));
    let mut builder = if one_thread {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2);
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return EXIT_FAILED;
        }
    };
    match cli.command {
        Command::Run(args) => runtime.block_on(run_command(args, color)),
        Command::Check(args) => check_command(&args, color),
        Command::Sim(args) => runtime.block_on(sim_command(args)),
        Command::Demo(args) => runtime.block_on(demo_command(args, color)),
        // Answered above, before a runtime is started.
        Command::Completions { .. } | Command::Man => EXIT_OK,
        Command::Resume(args) => runtime.block_on(runs::resume_command(args, color)),
        Command::Runs(args) => runtime.block_on(runs::runs_command(args, color)),
        Command::Serve(args) => runtime.block_on(serve::serve_command(args, color)),
        Command::Graph(args) => runtime.block_on(graph_command(args, color)),
        Command::Diff(args) => diff_command(&args, color),
        Command::Test(args) => runtime.block_on(test::test_command(args, color)),
        Command::Schema => {
            let text = serde_json::to_string_pretty(&schema::schema()).unwrap_or_default();
            println!("{text}");
            EXIT_OK
        }
        Command::Plan(args) => match crate::analyze::analyze_file(&args.flow.to_string_lossy()) {
            Ok(checked) => {
                let plan = plan::plan(&checked.flow);
                match args.format {
                    DiffFormat::Text => print!("{}", plan.text(&checked.flow)),
                    DiffFormat::Json => println!("{}", plan.json(&checked.flow)),
                }
                EXIT_OK
            }
            Err(diagnostics) => {
                print_diagnostics(&diagnostics, color);
                EXIT_INVALID
            }
        },
    }
}

/// A panic is a bug, but its message could quote a value a step held, such
/// as a token: say where it happened, never what it said.
fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "error: handoff hit an internal error{place}. This is a bug; please report it. \
             (Its message is not shown, as it could hold a secret.)"
        );
    }));
}

pub(crate) fn print_diagnostics(diagnostics: &[Diagnostic], color: Colors) {
    let text = render_all(diagnostics, color.err);
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes());
}

fn check_command(args: &CheckArgs, color: Colors) -> i32 {
    let mut errors = 0;
    let mut warnings = 0;
    if !args.mock.is_empty() && args.files.len() != 1 {
        eprintln!(
            "error: `--mock` checks mock files against one flow, but {} files were given",
            args.files.len()
        );
        return EXIT_INVALID;
    }
    let flow_path = args.files[0].to_string_lossy().to_string();
    let checks = args
        .files
        .iter()
        .map(|p| (p.to_string_lossy().to_string(), None))
        .chain(
            args.mock
                .iter()
                .map(|m| (m.to_string_lossy().to_string(), Some(flow_path.clone()))),
        );
    let count = args.files.len() + args.mock.len();
    for (name, flow) in checks {
        let result = match flow {
            Some(flow) => check_mock(&name, &flow),
            None => check_one(&name),
        };
        let diagnostics = match result {
            Ok((summary, warns)) => {
                println!("ok  {name} ({summary})");
                warns
            }
            Err(diags) => diags,
        };
        errors += diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count();
        warnings += diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Warning)
            .count();
        print_diagnostics(&diagnostics, color);
    }
    if errors + warnings > 0 {
        eprintln!(
            "{}, {} in {} file(s)",
            plural(errors, "error"),
            plural(warnings, "warning"),
            count
        );
    }
    if errors > 0 { EXIT_INVALID } else { EXIT_OK }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// Checks a flow, or a mock file against the flow it sits next to.
fn check_one(path: &str) -> Result<(String, Vec<Diagnostic>), Vec<Diagnostic>> {
    let mock_of = path
        .strip_suffix(".mock.yaml")
        .map(|s| format!("{s}.yaml"))
        .or_else(|| path.strip_suffix(".mock.yml").map(|s| format!("{s}.yml")));
    if let Some(flow_path) = mock_of {
        return check_mock(path, &flow_path);
    }
    if crate::cases::is_test_file(std::path::Path::new(path)) {
        let file = crate::cases::load(path)?;
        return Ok((
            format!(
                "tests for {}, {}",
                file.flow_path,
                plural(file.cases.len(), "case")
            ),
            Vec::new(),
        ));
    }
    let source = read_source(path).map_err(|d| vec![d])?;
    let checked = analyze(&source)?;
    let flow = &checked.flow;
    let mut warnings = checked.warnings.clone();
    // The worst case, worked out as `handoff plan` does: a run that could
    // spend its step budget before it ends is worth a warning.
    if let Some(steps) = plan::plan(flow).total_steps()
        && steps > flow.max_steps
    {
        warnings.push(
            Diagnostic::warning(format!(
                "in the worst case a run takes {steps} steps, more than `max_steps: {}`",
                flow.max_steps
            ))
            .help(
                "raise `max_steps`, or lower the loop's bound; `handoff plan` shows the worst case",
            ),
        );
    }
    Ok((
        format!(
            "flow `{}`, {} fields, {} steps",
            flow.name,
            flow.fields.len(),
            flow.steps.len()
        ),
        warnings,
    ))
}

/// Checks a mock file against a flow.
fn check_mock(path: &str, flow_path: &str) -> Result<(String, Vec<Diagnostic>), Vec<Diagnostic>> {
    if !std::path::Path::new(flow_path).exists() {
        return Err(vec![
            Diagnostic::error(format!(
                "cannot check `{path}`: there is no flow `{flow_path}` next to it"
            ))
            .help(format!("name its flow: `handoff check FLOW --mock {path}`")),
        ]);
    }
    let checked = crate::analyze::analyze_file(flow_path).map_err(|_| {
        vec![
            Diagnostic::error(format!(
                "cannot check `{path}`: its flow `{flow_path}` does not load"
            ))
            .help(format!("`handoff check {flow_path}` shows why")),
        ]
    })?;
    let source = read_source(path).map_err(|d| vec![d])?;
    let mock = Mock::load(&source, &checked.flow)?;
    Ok((
        format!(
            "mock for {flow_path}, {} scripted responses",
            mock.entries.len()
        ),
        Vec::new(),
    ))
}

async fn run_command(args: RunArgs, color: Colors) -> i32 {
    let flow_name = args.flow.to_string_lossy().to_string();
    let source = match read_source(&flow_name) {
        Ok(s) => s,
        Err(d) => {
            print_diagnostics(&[d], color);
            return EXIT_INVALID;
        }
    };
    let checked = match analyze(&source) {
        Ok(c) => c,
        Err(diags) => {
            print_diagnostics(&diags, color);
            return EXIT_INVALID;
        }
    };
    print_diagnostics(&checked.warnings, color);
    let flow = checked.flow;
    if let Some(each) = &args.each {
        return batch::batch_command(&args, flow, each, color).await;
    }
    let inputs = match parse_inputs(&args) {
        Ok(i) => i,
        Err(diags) => {
            print_diagnostics(&diags, color);
            return EXIT_INVALID;
        }
    };
    let state = match initial_state(&flow, &inputs, &|var| std::env::var(var).ok()) {
        Ok(s) => s,
        Err(diags) => {
            print_diagnostics(&diags, color);
            return EXIT_INVALID;
        }
    };
    let dry_run = args.dry_run || args.mock.is_some();
    if dry_run && args.durable {
        eprintln!("error: `--durable` keeps real runs; a dry run has nothing to resume");
        return EXIT_INVALID;
    }
    if !dry_run {
        // About real credentials: a dry run's placeholder token may be short.
        print_diagnostics(&crate::inputs::secret_warnings(&flow, &state), color);
    }
    let virtual_clock = Arc::new(VirtualClock::new(SystemTime::now()));
    let system_clock = SystemClock::new();
    let (clock, transport): (&dyn Clock, Box<dyn Transport>) = if dry_run {
        let mock = match &args.mock {
            Some(path) => match load_mock(&path.to_string_lossy(), &flow) {
                Ok(m) => m,
                Err(diags) => {
                    print_diagnostics(&diags, color);
                    return EXIT_INVALID;
                }
            },
            None => Mock {
                entries: Vec::new(),
            },
        };
        (
            &*virtual_clock,
            Box::new({
                let replay = MockTransport::new(mock, virtual_clock.clone());
                if args.strict { replay.strict() } else { replay }
            }),
        )
    } else {
        match ReqwestTransport::new() {
            Ok(t) => (&system_clock, Box::new(t)),
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_FAILED;
            }
        }
    };
    let file = match open_trace_file(args.trace_file.as_deref(), args.trace) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let look = Look {
        format: trace_format(args.trace),
        out: Style { color: color.out },
        err: Style { color: color.err },
        quiet: args.quiet,
    };
    let mut printer = Printer::new(look, file, dry_run);
    let run_id = crate::trace::new_run_id(SystemTime::now());
    let runs = if args.durable {
        match runs::open_store(&args.store.target()).await {
            Ok(runs) => Some(runs),
            Err(code) => return code,
        }
    } else {
        None
    };
    let checkpoints = runs.as_ref().map(|r| r.checkpoints(&run_id));
    let mut _held = None;
    if let Some(runs) = &runs {
        if let Err(e) = runs
            .create(&run_id, &flow, &state, SystemTime::now(), None)
            .await
        {
            eprintln!("error: {e}");
            return EXIT_FAILED;
        }
        // This process holds the run while it lives; a resume waits for that.
        _held = Some(runs.hold(&run_id));
        eprintln!(
            "run {run_id} is durable: if it stops, `handoff resume {run_id}` goes on from its last step"
        );
    }
    let durable_id = args.durable.then(|| run_id.clone());
    let recording = args
        .record
        .as_ref()
        .map(|_| crate::record::Recording::new(&*transport));
    let sending: &dyn Transport = match &recording {
        Some(r) => r,
        None => &*transport,
    };
    let secrets_given = state.clone();
    let engine = Engine {
        run_id,
        flow: &flow,
        clock,
        transport: sending,
        dry_run,
        durable: checkpoints.as_ref().map(|c| crate::engine::Durable::new(c)),
        stop: None,
        tokens: None,
        traced: true,
    };
    let result = run_live(&engine, state, &mut printer).await;
    if let (Some(path), Some(recording)) = (&args.record, &recording) {
        match &result {
            Some(r) => {
                // Every secret the run knew, those it received included.
                let redactor = crate::redact::Redactor::for_run(
                    &flow.literal_secrets,
                    &[&secrets_given, &r.state],
                );
                let text = recording.mock_text(&flow.name, &redactor);
                match std::fs::write(path, text) {
                    Ok(()) => eprintln!(
                        "recorded the answers in `{}`; replay with `--mock {}`",
                        path.display(),
                        path.display()
                    ),
                    Err(e) => eprintln!(
                        "error: cannot write `{}`: {}",
                        path.display(),
                        crate::analyze::io_reason(&e)
                    ),
                }
            }
            // What it received may hold a secret it had not yet marked.
            None => eprintln!("the run was interrupted: no recording was written"),
        }
    }
    match result {
        Some(r) => exit_code(r.outcome.status),
        None => {
            if let Some(id) = durable_id {
                eprintln!("run {id} stopped; `handoff resume {id}` goes on from its last step");
            }
            EXIT_INTERRUPTED
        }
    }
}

fn diff_command(args: &DiffArgs, color: Colors) -> i32 {
    let (a, b) = match (report::read_trace(&args.a), report::read_trace(&args.b)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            return EXIT_INVALID;
        }
    };
    let names = (args.a.to_string_lossy(), args.b.to_string_lossy());
    let compared = diff::compare(
        &a,
        &b,
        (&names.0, &names.1),
        report::Style { color: color.out },
    );
    match args.format {
        DiffFormat::Text => print!("{}", compared.text),
        DiffFormat::Json => println!("{}", compared.json),
    }
    if compared.first.is_some() {
        EXIT_FAILED
    } else {
        EXIT_OK
    }
}

async fn graph_command(args: GraphArgs, color: Colors) -> i32 {
    let flow = match crate::analyze::analyze_file(&args.flow.to_string_lossy()) {
        Ok(checked) => checked.flow,
        Err(diagnostics) => {
            print_diagnostics(&diagnostics, color);
            return EXIT_INVALID;
        }
    };
    let events = if let Some(path) = &args.trace {
        match report::read_trace(path) {
            Ok(events) => Some(events),
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_INVALID;
            }
        }
    } else if let Some(id) = &args.run {
        let runs = match runs::existing_store(&args.store.target()).await {
            Ok(r) => r,
            Err(code) => return code,
        };
        match runs.trace(id).await {
            Ok(events) if !events.is_empty() => Some(events),
            Ok(_) => {
                eprintln!("error: there is no run `{id}` in the store, or it has no trace yet");
                return EXIT_INVALID;
            }
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_FAILED;
            }
        }
    } else {
        None
    };
    let taken = events.as_deref().map(graph::Taken::from_events);
    let text = match args.format {
        GraphFormat::Mermaid => graph::mermaid(&flow, taken.as_ref()),
        GraphFormat::Dot => graph::dot(&flow, taken.as_ref()),
    };
    print!("{text}");
    EXIT_OK
}

/// The `--trace-file`, when one was asked for: JSONL for `.jsonl` and
/// `.json`, else as `--trace`. An exit code when it cannot be written.
fn open_trace_file(
    path: Option<&std::path::Path>,
    trace: TraceArg,
) -> Result<Option<(TraceFormat, File)>, i32> {
    let Some(path) = path else {
        return Ok(None);
    };
    match File::create(path) {
        Ok(f) => {
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            let format = if matches!(ext, "jsonl" | "json") {
                TraceFormat::Jsonl
            } else {
                trace_format(trace)
            };
            Ok(Some((format, f)))
        }
        Err(e) => {
            eprintln!(
                "error: cannot write the trace file `{}`: {}",
                path.display(),
                crate::analyze::io_reason(&e)
            );
            Err(EXIT_INVALID)
        }
    }
}

pub fn exit_code(status: RunStatus) -> i32 {
    match status {
        RunStatus::Succeeded => EXIT_OK,
        RunStatus::Failed => EXIT_FAILED,
        RunStatus::Interrupted => EXIT_INTERRUPTED,
        RunStatus::Canceled => EXIT_FAILED,
    }
}

fn trace_format(arg: TraceArg) -> TraceFormat {
    match arg {
        TraceArg::Pretty => TraceFormat::Pretty,
        TraceArg::Jsonl => TraceFormat::Jsonl,
    }
}

fn load_mock(path: &str, flow: &Flow) -> Result<Mock, Vec<Diagnostic>> {
    let source = read_source(path).map_err(|d| vec![d])?;
    Mock::load(&source, flow)
}

fn parse_inputs(args: &RunArgs) -> Result<Inputs, Vec<Diagnostic>> {
    // The command line is the operator's: it may set `env:` fields too.
    let mut inputs = Inputs {
        set: crate::inputs::parse_set(&args.set)?,
        set_by: crate::inputs::Giver::Operator,
        file_by: crate::inputs::Giver::Operator,
        ..Inputs::default()
    };
    if let Some(path) = &args.input {
        let source = read_source(&path.to_string_lossy()).map_err(|d| vec![d])?;
        let node = crate::inputs::parse_input_file(&source).map_err(|d| vec![d])?;
        inputs.file = Some((source, node));
    }
    Ok(inputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_is_decided_for_each_stream() {
        let none = |_: &str| None;
        let c = Colors::resolve(ColorChoice::Auto, &none, true, false);
        assert_eq!(
            c,
            Colors {
                out: true,
                err: false
            },
            "stderr redirected"
        );
        let c = Colors::resolve(ColorChoice::Auto, &none, false, true);
        assert_eq!(
            c,
            Colors {
                out: false,
                err: true
            },
            "stdout redirected"
        );
        let no_color = |v: &str| (v == "NO_COLOR").then(|| "1".to_string());
        assert_eq!(
            Colors::resolve(ColorChoice::Auto, &no_color, true, true),
            Colors {
                out: false,
                err: false
            }
        );
        let force = |v: &str| (v == "CLICOLOR_FORCE").then(|| "1".to_string());
        assert_eq!(
            Colors::resolve(ColorChoice::Auto, &force, false, false),
            Colors {
                out: true,
                err: true
            }
        );
        let force_off = |v: &str| (v == "CLICOLOR_FORCE").then(|| "0".to_string());
        assert_eq!(
            Colors::resolve(ColorChoice::Auto, &force_off, false, false),
            Colors {
                out: false,
                err: false
            }
        );
        // The flag beats the environment.
        assert_eq!(
            Colors::resolve(ColorChoice::Always, &no_color, false, false),
            Colors {
                out: true,
                err: true
            }
        );
        assert_eq!(
            Colors::resolve(ColorChoice::Never, &force, true, true),
            Colors {
                out: false,
                err: false
            }
        );
    }
}
