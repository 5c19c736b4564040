//! `handoff run FLOW --each FILE`: one run per row of a JSON-lines or CSV
//! file, in one process, with progress on stderr and a summary at the end.
//!
//! Every row is checked before anything is sent: one bad row (a wrong type,
//! an unknown column, an empty instance id) stops the batch with exit 2 and
//! names the row. Then the runs go `--jobs` at a time, sharing one HTTP
//! client, at most `--rate` requests a second; a 429 slows them all.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use serde_json::Value;

use super::{Colors, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_INVALID, EXIT_OK, RunArgs};
use crate::diagnostic::Diagnostic;
use crate::engine::batch::{Batch, Finished, Route, Row};
use crate::flow::Flow;
use crate::inputs::{Inputs, initial_state};
use crate::mock::Mock;
use crate::report::{self, Style};
use crate::source::Source;
use crate::trace::{EventKind, Outcome, RunStatus, TraceEvent};

/// The largest rows file read: a million short rows.
const MAX_ROWS_BYTES: u64 = 256 * 1024 * 1024;
/// How often a summary line is printed when stderr is not a terminal.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Rows with problems shown before the rest are only counted.
const MAX_BAD_ROWS: usize = 20;

/// Rows as read: their number and their values by column.
type Rows = Vec<(usize, IndexMap<String, Value>)>;

/// Reads the rows: JSON lines (a `.jsonl`, `.ndjson` or `.json` file, or
/// text that starts with `{`) or CSV with a header.
pub fn read_rows(path: &Path) -> Result<Rows, Diagnostic> {
    let shown = path.display().to_string();
    let mut text = String::new();
    let read = if shown == "-" {
        std::io::stdin()
            .take(MAX_ROWS_BYTES + 1)
            .read_to_string(&mut text)
    } else {
        File::open(path).and_then(|f| f.take(MAX_ROWS_BYTES + 1).read_to_string(&mut text))
    };
    read.map_err(|e| {
        Diagnostic::error(format!(
            "cannot read the rows in `{shown}`: {}",
            crate::analyze::io_reason(&e)
        ))
    })?;
    if text.len() as u64 > MAX_ROWS_BYTES {
        return Err(Diagnostic::error(format!(
            "`{shown}` is larger than 256 MB"
        )));
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let jsonl = match ext {
        "jsonl" | "ndjson" | "json" => true,
        "csv" => false,
        _ => text.trim_start().starts_with('{'),
    };
    let rows = if jsonl {
        json_rows(&text, &shown)?
    } else {
        csv_rows(&text, &shown)?
    };
    if rows.is_empty() {
        return Err(Diagnostic::error(format!("`{shown}` has no rows")));
    }
    Ok(rows)
}

fn json_rows(text: &str, shown: &str) -> Result<Rows, Diagnostic> {
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let number = rows.len() + 1;
        // serde's message names a line and column, never the text there.
        let bad = |why: String| {
            Diagnostic::error(format!("row {number} (line {}) of `{shown}` {why}", i + 1))
                .help("each line is one JSON object: {\"instance_id\": \"…\", …}")
        };
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(map)) => rows.push((number, map.into_iter().collect())),
            Ok(other) => {
                return Err(bad(format!(
                    "is {}, not an object",
                    crate::fields::json_type_name(&other)
                )));
            }
            Err(e) => {
                let why = e.to_string();
                let why = why.split(" at line").next().unwrap_or("");
                return Err(bad(format!("is not JSON: {why}")));
            }
        }
    }
    Ok(rows)
}

fn csv_rows(text: &str, shown: &str) -> Result<Rows, Diagnostic> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::Headers)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| {
            Diagnostic::error(format!(
                "the header of `{shown}` cannot be read: {}",
                csv_reason(&e)
            ))
        })?
        .clone();
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let number = i + 1;
        let record = record.map_err(|e| {
            Diagnostic::error(format!("row {number} of `{shown}`: {}", csv_reason(&e)))
        })?;
        // An empty cell is no value: the field's default applies.
        let row = headers
            .iter()
            .zip(record.iter())
            .filter(|(_, cell)| !cell.is_empty())
            .map(|(name, cell)| (name.to_string(), Value::String(cell.to_string())))
            .collect();
        rows.push((number, row));
    }
    Ok(rows)
}

