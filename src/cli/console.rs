//! Live output of a run: each trace event printed as it happens, to the
//! terminal and to a trace file, and Ctrl-C turned into a last
//! "interrupted" event. `handoff run` and `handoff demo` both print through it.

use std::io::{BufWriter, Write};
use std::time::Instant;

use crate::cli::offload::Offload;
use crate::cli::report::{self, Style, TraceFormat};
use crate::engine::{Engine, RunResult};
use crate::language::flow::Flow;
use crate::run::state::RunState;
use crate::run::trace::{EventKind, Outcome, RunStatus, TraceEvent};

/// How the run's output looks: the trace's format, each stream's colour,
/// and whether only the final line is printed.
#[derive(Debug, Clone, Copy)]
pub struct Look {
    pub format: TraceFormat,
    /// For stdout, where the trace goes.
    pub out: Style,
    /// For stderr, where the verdict goes when stdout holds JSONL.
    pub err: Style,
    /// `--quiet`: only the final line on stdout (the trace file stays whole).
    pub quiet: bool,
}

/// A request the run sent and has had no answer to yet.
struct InFlight {
    method: String,
    url: String,
}

/// Prints events as they happen, to the terminal and the trace file.
///
/// Output is buffered, and flushed when the run is about to wait (a timer,
/// a request, a retry), when it ends, and at least every `FLUSH_EVERY`:
/// a long dry run makes a handful of writes, not one per event, and a live
/// run still shows each step as it waits.
pub struct Printer {
    look: Look,
    out: BufWriter<std::io::Stdout>,
    last_flush: Instant,
    since_flush: u64,
    /// The JSON line of the event being printed, its buffer reused.
    line: Vec<u8>,
    lines: crate::run::jsonl::Lines,
    /// The trace file, written by a thread of its own.
    file: Option<(TraceFormat, Offload)>,
    started: Instant,
    last_step: Option<std::sync::Arc<str>>,
    /// The kind of the last step started; its buffer reused.
    last_kind: String,
    in_flight: Option<InFlight>,
    last_seq: u64,
    last_at_ms: u64,
    run: String,
    steps_taken: u64,
    /// Real time is worth showing beside the clock only when the clock is virtual.
    dry_run: bool,
    /// The run's spans, when traces are exported.
    spans: Option<crate::run::otel::Live>,
}

impl Printer {
    pub fn new(look: Look, file: Option<(TraceFormat, Offload)>, dry_run: bool) -> Printer {
        Printer {
            look,
            out: BufWriter::with_capacity(64 * 1024, std::io::stdout()),
            last_flush: Instant::now(),
            since_flush: 0,
            line: Vec::new(),
            lines: if crate::run::otel::exporter().is_some() {
                crate::run::jsonl::Lines::with_ids()
            } else {
                Default::default()
            },
            file,
            started: Instant::now(),
            last_step: None,
            last_kind: String::new(),
            in_flight: None,
            last_seq: 0,
            last_at_ms: 0,
            run: String::new(),
            steps_taken: 0,
            dry_run,
            spans: crate::run::otel::Live::new(),
        }
    }

    pub fn event(&mut self, event: &TraceEvent) {
        if let Some(spans) = &mut self.spans {
            spans.event(event);
        }
        self.last_seq = event.seq;
        self.last_at_ms = event.at_ms;
        if self.run.is_empty() {
            self.run = event.run.to_string();
        }
        match &event.kind {
            EventKind::StepStarted { kind } => {
                self.last_step = event.step.clone();
                self.last_kind.clear();
                self.last_kind.push_str(kind);
                self.steps_taken += 1;
            }
            EventKind::RequestSent { method, url, .. } => {
                self.in_flight = Some(InFlight {
                    method: method.clone(),
                    url: url.clone(),
                });
            }
            EventKind::ResponseReceived { .. }
            | EventKind::RetryScheduled { .. }
            | EventKind::StepFailed { .. }
            | EventKind::StepFinished { .. } => self.in_flight = None,
            _ => {}
        }
        // Wall-clock time shows only on the final line: read the clock for it alone.
        let finished = matches!(event.kind, EventKind::FlowFinished(_));
        let real = (self.dry_run && finished).then(|| self.started.elapsed());
        let look = self.look;
        // Serialised once, for stdout and the file alike: straight into the
        // trace file's buffer when it takes JSONL, then copied to stdout.
        let stdout_jsonl = !look.quiet && look.format == TraceFormat::Jsonl;
        let line: &[u8] = match &mut self.file {
            Some((TraceFormat::Jsonl, file)) => {
                let buf = file.buffer();
                let start = buf.len();
                report::jsonl_append(event, &mut self.lines, buf);
                buf.push(b'\n');
                &buf[start..]
            }
            _ if stdout_jsonl => {
                self.line.clear();
                report::jsonl_append(event, &mut self.lines, &mut self.line);
                self.line.push(b'\n');
                &self.line
            }
            _ => &[],
        };
        let out = &mut self.out;
        let _ = match (look.quiet, look.format, &event.kind) {
            (true, _, EventKind::FlowFinished(outcome)) => {
                writeln!(out, "{}", report::summary(outcome, look.out, real))
            }
            (true, _, _) => Ok(()),
            (false, TraceFormat::Pretty, _) => {
                out.write_all(report::pretty(event, look.out, real).as_bytes())
            }
            (false, TraceFormat::Jsonl, _) => out.write_all(line),
        };
        if let Some((format, file)) = &mut self.file {
            match format {
                TraceFormat::Pretty => {
                    file.write_all(report::pretty(event, Style { color: false }, real).as_bytes())
                }
                // Written above, in place.
                TraceFormat::Jsonl => file.written(),
            }
        }
        // The time is read every few events only: reading it costs as much as an event.
        self.since_flush += 1;
        if waits_after(&event.kind, self.dry_run)
            || (self.since_flush.is_multiple_of(64) && self.last_flush.elapsed() >= FLUSH_EVERY)
        {
            self.flush();
        }
        if let (EventKind::FlowFinished(outcome), TraceFormat::Jsonl, false) =
            (&event.kind, look.format, look.quiet)
        {
            // Scripts read stdout; people still get the verdict.
            eprintln!("{}", report::summary(outcome, look.err, real));
        }
    }

