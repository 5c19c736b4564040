//! `handoff run FLOW --each FILE`: one run per row of a JSON-lines or CSV
//! file, in one process, with progress on stderr and a summary at the end.
//!
//! Every row is checked before anything is sent: one bad row (a wrong type,
//! an unknown column, an empty instance id) stops the batch with exit 2 and
//! names the row. Then the runs go `--jobs` at a time, sharing one HTTP
//! client, at most `--rate` requests a second; a 429 slows them all. The
//! rows are read here; [`runner`] runs them.

pub mod runner;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use serde_json::Value;

use crate::cli::batch::runner::{Batch, Finished, Route, Row};
use crate::cli::common::{
    Colors, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_INVALID, EXIT_OK, TraceArg, load_flow, load_mock,
    print_diagnostics,
};
use crate::cli::report::{self, Style};
use crate::cli::run::RunArgs;
use crate::language::diagnostic::Diagnostic;
use crate::language::flow::Flow;
use crate::language::source::Source;
use crate::run::bounded::Bounded;
use crate::run::inputs::{Inputs, initial_state};
use crate::run::mock::Mock;
use crate::run::trace::{EventKind, Outcome, RunStatus, TraceEvent};

/// How often a summary line is printed when stderr is not a terminal.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Rows with problems shown before the rest are only counted.
const MAX_BAD_ROWS: usize = 20;
/// Kinds of failure the summary lists; the rest are counted together.
const MAX_REASONS: usize = 50;

/// Rows as read: their number and their values by column.
type RowValues = (usize, IndexMap<String, Value>);

/// The rows of a JSON-lines file (`.jsonl`, `.ndjson`, `.json`, or text that
/// starts with `{`) or a CSV file with a header, read one at a time: a
/// batch's memory does not grow with its rows.
pub struct RowReader {
    shown: String,
    number: usize,
    kind: RowKind,
}

/// A row is at most this long; a file without newlines stops here.
const MAX_ROW_BYTES: u64 = 1024 * 1024;
/// The largest rows file, or standard input, read.
const MAX_ROWS_BYTES: u64 = 16 * 1024 * 1024 * 1024;

type RowFile = BufReader<Bounded<File>>;

enum RowKind {
    Json {
        lines: std::io::Lines<RowFile>,
        line: usize,
    },
    Csv {
        reader: csv::Reader<RowFile>,
        headers: csv::StringRecord,
    },
}

impl RowReader {
    /// Opens `path` (`shown` names it in messages, as the user typed it).
    pub fn open(path: &Path, shown: &str) -> Result<RowReader, Diagnostic> {
        let cannot = |e: std::io::Error| {
            Diagnostic::error(format!("cannot read the rows in `{shown}`: {}", reason(&e)))
        };
        let file = File::open(path).map_err(cannot)?;
        let mut file = BufReader::new(Bounded::new(file, MAX_ROW_BYTES, MAX_ROWS_BYTES));
        let ext = Path::new(shown)
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("");
        let jsonl = match ext {
            "jsonl" | "ndjson" | "json" => true,
            "csv" => false,
            _ => {
                let start = file.fill_buf().map_err(cannot)?;
                start
                    .iter()
                    .find(|b| !b.is_ascii_whitespace())
                    .is_some_and(|b| *b == b'{')
            }
        };
        let kind = if jsonl {
            RowKind::Json {
                lines: file.lines(),
                line: 0,
            }
        } else {
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(true)
                .trim(csv::Trim::Headers)
                .from_reader(file);
            let headers = reader
                .headers()
                .map_err(|e| {
                    Diagnostic::error(format!(
                        "the header of `{shown}` cannot be read: {}",
                        csv_reason(&e)
                    ))
                })?
                .clone();
            RowKind::Csv { reader, headers }
        };
        Ok(RowReader {
            shown: shown.to_string(),
            number: 0,
            kind,
        })
    }
}

impl Iterator for RowReader {
    type Item = Result<RowValues, Diagnostic>;

