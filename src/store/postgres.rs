//! The Postgres store, for several workers sharing one database: the same
//! queries as [`crate::store::sqlite`] ([`crate::store::sql`]), built the way
//! Graphile Worker and River build their queues.
//!
//! - Migrations are embedded (`migrations/postgres/`) and run at start by
//!   sqlx's migrator, under its advisory lock, so workers starting together
//!   migrate once.
//! - Runs due to go on are found with `FOR UPDATE SKIP LOCKED`, so workers
//!   polling together skip the rows another is claiming, and a claim is one
//!   conditional `UPDATE`: free, expired, or already this worker's.
//! - Every checkpoint is fenced by the lease: it writes only where this
//!   worker still owns the run. Owners are unique per process
//!   (`host/pid/start`), so a worker that was paused past its lease and
//!   wakes up finds another owner, writes nothing, and stops.
//! - Its connections plan with `enable_seqscan = off`: every statement finds
//!   its rows by a key or an index, and the planner, misled by a table that
//!   filled faster than it was analyzed, kept plans that scanned it whole.
//! - `NOTIFY handoff_runs` on every cancellation and signal wakes the other
//!   workers' schedulers; a poll of `wake_at` is the safety net. A new run
//!   is leased to the worker that started it, so it wakes no other.

use std::sync::Arc;
use std::time::Duration;

use sqlx::Arguments;
use sqlx::postgres::{
    PgArguments, PgConnection, PgListener, PgPoolOptions, PgQueryResult, Postgres,
};
use sqlx::{Pool, Row};
use tokio::sync::Notify;

use crate::run::clock::BoxFuture;
use crate::store::sql::{
    CHANNEL, Dialect, EventRow, FENCED, KeptKey, SqlStore, UPDATE_FROM, failed, migrate, rows,
};
use crate::store::{Checkpoint, NewRun, StoreError};

/// A run store on a Postgres server, shared by workers.
pub type PgStore = SqlStore<Postgres>;

