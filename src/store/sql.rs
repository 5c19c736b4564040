//! The SQL both stores run, written once over sqlx's [`Database`]: SQLite
//! ([`crate::store::sqlite`]) and Postgres ([`crate::store::postgres`]) differ
//! only in how they connect, in the few words of their [`Dialect`], and in
//! their migration files (`migrations/sqlite/`, `migrations/postgres/`), which
//! one migrator runs for both.
//!
//! Every statement uses `$1`-style parameters, which both databases read, and
//! SQL both speak: `ON CONFLICT` upserts, `CAST(… AS TEXT)` for a parameter
//! that may be null. Statements of many rows are built by `rows_of`, whose
//! marks are the dialect's ([`Dialect::NUMBERED`]); where a database has one
//! statement for any number of rows (Postgres's arrays), the dialect says it
//! in a hook (`Dialect::checkpoint_in_one` and its kin), and this file's
//! statements are what the others run.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::OptionFuture;

use sqlx::migrate::{Migrate, Migration, MigrationType, Migrator};
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, Pool, Row, Type};
use tokio::sync::Notify;

use crate::engine::checkpoint::{DurableStatus, Saved};
use crate::run::clock::BoxFuture;
use crate::store::{
    Checkpoint, Claimed, Counts, Created, IdempotencyKey, Lease, NewRun, RunFilter, Store,
    StoreError, StoredRun,
};

/// A kept idempotency key: its hash, its run, and its inputs' fingerprint.
pub(crate) type KeptKey = (String, String, Option<String>);

/// What differs between the two databases, beside how they connect.
pub trait Dialect: Database {
    /// How to tell the other workers that a run was canceled or signalled.
    const NOTIFY: Option<&'static str>;
    /// How a transaction that writes begins. SQLite takes the write lock at
    /// once, so that one which reads first (a create checks its key) waits its
    /// turn rather than failing as "locked" when another writer got there first.
    const BEGIN: &'static str;
    /// What `take_due` adds to its `SELECT`: Postgres locks the rows it
    /// claims and skips those another worker is claiming right now, so
    /// workers polling together do not queue.
    const DUE_LOCK: &'static str;
    /// Whether a statement of many rows numbers its parameters (`$1`), or
    /// marks each with a bare `?`, numbered in order (SQLite): SQLite finds a
    /// numbered parameter by walking a list of them, once for each parameter
    /// bound, so a statement of 550 parameters bound them in quadratic time
    /// (a sixteenth of a `serve` worker's CPU).
    const NUMBERED: bool;
    /// Whether transactions write side by side (Postgres), or one holds the
    /// store's only writer while it lasts (SQLite).
    const SIDE_BY_SIDE: bool;
    /// Whether an `UPDATE` rewrites the index entries of every column it
    /// sets, changed or not (SQLite; Postgres compares, and leaves an entry
    /// whose value did not change); see `UPDATE_SAME` in this module.
    const SET_REWRITES_INDEXES: bool;
    /// The schema's versions, embedded in the binary: version, name, SQL.
    const MIGRATIONS: &'static [(i64, &'static str, &'static str)];
    fn rows_affected(result: &Self::QueryResult) -> u64;
    /// Checkpoints with their events in one statement of the database's
    /// own, atomic without a transaction around it: the ids of the runs it
    /// wrote (the fence let through). `None` where there is no such
    /// statement: then a transaction holds the rows' statements.
    fn checkpoint_in_one<'a>(
        _pool: &'a Pool<Self>,
        _points: &'a [&'a Checkpoint],
    ) -> Option<BoxFuture<'a, Result<Vec<String>, sqlx::Error>>> {
        None
    }
    /// The runs idempotency keys (their hashes) started, `(hash, run,
    /// fingerprint)`, in one statement of the database's own, whatever their
    /// number. `None`: they are looked up a few hundred at a time.
    fn keys_kept_in_one<'a>(
        _conn: &'a mut Self::Connection,
        _hashes: &'a [String],
    ) -> Option<BoxFuture<'a, Result<Vec<KeptKey>, sqlx::Error>>> {
        None
    }
    /// New runs' keys `(hash, run)` in one statement of the database's own,
    /// a key already kept left alone: how many went in.
    fn insert_keys_in_one<'a>(
        _conn: &'a mut Self::Connection,
        _keys: &'a [(String, &'a NewRun)],
    ) -> Option<BoxFuture<'a, Result<u64, sqlx::Error>>> {
        None
    }
    /// New runs' rows in one statement of the database's own, whatever
    /// their number. `None`: the rows go in fifty at a time.
    fn insert_runs_in_one<'a>(
        _conn: &'a mut Self::Connection,
        _runs: &'a [&'a NewRun],
    ) -> Option<BoxFuture<'a, Result<(), sqlx::Error>>> {
        None
    }
}

/// The channel the workers tell each other on.
pub const CHANNEL: &str = "handoff_runs";

/// sqlx's migrator over a dialect's embedded versions: it records what ran in
/// `_sqlx_migrations` and checks that no applied version changed; on Postgres
/// it holds an advisory lock, so that workers starting together migrate once.
pub fn migrator<DB: Dialect>() -> Migrator {
    Migrator::with_migrations(
        DB::MIGRATIONS
            .iter()
            .map(|(version, name, sql)| {
                Migration::new(
                    *version,
                    std::borrow::Cow::Borrowed(*name),
                    MigrationType::Simple,
                    sqlx::SqlStr::from_static(sql),
                    false,
                )
            })
            .collect(),
    )
}

/// Brings a database's schema up to date on one connection. `adopted`: the
/// versions a store applied before it used this migrator, recorded as
/// applied without running them again.
pub async fn migrate<DB: Dialect>(conn: &mut DB::Connection, adopted: i64) -> Result<(), StoreError>
where
    DB::Connection: Migrate,
{
    let migrator = migrator::<DB>();
    let known = DB::MIGRATIONS.len() as i64;
    let newer = |done: i64| {
        StoreError(format!(
            "the run store was written by a newer handoff (schema {done}); this one knows {known}"
        ))
    };
    if adopted > known {
        return Err(newer(adopted));
    }
    if adopted > 0 {
        migrator
            .run_direct(Some(adopted), conn, true)
            .await
            .map_err(|e| StoreError(format!("the run store could not migrate: {e}")))?;
    }
    migrator
        .run_direct(None, conn, false)
        .await
        .map_err(|e| match e {
            sqlx::migrate::MigrateError::VersionMissing(v) => newer(v),
            e => StoreError(format!("the run store could not migrate: {e}")),
        })
}

