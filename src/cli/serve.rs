//! `handoff serve FOLDER`: the worker service, in the foreground, as a
//! systemd unit runs it. It logs to stderr (text, or JSON lines, filtered by
//! `HANDOFF_LOG`); SIGHUP reloads the flows folder; SIGTERM or Ctrl-C stops
//! it cleanly (exit 0), and the next start goes on where it stopped. Under
//! systemd `Type=notify` it says when it is ready, and pets the watchdog.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::cli::common::{
    Colors, EXIT_FAILED, EXIT_INVALID, EXIT_OK, duration_arg, plural, print_diagnostics,
};
use crate::cli::runs::StoreArg;
use crate::serve::log::{Level, Log};
use crate::serve::notify::Notifier;
use crate::serve::{Config, Server, StartError, TOKEN_VAR};
use crate::store::seal::KeySource;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub arazzo: crate::cli::common::ArazzoArgs,
    /// The folder of flows to serve (`*.yaml`, not `*.mock.yaml`); all are
    /// checked before the worker starts.
    pub flows: PathBuf,
    /// The address to listen on. Anything but loopback needs $HANDOFF_API_TOKEN.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Requests in flight to one host, at most; the rest wait their turn.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_inflight: u32,
    /// Runs taking steps at once, at most (default: no cap). The rest wait their turn, and
    /// the scheduler takes no more due runs than there are places: thousands of runs retrying
    /// cannot crowd out the new ones.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_running: Option<u32>,
    /// Threads that take the runs' steps and answer requests. On one, runs, their
    /// connections and their timers wake each other without crossing threads: the
    /// reference flow costs up to a fifth less CPU a run. On two, the worker has a
    /// core more to use, for runs that are CPU alone or a busy Postgres store.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub threads: u32,
    /// On SIGTERM, how long the steps in flight may take to end.
    #[arg(long, default_value = "30s", value_parser = duration_arg)]
    pub grace: Duration,
    /// No line per run that ends.
    #[arg(long, short)]
    pub quiet: bool,
    /// The log on stderr: lines for people, or one JSON object per line (`time`, `level`,
    /// `target`, `message`, and `run` and `flow` for a run's lines). `$HANDOFF_LOG` picks
    /// the lines: `info` (the default), `warn`, or `info,handoff::serve::schedules=warn`.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: crate::serve::log::Format,
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
    /// Export every run's trace as OpenTelemetry spans to this collector, over OTLP/HTTP: its
    /// base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT` gives it (`/v1/traces` is added). The `OTEL_*`
    /// variables configure the rest, and alone turn it on.
    #[arg(long, value_name = "URL")]
    pub otlp: Option<String>,
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
    let filter = match crate::serve::log::Filter::parse(
        &std::env::var("HANDOFF_LOG").unwrap_or_else(|_| "info".to_string()),
    ) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_INVALID;
        }
    };
    let journal = Arc::new(Log {
        format: args.log_format,
        filter,
    });
    let json = args.log_format == crate::serve::log::Format::Json;
    // Diagnostics as the log writes lines: code frames for people, one
    // object each for a log shipper.
    let show = |diagnostics: &[crate::language::diagnostic::Diagnostic]| {
        if json {
            for d in diagnostics {
                let level = if d.is_error() {
                    Level::Error
                } else {
                    Level::Warn
                };
                journal.line(level, TARGET, &one_line(d), None);
            }
        } else {
            print_diagnostics(diagnostics, color);
        }
    };
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
        journal: journal.clone(),
        max_running: args.max_running.map(|n| n as usize),
    };
    let env = Arc::new(|var: &str| std::env::var(var).ok());
    let server = match Server::prepare(&config, env).await {
        Ok(s) => s,
        Err(StartError::Invalid(diagnostics)) => {
            show(&diagnostics);
            return EXIT_INVALID;
        }
        Err(StartError::Failed(e)) => {
            journal.error(TARGET, &e);
            return EXIT_FAILED;
        }
    };
    show(&server.warnings);
    // Before any run is taken up, so every run's spans are made.
    let marks: Arc<dyn crate::run::otel::export::Marks> = Arc::new(
        crate::serve::worker::StoreMarks(server.app.worker.runs.store.clone()),
    );
    let warn = {
        let journal = journal.clone();
        Arc::new(move |line: String| journal.warn(TARGET, &line))
    };
    if let Err(e) = crate::cli::common::start_tracing(args.otlp.as_deref(), Some(marks), warn) {
        journal.error(TARGET, &e);
        return EXIT_INVALID;
    }
    if let Some(e) = crate::run::otel::exporter() {
        journal.info(TARGET, &format!("exporting traces to {}", e.config.shown()));
    }
    if let KeySource::NewFile(file) = &server.app.worker.runs.key {
        journal.info(TARGET, &format!(
            "note: created the key that seals secrets in the store: `{}` (mode 0600); keep it with the store, or set HANDOFF_STORE_KEY",
            file.display()
        ));
    }
    let loaded = server.app.loaded();
    let names: Vec<&str> = loaded.flows.by_name.keys().map(String::as_str).collect();
    let access = if server.app.token.required() {
        format!("bearer token from ${TOKEN_VAR}")
    } else {
        "no token (loopback only)".to_string()
    };
    journal.info(
        TARGET,
        &format!(
            "handoff serve: {} ({}), store `{}`, {access}",
            plural(names.len(), "flow"),
            names.join(", "),
            crate::store::postgres::shown_target(&config.store)
        ),
    );
    let (was, now) = server.fd_limit;
    journal.info(
        TARGET,
        &format!(
            "open files: {now}{}; connections: at most {}, {} for a request's headers, {} idle",
            if was != now {
                format!(" (raised from {was})")
            } else {
                String::new()
            },
            server.limits.max_connections,
            crate::run::clock::format_duration(server.limits.header_timeout),
            crate::run::clock::format_duration(server.limits.idle_timeout),
        ),
    );
    drop(loaded);
    // The line scripts and tests wait for: the port is open from here on.
    journal.info(TARGET, &format!("listening on http://{}", server.addr));
    let notifier = Arc::new(Notifier::from_env(&|v| std::env::var(v).ok()));
    notifier.send(&format!(
        "READY=1\nSTATUS=serving {} on {}",
        plural(names_count(&server), "flow"),
        server.addr
    ));
    let reloads = tokio::spawn(reload_on_hup(
        server.app.clone(),
        journal.clone(),
        notifier.clone(),
    ));
    let watchdog = notifier
        .watchdog
        .map(|every| tokio::spawn(pet_watchdog(server.app.clone(), notifier.clone(), every)));
    let stopping = {
        let (journal, notifier) = (journal.clone(), notifier.clone());
        async move {
            stop_signal().await;
            notifier.send("STOPPING=1");
            journal.info(
                TARGET,
                "stopping: no new runs; waiting for the steps in flight",
            );
        }
    };
    let result = server.run(stopping, args.grace).await;
    crate::cli::common::finish_tracing().await;
    reloads.abort();
    if let Some(w) = watchdog {
        w.abort();
    }
    match result {
        Ok(true) => {
            journal.info(TARGET, "stopped; unfinished runs go on at the next start");
            EXIT_OK
        }
        Ok(false) => {
            journal.info(TARGET, &format!(
                "stopped after the {} grace period with steps still in flight; they go on at the next start",
                crate::run::clock::format_duration(args.grace)
            ));
            EXIT_OK
        }
        Err(e) => {
            journal.error(TARGET, &e);
            EXIT_FAILED
        }
    }
}

