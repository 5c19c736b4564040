//! Live output of a run: each trace event printed as it happens, to the
//! terminal and to a trace file, and Ctrl-C turned into a last
//! "interrupted" event. `handoff run` and `handoff demo` both print through it.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::time::Instant;

use crate::engine::{Engine, RunResult};
use crate::flow::Flow;
use crate::report::{self, Style, TraceFormat};
use crate::state::RunState;
use crate::trace::{EventKind, Outcome, RunStatus, TraceEvent};

/// Prints events as they happen, to the terminal and the trace file.
pub struct Printer {
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
    pub fn event(&mut self, event: &TraceEvent) {
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

    pub fn finish(&mut self) {
        if let Some((_, file)) = &mut self.file {
            let _ = file.flush();
        }
    }
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

impl Printer {
    pub fn new(
        format: TraceFormat,
        style: Style,
        file: Option<(TraceFormat, BufWriter<File>)>,
        dry_run: bool,
    ) -> Printer {
        Printer {
            format,
            style,
            file,
            started: Instant::now(),
            last_step: None,
            last_seq: 0,
            last_at_ms: 0,
            steps_taken: 0,
            dry_run,
        }
    }
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
        interrupted(printer, engine.flow);
    }
    printer.finish();
    result
}
