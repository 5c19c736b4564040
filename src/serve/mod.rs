//! `handoff serve`: the worker service that replaces the K2 server.
//!
//! - [`flows`]: the folder of flows, all checked before anything starts.
//! - [`worker`]: runs as tasks while they take steps, rows while they wait;
//!   the scheduler that wakes them.
//! - [`api`]: the HTTP API under `/v1`, the hooks, `/healthz`, `/metrics`.
//! - [`access`]: the bearer token and webhook signatures.
//! - [`metrics`]: what `/metrics` counts.
//! - [`page`]: the read-only run page at `/`.

pub mod access;
pub mod api;
pub mod app;
pub mod conns;
pub mod flows;
pub mod log;
pub mod metrics;
pub mod notify;
pub mod page;
pub mod resume;
pub mod schedules;
pub mod worker;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::language::diagnostic::Diagnostic;
use crate::run::transport::ReqwestTransport;
use crate::serve::access::{ApiToken, MIN_TOKEN_LEN};
use crate::serve::app::{App, Env, Loaded};
use crate::serve::worker::Worker;
use crate::store::durable::DurableRuns;

/// The environment variable that holds the API's bearer token.
pub const TOKEN_VAR: &str = "HANDOFF_API_TOKEN";

pub struct Config {
    pub flows: PathBuf,
    pub listen: SocketAddr,
    pub store: PathBuf,
    /// Requests in flight to one host, at most.
    pub max_inflight: usize,
    /// A line on stderr per run that ends.
    pub log: bool,
    /// How long a claim on a run holds without renewal.
    pub lease: Duration,
    /// Connections to a Postgres store, at most.
    pub store_pool: u32,
    /// Connections held at once; `None`: the open-files limit less a reserve.
    pub max_connections: Option<usize>,
    /// How long a connection may take to send a request's headers.
    pub header_timeout: Duration,
    /// How long a keep-alive connection may sit idle.
    pub idle_timeout: Duration,
    /// Served over TLS by a proxy in front: cookies are `Secure`.
    pub behind_tls: bool,
    /// The worker's address as callers reach it, for resume URLs
    /// (`https://worker.contoso.com`); default: the address it listens on.
    pub public_url: Option<String>,
    /// Where the worker's lines go, and which.
    pub journal: Arc<crate::serve::log::Log>,
    /// Runs taking steps at once, at most; `None`: no cap.
    pub max_running: Option<usize>,
}

/// Why the worker did not start.
pub enum StartError {
    /// The flows or the settings are wrong: exit 2.
    Invalid(Vec<Diagnostic>),
    /// Something outside failed (the store, the port): exit 1.
    Failed(String),
}

/// A worker ready to serve: flows checked, store open, port bound.
pub struct Server {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    pub warnings: Vec<Diagnostic>,
    /// The open-files limit before and after raising it.
    pub fd_limit: (u64, u64),
    pub limits: conns::Limits,
    listener: tokio::net::TcpListener,
}

impl Server {
    pub async fn prepare(config: &Config, env: Env) -> Result<Server, StartError> {
        let loaded = Loaded::load(&config.flows, &env).map_err(StartError::Invalid)?;
        let token = match env(TOKEN_VAR).filter(|t| !t.is_empty()) {
            Some(t) if t.trim().len() < MIN_TOKEN_LEN => {
                return Err(StartError::Invalid(vec![
                    Diagnostic::error(format!(
                        "`${TOKEN_VAR}` is shorter than {MIN_TOKEN_LEN} characters"
                    ))
                    .help("make one with `openssl rand -base64 32`"),
                ]));
            }
            Some(t) => ApiToken::new(t.trim()),
            None if config.listen.ip().is_loopback() => ApiToken::none(),
            None => {
                return Err(StartError::Invalid(vec![
                    Diagnostic::error(format!(
                        "listening on {} needs an API token: set `${TOKEN_VAR}`",
                        config.listen
                    ))
                    .help(
                        "anyone who can reach the port could start and cancel runs; without a token, listen on 127.0.0.1 only (make one with `openssl rand -base64 32`)",
                    ),
                ]));
            }
        };
        let runs = DurableRuns::open_target(&config.store, &|v| env(v), config.store_pool)
            .await
            .map_err(StartError::Failed)?
            .with_lease(config.lease);
        let fd_limit = conns::raise_fd_limit();
        let mut limits = conns::Limits::for_fd_limit(fd_limit.1);
        if let Some(max) = config.max_connections {
            limits.max_connections = max;
        }
        limits.header_timeout = config.header_timeout;
        limits.idle_timeout = config.idle_timeout;
        let metrics = Arc::new(metrics::Metrics::default());
        metrics
            .conns
            .fd_limit
            .store(fd_limit.1, std::sync::atomic::Ordering::Relaxed);
        let client = ReqwestTransport::new().map_err(StartError::Failed)?;
        let counted = metrics.clone();
        let transport = Arc::new(
            crate::run::limits::Limited::new(Box::new(client), config.max_inflight)
                .on_answer(Box::new(move |host, status| counted.request(host, status))),
        );
        let listener = conns::listen(config.listen)
            .map_err(|e| StartError::Failed(format!("cannot listen on {}: {e}", config.listen)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| StartError::Failed(e.to_string()))?;
        // Where resume URLs point: the operator's word, else this address.
        let public = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"));
        let resume = crate::serve::resume::ResumeUrls::new(runs.resume_key(), &public);
        let worker = Worker::new(
            runs,
            transport,
            metrics,
            config.log,
            resume,
            config.journal.clone(),
            config.max_running,
        );
        let warnings = loaded.flows.warnings.clone();
        let app = Arc::new(App {
            worker,
            loaded: std::sync::RwLock::new(Arc::new(loaded)),
            flows_dir: config.flows.clone(),
            token,
            env,
            seen_signatures: Default::default(),
            revoked: Default::default(),
            attempts: Default::default(),
            secure_cookies: config.behind_tls,
            schedules: Default::default(),
            live_streams: Default::default(),
        });
        Ok(Server {
            addr,
            app,
            warnings,
            fd_limit,
            limits,
            listener,
        })
    }

    /// Serves until `shutdown` resolves: frees runs left by a process that is
    /// gone, wakes every run that is due, and answers the API. On shutdown it
    /// stops taking requests, lets the steps in flight end and checkpoint
    /// (for up to `grace`), and returns whether they all did.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()>,
        grace: Duration,
    ) -> Result<bool, String> {
        let worker = self.app.worker.clone();
        worker.adopt_orphans().await?;
        let scheduler = tokio::spawn(worker.clone().schedule());
        // Cron slots: their own loop, which ends with the worker.
        let _slots = tokio::spawn(crate::serve::schedules::run(self.app.clone()));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let router = api::router(
            self.app.clone(),
            crate::serve::page::router(self.app.clone()),
        );
        let http = tokio::spawn(conns::serve(
            self.listener,
            router,
            self.limits,
            self.app.worker.metrics.conns.clone(),
            async {
                let _ = stop_rx.await;
            },
        ));
        shutdown.await;
        let _ = stop_tx.send(());
        let clean = worker.shutdown(grace).await;
        scheduler.abort();
        // Open trace streams end at the shutdown; give them a moment to say so.
        let _ = tokio::time::timeout(Duration::from_secs(2), http).await;
        Ok(clean)
    }
}
