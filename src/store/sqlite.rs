//! The embedded store: one SQLite file (`./handoff.db` by default), in WAL
//! mode, created with its schema on first use. Its queries are the shared
//! ones of [`crate::store::sql`]; its schema is `migrations/sqlite/`, run by
//! the same migrator as Postgres's.
//!
//! WAL with `synchronous = NORMAL` keeps every committed checkpoint through a
//! crash of the process (kill -9); a power cut may lose the last few.

use std::path::Path;
use std::str::FromStr;

use sqlx::Row;
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteQueryResult, SqliteSynchronous,
};

use crate::store::StoreError;
use crate::store::sql::{Dialect, SqlStore, failed, migrate};

/// A run store in one SQLite file.
pub type SqliteStore = SqlStore<Sqlite>;

impl Dialect for Sqlite {
    const BEGIN: &'static str = "BEGIN IMMEDIATE";
    const DUE_LOCK: &'static str = "";
    const NOTIFY: Option<&'static str> = None;
    const NUMBERED: bool = false;
    const SIDE_BY_SIDE: bool = false;
    const SET_REWRITES_INDEXES: bool = true;
    /// Never edit one that has shipped: add another.
    const MIGRATIONS: &'static [(i64, &'static str, &'static str)] = &[
        (
            1,
            "runs",
            include_str!("../../migrations/sqlite/0001_runs.sql"),
        ),
        (
            2,
            "leases",
            include_str!("../../migrations/sqlite/0002_leases.sql"),
        ),
        (
            3,
            "idempotency",
            include_str!("../../migrations/sqlite/0003_idempotency.sql"),
        ),
        (
            4,
            "idempotency fingerprint",
            include_str!("../../migrations/sqlite/0004_idempotency_fingerprint.sql"),
        ),
        (
            5,
            "progress",
            include_str!("../../migrations/sqlite/0005_progress.sql"),
        ),
        (
            6,
            "signals",
            include_str!("../../migrations/sqlite/0006_signals.sql"),
        ),
        (
            7,
            "exported",
            include_str!("../../migrations/sqlite/0007_exported.sql"),
        ),
        (
            8,
            "title",
            include_str!("../../migrations/sqlite/0008_title.sql"),
        ),
        (
            9,
            "counts",
            include_str!("../../migrations/sqlite/0009_counts.sql"),
        ),
        (
            10,
            "flow versions",
            include_str!("../../migrations/sqlite/0010_flow_versions.sql"),
        ),
        (
            11,
            "event rows",
            include_str!("../../migrations/sqlite/0011_event_rows.sql"),
        ),
    ];

    fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
    }
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

/// Migrates under the file's write lock (`BEGIN IMMEDIATE`), so that two
/// processes opening a new file together migrate it once. A file an earlier
/// handoff wrote counted its versions in `handoff_schema`: those are
/// recorded as applied, not run again.
async fn migrate_file(pool: &SqlitePool) -> Result<(), StoreError> {
    let fail = failed("migrate");
    let mut tx = pool.begin_with(Sqlite::BEGIN).await.map_err(&fail)?;
    let earlier: bool = sqlx::query(
        "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'handoff_schema'",
    )
    .fetch_one(&mut *tx)
    .await
    .and_then(|r| r.try_get(0))
    .map_err(&fail)?;
    let adopted: i64 = if earlier {
        sqlx::query("SELECT COALESCE(MAX(version), 0) FROM handoff_schema")
            .fetch_one(&mut *tx)
            .await
            .and_then(|r| r.try_get(0))
            .map_err(&fail)?
    } else {
        0
    };
    migrate::<Sqlite>(&mut tx, adopted).await?;
    tx.commit().await.map_err(&fail)
}

/// The page size of a new store (an existing one keeps its own: SQLite
/// cannot change it in WAL mode). A checkpoint writes every page it touched
/// to the log, with write calls of its own: at the default 4 KiB a run of the
/// reference flow took 31 of them, at 16 KiB 12, and `serve` completed ~10%
/// more runs a second (docs/performance.md).
const PAGE_SIZE: u32 = 16 * 1024;

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
            .page_size(PAGE_SIZE)
            // A statement's undo journal (an upsert, a statement of many rows
            // in a transaction) is kept in memory rather than spilled to a
            // temporary file past 64 KB, four 16 KiB pages: a checkpoint then
            // needs no new file descriptor (one that did waited out a flood
            // of connections instead of going on) and writes half the bytes.
            // A sort too large for the cache stays in memory too: handoff's
            // listings have a limit, or (resuming every unfinished run) read
            // all they sort into memory anyway.
            .pragma("temp_store", "memory")
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
        migrate_file(&pool).await?;
        Self::narrow(path);
        Ok(SqliteStore {
            pool,
            changed: None,
            versions: Default::default(),
        })
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
}
