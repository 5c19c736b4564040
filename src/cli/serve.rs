//! `handoff serve FOLDER`: the worker service, in the foreground, as a
//! systemd unit runs it. It logs to stderr; SIGTERM or Ctrl-C stops it
//! cleanly (exit 0), and the next start goes on where it stopped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::cli::common::{
    Colors, EXIT_FAILED, EXIT_INVALID, EXIT_OK, duration_arg, plural, print_diagnostics,
};
use crate::cli::runs::StoreArg;
use crate::serve::{Config, Server, StartError, TOKEN_VAR};
use crate::store::seal::KeySource;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// The folder of flows to serve (`*.yaml`, not `*.mock.yaml`); all are
    /// checked before the worker starts.
    pub flows: PathBuf,
    /// The address to listen on. Anything but loopback needs $HANDOFF_API_TOKEN.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Requests in flight to one host, at most; the rest wait their turn.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_inflight: u32,
    /// On SIGTERM, how long the steps in flight may take to end.
    #[arg(long, default_value = "30s", value_parser = duration_arg)]
    pub grace: Duration,
    /// No line per run that ends.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub store: StoreArg,
    /// How long a worker's claim on a run holds without renewal (renewed
    /// every third of it): how soon another worker takes over a dead one's runs.
    #[arg(long, default_value = "30s", env = "HANDOFF_LEASE", value_parser = duration_arg)]
    pub lease: Duration,
    /// Connections to a Postgres store, at most.
    #[arg(long, default_value_t = 10, env = "HANDOFF_STORE_POOL", value_parser = clap::value_parser!(u32).range(2..=200))]
    pub store_pool: u32,
    /// Connections held at once (default: the open-files limit less 256).
    /// At the cap, a new connection replaces the one idle longest.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: Option<u32>,
    /// How long a connection may take to send a request's headers.
    #[arg(long, default_value = "10s", value_parser = duration_arg)]
    pub header_timeout: Duration,
    /// How long a keep-alive connection may sit between requests.
    #[arg(long, default_value = "120s", value_parser = duration_arg)]
    pub idle_timeout: Duration,
    /// A proxy in front serves the worker over TLS: the run page's session
    /// cookie is marked `Secure`, so a browser never sends it in the clear.
    #[arg(long)]
    pub behind_tls: bool,
    /// The worker's address as callers reach it (`https://worker.contoso.com`): where the resume
    /// URLs of `wait_for` steps point. Default: the address it listens on.
    #[arg(long, value_name = "URL", env = "HANDOFF_PUBLIC_URL", value_parser = public_url_arg)]
    pub public_url: Option<String>,
}

/// An http(s) URL with no query, fragment or credentials: a base to add paths to.
fn public_url_arg(text: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https")
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
        || url.host_str().is_none()
    {
        return Err(
            "a public URL is `https://host[:port][/path]`, with no query, fragment or credentials"
                .to_string(),
        );
    }
    Ok(text.trim_end_matches('/').to_string())
}

pub async fn serve_command(args: ServeArgs, color: Colors) -> i32 {
    let config = Config {
        flows: args.flows.clone(),
        listen: args.listen,
        store: args.store.target(),
        max_inflight: args.max_inflight as usize,
        log: !args.quiet,
        lease: args.lease,
        store_pool: args.store_pool,
        max_connections: args.max_connections.map(|n| n as usize),
        header_timeout: args.header_timeout,
        idle_timeout: args.idle_timeout,
        behind_tls: args.behind_tls,
        public_url: args.public_url.clone(),
    };
    let env = Arc::new(|var: &str| std::env::var(var).ok());
    let server = match Server::prepare(&config, env).await {
        Ok(s) => s,
        Err(StartError::Invalid(diagnostics)) => {
            print_diagnostics(&diagnostics, color);
            return EXIT_INVALID;
        }
        Err(StartError::Failed(e)) => {
            eprintln!("error: {e}");
            return EXIT_FAILED;
        }
    };
    print_diagnostics(&server.warnings, color);
    if let KeySource::NewFile(file) = &server.app.worker.runs.key {
        eprintln!(
            "note: created the key that seals secrets in the store: `{}` (mode 0600); keep it with the store, or set HANDOFF_STORE_KEY",
            file.display()
        );
    }
    let names: Vec<&str> = server
        .app
        .flows
        .by_name
        .keys()
        .map(String::as_str)
        .collect();
    let access = if server.app.token.required() {
        format!("bearer token from ${TOKEN_VAR}")
    } else {
        "no token (loopback only)".to_string()
    };
    eprintln!(
        "handoff serve: {} ({}), store `{}`, {access}",
        plural(names.len(), "flow"),
        names.join(", "),
        crate::store::postgres::shown_target(&config.store)
    );
    let (was, now) = server.fd_limit;
    eprintln!(
        "open files: {now}{}; connections: at most {}, {} for a request's headers, {} idle",
        if was != now {
            format!(" (raised from {was})")
        } else {
            String::new()
        },
        server.limits.max_connections,
        crate::run::clock::format_duration(server.limits.header_timeout),
        crate::run::clock::format_duration(server.limits.idle_timeout),
    );
    // The line scripts and tests wait for: the port is open from here on.
    eprintln!("listening on http://{}", server.addr);
    match server.run(stop_signal(), args.grace).await {
        Ok(true) => {
            eprintln!("stopped; unfinished runs go on at the next start");
            EXIT_OK
        }
        Ok(false) => {
            eprintln!(
                "stopped after the {} grace period with steps still in flight; they go on at the next start",
                crate::run::clock::format_duration(args.grace)
            );
            EXIT_OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_FAILED
        }
    }
}

/// SIGTERM (systemd, docker, kill) or Ctrl-C.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            eprintln!("stopping: no new runs; waiting for the steps in flight");
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    eprintln!("stopping: no new runs; waiting for the steps in flight");
}