/// A run store over one SQL database.
pub struct SqlStore<DB: Database> {
    pub pool: Pool<DB>,
    /// Notified when another worker canceled or signalled a run; `None`
    /// when only this process writes.
    pub changed: Option<Arc<Notify>>,
    /// The flow versions this process knows are stored (their hashes): a
    /// start writes its flow's text once a version, not once a run.
    pub versions: std::sync::Mutex<std::collections::HashSet<String>>,
}

pub fn failed(what: &str) -> impl Fn(sqlx::Error) -> StoreError + '_ {
    move |e| StoreError(format!("the run store could not {what}: {}", shown(&e)))
}

/// An error without the connection string, which may hold a password.
fn shown(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Configuration(_) => "the store URL is not valid".to_string(),
        other => other.to_string(),
    }
}

impl<DB: Dialect> SqlStore<DB>
where
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    async fn notify(&self, what: &str) {
        // Best effort: the other workers' poll finds the run anyway.
        if let Some(sql) = DB::NOTIFY {
            let _ = sqlx::query(sql)
                .bind(CHANNEL)
                .bind(what)
                .execute(&self.pool)
                .await;
        }
    }

    /// Stores the flow versions `runs` name that this process has not stored
    /// yet, each once, before the runs and outside their transaction: a
    /// version kept for a start that is then undone is harmless, and one
    /// known here is known to be committed.
    async fn keep_versions(&self, runs: &[NewRun]) -> Result<(), sqlx::Error> {
        let mut new: Vec<(&str, &str)> = Vec::new();
        {
            let known = self.versions.lock().unwrap_or_else(|e| e.into_inner());
            for run in runs {
                let hash = run.flow_hash.as_str();
                if !known.contains(hash) && !new.iter().any(|(h, _)| *h == hash) {
                    new.push((hash, &run.flow_source));
                }
            }
        }
        for chunk in new.chunks(VERSIONS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO flow_versions (hash, source) VALUES {} ON CONFLICT (hash) DO NOTHING",
                rows_of::<DB>("(#, #)", ", ", chunk.len(), 1)
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (hash, source) in chunk {
                query = query.bind(*hash).bind(*source);
            }
            query.execute(&self.pool).await?;
        }
        let mut known = self.versions.lock().unwrap_or_else(|e| e.into_inner());
        known.extend(new.iter().map(|(h, _)| h.to_string()));
        Ok(())
    }
}

/// `n` rows made from `row`, joined by `between`, each `#` in them a
/// parameter, numbered in order from `first` on. Each parameter is marked
/// once, in order, so a bare `?` (SQLite's, [`Dialect::NUMBERED`]) numbers
/// the same as `$n`.
fn rows_of<DB: Dialect>(row: &str, between: &str, n: usize, first: usize) -> String {
    use std::fmt::Write;
    let mut sql = String::with_capacity(n * (row.len() + between.len() + 16));
    let mut next = first;
    for k in 0..n {
        if k > 0 {
            sql.push_str(between);
        }
        for (i, part) in row.split('#').enumerate() {
            if i > 0 {
                if DB::NUMBERED {
                    let _ = write!(sql, "${next}");
                } else {
                    sql.push('?');
                }
                next += 1;
            }
            sql.push_str(part);
        }
    }
    sql
}

/// `items` in chunks for statements of many rows: each as large as it can
/// be, up to `most`, and a power of two rows long. A statement's text
/// differs with its count of rows, and SQLite prepares every text a
/// connection has not run yet, at a cost that grows with its rows: with any
/// count up to 50 or 100, a batch's remainder was a text of its own. Seven
/// counts are prepared once each.
pub(crate) fn in_sizes<T>(mut items: &[T], most: usize) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        let n = size_for(items.len(), most);
        (n > 0).then(|| {
            let (chunk, rest) = items.split_at(n);
            items = rest;
            chunk
        })
    })
}

/// How many of `left` rows the next statement takes (see [`in_sizes`]).
fn size_for(left: usize, most: usize) -> usize {
    if left >= most {
        most
    } else if left == 0 {
        0
    } else {
        1 << left.ilog2()
    }
}

/// Writes one trace event, a row of its own. (A macro: the same text for
/// both databases, whose bounds a function would have to repeat.)
macro_rules! insert_event {
    ($tx:expr, $run:expr, $seq:expr, $event:expr) => {
        sqlx::query(
            "INSERT INTO events (run_id, seq, last_seq, lines) VALUES ($1, $2, $2, $3)
             ON CONFLICT (run_id, seq) DO UPDATE SET last_seq = excluded.last_seq, lines = excluded.lines",
        )
        .bind($run)
        .bind($seq as i64)
        .bind($event)
        .execute(&mut *$tx)
        .await
    };
}

/// A run the scheduler may take at `$1` for owner `$2`: its wait is over and
/// no one else holds it, or it was under way in a worker whose lease ran out.
const DUE: &str = "((status = 'waiting' AND wake_at_ms <= $1
        AND (owner IS NULL OR owner = $2 OR lease_until_ms < $1))
    -- A running run of this owner's is under way here: not due.
    OR (status = 'running' AND (owner IS NULL OR lease_until_ms < $1)))";

/// A run's row with its flow's text, from the version it names (a stored run
/// whose version is missing reads an empty text, which `pinned_flow` refuses).
const RUN_ROW: &str = "SELECT runs.*, flow_versions.source AS flow_source FROM runs LEFT JOIN flow_versions ON flow_versions.hash = runs.flow_hash";

/// Flow versions a statement stores at most (two parameters each).
const VERSIONS_PER_STATEMENT: usize = 100;

/// Runs a statement inserts at most (eleven parameters each; a power of
/// two, see [`in_sizes`]).
const RUNS_PER_STATEMENT: usize = 64;

/// Idempotency keys looked up in one statement (parameters: SQLite allows
/// 32,766, Postgres 65,535).
const KEYS_PER_STATEMENT: usize = 400;