impl Dialect for Postgres {
    const BEGIN: &'static str = "BEGIN";
    const DUE_LOCK: &'static str = "FOR UPDATE SKIP LOCKED";
    const NOTIFY: Option<&'static str> = Some("SELECT pg_notify($1, $2)");
    const NUMBERED: bool = true;
    const SIDE_BY_SIDE: bool = true;
    const SET_REWRITES_INDEXES: bool = false;
    /// `migrations/postgres/`. Never edit one that has shipped: add another.
    const MIGRATIONS: &'static [(i64, &'static str, &'static str)] = &[
        (
            1,
            "runs",
            include_str!("../../migrations/postgres/0001_runs.sql"),
        ),
        (
            2,
            "idempotency fingerprint",
            include_str!("../../migrations/postgres/0002_idempotency_fingerprint.sql"),
        ),
        (
            3,
            "progress",
            include_str!("../../migrations/postgres/0003_progress.sql"),
        ),
        (
            4,
            "signals",
            include_str!("../../migrations/postgres/0004_signals.sql"),
        ),
        (
            5,
            "exported",
            include_str!("../../migrations/postgres/0005_exported.sql"),
        ),
        (
            6,
            "title",
            include_str!("../../migrations/postgres/0006_title.sql"),
        ),
        (
            7,
            "flow versions",
            include_str!("../../migrations/postgres/0007_flow_versions.sql"),
        ),
        (
            8,
            "counts",
            include_str!("../../migrations/postgres/0008_counts.sql"),
        ),
        (
            9,
            "event rows",
            include_str!("../../migrations/postgres/0009_event_rows.sql"),
        ),
        (
            10,
            "events unchecked",
            include_str!("../../migrations/postgres/0010_events_unchecked.sql"),
        ),
    ];

    fn rows_affected(result: &PgQueryResult) -> u64 {
        result.rows_affected()
    }

    fn checkpoint_in_one<'a>(
        pool: &'a Pool<Postgres>,
        points: &'a [&'a Checkpoint],
    ) -> Option<BoxFuture<'a, Result<Vec<String>, sqlx::Error>>> {
        Some(Box::pin(checkpoint_in_one(pool, points)))
    }

    fn keys_kept_in_one<'a>(
        conn: &'a mut PgConnection,
        hashes: &'a [String],
    ) -> Option<BoxFuture<'a, Result<Vec<KeptKey>, sqlx::Error>>> {
        Some(Box::pin(async move {
            if hashes.is_empty() {
                return Ok(Vec::new());
            }
            sqlx::query_as(
                "SELECT key_hash, run_id, fingerprint FROM idempotency WHERE key_hash = ANY(CAST($1 AS TEXT[]))",
            )
            .bind(hashes)
            .fetch_all(conn)
            .await
        }))
    }

    fn insert_keys_in_one<'a>(
        conn: &'a mut PgConnection,
        keys: &'a [(String, &'a NewRun)],
    ) -> Option<BoxFuture<'a, Result<u64, sqlx::Error>>> {
        Some(Box::pin(async move {
            if keys.is_empty() {
                return Ok(0);
            }
            let done = sqlx::query(
                "INSERT INTO idempotency (key_hash, run_id, created_ms, fingerprint)
                 SELECT * FROM unnest(CAST($1 AS TEXT[]), CAST($2 AS TEXT[]), CAST($3 AS BIGINT[]), CAST($4 AS TEXT[]))
                 ON CONFLICT (key_hash) DO NOTHING",
            )
            .bind(keys.iter().map(|(hash, _)| hash.as_str()).collect::<Vec<_>>())
            .bind(keys.iter().map(|(_, r)| r.id.as_str()).collect::<Vec<_>>())
            .bind(keys.iter().map(|(_, r)| r.created_ms).collect::<Vec<_>>())
            .bind(
                keys.iter()
                    .map(|(_, r)| r.idempotency.as_ref().and_then(|k| k.fingerprint.as_deref()))
                    .collect::<Vec<_>>(),
            )
            .execute(conn)
            .await?;
            Ok(done.rows_affected())
        }))
    }

    fn insert_runs_in_one<'a>(
        conn: &'a mut PgConnection,
        runs: &'a [&'a NewRun],
    ) -> Option<BoxFuture<'a, Result<(), sqlx::Error>>> {
        Some(Box::pin(async move {
            let column = |f: fn(&NewRun) -> &str| runs.iter().map(|r| f(r)).collect::<Vec<_>>();
            sqlx::query(
                "INSERT INTO runs (id, flow, flow_path, flow_hash, inputs, status, step, steps_taken, state, created_ms, updated_ms, owner, lease_until_ms, title)
                 SELECT id, flow, flow_path, flow_hash, inputs, 'running', NULL, 0, state, created_ms, created_ms, owner, lease_until_ms, title
                 FROM unnest(CAST($1 AS TEXT[]), CAST($2 AS TEXT[]), CAST($3 AS TEXT[]), CAST($4 AS TEXT[]), CAST($5 AS TEXT[]), CAST($6 AS TEXT[]), CAST($7 AS BIGINT[]), CAST($8 AS TEXT[]), CAST($9 AS BIGINT[]), CAST($10 AS TEXT[]))
                 AS r (id, flow, flow_path, flow_hash, inputs, state, created_ms, owner, lease_until_ms, title)",
            )
            .bind(column(|r| &r.id))
            .bind(column(|r| &r.flow))
            .bind(column(|r| &r.flow_path))
            .bind(column(|r| &r.flow_hash))
            .bind(column(|r| &r.inputs))
            .bind(column(|r| &r.state))
            .bind(runs.iter().map(|r| r.created_ms).collect::<Vec<_>>())
            .bind(column(|r| &r.lease.owner))
            .bind(runs.iter().map(|r| r.lease.until_ms).collect::<Vec<_>>())
            .bind(runs.iter().map(|r| r.title.as_deref()).collect::<Vec<_>>())
            .execute(conn)
            .await?;
            Ok(())
        }))
    }
}

