//! What the commands share: exit codes, colours, printing diagnostics, the
//! trace options, and parsers for arguments several commands take.

use crate::cli::offload::{Encoding, Offload};
use crate::cli::report::TraceFormat;
use crate::language::analyze::{analyze, read_source};
use crate::language::diagnostic::{Diagnostic, render_all};
use crate::language::flow::Flow;
use crate::run::mock::Mock;
use crate::run::trace::RunStatus;
use clap::ValueEnum;
use std::fs::File;
use std::io::Write;

pub const EXIT_OK: i32 = 0;

pub const EXIT_FAILED: i32 = 1;

pub const EXIT_INVALID: i32 = 2;

pub const EXIT_INTERRUPTED: i32 = 130;

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

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum OutputFormat {
    Text,
    Json,
}

pub fn duration_arg(text: &str) -> Result<std::time::Duration, String> {
    crate::language::duration::parse_duration(text)
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum TraceArg {
    Pretty,
    Jsonl,
}

pub fn print_diagnostics(diagnostics: &[Diagnostic], color: Colors) {
    let text = render_all(diagnostics, color.err);
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes());
}

pub fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// The `--trace-file`, when one was asked for, and its writer: JSONL for
/// `.jsonl` and `.json` (before a `.gz`, which compresses it), else as
/// `--trace`. An exit code when it cannot be written.
pub fn open_trace_file(
    path: Option<&std::path::Path>,
    trace: TraceArg,
) -> Result<Option<(TraceFormat, Offload)>, i32> {
    let Some(path) = path else {
        return Ok(None);
    };
    match File::create(path) {
        Ok(f) => {
            let (format, encoding) = trace_file_format(path, trace);
            Ok(Some((format, Offload::new(f, encoding))))
        }
        Err(e) => {
            eprintln!(
                "error: cannot write the trace file `{}`: {}",
                path.display(),
                crate::language::source::io_reason(&e)
            );
            Err(EXIT_INVALID)
        }
    }
}

/// How a trace file is written, by its name: `.jsonl` and `.json` are JSONL,
/// and so are they before a `.gz`, which compresses the file (in any case).
fn trace_file_format(path: &std::path::Path, trace: TraceArg) -> (TraceFormat, Encoding) {
    let encoding = Encoding::of(path);
    let named = match encoding {
        Encoding::Gzip => path.file_stem().map(std::path::Path::new),
        Encoding::Plain => Some(path),
    };
    let ext = named
        .and_then(|p| p.extension())
        .and_then(|e| e.to_str())
        .unwrap_or("");
    let jsonl = ["jsonl", "json"]
        .iter()
        .any(|e| ext.eq_ignore_ascii_case(e));
    let format = if jsonl {
        TraceFormat::Jsonl
    } else {
        trace_format(trace)
    };
    (format, encoding)
}

pub fn exit_code(status: RunStatus) -> i32 {
    match status {
        RunStatus::Succeeded => EXIT_OK,
        RunStatus::Failed => EXIT_FAILED,
        RunStatus::Interrupted => EXIT_INTERRUPTED,
        RunStatus::Canceled => EXIT_FAILED,
    }
}

pub fn trace_format(arg: TraceArg) -> TraceFormat {
    match arg {
        TraceArg::Pretty => TraceFormat::Pretty,
        TraceArg::Jsonl => TraceFormat::Jsonl,
    }
}

pub fn load_mock(path: &str, flow: &Flow) -> Result<Mock, Vec<Diagnostic>> {
    let source = read_source(path).map_err(|d| vec![d])?;
    Mock::load(&source, flow)
}

/// Reads and checks a flow file, printing its warnings; on a problem, prints
/// it and gives the exit code.
pub fn load_flow(path: &std::path::Path, color: Colors) -> Result<Flow, i32> {
    let source = read_source(&path.to_string_lossy()).map_err(|d| {
        print_diagnostics(&[d], color);
        EXIT_INVALID
    })?;
    let checked = analyze(&source).map_err(|diags| {
        print_diagnostics(&diags, color);
        EXIT_INVALID
    })?;
    print_diagnostics(&checked.warnings, color);
    Ok(checked.flow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_files_name_says_its_format_and_whether_it_is_compressed() {
        let of = |name: &str, trace| trace_file_format(std::path::Path::new(name), trace);
        use {Encoding::*, TraceArg as A, TraceFormat as F};
        assert_eq!(of("run.jsonl", A::Pretty), (F::Jsonl, Plain));
        assert_eq!(of("dir.d/run.json", A::Pretty), (F::Jsonl, Plain));
        assert_eq!(of("run.jsonl.gz", A::Pretty), (F::Jsonl, Gzip));
        assert_eq!(of("run.JSONL.GZ", A::Pretty), (F::Jsonl, Gzip));
        assert_eq!(of("run.txt.gz", A::Pretty), (F::Pretty, Gzip));
        assert_eq!(of("run.gz", A::Jsonl), (F::Jsonl, Gzip));
        assert_eq!(of("run.txt", A::Pretty), (F::Pretty, Plain));
        assert_eq!(of("run.gz.txt", A::Pretty), (F::Pretty, Plain));
    }

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

/// `--workflow` and `--source`: which workflow of an Arazzo document, and
/// its source descriptions from local files. Taken by the commands that
/// load flows.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ArazzoArgs {
    /// In an Arazzo document with several workflows, the one to use.
    #[arg(long, value_name = "ID")]
    pub workflow: Option<String>,
    /// An Arazzo source description read from a local file: `NAME=FILE` (repeatable).
    #[arg(long = "source", value_name = "NAME=FILE", value_parser = parse_source)]
    pub sources: Vec<(String, String)>,
}

/// `NAME=FILE` for `--source`.
fn parse_source(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, file)) if !name.is_empty() && !file.is_empty() => {
            Ok((name.to_string(), file.to_string()))
        }
        _ => Err(format!("`{text}` is not `NAME=FILE`")),
    }
}

/// Starts exporting traces when `--otlp` or the `OTEL_*` variables say so,
/// with `marks` kept for durable runs; a bad configuration is an error to
/// print, which never shows a header's value.
pub fn start_tracing(
    flag: Option<&str>,
    marks: Option<std::sync::Arc<dyn crate::run::otel::export::Marks>>,
    warn: std::sync::Arc<dyn Fn(String) + Send + Sync>,
) -> Result<(), String> {
    let Some(config) =
        crate::run::otel::export::Config::from_env(flag, &|var| std::env::var(var).ok())?
    else {
        return Ok(());
    };
    let exporter = crate::run::otel::export::Exporter::start(config, marks, warn)?;
    crate::run::otel::install(exporter)?;
    Ok(())
}

/// Sends the spans still queued before the process ends.
pub async fn finish_tracing() {
    if let Some(e) = crate::run::otel::exporter() {
        e.flush().await;
    }
}