/// Inserts new runs' rows, each leased to the process that creates it, in as
/// few statements as it can.
macro_rules! insert_runs {
    ($executor:expr, $runs:expr) => {
        async {
            let runs: &[&NewRun] = $runs;
            for chunk in in_sizes(runs, RUNS_PER_STATEMENT) {
                let sql = format!(
                    "INSERT INTO runs (id, flow, flow_path, flow_hash, inputs, status, step, steps_taken, state, created_ms, updated_ms, owner, lease_until_ms, title) VALUES {}",
                    rows_of::<DB>("(#, #, #, #, #, 'running', NULL, 0, #, #, #, #, #, #)", ", ", chunk.len(), 1)
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for run in chunk {
                    query = query
                        .bind(&run.id)
                        .bind(&run.flow)
                        .bind(&run.flow_path)
                        .bind(&run.flow_hash)
                        .bind(&run.inputs)
                        .bind(&run.state)
                        .bind(run.created_ms)
                        .bind(run.created_ms)
                        .bind(&run.lease.owner)
                        .bind(run.lease.until_ms)
                        .bind(&run.title);
                }
                query.execute($executor).await?;
            }
            Ok::<(), sqlx::Error>(())
        }
        .await
    };
}

/// `n` checkpoints' rows as a table, from parameter `first` on, twelve
/// each: a `VALUES` list, which both databases speak, its columns named by
/// a `SELECT` over it and typed by the first row's casts (Postgres types the
/// other rows' parameters alike). As `SELECT … UNION ALL SELECT …`, each arm
/// a query of its own, SQLite took three times the instructions to prepare
/// it (docs/performance.md).
fn checkpoint_table<DB: Dialect>(n: usize, first: usize) -> String {
    let typed = rows_of::<DB>(
        "(CAST(# AS TEXT), CAST(# AS TEXT), CAST(# AS TEXT), CAST(# AS TEXT), CAST(# AS BIGINT), CAST(# AS BIGINT), CAST(# AS TEXT), CAST(# AS TEXT), CAST(# AS BIGINT), CAST(# AS TEXT), CAST(# AS TEXT), CAST(# AS BIGINT))",
        "",
        1,
        first,
    );
    let rest = rows_of::<DB>(
        ", (#, #, #, #, #, #, #, #, #, #, #, #)",
        "",
        n.saturating_sub(1),
        first + 12,
    );
    format!(
        "SELECT column1 AS id, column2 AS owner, column3 AS status, column4 AS step, column5 AS wake_at_ms, column6 AS steps_taken, column7 AS state, column8 AS outcome, column9 AS updated_ms, column10 AS progress, column11 AS waiting_for, column12 AS release FROM (VALUES {typed}{rest}) AS t"
    )
}

/// What every checkpoint sets, whether or not its status and wake time
/// change. (Macros: `concat!` takes only literals.)
macro_rules! kept_columns {
    () => {
        "step = v.step, steps_taken = v.steps_taken, state = COALESCE(v.state, runs.state), outcome = v.outcome, updated_ms = v.updated_ms, progress = v.progress, waiting_for = v.waiting_for, signal = NULL, owner = CASE WHEN v.release = 1 THEN NULL ELSE runs.owner END, lease_until_ms = CASE WHEN v.release = 1 THEN NULL ELSE runs.lease_until_ms END"
    };
}

/// The fence: only the process that holds a run writes it, and a canceled
/// run is not written over.
macro_rules! fence {
    () => {
        " WHERE runs.id = v.id AND runs.status <> 'canceled' AND runs.owner = v.owner"
    };
}

/// The fenced write of checkpoints' rows from a table `v` of them: only the
/// process that holds a run writes it, and a canceled run is not written
/// over. A checkpoint with `release` lets go of the lease in the same write.
/// It returns the ids of the runs it wrote.
pub(crate) const UPDATE_FROM: &str = concat!(
    "UPDATE runs SET status = v.status, wake_at_ms = v.wake_at_ms, ",
    kept_columns!(),
    " FROM "
);
pub(crate) const FENCED: &str = concat!(fence!(), " RETURNING runs.id");

/// [`UPDATE_FROM`] for the checkpoints that leave the run's status and wake
/// time as they are (most of them: a run's checkpoints before its last all
/// say `running`), which it writes without naming either. The three indexes
/// over those columns are then left alone: SQLite rewrites an index's entry
/// for every column an `UPDATE` sets, changed or not, which was about 40% of
/// writing a checkpoint's row (docs/performance.md). A row whose status or
/// wake time differs is not written by it, and goes to [`UPDATE_FROM`].
pub(crate) const UPDATE_SAME: &str = concat!("UPDATE runs SET ", kept_columns!(), " FROM ");
pub(crate) const FENCED_SAME: &str = concat!(
    fence!(),
    " AND runs.status = v.status AND runs.wake_at_ms IS v.wake_at_ms RETURNING runs.id"
);

/// What a checkpoint the fence let through says: saved, and let go of
/// when it released the run.
fn kept(p: &Checkpoint) -> Saved {
    if p.release {
        Saved::Released
    } else {
        Saved::Saved
    }
}

/// Binds a checkpoint's row, in [`checkpoint_table`]'s order.
macro_rules! bind_checkpoint {
    ($query:expr, $p:expr) => {
        $query
            .bind(&$p.run_id)
            .bind(&$p.owner)
            .bind($p.status.as_str())
            .bind(&$p.step)
            .bind($p.wake_at_ms)
            .bind($p.steps_taken as i64)
            .bind(&$p.state)
            .bind(&$p.outcome)
            .bind($p.updated_ms)
            .bind(&$p.progress)
            .bind(&$p.waiting_for)
            .bind(i64::from($p.release))
    };
}

/// Checkpoints a statement writes at most (twelve parameters each; a power
/// of two, see [`in_sizes`]).
const CHECKPOINTS_PER_STATEMENT: usize = 64;

/// The fenced write of many checkpoints' rows, in as few statements as it
/// can: the ids of the runs it wrote. A run may be in the list once.
macro_rules! update_runs {
    ($tx:expr, $points:expr) => {
        async {
            let mut points: Vec<&Checkpoint> = $points.to_vec();
            let mut applied: Vec<String> = Vec::with_capacity(points.len());
            // Where an UPDATE rewrites the indexes of what it sets, the rows
            // that keep their status and wake time go first without them.
            let passes: &[(&str, &str)] = if DB::SET_REWRITES_INDEXES {
                &[(UPDATE_SAME, FENCED_SAME), (UPDATE_FROM, FENCED)]
            } else {
                &[(UPDATE_FROM, FENCED)]
            };
            for (pass, (head, fence)) in passes.iter().enumerate() {
                let written: std::collections::HashSet<&str> =
                    applied.iter().map(String::as_str).collect();
                points.retain(|p| !written.contains(p.run_id.as_str()));
                // The pass that keeps status and wake time takes only what
                // says `running` with no wake time, as the row of a run under
                // way here does: the rest (a run's last checkpoint, a wait)
                // would be bound and copied only for the fence to refuse them.
                // A guess wrong either way is written by the next pass.
                let taken: Vec<&Checkpoint> = if pass + 1 < passes.len() {
                    points
                        .iter()
                        .filter(|p| p.status == DurableStatus::Running && p.wake_at_ms.is_none())
                        .copied()
                        .collect()
                } else {
                    points.clone()
                };
                for chunk in in_sizes(&taken, CHECKPOINTS_PER_STATEMENT) {
                    let sql = format!(
                        "{head}({}) AS v{fence}",
                        checkpoint_table::<DB>(chunk.len(), 1)
                    );
                    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                    for p in chunk {
                        query = bind_checkpoint!(query, p);
                    }
                    for row in query.fetch_all(&mut *$tx).await? {
                        applied.push(row.try_get(0)?);
                    }
                }
            }
            Ok::<Vec<String>, sqlx::Error>(applied)
        }
        .await
    };
}

/// Rows of events a statement inserts at most: well under either database's
/// limit on parameters (four each; a power of two, see [`in_sizes`]).
const EVENTS_PER_STATEMENT: usize = 64;

/// Inserts rows of trace events, of one run or of many, in as few statements
/// as it can: each statement is a round trip to the database (for SQLite, to
/// its driver's thread), which costs more than the inserting. A row written
/// again (a checkpoint retried) replaces the first.
macro_rules! insert_events {
    ($tx:expr, $rows:expr) => {
        async {
            let mut rows: Vec<EventRow> = $rows.collect();
            while !rows.is_empty() {
                // Each chunk bound by value: its lines are moved to the
                // driver, not copied.
                let rest = rows.split_off(size_for(rows.len(), EVENTS_PER_STATEMENT));
                let chunk = std::mem::replace(&mut rows, rest);
                let sql = format!(
                    "INSERT INTO events (run_id, seq, last_seq, lines) VALUES {} ON CONFLICT (run_id, seq) DO UPDATE SET last_seq = excluded.last_seq, lines = excluded.lines",
                    rows_of::<DB>("(#, #, #, #)", ", ", chunk.len(), 1)
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for row in chunk {
                    query = query
                        .bind(row.run)
                        .bind(row.first as i64)
                        .bind(row.last as i64)
                        .bind(row.lines);
                }
                query.execute(&mut *$tx).await?;
            }
            Ok::<(), sqlx::Error>(())
        }
        .await
    };
}

/// One row of the `events` table: a run's events numbered `first..=last`, in
/// order, as JSON lines joined by newlines. A checkpoint's events are one row
/// rather than a row each: the reference flow's 24 events a run were 24 index
/// entries and 72 bound values, and are three of each (a third more runs a
/// second on SQLite, half as many again on Postgres).
pub(crate) struct EventRow<'a> {
    pub run: &'a str,
    pub first: u64,
    pub last: u64,
    pub lines: String,
}

/// A checkpoint's events as rows for [`insert_events`]: one for each stretch
/// of consecutive numbers (a checkpoint's events are one stretch, unless a
/// caller says otherwise), so that a line's number is always its row's first
/// plus its place.
pub(crate) fn rows(p: &Checkpoint) -> impl Iterator<Item = EventRow<'_>> {
    let mut rows: Vec<EventRow> = Vec::new();
    // What is left to join: a row (most often all of a checkpoint's events)
    // is allocated once, not grown line by line.
    let mut left: usize = p.events.iter().map(|(_, e)| e.len() + 1).sum();
    for (seq, event) in &p.events {
        match rows.last_mut() {
            Some(row) if row.last.checked_add(1) == Some(*seq) => {
                row.last = *seq;
                row.lines.push('\n');
                row.lines.push_str(event);
            }
            _ => {
                let mut lines = String::with_capacity(left);
                lines.push_str(event);
                rows.push(EventRow {
                    run: &p.run_id,
                    first: *seq,
                    last: *seq,
                    lines,
                });
            }
        }
        left -= event.len() + 1;
    }
    rows.into_iter()
}