    fn next(&mut self) -> Option<Self::Item> {
        let shown = &self.shown;
        match &mut self.kind {
            RowKind::Json { lines, line } => loop {
                *line += 1;
                let text = match lines.next()? {
                    Ok(t) => t,
                    Err(e) => {
                        return Some(Err(Diagnostic::error(format!(
                            "line {line} of `{shown}` cannot be read: {}",
                            reason(&e)
                        ))));
                    }
                };
                if text.trim().is_empty() {
                    continue;
                }
                self.number += 1;
                let number = self.number;
                // serde's message names a line and column, never the text there.
                let bad = |why: String| {
                    Diagnostic::error(format!("row {number} (line {line}) of `{shown}` {why}"))
                        .help("each line is one JSON object: {\"instance_id\": \"…\", …}")
                };
                return Some(match serde_json::from_str::<Value>(&text) {
                    Ok(Value::Object(map)) => Ok((number, map.into_iter().collect())),
                    Ok(other) => Err(bad(format!(
                        "is {}, not an object",
                        crate::language::fields::json_type_name(&other)
                    ))),
                    Err(e) => {
                        let why = e.to_string();
                        let why = why.split(" at line").next().unwrap_or("");
                        Err(bad(format!("is not JSON: {why}")))
                    }
                });
            },
            RowKind::Csv { reader, headers } => {
                let mut record = csv::StringRecord::new();
                self.number += 1;
                let number = self.number;
                match reader.read_record(&mut record) {
                    Ok(false) => None,
                    Err(e) => Some(Err(Diagnostic::error(format!(
                        "row {number} of `{shown}`: {}",
                        csv_reason(&e)
                    )))),
                    // An empty cell is no value: the field's default applies.
                    Ok(true) => Some(Ok((
                        number,
                        headers
                            .iter()
                            .zip(record.iter())
                            .filter(|(_, cell)| !cell.is_empty())
                            .map(|(name, cell)| (name.to_string(), Value::String(cell.to_string())))
                            .collect(),
                    ))),
                }
            }
        }
    }
}

/// Standard input, copied to a file the batch can read twice (once to check
/// every row, once to run them), removed when dropped.
struct Spool(PathBuf);

impl Spool {
    fn stdin() -> std::io::Result<Spool> {
        let path = std::env::temp_dir().join(format!(
            "handoff-rows-{}-{}",
            std::process::id(),
            crate::run::trace::new_run_id(std::time::SystemTime::now())
        ));
        let spool = Spool(path);
        let mut file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&spool.0)?
        };
        let stdin = std::io::stdin().lock();
        std::io::copy(
            &mut Bounded::new(stdin, u64::MAX, MAX_ROWS_BYTES),
            &mut file,
        )?;
        Ok(spool)
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Why a read failed: a limit says which, anything else as usual.
fn reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::InvalidData if e.get_ref().is_some() => e.to_string(),
        _ => crate::language::source::io_reason(e),
    }
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
        csv::ErrorKind::Io(e) => reason(e),
        _ => "it is not valid CSV".to_string(),
    }
}

