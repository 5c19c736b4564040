//! A Postgres server for the tests: the one `HANDOFF_TEST_PG_URL` names
//! when `HANDOFF_TEST_PG_DIR` names its folder too (one test restarts it),
//! or else a throwaway cluster
//! this process starts with `scripts/pg.sh` on first use, on a free loopback
//! port, which a watchdog stops and removes once the process is gone.
//!
//! The tests that use it hold [`database`]'s guard: one of them restarts
//! the cluster. Without Postgres on the machine they are not run at all:
//! `build.rs` marks them ignored, and `cargo test` counts them at the end.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, OnceLock};

pub struct Cluster {
    /// A superuser's URL, to the `postgres` database.
    pub url: String,
    /// The cluster's folder, for `scripts/pg.sh restart|freeze|thaw`.
    pub dir: PathBuf,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static TURN: Mutex<()> = Mutex::new(());

/// The server: started on first use unless the environment names one.
pub fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        if let (Ok(url), Ok(dir)) = (
            std::env::var("HANDOFF_TEST_PG_URL"),
            std::env::var("HANDOFF_TEST_PG_DIR"),
        ) {
            return Cluster {
                url,
                dir: dir.into(),
            };
        }
        let dir = std::env::temp_dir().join(format!("handoff-test-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let out = std::process::Command::new("scripts/pg.sh")
            .arg("start")
            .arg(&dir)
            .output()
            .expect("scripts/pg.sh runs");
        assert!(
            out.status.success(),
            "cannot start a Postgres cluster: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
        // Stops the cluster once this process is gone, however it ends. It
        // checks once a second: it waits on a process it cannot wait for.
        // Never waited on: it outlives this process, and init reaps it.
        let watchdog = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; scripts/pg.sh stop '{dir}'; rm -rf '{dir}'",
            pid = std::process::id(),
            dir = dir.display()
        );
        #[allow(clippy::zombie_processes)]
        std::os::unix::process::CommandExt::process_group(
            std::process::Command::new("sh").arg("-c").arg(watchdog),
            0,
        )
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the cluster's watchdog starts");
        Cluster { url, dir }
    })
}

/// A fresh database of this test's own, and the guard that gives this test
/// the cluster to itself.
pub fn database(name: &str) -> (MutexGuard<'static, ()>, String) {
    let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let base = &cluster().url;
    let db = format!("handoff_{name}_{}", std::process::id());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(base).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db}")))
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
            .execute(&mut conn)
            .await
            .unwrap();
    });
    let mut url = reqwest::Url::parse(base).unwrap();
    url.set_path(&db);
    (turn, url.to_string())
}