impl<DB: Dialect> Store for SqlStore<DB>
where
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    usize: ColumnIndex<DB::Row>,
    for<'c> &'c str: ColumnIndex<DB::Row>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    fn create_many<'a>(
        &'a self,
        runs: &'a [NewRun],
    ) -> BoxFuture<'a, Result<Vec<Created>, StoreError>> {
        Box::pin(async move {
            let fail = failed("create runs");
            self.keep_versions(runs).await.map_err(&fail)?;
            // One run with no key is one statement: no transaction to open
            // and close, which are round trips of their own.
            if let [run] = runs
                && run.idempotency.is_none()
            {
                insert_runs!(&self.pool, &[run]).map_err(&fail)?;
                return Ok(vec![Created::New]);
            }
            // Twice at most: a key another worker kept meanwhile is found the
            // second time.
            for _ in 0..2 {
                let mut tx = self.pool.begin_with(DB::BEGIN).await.map_err(&fail)?;
                // The keys already kept, a few hundred to a query: a bulk
                // start costs a handful of statements, not three a run.
                let hashes: Vec<String> = runs
                    .iter()
                    .filter_map(|r| r.idempotency.as_ref().map(IdempotencyKey::hash))
                    .collect();
                let mut kept: HashMap<String, (String, Option<String>)> = HashMap::new();
                let in_one = OptionFuture::from(DB::keys_kept_in_one(&mut *tx, &hashes))
                    .await
                    .transpose()
                    .map_err(&fail)?;
                if let Some(found) = in_one {
                    kept.extend(found.into_iter().map(|(hash, id, f)| (hash, (id, f))));
                } else {
                    for chunk in hashes.chunks(KEYS_PER_STATEMENT) {
                        let marks = rows_of::<DB>("#", ", ", chunk.len(), 1);
                        let mut query = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "SELECT key_hash, run_id, fingerprint FROM idempotency WHERE key_hash IN ({marks})"
                        )));
                        for hash in chunk {
                            query = query.bind(hash);
                        }
                        for row in query.fetch_all(&mut *tx).await.map_err(&fail)? {
                            let hash: String = row.try_get(0).map_err(&fail)?;
                            kept.insert(
                                hash,
                                (
                                    row.try_get(1).map_err(&fail)?,
                                    row.try_get(2).map_err(&fail)?,
                                ),
                            );
                        }
                    }
                }
                let mut results = Vec::with_capacity(runs.len());
                let mut fresh = Vec::with_capacity(runs.len());
                let mut keys = Vec::new();
                for (run, hash) in runs.iter().zip(
                    runs.iter()
                        .map(|r| r.idempotency.as_ref().map(IdempotencyKey::hash)),
                ) {
                    let (Some(key), Some(hash)) = (&run.idempotency, hash) else {
                        fresh.push(run);
                        results.push(Created::New);
                        continue;
                    };
                    if let Some((id, fingerprint)) = kept.get(&hash) {
                        results.push(key.found(id.clone(), fingerprint.clone()));
                        continue;
                    }
                    // A key given twice in the list names its first run.
                    kept.insert(hash.clone(), (run.id.clone(), key.fingerprint.clone()));
                    fresh.push(run);
                    keys.push((hash, run));
                    results.push(Created::New);
                }
                // A start that conflicts keeps nothing of the call.
                if results.iter().any(|r| matches!(r, Created::Conflict(_))) {
                    tx.rollback().await.map_err(&fail)?;
                    return Ok(results);
                }
                let in_one = OptionFuture::from(DB::insert_runs_in_one(&mut *tx, &fresh))
                    .await
                    .transpose()
                    .map_err(&fail)?;
                if in_one.is_none() {
                    insert_runs!(&mut *tx, &fresh).map_err(&fail)?;
                }
                // The keys go in with their runs: a retry finds both or neither.
                let in_one = OptionFuture::from(DB::insert_keys_in_one(&mut *tx, &keys))
                    .await
                    .transpose()
                    .map_err(&fail)?;
                let mut inserted = in_one.unwrap_or(0);
                if in_one.is_none() {
                    for chunk in keys.chunks(KEYS_PER_STATEMENT / 4) {
                        let rows = rows_of::<DB>("(#, #, #, #)", ", ", chunk.len(), 1);
                        let mut query = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "INSERT INTO idempotency (key_hash, run_id, created_ms, fingerprint) VALUES {rows} ON CONFLICT (key_hash) DO NOTHING"
                        )));
                        for (hash, run) in chunk {
                            let fingerprint = run
                                .idempotency
                                .as_ref()
                                .and_then(|k| k.fingerprint.as_deref());
                            query = query
                                .bind(hash)
                                .bind(&run.id)
                                .bind(run.created_ms)
                                .bind(fingerprint);
                        }
                        inserted +=
                            DB::rows_affected(&query.execute(&mut *tx).await.map_err(&fail)?);
                    }
                }
                // Another worker kept one of the keys meanwhile: nothing of
                // this try is kept, and the next finds that key.
                if inserted < keys.len() as u64 {
                    tx.rollback().await.map_err(&fail)?;
                    continue;
                }
                tx.commit().await.map_err(&fail)?;
                return Ok(results);
            }
            Err(StoreError(
                "another worker kept the same idempotency keys twice meanwhile; try again".into(),
            ))
        })
    }

    fn checkpoint<'a>(&'a self, p: &'a Checkpoint) -> BoxFuture<'a, Result<Saved, StoreError>> {
        Box::pin(async move {
            let fail = failed("checkpoint");
            let mut tx = self.pool.begin_with(DB::BEGIN).await.map_err(&fail)?;
            // Fenced: only the process that holds the run writes, and a
            // canceled run is not written over; the writer stops instead.
            let written = update_runs!(tx, &[p]).map_err(&fail)?;
            if written.is_empty() {
                let row: Option<(String, Option<String>)> =
                    sqlx::query("SELECT status, owner FROM runs WHERE id = $1")
                        .bind(&p.run_id)
                        .fetch_optional(&mut *tx)
                        .await
                        .and_then(|r| r.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose())
                        .map_err(&fail)?;
                let Some((_, owned)) = row.filter(|(status, _)| status == "canceled") else {
                    return Ok(Saved::Lost);
                };
                // Canceled while this process ran it: what it did since its
                // last checkpoint happened (a request may have been sent), so
                // it goes in, before the ending the cancel wrote.
                if !p.events.is_empty() && owned.as_deref() == Some(p.owner.as_str()) {
                    // The cancel wrote its ending as a row of its own (see
                    // `cancel`): the last row, one line.
                    let ending: Option<(i64, i64, String)> = sqlx::query(
                        "SELECT seq, last_seq, lines FROM events WHERE run_id = $1 ORDER BY seq DESC LIMIT 1",
                    )
                    .bind(&p.run_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .and_then(|r| {
                        r.map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
                            .transpose()
                    })
                    .map_err(&fail)?;
                    let ending = ending
                        .filter(|(seq, last, e)| {
                            seq == last && e.contains("\"event\":\"flow_finished\"")
                        })
                        .map(|(seq, _, e)| (seq, e));
                    if let Some((seq, _)) = &ending {
                        sqlx::query("DELETE FROM events WHERE run_id = $1 AND seq = $2")
                            .bind(&p.run_id)
                            .bind(seq)
                            .execute(&mut *tx)
                            .await
                            .map_err(&fail)?;
                    }
                    insert_events!(tx, rows(p)).map_err(&fail)?;
                    let last = p.events.iter().map(|(seq, _)| *seq).max().unwrap_or(0);
                    if let Some((seq, event)) = ending {
                        let seq = (seq as u64).max(last + 1);
                        let mut value: serde_json::Value =
                            serde_json::from_str(&event).unwrap_or_default();
                        value["seq"] = seq.into();
                        insert_event!(tx, &p.run_id, seq, value.to_string()).map_err(&fail)?;
                    }
                    tx.commit().await.map_err(&fail)?;
                }
                return Ok(Saved::Canceled);
            }
            insert_events!(tx, rows(p)).map_err(&fail)?;
            tx.commit().await.map_err(&fail)?;
            Ok(kept(p))
        })
    }

    fn checkpoint_many<'a>(
        &'a self,
        points: &'a [&'a Checkpoint],
    ) -> BoxFuture<'a, Result<Vec<Result<Saved, StoreError>>, StoreError>> {
        Box::pin(async move {
            let fail = failed("checkpoint");
            // A run twice in one list would be written in no known order:
            // such a list (never the group commit's) goes one by one.
            let mut ids = std::collections::HashSet::with_capacity(points.len());
            if !points.iter().all(|p| ids.insert(p.run_id.as_str())) {
                let mut saved = Vec::with_capacity(points.len());
                for p in points {
                    saved.push(self.checkpoint(p).await);
                }
                return Ok(saved);
            }
            let in_one = OptionFuture::from(DB::checkpoint_in_one(&self.pool, points))
                .await
                .transpose()
                .map_err(&fail)?;
            // One round trip, and no transaction to open and close, where the
            // database has such a statement.
            let written = if let Some(written) = in_one {
                written
            } else {
                let mut tx = self.pool.begin_with(DB::BEGIN).await.map_err(&fail)?;
                let written = update_runs!(tx, points).map_err(&fail)?;
                let kept = points.iter().filter(|p| written.contains(&p.run_id));
                insert_events!(tx, kept.flat_map(|p| rows(p))).map_err(&fail)?;
                tx.commit().await.map_err(&fail)?;
                written
            };
            let written: std::collections::HashSet<&str> =
                written.iter().map(String::as_str).collect();
            let applied: Vec<bool> = points
                .iter()
                .map(|p| written.contains(p.run_id.as_str()))
                .collect();
            // A write the fence refused changed nothing: it is settled alone,
            // where a cancel's ending is kept in order with its events.
            let mut saved = Vec::with_capacity(points.len());
            for (p, applied) in points.iter().zip(applied) {
                saved.push(if applied {
                    Ok(kept(p))
                } else {
                    self.checkpoint(p).await
                });
            }
            Ok(saved)
        })
    }

    fn signal<'a>(
        &'a self,
        id: &'a str,
        wait: &'a str,
        signal: &'a str,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let fail = failed("deliver a signal");
            // Only to the wait named, once: a second signal finds it taken.
            let updated = sqlx::query(
                "UPDATE runs SET signal = $1, wake_at_ms = $2, updated_ms = $2
                 WHERE id = $3 AND status = 'waiting' AND waiting_for = $4 AND signal IS NULL",
            )
            .bind(signal)
            .bind(now_ms)
            .bind(id)
            .bind(wait)
            .execute(&self.pool)
            .await
            .map_err(&fail)?;
            let delivered = DB::rows_affected(&updated) == 1;
            if delivered {
                self.notify(&format!("signal {id}")).await;
            }
            Ok(delivered)
        })
    }

    fn load<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<StoredRun>, StoreError>> {
        Box::pin(async move {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!("{RUN_ROW} WHERE runs.id = $1")))
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(failed("read a run"))?;
            row.as_ref().map(stored).transpose()
        })
    }

    fn list<'a>(&'a self, f: &'a RunFilter) -> BoxFuture<'a, Result<Vec<StoredRun>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "{RUN_ROW}
                 WHERE (CAST($1 AS TEXT) IS NULL OR status = $1)
                   AND (CAST($2 AS TEXT) IS NULL OR flow = $2)
                   AND ($3 = 0 OR status IN ('running', 'waiting'))
                   AND (CAST($5 AS TEXT) IS NULL OR id < $5)
                   AND (CAST($6 AS TEXT) IS NULL
                        OR LOWER(id) LIKE $6 ESCAPE '\\' OR LOWER(inputs) LIKE $6 ESCAPE '\\'
                        OR LOWER(COALESCE(title, '')) LIKE $6 ESCAPE '\\')
                 ORDER BY CASE WHEN $7 = 1 THEN id END ASC, id DESC
                 LIMIT $4"
            )))
            .bind(f.status.map(DurableStatus::as_str))
            .bind(&f.flow)
            .bind(f.unfinished as i64)
            .bind(f.limit.map_or(i64::MAX, i64::from))
            .bind(&f.before)
            .bind(f.search_pattern())
            .bind(f.oldest_first as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(failed("list runs"))?;
            rows.iter().map(stored).collect()
        })
    }

    fn events<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT seq, last_seq, lines FROM events WHERE run_id = $1 ORDER BY seq",
            )
            .bind(id)
            .fetch_all(&self.pool)
            .await
            .map_err(failed("read a trace"))?;
            Ok(numbered_events(&rows, id, None)?
                .into_iter()
                .map(|(_, line)| line)
                .collect())
        })
    }

    fn events_after<'a>(
        &'a self,
        id: &'a str,
        seq: u64,
    ) -> BoxFuture<'a, Result<Vec<(u64, String)>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT seq, last_seq, lines FROM events WHERE run_id = $1 AND last_seq > $2 ORDER BY seq",
            )
            .bind(id)
            .bind(seq as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(failed("read a trace"))?;
            numbered_events(&rows, id, Some(seq))
        })
    }

    fn cancel<'a>(
        &'a self,
        id: &'a str,
        now_ms: i64,
        by: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let fail = failed("cancel a run");
            let mut tx = self.pool.begin_with(DB::BEGIN).await.map_err(&fail)?;
            let done = sqlx::query(
                "UPDATE runs SET status = 'canceled', updated_ms = $1 WHERE id = $2 AND status IN ('running', 'waiting')",
            )
            .bind(now_ms)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(&fail)?;
            let canceled = DB::rows_affected(&done) == 1;
            if canceled {
                // The ending, after every event kept so far: the trace of a
                // canceled run ends as every other run's does.
                let row = sqlx::query(sqlx::AssertSqlSafe(format!("{RUN_ROW} WHERE runs.id = $1")))
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(&fail)?;
                let run = stored(&row)?;
                let last: Option<i64> =
                    sqlx::query("SELECT MAX(last_seq) FROM events WHERE run_id = $1")
                        .bind(id)
                        .fetch_one(&mut *tx)
                        .await
                        .and_then(|r| r.try_get(0))
                        .map_err(&fail)?;
                let seq = u64::try_from(last.unwrap_or(0)).unwrap_or(0) + 1;
                sqlx::query(
                    "INSERT INTO events (run_id, seq, last_seq, lines) VALUES ($1, $2, $2, $3)",
                )
                .bind(id)
                .bind(seq as i64)
                .bind(crate::store::canceled_ending(&run, seq, now_ms, by))
                .execute(&mut *tx)
                .await
                .map_err(&fail)?;
            }
            tx.commit().await.map_err(&fail)?;
            if canceled {
                self.notify(&format!("canceled {id}")).await;
            }
            Ok(canceled)
        })
    }

    fn claim<'a>(
        &'a self,
        id: &'a str,
        lease: &'a Lease,
        now_ms: i64,
        gone: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Claimed, StoreError>> {
        Box::pin(async move {
            let taken = sqlx::query(
                "UPDATE runs SET owner = $1, lease_until_ms = $2
                 WHERE id = $3 AND status IN ('running', 'waiting')
                   AND (owner IS NULL OR owner = $1 OR lease_until_ms < $4 OR owner = $5)",
            )
            .bind(&lease.owner)
            .bind(lease.until_ms)
            .bind(id)
            .bind(now_ms)
            .bind(gone)
            .execute(&self.pool)
            .await
            .map_err(failed("claim a run"))?;
            if DB::rows_affected(&taken) == 1 {
                return Ok(Claimed::Taken);
            }
            // Not taken: say who holds it, from one read of the run.
            Ok(match self.load(id).await? {
                Some(r) if !r.status.is_finished() => match r.lease {
                    Some(held) => Claimed::Held(held),
                    None => Claimed::Unavailable,
                },
                _ => Claimed::Unavailable,
            })
        })
    }

    fn leases(&self) -> BoxFuture<'_, Result<Vec<(String, Lease)>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT id, owner, lease_until_ms FROM runs
                 WHERE status IN ('running', 'waiting') AND owner IS NOT NULL",
            )
            .fetch_all(&self.pool)
            .await
            .map_err(failed("read leases"))?;
            leases_from(&rows)
        })
    }

    fn release<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let done = sqlx::query(
                "UPDATE runs SET owner = NULL, lease_until_ms = NULL WHERE id = $1 AND owner = $2",
            )
            .bind(id)
            .bind(owner)
            .execute(&self.pool)
            .await
            .map_err(failed("release a run"))?;
            Ok(DB::rows_affected(&done) == 1)
        })
    }

    fn take_due<'a>(
        &'a self,
        now_ms: i64,
        lease: &'a Lease,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<StoredRun>, StoreError>> {
        Box::pin(async move {
            let fail = failed("take runs due");
            // Mostly nothing is due: a read says so without the write lock
            // (SQLite's, which a batch of checkpoints would wait for).
            let any = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT 1 FROM runs WHERE {DUE} LIMIT 1"
            )))
            .bind(now_ms)
            .bind(&lease.owner)
            .fetch_optional(&self.pool)
            .await
            .map_err(&fail)?;
            if any.is_none() {
                return Ok(Vec::new());
            }
            // Read and claimed in one transaction: SQLite's write lock, or
            // Postgres's row locks (rows another worker locked are skipped).
            let mut tx = self.pool.begin_with(DB::BEGIN).await.map_err(&fail)?;
            let sql = format!(
                "{RUN_ROW} WHERE runs.id IN (SELECT id FROM runs WHERE {DUE}
                 ORDER BY COALESCE(wake_at_ms, updated_ms), id
                 LIMIT $3 {})
                 ORDER BY COALESCE(runs.wake_at_ms, runs.updated_ms), runs.id",
                DB::DUE_LOCK
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(now_ms)
                .bind(&lease.owner)
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await
                .map_err(&fail)?;
            let due = rows.iter().map(stored).collect::<Result<Vec<_>, _>>()?;
            if due.is_empty() {
                return Ok(due);
            }
            let sql = format!(
                "UPDATE runs SET {} WHERE id IN ({})",
                rows_of::<DB>("owner = #, lease_until_ms = #", "", 1, 1),
                rows_of::<DB>("#", ", ", due.len(), 3)
            );
            let mut claim = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&lease.owner)
                .bind(lease.until_ms);
            for run in &due {
                claim = claim.bind(&run.id);
            }
            claim.execute(&mut *tx).await.map_err(&fail)?;
            tx.commit().await.map_err(&fail)?;
            Ok(due)
        })
    }

    fn next_wake(&self) -> BoxFuture<'_, Result<Option<i64>, StoreError>> {
        Box::pin(async move {
            sqlx::query("SELECT MIN(wake_at_ms) FROM runs WHERE status = 'waiting'")
                .fetch_one(&self.pool)
                .await
                .and_then(|r| r.try_get(0))
                .map_err(failed("find the next timer"))
        })
    }

    fn keyed<'a>(&'a self, key_hash: &'a str) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        Box::pin(async move {
            let row = sqlx::query("SELECT run_id FROM idempotency WHERE key_hash = $1")
                .bind(key_hash)
                .fetch_optional(&self.pool)
                .await
                .map_err(failed("read an idempotency key"))?;
            row.map(|r| r.try_get::<String, _>(0))
                .transpose()
                .map_err(failed("read an idempotency key"))
        })
    }

    fn counts(&self) -> BoxFuture<'_, Result<Counts, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT flow, status, COUNT(*) FROM runs GROUP BY flow, status ORDER BY flow, status",
            )
            .fetch_all(&self.pool)
            .await
            .map_err(failed("count runs"))?;
            counts_from(&rows)
        })
    }

    fn renew<'a>(
        &'a self,
        id: &'a str,
        lease: &'a Lease,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let done =
                sqlx::query("UPDATE runs SET lease_until_ms = $1 WHERE id = $2 AND owner = $3")
                    .bind(lease.until_ms)
                    .bind(id)
                    .bind(&lease.owner)
                    .execute(&self.pool)
                    .await
                    .map_err(failed("renew a lease"))?;
            Ok(DB::rows_affected(&done) == 1)
        })
    }

    fn mark_exported<'a>(
        &'a self,
        marks: &'a [(String, u64)],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut tx = self
                .pool
                .begin()
                .await
                .map_err(failed("mark exported spans"))?;
            for (id, seq) in marks {
                let seq = i64::try_from(*seq).unwrap_or(i64::MAX);
                sqlx::query(
                    "UPDATE runs SET exported_seq = $1 WHERE id = $2 AND exported_seq < $1",
                )
                .bind(seq)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(failed("mark exported spans"))?;
            }
            tx.commit().await.map_err(failed("mark exported spans"))
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            sqlx::query("SELECT 1")
                .execute(&self.pool)
                .await
                .map(|_| ())
                .map_err(failed("be reached"))
        })
    }

    fn changes(&self) -> Option<Arc<Notify>> {
        self.changed.clone()
    }

    fn writes_side_by_side(&self) -> bool {
        DB::SIDE_BY_SIDE
    }
}