/// A CSV error, in words that quote nothing from the file.
fn csv_reason(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => {
            format!("it has {len} cells where the header has {expected_len}")
        }
        csv::ErrorKind::Utf8 { .. } => "it is not UTF-8 text".to_string(),
        _ => "it is not valid CSV".to_string(),
    }
}

/// Each row's starting state; every problem of every row, or the states.
fn states(
    flow: &Flow,
    rows: Rows,
    set: &[(String, String)],
    shown: &str,
) -> Result<Vec<Row>, Vec<Diagnostic>> {
    let env = |var: &str| std::env::var(var).ok();
    let mut out = Vec::with_capacity(rows.len());
    let mut problems = Vec::new();
    let mut bad_rows = 0;
    for (number, values) in rows {
        let label = format!("row {number} of `{shown}`");
        // A row's own value wins over `--set`, which fills in the rest.
        let common: Vec<(String, String)> = set
            .iter()
            .filter(|(name, _)| !values.contains_key(name))
            .cloned()
            .collect();
        let text = serde_json::to_string(&values).unwrap_or_default();
        // The row's inputs, in a canonical order, name it across reruns.
        let mut all: BTreeMap<&str, Value> = values
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        for (name, value) in &common {
            all.insert(name, Value::String(value.clone()));
        }
        let key = crate::store::flow_hash(&serde_json::to_string(&all).unwrap_or_default());
        let source = Source::new(label.clone(), text);
        // A row is JSON already: read as YAML would read it, without parsing
        // its text again. Only a row with a problem is parsed, to point at it.
        // `--set` is the operator's; a row is a caller's: it sets inputs only.
        let quick = crate::raw::Node::from_json_map(&values).map(|node| Inputs {
            set: common.clone(),
            set_by: crate::inputs::Giver::Operator,
            file: Some((source.clone(), node)),
            file_by: crate::inputs::Giver::Caller,
            file_label: Some(label.clone()),
        });
        if let Some(Ok(state)) = quick.map(|inputs| initial_state(flow, &inputs, &env)) {
            out.push(Row { number, state, key });
            continue;
        }
        let node = match crate::inputs::parse_input_file(&source) {
            Ok(n) => n,
            Err(d) => {
                problems.push(d);
                continue;
            }
        };
        let inputs = Inputs {
            set: common.clone(),
            set_by: crate::inputs::Giver::Operator,
            file: Some((source, node)),
            file_by: crate::inputs::Giver::Caller,
            file_label: Some(label),
        };
        match initial_state(flow, &inputs, &env) {
            Ok(state) => out.push(Row { number, state, key }),
            Err(diagnostics) => {
                bad_rows += 1;
                if bad_rows <= MAX_BAD_ROWS {
                    problems.extend(diagnostics);
                }
            }
        }
    }
    if bad_rows > MAX_BAD_ROWS {
        problems.push(Diagnostic::error(format!(
            "and {} more rows with problems",
            bad_rows - MAX_BAD_ROWS
        )));
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// How the batch is going, for the progress line and the summary.
#[derive(Default)]
struct Tally {
    total: usize,
    succeeded: usize,
    failed: usize,
    interrupted: usize,
    /// A durable batch run again: rows whose run had already succeeded.
    skipped: usize,
    /// Failures by where and why, with ids and numbers left out.
    reasons: BTreeMap<(String, String), usize>,
}

impl Tally {
    fn done(&self) -> usize {
        self.succeeded + self.failed + self.interrupted + self.skipped
    }

    fn add(&mut self, outcome: &Outcome, skipped: bool) {
        if skipped {
            self.skipped += 1;
            return;
        }
        match outcome.status {
            RunStatus::Succeeded => self.succeeded += 1,
            RunStatus::Interrupted => self.interrupted += 1,
            RunStatus::Failed | RunStatus::Canceled => {
                self.failed += 1;
                let step = outcome.at_step.clone().unwrap_or_default();
                *self
                    .reasons
                    .entry((step, shape(&outcome.reason)))
                    .or_default() += 1;
            }
        }
    }

    fn line(&self, elapsed: Duration) -> String {
        let rate = self.done() as f64 / elapsed.as_secs_f64().max(0.001);
        format!(
            "{}/{} done: {} succeeded, {} failed{} ({rate:.0} runs/s)",
            self.done(),
            self.total,
            self.succeeded,
            self.failed,
            if self.interrupted > 0 {
                format!(", {} interrupted", self.interrupted)
            } else {
                String::new()
            }
        )
    }
}

/// A reason with its particulars (ids, counts) left out, so that like
/// failures group together: "no task for instance … after … tries".
fn shape(reason: &str) -> String {
    reason
        .split(' ')
        .map(|word| {
            if word.chars().any(|c| c.is_ascii_digit()) {
                "…"
            } else {
                word
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What the events of the runs go to.
struct Outputs {
    /// `--trace jsonl`: every event, with its row, on stdout.
    jsonl: Option<BufWriter<std::io::Stdout>>,
    /// `--trace-dir`: a file a run.
    dir: Option<PathBuf>,
    files: HashMap<usize, BufWriter<File>>,
    /// Names for the files: a row's first input that is not secret.
    names: HashMap<usize, String>,
    failed_dir: bool,
}

impl Outputs {
    /// Whether the events go anywhere: else the runs need not build them.
    fn wanted(&self) -> bool {
        self.jsonl.is_some() || self.dir.is_some()
    }

    fn event(&mut self, row: usize, event: &TraceEvent) {
        if !self.wanted() {
            return;
        }
        let line = report::jsonl(event);
        if let Some(out) = &mut self.jsonl {
            // The row goes first, so a stream can be split by it.
            let _ = writeln!(out, "{{\"row\":{row},{}", &line[1..]);
        }
        if let Some(dir) = &self.dir {
            if !self.files.contains_key(&row) {
                let name = self.names.get(&row).map_or("", String::as_str);
                let path = dir.join(format!("row-{row:05}{name}.jsonl"));
                match File::create(&path) {
                    Ok(f) => {
                        self.files.insert(row, BufWriter::new(f));
                    }
                    Err(e) if !self.failed_dir => {
                        self.failed_dir = true;
                        eprintln!(
                            "warning: cannot write `{}`: {}",
                            path.display(),
                            crate::analyze::io_reason(&e)
                        );
                    }
                    Err(_) => {}
                }
            }
            if let Some(file) = self.files.get_mut(&row) {
                let _ = writeln!(file, "{line}");
            }
            if matches!(event.kind, EventKind::FlowFinished(_))
                && let Some(mut file) = self.files.remove(&row)
            {
                let _ = file.flush();
            }
        }
    }
}

/// A short, safe piece of a file name from a row's first input that is
/// not secret: `-7c1e4b52-instance`.
fn file_name_part(flow: &Flow, row: &Row) -> String {
    let Some(field) = flow
        .fields
        .values()
        .find(|f| f.input && !row.state.secret.contains(&f.name))
    else {
        return String::new();
    };
    let text = match row.state.get(&field.name) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return String::new(),
    };
    let safe: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    if safe.is_empty() || safe.chars().all(|c| c == '.') {
        String::new()
    } else {
        format!("-{safe}")
    }
}

pub async fn batch_command(args: &RunArgs, flow: Flow, each: &Path, color: Colors) -> i32 {
    let shown = each.display().to_string();
    let rows = match read_rows(each) {
        Ok(r) => r,
        Err(d) => {
            super::print_diagnostics(&[d], color);
            return EXIT_INVALID;
        }
    };
    let set = match crate::inputs::parse_set(&args.set) {
        Ok(s) => s,
        Err(diagnostics) => {
            super::print_diagnostics(&diagnostics, color);
            return EXIT_INVALID;
        }
    };
    let rows = match states(&flow, rows, &set, &shown) {
        Ok(r) => r,
        Err(diagnostics) => {
            super::print_diagnostics(&diagnostics, color);
            eprintln!("no run was started: fix the rows above, then run the batch again");
            return EXIT_INVALID;
        }
    };
    if let Some(dir) = &args.trace_dir
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        eprintln!(
            "error: cannot create `{}`: {}",
            dir.display(),
            crate::analyze::io_reason(&e)
        );
        return EXIT_INVALID;
    }
    let dry_run = args.dry_run || args.mock.is_some();
    let mock = if dry_run {
        match &args.mock {
            Some(path) => match super::load_mock(&path.to_string_lossy(), &flow) {
                Ok(m) => m,
                Err(diagnostics) => {
                    super::print_diagnostics(&diagnostics, color);
                    return EXIT_INVALID;
                }
            },
            None => Mock {
                entries: Vec::new(),
            },
        }
    } else {
        Mock {
            entries: Vec::new(),
        }
    };
    let transport = if dry_run {
        None
    } else {
        match crate::transport::ReqwestTransport::new() {
            Ok(t) => {
                let limited = crate::run::limits::Limited::new(Box::new(t), args.jobs as usize);
                Some(match args.rate {
                    Some(rate) => limited.rate(rate),
                    None => limited,
                })
            }
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_FAILED;
            }
        }
    };
    if let Some(dir) = &args.record {
        if args.durable {
            eprintln!(
                "error: `--record` records fresh runs; a durable batch's runs are recorded with `handoff runs record ID`"
            );
            return EXIT_INVALID;
        }
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!(
                "error: cannot create `{}`: {}",
                dir.display(),
                crate::analyze::io_reason(&e)
            );
            return EXIT_INVALID;
        }
    }
    if dry_run && args.durable {
        eprintln!("error: `--durable` keeps real runs; a dry run has nothing to resume");
        return EXIT_INVALID;
    }
    let runs = if args.durable {
        match super::runs::open_store(&args.store.target()).await {
            Ok(r) => Some(r),
            Err(code) => return code,
        }
    } else {
        None
    };
    let route = match &transport {
        Some(t) => Route::Real(t),
        None => Route::Dry(&mock),
    };
    let tally = Mutex::new(Tally {
        total: rows.len(),
        ..Tally::default()
    });
    let outputs = Mutex::new(Outputs {
        jsonl: (!args.quiet && args.trace == super::TraceArg::Jsonl)
            .then(|| BufWriter::new(std::io::stdout())),
        dir: args.trace_dir.clone(),
        files: HashMap::new(),
        names: rows
            .iter()
            .map(|r| (r.number, file_name_part(&flow, r)))
            .collect(),
        failed_dir: false,
    });
    let pretty = !args.quiet && args.trace == super::TraceArg::Pretty;
    let style = Style { color: color.out };
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let bar = (std::io::stderr().is_terminal() && !args.quiet).then(|| {
        let bar = indicatif::ProgressBar::new(rows.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let events = |row: usize, event: &TraceEvent| {
        if let Ok(mut o) = outputs.lock() {
            o.event(row, event);
        }
    };
    let finished = |done: Finished| {
        let line = {
            let Ok(mut t) = tally.lock() else { return };
            t.add(&done.outcome, done.skipped);
            t.line(started.elapsed())
        };
        if let Some(bar) = &bar {
            bar.inc(1);
            bar.set_message(line);
        }
        if pretty {
            let said = if done.skipped {
                format!("{} already succeeded", style.green("✔"))
            } else {
                report::summary(&done.outcome, style, None)
            };
            let text = format!("row {}  {said}  (run {})", done.row, done.run_id);
            match &bar {
                Some(bar) => bar.println(text),
                None => println!("{text}"),
            }
        }
    };
    let batch = Batch {
        flow: &flow,
        route,
        jobs: args.jobs as usize,
        stop: &stop,
        durable: runs.as_ref(),
        record: args.record.as_deref(),
        tokens: Default::default(),
        traced: outputs.lock().is_ok_and(|o| o.wanted()),
    };
    let ticker = {
        let stop = &stop;
        let (bar, tally) = (&bar, &tally);
        async move {
            let mut every = tokio::time::interval(PROGRESS_EVERY);
            every.tick().await;
            loop {
                tokio::select! {
                    _ = every.tick() => {
                        if bar.is_none() && !args.quiet && let Ok(t) = tally.lock() {
                            eprintln!("progress: {}", t.line(started.elapsed()));
                        }
                    }
                    _ = tokio::signal::ctrl_c() => {
                        if !stop.swap(true, Ordering::Relaxed) {
                            let note = "stopping: no new runs; the runs in flight end their current step";
                            match &bar { Some(b) => b.println(note), None => eprintln!("{note}") }
                        }
                    }
                }
            }
        }
    };
    tokio::select! {
        _ = batch.run(rows, &events, &finished) => {}
        _ = ticker => {}
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if let Ok(mut o) = outputs.lock() {
        if let Some(out) = &mut o.jsonl {
            let _ = out.flush();
        }
        for file in o.files.values_mut() {
            let _ = file.flush();
        }
    }
    let tally = tally.into_inner().unwrap_or_default();
    let summary = summary(&tally, started.elapsed(), style);
    if args.trace == super::TraceArg::Jsonl && !args.quiet {
        // Stdout is for the events; people still get the verdict.
        eprint!("{summary}");
    } else {
        print!("{summary}");
    }
    if stop.load(Ordering::Relaxed) {
        EXIT_INTERRUPTED
    } else if tally.failed > 0 || tally.interrupted > 0 {
        EXIT_FAILED
    } else {
        EXIT_OK
    }
}

/// The end of a batch: counts, and the failures grouped by where and why.
fn summary(tally: &Tally, elapsed: Duration, style: Style) -> String {
    let mut out = format!(
        "{} runs in {:.1} s: {} succeeded, {} failed",
        tally.total,
        elapsed.as_secs_f64(),
        tally.succeeded,
        tally.failed
    );
    if tally.interrupted > 0 {
        out.push_str(&format!(", {} interrupted", tally.interrupted));
    }
    if tally.skipped > 0 {
        out.push_str(&format!(", {} had already succeeded", tally.skipped));
    }
    let left = tally.total - tally.done();
    if left > 0 {
        out.push_str(&format!(", {left} not started"));
    }
    out.push('\n');
    let mut reasons: Vec<_> = tally.reasons.iter().collect();
    // Most frequent first; ties by where, for a stable order.
    reasons.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for ((step, reason), n) in reasons {
        out.push_str(&format!(
            "  {} {n:>5}  at `{step}`: {reason}\n",
            style.red("✘")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_group_without_their_particulars() {
        assert_eq!(
            shape("no task for instance 7c1e4b52-x after 10 tries"),
            "no task for instance … after … tries"
        );
        assert_eq!(shape("step `complete` failed"), "step `complete` failed");
    }

    #[test]
    fn rows_come_from_json_lines_or_csv() {
        let rows = json_rows("{\"a\": 1}\n\n{\"a\": \"x\"}\n", "f")
            .ok()
            .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].0, 2);
        let bad = json_rows("{\"a\": 1}\n[1]\n", "f").err().unwrap();
        assert!(bad.message.contains("row 2 (line 2)"), "{}", bad.message);
        let secretish = json_rows("{\"token\": \"s3cr3t-value\"\n", "f")
            .err()
            .unwrap();
        assert!(
            !secretish.message.contains("s3cr3t"),
            "{}",
            secretish.message
        );
        let rows = csv_rows("instance_id,outcome\nabc,\n\"d,e\",Canceled\n", "f")
            .ok()
            .unwrap();
        assert_eq!(rows[0].1.len(), 1, "an empty cell is no value");
        assert_eq!(rows[1].1["instance_id"], "d,e");
        let bad = csv_rows("a,b\n1,2,s3cr3t\n", "f").err().unwrap();
        assert!(bad.message.contains("row 1"), "{}", bad.message);
        assert!(!bad.message.contains("s3cr3t"), "{}", bad.message);
    }
}
