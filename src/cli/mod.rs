//! The command line: one file per command (`run`, `check`, `sim`, `demo`,
//! `resume` and `runs`, `serve`, `graph`, `diff`, `test`, `plan`, `lsp`;
//! `run --each` in `batch`), what they share in [`common`], the live [`console`] and the
//! trace [`report`]s they print.
//!
//! [`main`] takes the arguments and returns the exit code, so `main.rs` stays
//! trivial and every exit code is decided here:
//! 0 success, 1 the run failed, 2 invalid flow, inputs or usage, 130 interrupted.

mod batch;
mod check;
pub mod common;
pub mod console;
pub mod demo;
pub mod diff;
pub mod graph;
pub mod lsp;
mod offload;
pub mod plan;
pub mod report;
mod run;
mod runs;
pub mod schema;
mod serve;
mod signal;
mod sim;
mod test;
mod unified;

use crate::cli::common::{ColorChoice, Colors, EXIT_FAILED, EXIT_INVALID, EXIT_OK};
use clap::{Parser, Subcommand};
use std::io::IsTerminal;

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

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a flow, for real or as a dry run against scripted responses.
    #[command(after_help = "Examples:
  handoff run flows/complete-nwc-task.yaml --set instance_id=7c1e… (reads $NWC_TOKEN, $NWC_BASE_URL)
  handoff run flows/complete-nwc-task.yaml --mock flows/complete-nwc-task.mock.yaml \\
      --set instance_id=7c1e --set token=dry-run --trace jsonl")]
    Run(run::RunArgs),
    /// Load and validate flows (and `*.mock.yaml` and `*.test.yaml` files) without running them.
    #[command(after_help = "Example:
  handoff check flows/*.yaml")]
    Check(check::CheckArgs),
    /// Serve a local NWC simulator to run flows against.
    #[command(after_help = "Examples:
  handoff sim                                  (http://127.0.0.1:8787, token `sim-token`)
  handoff sim --port 0 --task-delay 10s --instances 2
  NWC_BASE_URL=http://127.0.0.1:8787 NWC_TOKEN=sim-token handoff run flows/complete-nwc-task.yaml --set instance_id=…

Control endpoints (no token): POST /_sim/instances, POST|GET|DELETE /_sim/faults,
GET /_sim/state, GET /_sim/requests. See docs/simulator.md.")]
    Sim(sim::SimArgs),
    /// Go on with durable runs from their last checkpoint, after a crash or a restart.
    #[command(after_help = "Examples:
  handoff resume 0190b1e2-…            (one run; its trace continues here)
  handoff resume --all                 (every unfinished run in the store)")]
    Resume(crate::cli::runs::ResumeArgs),
    /// List the durable runs in the store; show one, or cancel it.
    #[command(after_help = "Examples:
  handoff runs --status waiting
  handoff runs show 0190b1e2-… --trace jsonl
  handoff runs cancel 0190b1e2-…")]
    Runs(crate::cli::runs::RunsArgs),
    /// Signal a durable run that waits in a `wait_for`, through its store.
    #[command(after_help = "Example:
  handoff signal 0190b1e2-… approval --data '{\"decision\": \"approve\", \"by\": \"dana\"}'")]
    Signal(crate::cli::signal::SignalArgs),
    /// Serve a folder of flows as a worker: runs started by the API or a webhook, kept in the store.
    #[command(after_help = "Examples:
  handoff serve flows/                              (http://127.0.0.1:8080, store ./handoff.db)
  HANDOFF_API_TOKEN=… handoff serve flows/ --listen 0.0.0.0:8080
  curl -X POST localhost:8080/v1/flows/complete-nwc-task/runs -d '{\"inputs\": {\"instance_id\": \"…\"}}'

See docs/serve.md for the API, hooks, signatures and deployment.")]
    Serve(crate::cli::serve::ServeArgs),
    /// Draw a flow as a Mermaid flowchart or a Graphviz graph, with the path a run took.
    #[command(after_help = "Examples:
  handoff graph flows/complete-nwc-task.yaml > flow.mmd       (paste into a ```mermaid block)
  handoff graph flows/complete-nwc-task.yaml --format dot | dot -Tsvg > flow.svg
  handoff graph flows/complete-nwc-task.yaml --trace run.jsonl  (the steps a run took)
  handoff graph flows/complete-nwc-task.yaml --run 0190b1e2-…   (a durable run, from the store)")]
    Graph(crate::cli::graph::GraphArgs),
    /// Work out a flow's worst case before it runs: loops, steps, requests and time.
    #[command(after_help = "Example:
  handoff plan flows/complete-nwc-task.yaml --format json")]
    Plan(crate::cli::plan::PlanArgs),
    /// Show where two runs part: two JSONL traces, aligned event by event.
    #[command(after_help = "Example:
  handoff diff recorded.jsonl replayed.jsonl          (exit 0: the same, 1: they differ)")]
    Diff(crate::cli::diff::DiffArgs),
    /// Run the cases of `*.test.yaml` files: dry runs checked against what they expect.
    #[command(after_help = "Examples:
  handoff test                                   (every *.test.yaml under the current folder)
  handoff test flows/complete-nwc-task.test.yaml --case 'third poll'
  handoff test --snapshot                        (also compare each case's whole trace with its stored .trace)
  handoff test --update                          (write the stored traces)
  handoff test --report junit=results.xml        (for CI)

Exit codes: 0 every case passed, 1 a case failed, 2 a test file is invalid.")]
    Test(crate::cli::test::TestArgs),
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
    /// The language server: `check`'s diagnostics, completion, hover, go to definition,
    /// references, rename, the steps as an outline and quick fixes, over LSP on stdio.
    #[command(
        after_help = "Editors start it themselves: see docs/editors.md for Neovim, Helix, VS Code and Zed."
    )]
    Lsp,
    /// Run the reference flow against an in-process simulator, over real HTTP.
    #[command(after_help = "Example:
  handoff demo --task-delay 5s --poll-interval 2s")]
    Demo(crate::cli::demo::DemoArgs),
}

/// Parses the arguments and runs the command. Returns the exit code.
///
/// Not generic over the arguments: a generic one is compiled into the
/// binary, with every command's async code it reaches, which took the
/// release build 25 s more.
pub fn main(args: Vec<std::ffi::OsString>) -> i32 {
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
        Command::Lsp => return crate::cli::lsp::lsp_command(),
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
    // The commands that load flows take `--workflow` and `--source`, for
    // an Arazzo document; the others have no use for them.
    let arazzo = match &cli.command {
        Command::Run(a) => Some(&a.arazzo),
        Command::Check(a) => Some(&a.arazzo),
        Command::Serve(a) => Some(&a.arazzo),
        Command::Graph(a) => Some(&a.arazzo),
        Command::Plan(a) => Some(&a.arazzo),
        Command::Test(a) => Some(&a.arazzo),
        _ => None,
    };
    if let Some(a) = arazzo {
        crate::language::arazzo::select::select(crate::language::arazzo::select::Selection {
            workflow: a.workflow.clone(),
            sources: a.sources.clone(),
        });
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
    // the scheduler when they did. `serve` has two unless its `--threads`
    // says otherwise; the simulator takes requests from many clients at once.
    let threads = match &cli.command {
        Command::Run(_) => 1,
        Command::Serve(a) => a.threads as usize,
        _ => 2,
    };
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
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
        Command::Run(args) => runtime.block_on(async {
            let warn = std::sync::Arc::new(|line: String| eprintln!("warning: {line}"));
            if let Err(e) = crate::cli::common::start_tracing(args.otlp.as_deref(), None, warn) {
                eprintln!("error: {e}");
                return EXIT_INVALID;
            }
            let code = match args.each.clone() {
                Some(each) => crate::cli::batch::batch_command(&args, &each, color).await,
                None => run::run_command(args, color).await,
            };
            crate::cli::common::finish_tracing().await;
            code
        }),
        Command::Check(args) => check::check_command(&args, color),
        Command::Sim(args) => runtime.block_on(sim::sim_command(args)),
        Command::Demo(args) => runtime.block_on(crate::cli::demo::demo_command(args, color)),
        // Answered above, before a runtime is started.
        Command::Completions { .. } | Command::Man | Command::Lsp => EXIT_OK,
        Command::Resume(args) => runtime.block_on(crate::cli::runs::resume_command(args, color)),
        Command::Runs(args) => runtime.block_on(crate::cli::runs::runs_command(args, color)),
        Command::Signal(args) => runtime.block_on(crate::cli::signal::signal_command(args, color)),
        Command::Serve(args) => runtime.block_on(crate::cli::serve::serve_command(args, color)),
        Command::Graph(args) => runtime.block_on(crate::cli::graph::graph_command(args, color)),
        Command::Diff(args) => crate::cli::diff::diff_command(&args, color),
        Command::Test(args) => runtime.block_on(crate::cli::test::test_command(args, color)),
        Command::Schema => {
            let text =
                serde_json::to_string_pretty(&crate::cli::schema::schema()).unwrap_or_default();
            println!("{text}");
            EXIT_OK
        }
        Command::Plan(args) => crate::cli::plan::plan_command(&args, color),
    }
}

/// A panic is a bug, but its message could quote a value a step held, such
/// as a token: say where it happened, never what it said.
fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        // `handoff check flows/ | head`: the reader has gone, as readers of
        // a pipe do; stop quietly, as `cat` and ripgrep do.
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
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