/// A diagnostic as one log line: `file:line:col: message (help)`.
fn one_line(d: &crate::language::diagnostic::Diagnostic) -> String {
    let mut out = match d.location() {
        Some(at) => format!("{at}: {}", d.message),
        None => d.message.clone(),
    };
    if let Some(help) = &d.help {
        out.push_str(&format!(" ({help})"));
    }
    out
}

/// The serve command's lines' target, for `HANDOFF_LOG`.
const TARGET: &str = "handoff::serve";

fn names_count(server: &Server) -> usize {
    server.app.loaded().flows.by_name.len()
}

/// SIGHUP: the flows folder again. New runs start on the new versions, runs
/// under way keep theirs; a folder with a problem changes nothing.
async fn reload_on_hup(
    app: Arc<crate::serve::app::App>,
    journal: Arc<Log>,
    notifier: Arc<Notifier>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        notifier.send("RELOADING=1");
        let before: std::collections::BTreeMap<String, String> = app
            .loaded()
            .flows
            .by_name
            .iter()
            .map(|(n, s)| (n.clone(), s.hash().to_string()))
            .collect();
        // Reading and checking files: off the async threads.
        let reloading = app.clone();
        let result = tokio::task::spawn_blocking(move || reloading.reload()).await;
        match result {
            Ok(Ok((loaded, warnings))) => {
                for w in &warnings {
                    journal.warn(TARGET, &one_line(w));
                }
                let mut changes = Vec::new();
                for (name, served) in &loaded.flows.by_name {
                    match before.get(name) {
                        None => changes.push(format!("`{name}` added")),
                        Some(hash) if hash != served.hash() => {
                            changes.push(format!("`{name}` changed"))
                        }
                        _ => {}
                    }
                }
                for name in before
                    .keys()
                    .filter(|n| !loaded.flows.by_name.contains_key(*n))
                {
                    changes.push(format!("`{name}` removed"));
                }
                journal.info(
                    TARGET,
                    &format!(
                        "reloaded the flows folder: {}; {}",
                        plural(loaded.flows.by_name.len(), "flow"),
                        if changes.is_empty() {
                            "nothing changed".to_string()
                        } else {
                            format!(
                                "{} (runs under way keep their versions)",
                                changes.join(", ")
                            )
                        }
                    ),
                );
            }
            Ok(Err(problems)) => {
                for p in &problems {
                    let level = if p.is_error() {
                        Level::Error
                    } else {
                        Level::Warn
                    };
                    journal.line(level, TARGET, &one_line(p), None);
                }
                journal.warn(
                    TARGET,
                    "the flows folder was not reloaded: the flows it had are still served",
                );
            }
            Err(e) => journal.error(TARGET, &format!("the reload stopped: {e}")),
        }
        notifier.send("READY=1");
    }
}

/// `WATCHDOG=1` while the store answers: a worker whose store has hung it
/// is restarted by systemd.
async fn pet_watchdog(app: Arc<crate::serve::app::App>, notifier: Arc<Notifier>, every: Duration) {
    loop {
        if let Ok(Ok(())) = tokio::time::timeout(every, app.worker.runs.store.ping()).await {
            notifier.send("WATCHDOG=1");
        }
        tokio::time::sleep(every).await;
    }
}

/// SIGTERM (systemd, docker, kill) or Ctrl-C.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    if let Ok(mut term) = signal(SignalKind::terminate()) {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        return;
    }
    let _ = tokio::signal::ctrl_c().await;
}
