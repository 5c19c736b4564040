//! The embedded store: one SQLite file (`./handoff.db` by default), in WAL
//! mode, created with its schema on first use. Migrations are versioned and
//! embedded; each runs once, in order, in a transaction.
//!
//! WAL with `synchronous = NORMAL` keeps every committed checkpoint through a
//! crash of the process (kill -9); a power cut may lose the last few.

use std::path::Path;
use std::str::FromStr;

use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::engine::checkpoint::{DurableStatus, Saved};
use crate::run::clock::BoxFuture;
use crate::store::{Checkpoint, Created, NewRun, RunFilter, Store, StoreError, StoredRun, stored};

/// The schema, one migration per entry, in order. Never edit one that has
/// shipped: add another.
const MIGRATIONS: [&str; 4] = [
    r#"
CREATE TABLE runs (
    id           TEXT PRIMARY KEY,
    flow         TEXT NOT NULL,
    flow_path    TEXT NOT NULL,
    flow_source  TEXT NOT NULL,
    flow_hash    TEXT NOT NULL,
    inputs       TEXT NOT NULL,
    status       TEXT NOT NULL,
    step         TEXT,
    wake_at_ms   INTEGER,
    steps_taken  INTEGER NOT NULL DEFAULT 0,
    state        TEXT NOT NULL,
    outcome      TEXT,
    created_ms   INTEGER NOT NULL,
    updated_ms   INTEGER NOT NULL
);
CREATE INDEX runs_by_status ON runs (status, wake_at_ms);
CREATE INDEX runs_by_flow ON runs (flow, created_ms);
CREATE TABLE events (
    run_id  TEXT NOT NULL REFERENCES runs (id),
    seq     INTEGER NOT NULL,
    event   TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
"#,
    r#"
ALTER TABLE runs ADD COLUMN owner TEXT;
ALTER TABLE runs ADD COLUMN lease_until_ms INTEGER;
"#,
    r#"
CREATE TABLE idempotency (
    key_hash    TEXT PRIMARY KEY,
    run_id      TEXT NOT NULL REFERENCES runs (id),
    created_ms  INTEGER NOT NULL
);
CREATE INDEX runs_waking ON runs (wake_at_ms) WHERE status = 'waiting';
"#,
    r#"
ALTER TABLE idempotency ADD COLUMN fingerprint TEXT;
"#,
];

pub struct SqliteStore {
    pool: SqlitePool,
}

/// Creates `path` with mode 0600 if it is missing, or narrows it to 0600.
fn owner_only(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    match std::fs::metadata(path) {
        Ok(m) if m.permissions().mode() & 0o077 != 0 => {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map(|_| ())
            .or_else(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    Ok(())
                } else {
                    Err(e)
                }
            }),
        Err(e) => Err(e),
    }
}

fn failed(what: &str) -> impl Fn(sqlx::Error) -> StoreError + '_ {
    move |e| StoreError(format!("the run store could not {what}: {e}"))
}

impl SqliteStore {
    /// Opens (or creates) the store at `path`, and brings its schema up to date.
    /// The file is created readable by its owner only (0600): it holds
    /// traces and inputs. SQLite gives its `-wal` and `-shm` files the same
    /// mode; files an older version left readable are narrowed.
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        owner_only(path).map_err(|e| {
            StoreError(format!(
                "cannot create the run store `{}`: {e}",
                path.display()
            ))
        })?;
        let options = SqliteConnectOptions::from_str("sqlite:")
            .map_err(failed("start"))?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| {
                StoreError(format!(
                    "cannot open the run store `{}`: {e}",
                    path.display()
                ))
            })?;
        let store = SqliteStore { pool };
        store.migrate().await?;
        Self::narrow(path);
        Ok(store)
    }

    /// Narrows the store's files to 0600 once open (the `-wal` and `-shm`
    /// files exist only then).
    fn narrow(path: &Path) {
        for suffix in ["", "-wal", "-shm"] {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            let _ = owner_only(Path::new(&name));
        }
    }

    /// A transaction that writes: it takes the write lock at its start, so
    /// that one which reads first (a create checks its key) waits its turn
    /// rather than failing as "locked" when another writer got there first.
    async fn write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut tx = self.write().await.map_err(failed("migrate"))?;
        sqlx::query("CREATE TABLE IF NOT EXISTS handoff_schema (version INTEGER NOT NULL)")
            .execute(&mut *tx)
            .await
            .map_err(failed("migrate"))?;
        let done: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM handoff_schema")
            .fetch_one(&mut *tx)
            .await
            .and_then(|r| r.try_get(0))
            .map_err(failed("migrate"))?;
        if done > MIGRATIONS.len() as i64 {
            return Err(StoreError(format!(
                "the run store was written by a newer handoff (schema {done}); this one knows {}",
                MIGRATIONS.len()
            )));
        }
        for (i, migration) in MIGRATIONS.iter().enumerate().skip(done as usize) {
            sqlx::raw_sql(*migration)
                .execute(&mut *tx)
                .await
                .map_err(failed("migrate"))?;
            sqlx::query("INSERT INTO handoff_schema (version) VALUES (?)")
                .bind(i as i64 + 1)
                .execute(&mut *tx)
                .await
                .map_err(failed("migrate"))?;
        }
        tx.commit().await.map_err(failed("migrate"))
    }
}