    /// Writes out what is buffered, on stdout and in the trace file.
    fn flush(&mut self) {
        let _ = self.out.flush();
        if let Some((_, file)) = &mut self.file {
            file.flush();
        }
        self.last_flush = Instant::now();
        self.since_flush = 0;
    }

    /// Writes out everything, the trace file included, and says so if
    /// the trace file could not be written.
    pub fn finish(&mut self) {
        self.flush();
        if let Some((_, file)) = &mut self.file
            && let Err(e) = file.finish()
        {
            eprintln!(
                "warning: the trace file is incomplete: {}",
                crate::language::source::io_reason(&e)
            );
        }
    }
}

/// The longest a printed event waits in the buffer.
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// Events after which the run may wait a while: what they say should show
/// now. A dry run's waits are on its virtual clock and take no time, so only
/// its start and end count.
fn waits_after(kind: &EventKind, dry_run: bool) -> bool {
    if dry_run {
        return matches!(
            kind,
            EventKind::FlowStarted { .. } | EventKind::FlowFinished(_)
        );
    }
    matches!(
        kind,
        EventKind::FlowStarted { .. }
            | EventKind::RunResumed { .. }
            | EventKind::RequestSent { .. }
            | EventKind::RetryScheduled { .. }
            | EventKind::TimerStarted { .. }
            | EventKind::TimerWaiting { .. }
            | EventKind::WaitStarted { .. }
            // An item's events arrive together when it is over; others may
            // take long yet.
            | EventKind::ItemFinished { .. }
            | EventKind::FlowFinished(_)
    )
}

/// Records the interruption as the trace's last event: where it stopped,
/// what was in flight, and when Ctrl-C came on the run's clock.
fn interrupted(printer: &mut Printer, flow: &Flow, elapsed_ms: u64, now: std::time::SystemTime) {
    let step = printer.last_step.as_deref().map(str::to_string);
    let mut reason = match &step {
        Some(s) => format!("stopped by Ctrl-C at step `{s}`"),
        None => format!("stopped by Ctrl-C before flow `{}` started", flow.name),
    };
    if let Some(request) = &printer.in_flight {
        reason.push_str(&format!(
            " while {} {} was in flight: the server may have acted on it",
            request.method, request.url
        ));
        if printer.last_kind == "patch_task" {
            reason.push_str(
                "; running the flow again is safe, as `patch_task` reads the task first and finds it completed",
            );
        }
    }
    let event = TraceEvent {
        seq: printer.last_seq + 1,
        at_ms: elapsed_ms,
        time: crate::run::clock::rfc3339(now).into(),
        run: printer.run.as_str().into(),
        step: None,
        kind: EventKind::FlowFinished(Outcome {
            status: RunStatus::Interrupted,
            at_step: step,
            reason,
            last_branch: None,
            tries: None,
            steps_taken: printer.steps_taken,
            elapsed_ms,
        }),
    };
    printer.event(&event);
}

/// Runs the flow, printing as it goes. `None` means Ctrl-C stopped it; the
/// trace then already ends with the interruption.
pub async fn run_live(
    engine: &Engine<'_>,
    state: RunState,
    printer: &mut Printer,
) -> Option<RunResult> {
    let result = {
        let mut observer = |e: &TraceEvent| printer.event(e);
        // Biased, so the Ctrl-C handler is installed (on its first poll)
        // before the run can print or send anything.
        tokio::select! {
            biased;
            _ = tokio::signal::ctrl_c() => None,
            result = engine.run(state, &mut observer) => Some(result),
        }
    };
    if result.is_none() {
        let elapsed = engine.clock.elapsed().as_millis() as u64;
        interrupted(printer, engine.flow, elapsed, engine.clock.now());
    }
    printer.finish();
    result
}