/// A row's starting state, or its problems.
fn state_of(
    flow: &Flow,
    (number, values): RowValues,
    set: &[(String, String)],
    shown: &str,
) -> Result<Row, Vec<Diagnostic>> {
    let env = |var: &str| std::env::var(var).ok();
    let label = format!("row {number} of `{shown}`");
    // A row's own value wins over `--set`, which fills in the rest.
    let common: Vec<(String, String)> = set
        .iter()
        .filter(|(name, _)| !values.contains_key(name))
        .cloned()
        .collect();
    // The row's inputs, in a canonical order, name it across reruns.
    let mut all: BTreeMap<&str, Value> = values
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    for (name, value) in &common {
        all.insert(name, Value::String(value.clone()));
    }
    let key = crate::store::flow_hash(&serde_json::to_string(&all).unwrap_or_default());
    let text = serde_json::to_string(&values).unwrap_or_default();
    let source = Source::new(label.clone(), text);
    // A row is JSON already: read as YAML would read it, without parsing
    // its text again. Only a row with a problem is parsed, to point at it.
    // `--set` is the operator's; a row is a caller's: it sets inputs only.
    let quick = crate::language::raw::Node::from_json_map(&values).map(|node| Inputs {
        set: common.clone(),
        set_by: crate::run::inputs::Giver::Operator,
        file: Some((source.clone(), node)),
        file_by: crate::run::inputs::Giver::Caller,
        file_label: Some(label.clone()),
    });
    if let Some(Ok(state)) = quick.map(|inputs| initial_state(flow, &inputs, &env)) {
        return Ok(Row { number, state, key });
    }
    let node = crate::run::inputs::parse_input_file(&source).map_err(|d| vec![d])?;
    let inputs = Inputs {
        set: common,
        set_by: crate::run::inputs::Giver::Operator,
        file: Some((source, node)),
        file_by: crate::run::inputs::Giver::Caller,
        file_label: Some(label),
    };
    initial_state(flow, &inputs, &env).map(|state| Row { number, state, key })
}

