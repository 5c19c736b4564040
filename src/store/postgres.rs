//! The Postgres store, for several workers sharing one database: the same
//! meaning as [`super::sqlite`], built the way Graphile Worker and River
//! build their queues.
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
//! - `NOTIFY handoff_runs` on every new run and cancellation wakes the other
//!   workers' schedulers; a poll of `wake_at` is the safety net.

use std::sync::Arc;
use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use tokio::sync::Notify;

use crate::engine::checkpoint::{DurableStatus, Saved};
use crate::run::clock::BoxFuture;
use crate::store::{
    Checkpoint, Claimed, Counts, Created, Lease, NewRun, RunFilter, Store, StoreError, StoredRun,
    stored,
};

/// The channel the workers tell each other on.
const CHANNEL: &str = "handoff_runs";

/// The schema's versions, embedded in the binary: `migrations/postgres/`.
const MIGRATIONS: [(i64, &str, &str); 2] = [
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
];

/// sqlx's migrator over the embedded versions: it records what ran in
/// `_sqlx_migrations`, checks that no applied version changed, and holds an
/// advisory lock so that workers starting together migrate once.
fn migrator() -> sqlx::migrate::Migrator {
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    Migrator::with_migrations(
        MIGRATIONS
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

pub struct PgStore {
    pool: PgPool,
    /// Notified when another worker created or canceled a run.
    changed: Arc<Notify>,
}

fn failed(what: &str) -> impl Fn(sqlx::Error) -> StoreError + '_ {
    move |e| StoreError(format!("the run store could not {what}: {}", shown(&e)))
}

/// An error without the connection string, which may hold a password.
fn shown(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Configuration(_) => "the store URL is not valid".to_string(),
        other => other.to_string(),
    }
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
            .connect(url)
            .await
            .map_err(failed("connect"))?;
        migrator()
            .run(&pool)
            .await
            .map_err(|e| StoreError(format!("the run store could not migrate: {e}")))?;
        let changed = Arc::new(Notify::new());
        listen(url.to_string(), changed.clone());
        Ok(PgStore { pool, changed })
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

    async fn notify(&self, what: &str) {
        // Best effort: the other workers' poll finds the run anyway.
        let _ = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(what)
            .execute(&self.pool)
            .await;
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

impl Store for PgStore {
    fn create<'a>(&'a self, run: &'a NewRun) -> BoxFuture<'a, Result<Created, StoreError>> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await.map_err(failed("create a run"))?;
            if let Some(key) = &run.idempotency {
                let existing: Option<(String, Option<String>)> =
                    sqlx::query("SELECT run_id, fingerprint FROM idempotency WHERE key_hash = $1")
                        .bind(key.hash())
                        .fetch_optional(&mut *tx)
                        .await
                        .and_then(|r| r.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose())
                        .map_err(failed("create a run"))?;
                if let Some((id, fingerprint)) = existing {
                    return Ok(key.found(id, fingerprint));
                }
            }
            sqlx::query(
                "INSERT INTO runs (id, flow, flow_path, flow_source, flow_hash, inputs, status, step, steps_taken, state, created_ms, updated_ms, owner, lease_until_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, 'running', NULL, 0, $7, $8, $8, $9, $10)",
            )
            .bind(&run.id)
            .bind(&run.flow)
            .bind(&run.flow_path)
            .bind(&run.flow_source)
            .bind(&run.flow_hash)
            .bind(&run.inputs)
            .bind(&run.state)
            .bind(run.created_ms)
            .bind(&run.lease.owner)
            .bind(run.lease.until_ms)
            .execute(&mut *tx)
            .await
            .map_err(failed("create a run"))?;
            if let Some(key) = &run.idempotency {
                let kept = sqlx::query(
                    "INSERT INTO idempotency (key_hash, run_id, created_ms, fingerprint) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (key_hash) DO NOTHING",
                )
                .bind(key.hash())
                .bind(&run.id)
                .bind(run.created_ms)
                .bind(&key.fingerprint)
                .execute(&mut *tx)
                .await
                .map_err(failed("create a run"))?;
                if kept.rows_affected() == 0 {
                    // Another worker kept the same key meanwhile: its run, not this one.
                    tx.rollback().await.map_err(failed("create a run"))?;
                    let (id, fingerprint): (String, Option<String>) = sqlx::query(
                        "SELECT run_id, fingerprint FROM idempotency WHERE key_hash = $1",
                    )
                    .bind(key.hash())
                    .fetch_one(&self.pool)
                    .await
                    .and_then(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                    .map_err(failed("create a run"))?;
                    return Ok(key.found(id, fingerprint));
                }
            }
            tx.commit().await.map_err(failed("create a run"))?;
            self.notify(&format!("created {}", run.id)).await;
            Ok(Created::New)
        })
    }

    fn checkpoint<'a>(&'a self, p: &'a Checkpoint) -> BoxFuture<'a, Result<Saved, StoreError>> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await.map_err(failed("checkpoint"))?;
            // Fenced: only the worker that owns the run writes, and a
            // canceled run is not written over; the writer stops instead.
            let updated = sqlx::query(
                "UPDATE runs SET status = $1, step = $2, wake_at_ms = $3, steps_taken = $4, state = $5, outcome = $6, updated_ms = $7
                 WHERE id = $8 AND status <> 'canceled' AND owner = $9",
            )
            .bind(p.status.as_str())
            .bind(&p.step)
            .bind(p.wake_at_ms)
            .bind(p.steps_taken as i64)
            .bind(&p.state)
            .bind(&p.outcome)
            .bind(p.updated_ms)
            .bind(&p.run_id)
            .bind(&p.owner)
            .execute(&mut *tx)
            .await
            .map_err(failed("checkpoint"))?;
            if updated.rows_affected() == 0 {
                let status: Option<String> = sqlx::query("SELECT status FROM runs WHERE id = $1")
                    .bind(&p.run_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .and_then(|r| r.map(|r| r.try_get(0)).transpose())
                    .map_err(failed("checkpoint"))?;
                return Ok(if status.as_deref() == Some("canceled") {
                    Saved::Canceled
                } else {
                    Saved::Lost
                });
            }
            for (seq, event) in &p.events {
                // A step re-run after a crash writes its events again: keep the last.
                sqlx::query(
                    "INSERT INTO events (run_id, seq, event) VALUES ($1, $2, $3)
                     ON CONFLICT (run_id, seq) DO UPDATE SET event = EXCLUDED.event",
                )
                .bind(&p.run_id)
                .bind(*seq as i64)
                .bind(event)
                .execute(&mut *tx)
                .await
                .map_err(failed("checkpoint"))?;
            }
            tx.commit().await.map_err(failed("checkpoint"))?;
            Ok(Saved::Saved)
        })
    }

    fn load<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<StoredRun>, StoreError>> {
        Box::pin(async move {
            let row = sqlx::query("SELECT * FROM runs WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(failed("read a run"))?;
            row.as_ref().map(stored).transpose()
        })
    }

    fn list<'a>(&'a self, f: &'a RunFilter) -> BoxFuture<'a, Result<Vec<StoredRun>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT * FROM runs
                 WHERE ($1::text IS NULL OR status = $1)
                   AND ($2::text IS NULL OR flow = $2)
                   AND (NOT $3 OR status IN ('running', 'waiting'))
                   AND ($5::text IS NULL OR id < $5)
                 ORDER BY id DESC
                 LIMIT $4",
            )
            .bind(f.status.map(DurableStatus::as_str))
            .bind(&f.flow)
            .bind(f.unfinished)
            .bind(f.limit.map(i64::from))
            .bind(&f.before)
            .fetch_all(&self.pool)
            .await
            .map_err(failed("list runs"))?;
            rows.iter().map(stored).collect()
        })
    }

    fn events<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query("SELECT event FROM events WHERE run_id = $1 ORDER BY seq")
                .bind(id)
                .fetch_all(&self.pool)
                .await
                .map_err(failed("read a trace"))?;
            super::event_texts(&rows)
        })
    }

    fn events_after<'a>(
        &'a self,
        id: &'a str,
        seq: u64,
    ) -> BoxFuture<'a, Result<Vec<(u64, String)>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT seq, event FROM events WHERE run_id = $1 AND seq > $2 ORDER BY seq",
            )
            .bind(id)
            .bind(seq as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(failed("read a trace"))?;
            super::numbered_events(&rows)
        })
    }

    fn cancel<'a>(&'a self, id: &'a str, now_ms: i64) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let done = sqlx::query(
                "UPDATE runs SET status = 'canceled', updated_ms = $1 WHERE id = $2 AND status IN ('running', 'waiting')",
            )
            .bind(now_ms)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(failed("cancel a run"))?;
            if done.rows_affected() == 1 {
                self.notify(&format!("canceled {id}")).await;
            }
            Ok(done.rows_affected() == 1)
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
            if taken.rows_affected() == 1 {
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
            super::leases_from(&rows)
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
            Ok(done.rows_affected() == 1)
        })
    }

    fn due<'a>(
        &'a self,
        now_ms: i64,
        owner: &'a str,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            // SKIP LOCKED: rows another worker is claiming right now are
            // left to it, so workers polling together do not queue up.
            let rows = sqlx::query(
                "SELECT id FROM runs
                 WHERE (status = 'waiting' AND wake_at_ms <= $1
                        AND (owner IS NULL OR owner = $2 OR lease_until_ms < $1))
                    OR (status = 'running' AND (owner IS NULL OR lease_until_ms < $1))
                 ORDER BY COALESCE(wake_at_ms, updated_ms), id
                 LIMIT $3
                 FOR UPDATE SKIP LOCKED",
            )
            .bind(now_ms)
            .bind(owner)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(failed("find runs due"))?;
            rows.iter()
                .map(|r| r.try_get(0).map_err(failed("find runs due")))
                .collect()
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

    fn counts(&self) -> BoxFuture<'_, Result<Counts, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT flow, status, COUNT(*) FROM runs GROUP BY flow, status ORDER BY flow, status",
            )
            .fetch_all(&self.pool)
            .await
            .map_err(failed("count runs"))?;
            super::counts_from(&rows)
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
            Ok(done.rows_affected() == 1)
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
        Some(self.changed.clone())
    }
}