/// A stored run from a row of either database: the columns are the same.
fn stored<R>(row: &R) -> Result<StoredRun, StoreError>
where
    R: sqlx::Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let get = |e: sqlx::Error| StoreError(format!("a stored run is damaged: {e}"));
    let status: String = row.try_get("status").map_err(get)?;
    Ok(StoredRun {
        id: row.try_get("id").map_err(get)?,
        flow: row.try_get("flow").map_err(get)?,
        flow_path: row.try_get("flow_path").map_err(get)?,
        flow_source: row
            .try_get::<Option<String>, _>("flow_source")
            .map_err(get)?
            .unwrap_or_default(),
        flow_hash: row.try_get("flow_hash").map_err(get)?,
        inputs: row.try_get("inputs").map_err(get)?,
        status: DurableStatus::parse(&status)
            .ok_or_else(|| StoreError(format!("a stored run has an unknown status `{status}`")))?,
        step: row.try_get("step").map_err(get)?,
        wake_at_ms: row.try_get("wake_at_ms").map_err(get)?,
        steps_taken: row.try_get::<i64, _>("steps_taken").map_err(get)?.max(0) as u64,
        state: row.try_get("state").map_err(get)?,
        progress: row.try_get("progress").map_err(get)?,
        waiting_for: row.try_get("waiting_for").map_err(get)?,
        signal: row.try_get("signal").map_err(get)?,
        outcome: row.try_get("outcome").map_err(get)?,
        created_ms: row.try_get("created_ms").map_err(get)?,
        updated_ms: row.try_get("updated_ms").map_err(get)?,
        exported_seq: row.try_get::<i64, _>("exported_seq").map_err(get)?.max(0) as u64,
        title: row.try_get("title").map_err(get)?,
        lease: match (
            row.try_get::<Option<String>, _>("owner").map_err(get)?,
            row.try_get::<Option<i64>, _>("lease_until_ms")
                .map_err(get)?,
        ) {
            (Some(owner), Some(until_ms)) => Some(Lease { owner, until_ms }),
            _ => None,
        },
    })
}