/// Checkpoints, with their events, in one statement: the rows and the
/// events of the runs whose rows were written go in together, or nothing
/// does. Each column comes as an array (`unnest`), so the statement is the
/// same text whatever the number of runs, prepared once, with a dozen
/// parameters rather than a dozen a run; a table of `SELECT`s a run, one
/// expression a value, cost the server more to start than to write.
async fn checkpoint_in_one(
    pool: &Pool<Postgres>,
    points: &[&Checkpoint],
) -> Result<Vec<String>, sqlx::Error> {
    let events: Vec<EventRow> = points.iter().flat_map(|p| rows(p)).collect();
    let mut sql = format!(
        "WITH v AS (SELECT * FROM unnest(CAST($1 AS TEXT[]), CAST($2 AS TEXT[]), CAST($3 AS TEXT[]), CAST($4 AS TEXT[]), CAST($5 AS BIGINT[]), CAST($6 AS BIGINT[]), CAST($7 AS TEXT[]), CAST($8 AS TEXT[]), CAST($9 AS BIGINT[]), CAST($10 AS TEXT[]), CAST($11 AS TEXT[]), CAST($12 AS BIGINT[])) AS v (id, owner, status, step, wake_at_ms, steps_taken, state, outcome, updated_ms, progress, waiting_for, release)), u AS ({UPDATE_FROM}v{FENCED})"
    );
    if !events.is_empty() {
        sql.push_str(", x AS (SELECT * FROM unnest(CAST($13 AS TEXT[]), CAST($14 AS BIGINT[]), CAST($15 AS BIGINT[]), CAST($16 AS TEXT[])) AS x (run_id, seq, last_seq, lines)), e AS (INSERT INTO events (run_id, seq, last_seq, lines) SELECT x.run_id, x.seq, x.last_seq, x.lines FROM x JOIN u ON u.id = x.run_id ON CONFLICT (run_id, seq) DO UPDATE SET last_seq = excluded.last_seq, lines = excluded.lines)");
    }
    sql.push_str(" SELECT id FROM u");
    // The texts as they are, not copies: the driver copies them once, into
    // its message, whose room is made at once (grown by doubling, it was
    // copied again at each step: 2% of a worker).
    let text = |f: fn(&Checkpoint) -> Option<&str>| points.iter().map(|p| f(p)).collect::<Vec<_>>();
    let number = |f: fn(&Checkpoint) -> i64| points.iter().map(|p| f(p)).collect::<Vec<_>>();
    let texts = |p: &Checkpoint| {
        [
            Some(p.run_id.as_str()),
            Some(p.owner.as_str()),
            p.step.as_deref(),
            p.state.as_deref(),
            p.outcome.as_deref(),
            p.progress.as_deref(),
            p.waiting_for.as_deref(),
        ]
        .iter()
        .map(|t| t.map_or(0, str::len))
        .sum::<usize>()
    };
    // Each element's length, a number's eight bytes, and each array's header.
    let size = points.iter().map(|p| texts(p) + 12 * 12).sum::<usize>()
        + events
            .iter()
            .map(|e| e.run.len() + e.lines.len() + 4 * 8)
            .sum::<usize>()
        + 16 * 32;
    let mut args = PgArguments::default();
    args.reserve(16, size);
    let encode = sqlx::Error::Encode;
    args.add(text(|p| Some(&p.run_id))).map_err(encode)?;
    args.add(text(|p| Some(&p.owner))).map_err(encode)?;
    args.add(text(|p| Some(p.status.as_str())))
        .map_err(encode)?;
    args.add(text(|p| p.step.as_deref())).map_err(encode)?;
    args.add(points.iter().map(|p| p.wake_at_ms).collect::<Vec<_>>())
        .map_err(encode)?;
    args.add(number(|p| p.steps_taken as i64)).map_err(encode)?;
    args.add(text(|p| p.state.as_deref())).map_err(encode)?;
    args.add(text(|p| p.outcome.as_deref())).map_err(encode)?;
    args.add(number(|p| p.updated_ms)).map_err(encode)?;
    args.add(text(|p| p.progress.as_deref())).map_err(encode)?;
    args.add(text(|p| p.waiting_for.as_deref()))
        .map_err(encode)?;
    args.add(number(|p| i64::from(p.release))).map_err(encode)?;
    if !events.is_empty() {
        let mut runs = Vec::with_capacity(events.len());
        let mut firsts = Vec::with_capacity(events.len());
        let mut lasts = Vec::with_capacity(events.len());
        let mut lines = Vec::with_capacity(events.len());
        for row in &events {
            runs.push(row.run);
            firsts.push(row.first as i64);
            lasts.push(row.last as i64);
            lines.push(row.lines.as_str());
        }
        args.add(runs).map_err(encode)?;
        args.add(firsts).map_err(encode)?;
        args.add(lasts).map_err(encode)?;
        args.add(lines).map_err(encode)?;
    }
    let query = sqlx::query_with(sqlx::AssertSqlSafe(sql), args);
    let mut applied = Vec::with_capacity(points.len());
    for row in query.fetch_all(pool).await? {
        applied.push(row.try_get(0)?);
    }
    Ok(applied)
}