impl Store for SqliteStore {
    fn create<'a>(&'a self, run: &'a NewRun) -> BoxFuture<'a, Result<Created, StoreError>> {
        Box::pin(async move {
            let mut tx = self.write().await.map_err(failed("create a run"))?;
            if let Some(key) = &run.idempotency {
                // The key and the run go in together: a retry finds one or neither.
                let existing: Option<(String, Option<String>)> =
                    sqlx::query("SELECT run_id, fingerprint FROM idempotency WHERE key_hash = ?")
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
                 VALUES (?, ?, ?, ?, ?, ?, 'running', NULL, 0, ?, ?, ?, ?, ?)",
            )
            .bind(&run.id)
            .bind(&run.flow)
            .bind(&run.flow_path)
            .bind(&run.flow_source)
            .bind(&run.flow_hash)
            .bind(&run.inputs)
            .bind(&run.state)
            .bind(run.created_ms)
            .bind(run.created_ms)
            .bind(&run.lease.owner)
            .bind(run.lease.until_ms)
            .execute(&mut *tx)
            .await
            .map_err(failed("create a run"))?;
            if let Some(key) = &run.idempotency {
                sqlx::query(
                    "INSERT INTO idempotency (key_hash, run_id, created_ms, fingerprint) VALUES (?, ?, ?, ?)",
                )
                .bind(key.hash())
                .bind(&run.id)
                .bind(run.created_ms)
                .bind(&key.fingerprint)
                .execute(&mut *tx)
                .await
                .map_err(failed("create a run"))?;
            }
            tx.commit().await.map_err(failed("create a run"))?;
            Ok(Created::New)
        })
    }

    fn checkpoint<'a>(&'a self, p: &'a Checkpoint) -> BoxFuture<'a, Result<Saved, StoreError>> {
        Box::pin(async move {
            let mut tx = self.write().await.map_err(failed("checkpoint"))?;
            // Fenced: only the process that holds the run writes, and a
            // canceled run is not written over; the writer stops instead.
            let updated = sqlx::query(
                "UPDATE runs SET status = ?, step = ?, wake_at_ms = ?, steps_taken = ?, state = ?, outcome = ?, updated_ms = ?
                 WHERE id = ? AND status <> 'canceled' AND owner = ?",
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
                let status: Option<String> = sqlx::query("SELECT status FROM runs WHERE id = ?")
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
                sqlx::query("INSERT OR REPLACE INTO events (run_id, seq, event) VALUES (?, ?, ?)")
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
            let row = sqlx::query("SELECT * FROM runs WHERE id = ?")
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
                 WHERE (?1 IS NULL OR status = ?1)
                   AND (?2 IS NULL OR flow = ?2)
                   AND (?3 = 0 OR status IN ('running', 'waiting'))
                   AND (?5 IS NULL OR id < ?5)
                 ORDER BY id DESC
                 LIMIT ?4",
            )
            .bind(f.status.map(DurableStatus::as_str))
            .bind(&f.flow)
            .bind(f.unfinished as i64)
            .bind(f.limit.map_or(-1, i64::from))
            .bind(&f.before)
            .fetch_all(&self.pool)
            .await
            .map_err(failed("list runs"))?;
            rows.iter().map(stored).collect()
        })
    }