/// The events numbered after `after` (all, without), in order, from rows of
/// `(seq, last_seq, lines)` in order of `seq` (see [`EventRow`]). Where rows
/// overlap (a step's events written again from a number on), the row that
/// starts later holds the numbers it names: the last written. Each line
/// names `run` again, as a checkpoint's lines leave it to their row.
fn numbered_events<R>(
    rows: &[R],
    run: &str,
    after: Option<u64>,
) -> Result<Vec<(u64, String)>, StoreError>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    String: for<'x> sqlx::Decode<'x, R::Database> + sqlx::Type<R::Database>,
    i64: for<'x> sqlx::Decode<'x, R::Database> + sqlx::Type<R::Database>,
{
    let failed = |e: sqlx::Error| StoreError(format!("the run store could not read a trace: {e}"));
    let mut events: Vec<(u64, String)> = Vec::new();
    for r in rows {
        let first = r.try_get::<i64, _>(0).map_err(failed)? as u64;
        let lines: String = r.try_get(2).map_err(failed)?;
        events.truncate(events.partition_point(|(seq, _)| *seq < first));
        let lines = (first..).zip(lines.split('\n'));
        events.extend(
            lines
                .filter(|(seq, _)| after.is_none_or(|after| *seq > after))
                .map(|(seq, line)| (seq, crate::run::jsonl::with_run(line, run))),
        );
    }
    Ok(events)
}