/// Reads every row once and checks it, keeping no state: how many rows
/// there are, or the first problems (and how many rows have one).
fn check_rows(
    flow: &Flow,
    path: &Path,
    set: &[(String, String)],
    shown: &str,
) -> Result<usize, Vec<Diagnostic>> {
    let mut problems = Vec::new();
    let mut bad_rows = 0;
    let mut count = 0;
    for row in RowReader::open(path, shown).map_err(|d| vec![d])? {
        let row = row.map_err(|d| vec![d])?;
        count += 1;
        if let Err(diagnostics) = state_of(flow, row, set, shown) {
            bad_rows += 1;
            if bad_rows <= MAX_BAD_ROWS {
                problems.extend(diagnostics);
            }
        }
    }
    if bad_rows > MAX_BAD_ROWS {
        problems.push(Diagnostic::error(format!(
            "and {} more rows with problems",
            bad_rows - MAX_BAD_ROWS
        )));
    }
    if count == 0 {
        problems.push(Diagnostic::error(format!("`{shown}` has no rows")));
    }
    if problems.is_empty() {
        Ok(count)
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
                let mut group = (step, shape(&outcome.reason));
                // Bounded, whatever the failures say.
                if self.reasons.len() >= MAX_REASONS && !self.reasons.contains_key(&group) {
                    group = (String::new(), "other reasons".to_string());
                }
                *self.reasons.entry(group).or_default() += 1;
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
                            crate::language::source::io_reason(&e)
                        );
                    }
                    Err(_) => {}
                }
            }
            if let Some(file) = self.files.get_mut(&row) {
                let _ = writeln!(file, "{line}");
            }
            if matches!(event.kind, EventKind::FlowFinished(_)) {
                self.names.remove(&row);
                if let Some(mut file) = self.files.remove(&row) {
                    let _ = file.flush();
                }
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

pub async fn batch_command(args: &RunArgs, each: &Path, color: Colors) -> i32 {
    let flow = match load_flow(&args.flow, color) {
        Ok(flow) => flow,
        Err(code) => return code,
    };
    let shown = each.display().to_string();
    let set = match crate::run::inputs::parse_set(&args.set) {
        Ok(s) => s,
        Err(diagnostics) => {
            print_diagnostics(&diagnostics, color);
            return EXIT_INVALID;
        }
    };
    // Standard input is kept in a file: the rows are read twice.
    let spool = if shown == "-" {
        match Spool::stdin() {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!(
                    "error: cannot read the rows from standard input: {}",
                    reason(&e)
                );
                return EXIT_INVALID;
            }
        }
    } else {
        None
    };
    let path = spool.as_ref().map_or(each, |s| s.0.as_path());
    // Every row is checked before anything is sent; then read again to run.
    let total = match check_rows(&flow, path, &set, &shown) {
        Ok(n) => n,
        Err(diagnostics) => {
            print_diagnostics(&diagnostics, color);
            eprintln!("no run was started: fix the rows above, then run the batch again");
            return EXIT_INVALID;
        }
    };
    let reader = match RowReader::open(path, &shown) {
        Ok(r) => r,
        Err(d) => {
            print_diagnostics(&[d], color);
            return EXIT_INVALID;
        }
    };
    if let Some(dir) = &args.trace_dir
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        eprintln!(
            "error: cannot create `{}`: {}",
            dir.display(),
            crate::language::source::io_reason(&e)
        );
        return EXIT_INVALID;
    }
    let dry_run = args.dry_run || args.mock.is_some();
    let mock = if dry_run {
        match &args.mock {
            Some(path) => match load_mock(&path.to_string_lossy(), &flow) {
                Ok(m) => m,
                Err(diagnostics) => {
                    print_diagnostics(&diagnostics, color);
                    return EXIT_INVALID;
                }
            },
            None => Mock::default(),
        }
    } else {
        Mock::default()
    };
    let transport = if dry_run {
        None
    } else {
        match crate::run::transport::ReqwestTransport::new() {
            Ok(t) => {
                let per_host = args.max_inflight.unwrap_or(args.jobs) as usize;
                let limited = crate::run::limits::Limited::new(Box::new(t), per_host);
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
                crate::language::source::io_reason(&e)
            );
            return EXIT_INVALID;
        }
    }
    if dry_run && args.durable {
        eprintln!("error: `--durable` keeps real runs; a dry run has nothing to resume");
        return EXIT_INVALID;
    }
    let runs = if args.durable {
        match crate::cli::runs::open_store(&args.store.target()).await {
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
        total,
        ..Tally::default()
    });
    let outputs = Mutex::new(Outputs {
        jsonl: (!args.quiet && args.trace == TraceArg::Jsonl)
            .then(|| BufWriter::new(std::io::stdout())),
        dir: args.trace_dir.clone(),
        files: HashMap::new(),
        names: HashMap::new(),
        failed_dir: false,
    });
    let pretty = !args.quiet && args.trace == TraceArg::Pretty;
    let style = Style { color: color.out };
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let bar = (std::io::stderr().is_terminal() && !args.quiet).then(|| {
        let bar = indicatif::ProgressBar::new(total as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let events = |row: usize, event: &TraceEvent| {
        if let Ok(mut o) = outputs.lock() {
            o.event(row, event);
        }
    };
    // `--failed-rows`: the values of the rows in flight, and where those
    // that do not succeed go.
    let kept_rows: Mutex<HashMap<usize, IndexMap<String, Value>>> = Mutex::new(HashMap::new());
    let failed_rows = match &args.failed_rows {
        Some(path) => match std::fs::File::create(path) {
            Ok(f) => Some(Mutex::new((
                BufWriter::new(f),
                0usize,
                std::collections::BTreeSet::new(),
            ))),
            Err(e) => {
                eprintln!(
                    "error: cannot write `{}`: {}",
                    path.display(),
                    crate::language::source::io_reason(&e)
                );
                return EXIT_INVALID;
            }
        },
        None => None,
    };
    let finished = |done: Finished| {
        if let Some(out) = &failed_rows {
            let values = kept_rows.lock().ok().and_then(|mut k| k.remove(&done.row));
            if done.outcome.status != RunStatus::Succeeded
                && !done.skipped
                && let (Some(values), Ok(mut out)) = (values, out.lock())
            {
                let (writer, count, left_out) = &mut *out;
                let row: serde_json::Map<String, Value> = values
                    .into_iter()
                    .filter(|(name, _)| {
                        let secret = flow.fields.get(name).is_some_and(|f| f.secret);
                        if secret {
                            left_out.insert(name.clone());
                        }
                        !secret
                    })
                    .collect();
                let _ = writeln!(writer, "{}", Value::Object(row));
                *count += 1;
            }
        }
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
    // Ctrl-C is caught from here on, before any row runs: a dry batch
    // that never waits must still stop, summarise and exit 130.
    let mut interrupts =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: cannot catch Ctrl-C: {e}");
                return EXIT_FAILED;
            }
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
                    _ = interrupts.recv() => {
                        if !stop.swap(true, Ordering::Relaxed) {
                            let note = "stopping: no new runs; the runs in flight end their current step";
                            match &bar { Some(b) => b.println(note), None => eprintln!("{note}") }
                        }
                    }
                }
            }
        }
    };
    // The rows as the runs take them; a file's name part is kept only while
    // its run goes. A row that no longer reads (the file changed since it
    // was checked) stops the batch.
    let changed = AtomicBool::new(false);
    let rows = reader.map_while(|row| {
        if failed_rows.is_some()
            && let (Ok((number, values)), Ok(mut kept)) = (&row, kept_rows.lock())
        {
            kept.insert(*number, values.clone());
        }
        let row = row
            .ok()
            .and_then(|values| state_of(&flow, values, &set, &shown).ok());
        if row.is_none() {
            changed.store(true, Ordering::Relaxed);
        }
        let row = row?;
        if args.trace_dir.is_some()
            && let Ok(mut o) = outputs.lock()
        {
            o.names.insert(row.number, file_name_part(&flow, &row));
        }
        Some(row)
    });
    tokio::select! {
        _ = batch.run(rows, &events, &finished) => {}
        _ = ticker => {}
    }
    if changed.load(Ordering::Relaxed) {
        eprintln!(
            "error: `{shown}` changed while the batch ran: a row no longer reads as it did; the rows after it were not run"
        );
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
    if let (Some(out), Some(path)) = (failed_rows, &args.failed_rows)
        && let Ok((mut writer, count, left_out)) = out.into_inner()
    {
        let _ = writer.flush();
        let left: Vec<String> = left_out.iter().map(|n| format!("`{n}`")).collect();
        eprintln!(
            "{} that did not succeed written to `{}`{}",
            crate::cli::common::plural(count, "row"),
            path.display(),
            if left.is_empty() {
                String::new()
            } else {
                format!(
                    " without the secret {} (give it with `--set` when you run them again)",
                    left.join(", ")
                )
            }
        );
    }
    let tally = tally.into_inner().unwrap_or_default();
    let summary = summary(&tally, started.elapsed(), style);
    if args.trace == TraceArg::Jsonl && !args.quiet {
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

    fn rows_of(name: &str, text: &str) -> Vec<Result<RowValues, Diagnostic>> {
        let dir = std::env::temp_dir().join(format!("handoff-rows-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let rows = RowReader::open(&path, name).unwrap().collect();
        let _ = std::fs::remove_file(&path);
        rows
    }

    #[test]
    fn rows_come_from_json_lines_or_csv() {
        let rows = rows_of("a.jsonl", "{\"a\": 1}\n\n{\"a\": \"x\"}\n");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].as_ref().unwrap().0, 2);
        let bad = rows_of("b.jsonl", "{\"a\": 1}\n[1]\n");
        let message = &bad[1].as_ref().err().unwrap().message;
        assert!(message.contains("row 2 (line 2)"), "{message}");
        let secretish = rows_of("c.jsonl", "{\"token\": \"s3cr3t-value\"\n");
        let message = &secretish[0].as_ref().err().unwrap().message;
        assert!(!message.contains("s3cr3t"), "{message}");
        // Without an extension, the first character tells.
        let rows = rows_of("d", "instance_id,outcome\nabc,\n\"d,e\",Canceled\n");
        let rows: Vec<RowValues> = rows.into_iter().map(Result::unwrap).collect();
        assert_eq!(rows[0].1.len(), 1, "an empty cell is no value");
        assert_eq!(rows[1].1["instance_id"], "d,e");
        let bad = rows_of("e.csv", "a,b\n1,2,s3cr3t\n");
        let message = &bad[0].as_ref().err().unwrap().message;
        assert!(message.contains("row 1"), "{message}");
        assert!(!message.contains("s3cr3t"), "{message}");
        assert_eq!(rows_of("f", "  {\"a\": 1}\n").len(), 1, "JSON sniffed");
    }
}
