//! The command line: `handoff run`, `handoff check`.
//!
//! [`run`] takes the arguments and returns the exit code, so `main.rs` stays
//! trivial and every exit code is decided here:
//! 0 success, 1 the run failed, 2 invalid flow, inputs or usage, 130 interrupted.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use clap::{Parser, Subcommand, ValueEnum};

use crate::analyze::{analyze, read_source};
use crate::clock::{Clock, SystemClock, VirtualClock};
use crate::diagnostic::{Diagnostic, Severity, render_all};
use crate::engine::{Engine, Inputs, initial_state};
use crate::flow::Flow;
use crate::mock::{Mock, MockTransport};
use crate::report::{self, Style, TraceFormat};
use crate::trace::{EventKind, Outcome, RunStatus, TraceEvent};
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

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a flow, for real or as a dry run against scripted responses.
    #[command(after_help = "Examples:
  handoff run flows/complete-nwc-task.yaml --set instance_id=7c1e… (reads $NWC_TOKEN, $NWC_BASE_URL)
  handoff run flows/complete-nwc-task.yaml --mock flows/complete-nwc-task.mock.yaml \\
      --set instance_id=7c1e --set token=dry-run --trace jsonl")]
    Run(RunArgs),
    /// Load and validate flows (and `*.mock.yaml` files) without running them.
    #[command(after_help = "Example:
  handoff check flows/*.yaml")]
    Check(CheckArgs),
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
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum TraceArg {
    Pretty,
    Jsonl,
}

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Flow files, and mock files named `NAME.mock.yaml` next to `NAME.yaml`.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// Parses the arguments and runs the command. Returns the exit code.
pub fn run<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
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
    let color = match cli.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal()
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return EXIT_FAILED;
        }
    };
    match cli.command {
        Command::Run(args) => runtime.block_on(run_command(args, color)),
        Command::Check(args) => check_command(&args, color),
    }
}

fn print_diagnostics(diagnostics: &[Diagnostic], color: bool) {
    let text = render_all(diagnostics, color);
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes());
}

fn check_command(args: &CheckArgs, color: bool) -> i32 {
    let mut errors = 0;
    let mut warnings = 0;
    for path in &args.files {
        let name = path.to_string_lossy().to_string();
        let diagnostics = match check_one(&name) {
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
            args.files.len()
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
        let checked = crate::analyze::analyze_file(&flow_path).map_err(|_| {
            vec![Diagnostic::error(format!(
                "cannot check `{path}`: its flow `{flow_path}` does not load"
            ))]
        })?;
        let source = read_source(path).map_err(|d| vec![d])?;
        let mock = Mock::load(&source, &checked.flow)?;
        return Ok((
            format!(
                "mock for {flow_path}, {} scripted responses",
                mock.entries.len()
            ),
            Vec::new(),
        ));
    }
    let source = read_source(path).map_err(|d| vec![d])?;
    let checked = analyze(&source)?;
    let flow = &checked.flow;
    Ok((
        format!(
            "flow `{}`, {} fields, {} steps",
            flow.name,
            flow.fields.len(),
            flow.steps.len()
        ),
        checked.warnings,
    ))
}

/// Prints events as they happen, to the terminal and the trace file.
struct Printer {
    format: TraceFormat,
    style: Style,
    file: Option<(TraceFormat, BufWriter<File>)>,
    started: Instant,
    last_step: Option<String>,
    last_seq: u64,
    last_at_ms: u64,
    steps_taken: u64,
    /// Real time is worth showing beside the clock only when the clock is virtual.
    dry_run: bool,
}

impl Printer {
    fn event(&mut self, event: &TraceEvent) {
        self.last_seq = event.seq;
        self.last_at_ms = event.at_ms;
        if let EventKind::StepStarted { .. } = event.kind {
            self.last_step = event.step.clone();
            self.steps_taken += 1;
        }
        let real = self.dry_run.then(|| self.started.elapsed());
        let mut out = std::io::stdout().lock();
        let _ = match self.format {
            TraceFormat::Pretty => {
                out.write_all(report::pretty(event, self.style, real).as_bytes())
            }
            TraceFormat::Jsonl => writeln!(out, "{}", report::jsonl(event)),
        };
        let _ = out.flush();
        if let Some((format, file)) = &mut self.file {
            let _ = match format {
                TraceFormat::Pretty => {
                    file.write_all(report::pretty(event, Style { color: false }, real).as_bytes())
                }
                TraceFormat::Jsonl => writeln!(file, "{}", report::jsonl(event)),
            };
        }
        if let (EventKind::FlowFinished(outcome), TraceFormat::Jsonl) = (&event.kind, self.format) {
            // Scripts read stdout; people still get the verdict.
            eprintln!("{}", report::summary(outcome, self.style, real));
        }
    }

    fn finish(&mut self) {
        if let Some((_, file)) = &mut self.file {
            let _ = file.flush();
        }
    }
}

async fn run_command(args: RunArgs, color: bool) -> i32 {
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
            Box::new(MockTransport::new(mock, virtual_clock.clone())),
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
    let file = match &args.trace_file {
        Some(path) => match File::create(path) {
            Ok(f) => {
                let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
                let format = if matches!(ext, "jsonl" | "json") {
                    TraceFormat::Jsonl
                } else {
                    trace_format(args.trace)
                };
                Some((format, BufWriter::new(f)))
            }
            Err(e) => {
                eprintln!(
                    "error: cannot write the trace file `{}`: {}",
                    path.display(),
                    crate::analyze::io_reason(&e)
                );
                return EXIT_INVALID;
            }
        },
        None => None,
    };
    let mut printer = Printer {
        format: trace_format(args.trace),
        style: Style { color },
        file,
        started: Instant::now(),
        last_step: None,
        last_seq: 0,
        last_at_ms: 0,
        steps_taken: 0,
        dry_run,
    };
    let engine = Engine {
        flow: &flow,
        clock,
        transport: &*transport,
        dry_run,
    };
    let result = {
        let mut observer = |e: &TraceEvent| printer.event(e);
        tokio::select! {
            result = engine.run(state, &mut observer) => Some(result),
            _ = tokio::signal::ctrl_c() => None,
        }
    };
    let code = match result {
        Some(r) => match r.outcome.status {
            RunStatus::Succeeded => EXIT_OK,
            RunStatus::Failed => EXIT_FAILED,
            RunStatus::Interrupted => EXIT_INTERRUPTED,
        },
        None => {
            interrupted(&mut printer, &flow);
            EXIT_INTERRUPTED
        }
    };
    printer.finish();
    code
}

/// Records the interruption as the trace's last event.
fn interrupted(printer: &mut Printer, flow: &Flow) {
    let step = printer.last_step.clone();
    let reason = match &step {
        Some(s) => format!("interrupted at step `{s}`"),
        None => format!("interrupted before flow `{}` started", flow.name),
    };
    let event = TraceEvent {
        seq: printer.last_seq + 1,
        at_ms: printer.last_at_ms,
        step: None,
        kind: EventKind::FlowFinished(Outcome {
            status: RunStatus::Interrupted,
            at_step: step,
            reason,
            last_branch: None,
            tries: None,
            steps_taken: printer.steps_taken,
            elapsed_ms: printer.last_at_ms,
        }),
    };
    printer.event(&event);
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
    let mut inputs = Inputs::default();
    let mut problems = Vec::new();
    for pair in &args.set {
        match pair.split_once('=') {
            Some((name, value)) if !name.trim().is_empty() => inputs
                .set
                .push((name.trim().to_string(), value.to_string())),
            _ => problems.push(Diagnostic::error(format!(
                "`--set` takes NAME=VALUE, got `{}`",
                pair.split('=').next().unwrap_or("")
            ))),
        }
    }
    if let Some(path) = &args.input {
        let source = read_source(&path.to_string_lossy()).map_err(|d| vec![d])?;
        let node = crate::raw::parse(&source).map_err(|d| vec![d])?;
        inputs.file = Some((source, node));
    }
    if problems.is_empty() {
        Ok(inputs)
    } else {
        Err(problems)
    }
}