/// Leases from rows of `(id, owner, lease_until_ms)`.
fn leases_from<R>(rows: &[R]) -> Result<Vec<(String, Lease)>, StoreError>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    String: for<'x> sqlx::Decode<'x, R::Database> + sqlx::Type<R::Database>,
    i64: for<'x> sqlx::Decode<'x, R::Database> + sqlx::Type<R::Database>,
{
    let failed = |e: sqlx::Error| StoreError(format!("the run store could not read leases: {e}"));
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get(0).map_err(failed)?,
                Lease {
                    owner: r.try_get(1).map_err(failed)?,
                    until_ms: r.try_get::<Option<i64>, _>(2).map_err(failed)?.unwrap_or(0),
                },
            ))
        })
        .collect()
}

/// Counts from rows of `(flow, status, count)`.
fn counts_from<R>(rows: &[R]) -> Result<Counts, StoreError>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    String: for<'x> sqlx::Decode<'x, R::Database> + sqlx::Type<R::Database>,
    i64: for<'x> sqlx::Decode<'x, R::Database> + sqlx::Type<R::Database>,
{
    let failed = |e: sqlx::Error| StoreError(format!("the run store could not count runs: {e}"));
    let mut counts = Vec::new();
    for r in rows {
        let status: String = r.try_get(1).map_err(failed)?;
        if let Some(status) = DurableStatus::parse(&status) {
            counts.push((
                r.try_get(0).map_err(failed)?,
                status,
                r.try_get::<i64, _>(2).map_err(failed)? as u64,
            ));
        }
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Postgres numbers each parameter; SQLite's bare marks take the next
    /// number in order, so both statements bind the same values alike.
    #[test]
    fn rows_mark_their_parameters_in_order_numbered_or_bare() {
        let row = "(#, 'running', #)";
        assert_eq!(
            rows_of::<sqlx::Postgres>(row, ", ", 2, 3),
            "($3, 'running', $4), ($5, 'running', $6)"
        );
        assert_eq!(
            rows_of::<sqlx::Sqlite>(row, ", ", 2, 1),
            "(?, 'running', ?), (?, 'running', ?)"
        );
        assert_eq!(rows_of::<sqlx::Postgres>("#", " UNION ALL ", 1, 1), "$1");
        assert_eq!(rows_of::<sqlx::Sqlite>("#", ", ", 0, 1), "");
    }

    /// A table of checkpoints types its first row and numbers every
    /// parameter in order, twelve a row.
    #[test]
    fn a_checkpoint_table_marks_twelve_parameters_a_row() {
        let pg = checkpoint_table::<sqlx::Postgres>(3, 13);
        assert!(
            pg.contains("(VALUES (CAST($13 AS TEXT), CAST($14 AS TEXT),"),
            "{pg}"
        );
        assert!(
            pg.ends_with(", ($37, $38, $39, $40, $41, $42, $43, $44, $45, $46, $47, $48)) AS t"),
            "{pg}"
        );
        let sqlite = checkpoint_table::<sqlx::Sqlite>(64, 1);
        assert_eq!(sqlite.matches('?').count(), 64 * 12);
        assert_eq!(
            sqlite.matches("CAST").count(),
            12,
            "casts in the first row only"
        );
        assert_eq!(
            checkpoint_table::<sqlx::Sqlite>(1, 1).matches('?').count(),
            12
        );
    }

    /// Statements come in a few sizes, every row in one of them, in order.
    #[test]
    fn rows_go_in_statements_of_a_few_sizes() {
        let sizes = |n: usize| {
            let items: Vec<usize> = (0..n).collect();
            let chunks: Vec<&[usize]> = in_sizes(&items, 64).collect();
            assert_eq!(chunks.concat(), items, "every row once, in order");
            chunks.iter().map(|c| c.len()).collect::<Vec<_>>()
        };
        assert_eq!(sizes(0), Vec::<usize>::new());
        assert_eq!(sizes(1), [1]);
        assert_eq!(sizes(7), [4, 2, 1]);
        assert_eq!(sizes(64), [64]);
        assert_eq!(sizes(240), [64, 64, 64, 32, 16]);
        let mut seen = std::collections::BTreeSet::new();
        for n in 0..=300 {
            seen.extend(sizes(n));
        }
        assert_eq!(
            seen.into_iter().collect::<Vec<_>>(),
            [1, 2, 4, 8, 16, 32, 64]
        );
    }
}
