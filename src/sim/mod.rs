//! `handoff sim`: a local NWC to run flows against, over real HTTP.
//!
//! - [`model`]: the world (instances, tasks, completions) and the contract's
//!   rules, as plain data; [`shared`]: the world and settings every handler
//!   shares; [`answer`]: JSON and problem documents as NWC sends them.
//! - [`routes`]: the NWC paths a worker calls, bearer-checked.
//! - [`control`]: `/_sim/…` endpoints for tests and users.
//! - [`faults`]: answers spoiled on purpose, rule by rule.
//! - [`requests`]: the request log, with tokens masked.
//! - [`callouts`]: NAC's "Call a web service – Wait for callback" side.
//!
//! The world sits behind one mutex that handlers hold only while they read or
//! change it, never while an answer is written, so the server keeps up with
//! thousands of keep-alive requests a second on two cores.

pub mod answer;
pub mod callouts;
pub mod control;
pub mod faults;
pub mod model;
pub mod requests;
pub mod routes;
pub mod shared;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::routing::{get, patch, post};
use tokio::sync::oneshot;

use crate::run::clock::Clock;
use crate::sim::requests::Entry;
use crate::sim::shared::{Shared, SimConfig};

/// A running simulator. Dropping it stops the server.
pub struct SimServer {
    pub base_url: String,
    pub shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl SimServer {
    /// Stops accepting, lets requests in flight finish, and waits.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Serves until the server fails or `signal` resolves.
    pub async fn serve_until(mut self, signal: impl Future<Output = ()>) -> std::io::Result<()> {
        let Some(mut task) = self.task.take() else {
            return Ok(());
        };
        tokio::select! {
            result = &mut task => return result.unwrap_or(Ok(())),
            () = signal => {}
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        task.await.unwrap_or(Ok(()))
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Binds `addr` (port 0 picks a free one) and serves in the background.
pub async fn start(
    config: SimConfig,
    clock: Arc<dyn Clock>,
    addr: SocketAddr,
) -> std::io::Result<SimServer> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared::new(config, clock, addr));
    let app = router(shared.clone());
    let (tx, rx) = oneshot::channel::<()>();
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        // Small JSON answers should not wait for Nagle.
        let _ = tcp.set_nodelay(true);
    });
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
    });
    Ok(SimServer {
        base_url: format!("http://{addr}"),
        shared,
        shutdown: Some(tx),
        task: Some(task),
    })
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/authentication/v1/token", post(routes::token))
        .route("/openapi.json", get(routes::openapi))
        .route(
            "/workflows/v1/designs/{id}/instances",
            post(routes::start_instance),
        )
        .route("/workflows/v2/instances/{id}", get(routes::get_instance))
        .route(
            "/workflows/v1/instances/{id}/resolve",
            post(routes::resolve_instance),
        )
        .route(
            "/workflows/v1/instances/{id}/terminate",
            post(routes::terminate_instance),
        )
        .route(
            "/workflows/v1/instances/{id}/callbacks/{cid}",
            post(routes::callback),
        )
        .route("/workflows/v2/tasks", get(routes::list_tasks))
        .route(
            "/workflows/v2/tasks/{id}",
            get(routes::get_task).patch(routes::complete_task),
        )
        .route("/workflows/v1/tasks/{id}", patch(routes::complete_task))
        .route(
            "/workflows/v2/tasks/{id}/assignments/{aid}",
            patch(routes::complete_assignment),
        )
        .route("/_sim/instances", post(control::create_instances))
        .route("/_sim/state", get(control::state))
        .route(
            "/_sim/faults",
            get(control::list_faults)
                .post(control::add_fault)
                .delete(control::clear_faults),
        )
        .route("/_sim/requests", get(control::requests))
        .route("/_sim/health", get(control::health))
        .fallback(routes::not_found)
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            observe,
        ))
        .with_state(shared)
}

/// Wraps every request: checks the token, applies an armed fault, then logs
/// the request.
async fn observe(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> axum::response::Response {
    let started = Instant::now();
    let method = request.method().as_str().to_string();
    let path = request.uri().path().to_string();
    let shown = requests::mask(
        request
            .uri()
            .path_and_query()
            .map_or(path.as_str(), |p| p.as_str()),
        &shared.config.token,
    );
    let control = path.starts_with("/_sim/");
    let traceparent = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(64).collect::<String>());
    // The bearer check happens here, once, for every NWC path but the token endpoint.
    let auth = if control || path == "/authentication/v1/token" || path == "/openapi.json" {
        None
    } else {
        Some(routes::classify(&shared, request.headers()))
    };
    let fault = if control {
        None
    } else {
        shared.take_fault(&method, &path)
    };
    let response = match &fault {
        None => guarded(auth, request, next).await,
        Some(f) => {
            let answer = if f.applies_request() {
                Some(guarded(auth, request, next).await)
            } else {
                None
            };
            f.spoil(answer).await
        }
    };
    let entry = Entry {
        seq: shared.log.next_seq(),
        method,
        path: shown,
        status: response.status().as_u16(),
        auth: auth.map_or("-", routes::Auth::label),
        fault: fault.as_ref().map(crate::sim::faults::Fault::label),
        micros: started.elapsed().as_micros() as u64,
        traceparent,
    };
    if shared.config.print_requests && !control {
        print_entry(&entry);
    }
    shared.log.push(entry);
    response
}

/// Runs the handler when the request may have it: a missing or wrong token is
/// a 401 before any handler sees the request.
async fn guarded(
    auth: Option<routes::Auth>,
    request: Request,
    next: Next,
) -> axum::response::Response {
    match auth.map(routes::refusal) {
        Some(Some(problem)) => crate::sim::answer::problem_response(&problem),
        _ => next.run(request).await,
    }
}

fn print_entry(e: &Entry) {
    let fault = e
        .fault
        .as_deref()
        .map(|f| format!(" · {f}"))
        .unwrap_or_default();
    let traced = e
        .traceparent
        .as_deref()
        .map(|t| format!(" · traceparent {t}"))
        .unwrap_or_default();
    let auth = if e.auth == "-" {
        String::new()
    } else {
        format!(" · {}", e.auth)
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{:>5} {} {} → {}{auth}{fault} · {:.1}ms{traced}",
        e.seq,
        e.method,
        e.path,
        e.status,
        e.micros as f64 / 1000.0
    );
}