/// Whether a store target names Postgres.
pub fn is_url(target: &str) -> bool {
    target.starts_with("postgres://") || target.starts_with("postgresql://")
}

/// A store target as a message shows it: a file's path, or a URL with its
/// password masked.
pub fn shown_target(target: &std::path::Path) -> String {
    let text = target.to_string_lossy();
    if is_url(&text) {
        masked(&text)
    } else {
        text.into_owned()
    }
}

/// A store URL with its password masked, for messages.
pub fn masked(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "postgres://…".to_string(),
    }
}

impl PgStore {
    /// Connects (a pool of `pool_size`), brings the schema up to date, and
    /// starts listening for the other workers' news.
    pub async fn open(url: &str, pool_size: u32) -> Result<PgStore, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(pool_size.max(2))
            .acquire_timeout(Duration::from_secs(5))
            // Every statement handoff runs finds its rows by a key or an
            // index. A table filled faster than Postgres analyzes it looks
            // small to the planner, which then scans it whole, and keeps that
            // plan for a prepared statement: a scan of `runs` at every
            // checkpoint of a bulk run (a third of the server's CPU). Scans
            // cost the planner more than an index; it still scans where no
            // index serves (a search of titles).
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query("SET enable_seqscan = off")
                        .execute(conn)
                        .await?;
                    Ok(())
                })
            })
            .connect(url)
            .await
            .map_err(failed("connect"))?;
        {
            // The migrator's advisory lock is per connection: one connection for all of it.
            let mut conn = pool.acquire().await.map_err(failed("migrate"))?;
            migrate::<Postgres>(&mut conn, 0).await?;
        }
        let changed = Arc::new(Notify::new());
        listen(url.to_string(), changed.clone());
        Ok(PgStore {
            pool,
            changed: Some(changed),
            versions: Default::default(),
        })
    }

    /// A value every worker must agree on, set by the first: `value` unless
    /// another worker set it before.
    pub async fn agree(&self, name: &str, value: &str) -> Result<String, StoreError> {
        sqlx::query(
            "INSERT INTO handoff_meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(value)
        .execute(&self.pool)
        .await
        .map_err(failed("read its settings"))?;
        sqlx::query("SELECT value FROM handoff_meta WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await
            .and_then(|r| r.try_get(0))
            .map_err(failed("read its settings"))
    }
}

/// Listens on the channel for as long as the process lives, reconnecting
/// with backoff when the database goes away.
fn listen(url: String, changed: Arc<Notify>) {
    tokio::spawn(async move {
        let mut pause = Duration::from_millis(100);
        loop {
            if let Ok(mut listener) = PgListener::connect(&url).await
                && listener.listen(CHANNEL).await.is_ok()
            {
                pause = Duration::from_millis(100);
                // Whatever was missed while disconnected: look again.
                changed.notify_one();
                while listener.recv().await.is_ok() {
                    changed.notify_one();
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    });
}