    fn events<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query("SELECT event FROM events WHERE run_id = ? ORDER BY seq")
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
                "SELECT seq, event FROM events WHERE run_id = ? AND seq > ? ORDER BY seq",
            )
            .bind(id)
            .bind(seq as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(failed("read a trace"))?;
            super::numbered_events(&rows)
        })
    }

    fn leases(&self) -> BoxFuture<'_, Result<Vec<(String, super::Lease)>, StoreError>> {
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
                "UPDATE runs SET owner = NULL, lease_until_ms = NULL WHERE id = ? AND owner = ?",
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
            let rows = sqlx::query(
                "SELECT id FROM runs
                 WHERE (status = 'waiting' AND wake_at_ms <= ?1
                        AND (owner IS NULL OR owner = ?2 OR lease_until_ms < ?1))
                    -- A running run of this owner's is under way here: not due.
                    OR (status = 'running' AND (owner IS NULL OR lease_until_ms < ?1))
                 ORDER BY COALESCE(wake_at_ms, updated_ms), id
                 LIMIT ?3",
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

    fn counts(&self) -> BoxFuture<'_, Result<super::Counts, StoreError>> {
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

    fn cancel<'a>(&'a self, id: &'a str, now_ms: i64) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let done = sqlx::query(
                "UPDATE runs SET status = 'canceled', updated_ms = ? WHERE id = ? AND status IN ('running', 'waiting')",
            )
            .bind(now_ms)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(failed("cancel a run"))?;
            Ok(done.rows_affected() == 1)
        })
    }

    fn claim<'a>(
        &'a self,
        id: &'a str,
        lease: &'a super::Lease,
        now_ms: i64,
        gone: Option<&'a str>,
    ) -> BoxFuture<'a, Result<super::Claimed, StoreError>> {
        Box::pin(async move {
            let taken = sqlx::query(
                "UPDATE runs SET owner = ?1, lease_until_ms = ?2
                 WHERE id = ?3 AND status IN ('running', 'waiting')
                   AND (owner IS NULL OR owner = ?1 OR lease_until_ms < ?4 OR owner = ?5)",
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
                return Ok(super::Claimed::Taken);
            }
            // Not taken: say who holds it, from one read of the run.
            Ok(match self.load(id).await? {
                Some(r) if !r.status.is_finished() => match r.lease {
                    Some(held) => super::Claimed::Held(held),
                    None => super::Claimed::Unavailable,
                },
                _ => super::Claimed::Unavailable,
            })
        })
    }

    fn renew<'a>(
        &'a self,
        id: &'a str,
        lease: &'a super::Lease,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let done = sqlx::query("UPDATE runs SET lease_until_ms = ? WHERE id = ? AND owner = ?")
                .bind(lease.until_ms)
                .bind(id)
                .bind(&lease.owner)
                .execute(&self.pool)
                .await
                .map_err(failed("renew a lease"))?;
            Ok(done.rows_affected() == 1)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Claimed, Lease};

    fn run(id: &str) -> NewRun {
        NewRun {
            id: id.to_string(),
            flow: "f".into(),
            flow_path: "f.yaml".into(),
            flow_source: "flow: f".into(),
            flow_hash: crate::store::flow_hash("flow: f"),
            inputs: "{}".into(),
            state: "{}".into(),
            created_ms: 1,
            lease: Lease {
                owner: "me".into(),
                until_ms: 1_000,
            },
            idempotency: None,
        }
    }

    #[test]
    fn runs_checkpoint_list_and_cancel() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let dir = std::env::temp_dir().join(format!("handoff-store-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("t.db");
            let _ = std::fs::remove_file(&path);
            let store = SqliteStore::open(&path).await.unwrap();
            store.create(&run("a")).await.unwrap();
            store.create(&run("b")).await.unwrap();
            let point = Checkpoint {
                run_id: "a".into(),
                owner: "me".into(),
                status: DurableStatus::Waiting,
                step: Some("wait".into()),
                wake_at_ms: Some(99),
                steps_taken: 3,
                state: "{\"pc\":2}".into(),
                outcome: None,
                events: vec![(1, "{}".into()), (2, "{\"x\":1}".into())],
                updated_ms: 5,
            };
            assert_eq!(store.checkpoint(&point).await.unwrap(), Saved::Saved);
            let a = store.load("a").await.unwrap().unwrap();
            assert_eq!(a.status, DurableStatus::Waiting);
            assert_eq!((a.wake_at_ms, a.steps_taken), (Some(99), 3));
            assert_eq!(store.events("a").await.unwrap().len(), 2);
            // Leases: another process cannot take a held run, nor write to it…
            let other = Lease {
                owner: "other".into(),
                until_ms: 9_000,
            };
            let held = store.claim("b", &other, 500, None).await.unwrap();
            assert_eq!(
                held,
                Claimed::Held(Lease {
                    owner: "me".into(),
                    until_ms: 1_000
                })
            );
            let theirs = Checkpoint {
                run_id: "b".into(),
                owner: "other".into(),
                ..point.clone()
            };
            assert_eq!(store.checkpoint(&theirs).await.unwrap(), Saved::Lost);
            // …until the lease runs out, or its holder is known to be gone.
            assert_eq!(
                store.claim("b", &other, 2_000, None).await.unwrap(),
                Claimed::Taken
            );
            assert_eq!(store.checkpoint(&theirs).await.unwrap(), Saved::Saved);
            let mine = Checkpoint {
                run_id: "b".into(),
                ..point.clone()
            };
            assert_eq!(
                store.checkpoint(&mine).await.unwrap(),
                Saved::Lost,
                "fenced"
            );
            assert_eq!(
                store
                    .claim(
                        "b",
                        &Lease {
                            owner: "me".into(),
                            until_ms: 9_500
                        },
                        2_100,
                        Some("other")
                    )
                    .await
                    .unwrap(),
                Claimed::Taken
            );
            assert!(!store.renew("b", &other).await.unwrap(), "no longer theirs");
            let waiting = RunFilter {
                status: Some(DurableStatus::Waiting),
                ..RunFilter::default()
            };
            assert_eq!(store.list(&waiting).await.unwrap().len(), 2);
            assert!(store.cancel("a", 6).await.unwrap());
            assert!(!store.cancel("a", 7).await.unwrap(), "once");
            // A canceled run is not written over.
            assert_eq!(store.checkpoint(&point).await.unwrap(), Saved::Canceled);
            assert_eq!(
                store.load("a").await.unwrap().unwrap().status,
                DurableStatus::Canceled
            );
            drop(store);
            // Opening again keeps everything, and migrates nothing twice.
            let again = SqliteStore::open(&path).await.unwrap();
            assert_eq!(again.list(&RunFilter::default()).await.unwrap().len(), 2);
            std::fs::remove_dir_all(&dir).unwrap();
        });
    }

    #[test]
    fn due_runs_keys_and_leases() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let dir = std::env::temp_dir().join(format!("handoff-due-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("t.db");
            let _ = std::fs::remove_file(&path);
            let store = SqliteStore::open(&path).await.unwrap();
            let key = |k: &str| crate::store::IdempotencyKey {
                scope: "api/f".into(),
                key: k.into(),
                fingerprint: Some("inputs-1".into()),
            };
            let keyed = |id: &str, k: &str| NewRun {
                idempotency: Some(key(k)),
                ..run(id)
            };
            assert_eq!(store.create(&keyed("a", "k1")).await.unwrap(), Created::New);
            // The same key: the first run, and no second row.
            assert_eq!(
                store.create(&keyed("b", "k1")).await.unwrap(),
                Created::Existing("a".into())
            );
            assert!(store.load("b").await.unwrap().is_none());
            // The same key with other inputs: a conflict, and no second row.
            let mut changed = keyed("b", "k1");
            if let Some(k) = changed.idempotency.as_mut() {
                k.fingerprint = Some("inputs-2".into());
            }
            assert_eq!(
                store.create(&changed).await.unwrap(),
                Created::Conflict("a".into())
            );
            assert!(store.load("b").await.unwrap().is_none());
            // Another scope with the same key is another start.
            let other = NewRun {
                idempotency: Some(crate::store::IdempotencyKey {
                    scope: "hook/f".into(),
                    key: "k1".into(),
                    fingerprint: None,
                }),
                ..run("c")
            };
            assert_eq!(store.create(&other).await.unwrap(), Created::New);
            // A waits in a timer until 100; C runs, held by `me` until 1_000.
            let wait = Checkpoint {
                run_id: "a".into(),
                owner: "me".into(),
                status: DurableStatus::Waiting,
                step: Some("wait".into()),
                wake_at_ms: Some(100),
                steps_taken: 1,
                state: "{}".into(),
                outcome: None,
                events: vec![(1, "e1".into()), (2, "e2".into())],
                updated_ms: 5,
            };
            store.checkpoint(&wait).await.unwrap();
            assert_eq!(store.next_wake().await.unwrap(), Some(100));
            assert!(store.due(99, "me", 10).await.unwrap().is_empty(), "not yet");
            assert_eq!(store.due(100, "me", 10).await.unwrap(), ["a"]);
            assert!(
                store.due(100, "other", 10).await.unwrap().is_empty(),
                "held by a live lease"
            );
            assert!(store.release("a", "me").await.unwrap());
            assert!(!store.release("a", "me").await.unwrap(), "once");
            assert_eq!(store.due(100, "other", 10).await.unwrap(), ["a"]);
            // A running run is due to no one while its lease holds, even its holder.
            assert!(
                !store
                    .due(500, "me", 10)
                    .await
                    .unwrap()
                    .contains(&"c".to_string())
            );
            assert!(
                store
                    .due(1_001, "x", 10)
                    .await
                    .unwrap()
                    .contains(&"c".to_string())
            );
            let leases = store.leases().await.unwrap();
            assert_eq!(leases.len(), 1);
            assert_eq!(leases[0].0, "c");
            assert_eq!(
                store.events_after("a", 1).await.unwrap(),
                [(2, "e2".to_string())]
            );
            let counts = store.counts().await.unwrap();
            assert_eq!(
                counts,
                [
                    ("f".to_string(), DurableStatus::Running, 1),
                    ("f".to_string(), DurableStatus::Waiting, 1)
                ]
            );
            let page = store
                .list(&RunFilter {
                    limit: Some(1),
                    before: Some("c".into()),
                    ..RunFilter::default()
                })
                .await
                .unwrap();
            assert_eq!(
                page.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
                ["a"]
            );
            std::fs::remove_dir_all(&dir).unwrap();
        });
    }
}
