//! The listening socket, guarded against callers who hold connections open.
//!
//! Anyone who can reach the port can open connections, and each costs a
//! file descriptor. Without limits, a thousand idle sockets starve the worker
//! of descriptors: `/healthz` times out and a run polling NWC fails with "Too
//! many open files". So every connection here has a deadline while it owes
//! us a request (`header_timeout` for its first, `idle_timeout` between
//! keep-alive requests, `body_timeout` for a request's whole body), the
//! number held is capped below the descriptor limit, and at the cap a
//! newcomer takes the place of the connection that has been idle longest:
//! an idle or slow flood cannot lock out `/healthz`. A connection whose
//! request is being served (a followed trace, say) is never evicted; one
//! still receiving a request's body counts as idle.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Notify;

/// Descriptors kept back from connections, for the store, NWC and the rest.
pub const FD_RESERVE: u64 = 256;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections held at once.
    pub max_connections: usize,
    /// How long a new connection may take to send its first request's headers.
    pub header_timeout: Duration,
    /// How long a keep-alive connection may sit between requests.
    pub idle_timeout: Duration,
    /// How long a request's body may take to arrive, all of it.
    pub body_timeout: Duration,
}

impl Limits {
    /// The defaults, with the cap derived from the descriptor limit.
    pub fn for_fd_limit(fd_limit: u64) -> Limits {
        Limits {
            max_connections: fd_limit.saturating_sub(FD_RESERVE).clamp(16, 16_384) as usize,
            header_timeout: Duration::from_secs(10),
            // Longer than clients keep an idle connection pooled (reqwest
            // 90 s, curl and browsers less), so the client closes first.
            idle_timeout: Duration::from_secs(120),
            body_timeout: Duration::from_secs(10),
        }
    }
}

/// Connections the kernel may queue before they are accepted. std's 128
/// overflows in a burst, and a dropped SYN costs the client a second.
const BACKLOG: u32 = 4096;

/// A listening socket with a deep accept queue.
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// The soft limit on open files, raised to the hard limit: what it was, and
/// what it is now.
pub fn raise_fd_limit() -> (u64, u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return (0, 0);
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return (soft, hard);
    }
    (soft, soft)
}

/// What the guard counts, for `/metrics`.
#[derive(Default)]
pub struct ConnStats {
    pub open: AtomicUsize,
    pub accepted: AtomicU64,
    /// Closed for sending no request in time (first or keep-alive).
    pub timed_out: AtomicU64,
    /// Closed to make room for a newcomer at the cap.
    pub evicted: AtomicU64,
    /// Turned away at once: at the cap, with every connection busy.
    pub refused: AtomicU64,
    /// `accept` failed for want of descriptors (EMFILE, ENFILE).
    pub accept_errors: AtomicU64,
    pub fd_limit: AtomicU64,
    pub max_connections: AtomicU64,
}

/// One connection's state, shared by its task, its requests and the registry.
struct Conn {
    in_flight: AtomicUsize,
    /// Requests whose body has not all arrived: not served yet, so the
    /// connection may be evicted like an idle one.
    receiving: AtomicUsize,
    served: AtomicU64,
    /// Milliseconds since `epoch` when it last became idle.
    idle_since: AtomicU64,
    close: Notify,
}

struct Registry {
    next: u64,
    open: BTreeMap<u64, Arc<Conn>>,
}

impl Registry {
    /// The connection idle longest, if any is idle (or still receiving a
    /// request's body).
    fn longest_idle(&self) -> Option<Arc<Conn>> {
        self.open
            .values()
            .filter(|c| {
                c.in_flight.load(Ordering::Acquire) == 0 || c.receiving.load(Ordering::Acquire) > 0
            })
            .min_by_key(|c| c.idle_since.load(Ordering::Acquire))
            .cloned()
    }
}

/// Serves `router` on `listener` until `stop` resolves, then lets requests
/// in flight end; returns when every connection has closed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: Limits,
    stats: Arc<ConnStats>,
    stop: impl std::future::Future<Output = ()>,
) {
    stats
        .max_connections
        .store(limits.max_connections as u64, Ordering::Relaxed);
    // Times of idleness are kept as milliseconds since this instant.
    let epoch = Instant::now();
    let registry = Arc::new(Mutex::new(Registry {
        next: 0,
        open: BTreeMap::new(),
    }));
    // A watch, not a notification: a connection between two waits still
    // sees that the server stops.
    let (stopping, stop_seen) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => break,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(_) => {
                // Out of descriptors (the cap is what normally prevents it):
                // back off rather than spin; connections that owe a request
                // free theirs at their deadline, and steps wait it out.
                stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        let _ = tcp.set_nodelay(true);
        let conn = {
            let Ok(mut reg) = registry.lock() else { break };
            if reg.open.len() >= limits.max_connections {
                match reg.longest_idle() {
                    Some(c) => {
                        stats.evicted.fetch_add(1, Ordering::Relaxed);
                        c.close.notify_one();
                    }
                    None => {
                        stats.refused.fetch_add(1, Ordering::Relaxed);
                        drop(tcp);
                        continue;
                    }
                }
            }
            let conn = Arc::new(Conn {
                in_flight: AtomicUsize::new(0),
                receiving: AtomicUsize::new(0),
                served: AtomicU64::new(0),
                idle_since: AtomicU64::new(epoch.elapsed().as_millis() as u64),
                close: Notify::new(),
            });
            let id = reg.next;
            reg.next += 1;
            reg.open.insert(id, conn.clone());
            stats.open.store(reg.open.len(), Ordering::Relaxed);
            (id, conn)
        };
        let (registry, stats, router, mut stop_seen) = (
            registry.clone(),
            stats.clone(),
            router.clone(),
            stop_seen.clone(),
        );
        tasks.spawn(async move {
            let (id, conn) = conn;
            one(
                tcp,
                peer,
                router,
                conn,
                limits,
                &stats,
                epoch,
                &mut stop_seen,
            )
            .await;
            if let Ok(mut reg) = registry.lock() {
                reg.open.remove(&id);
                stats.open.store(reg.open.len(), Ordering::Relaxed);
            }
        });
        // Reap finished tasks as we go, so the set does not grow.
        while tasks.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = stopping.send(true);
    while tasks.join_next().await.is_some() {}
}

/// Serves one connection until it closes, times out, is evicted, or the
/// server stops (then it finishes the request in flight, if any).
#[allow(clippy::too_many_arguments)]
async fn one(
    tcp: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    router: Router,
    conn: Arc<Conn>,
    limits: Limits,
    stats: &ConnStats,
    epoch: Instant,
    stopping: &mut tokio::sync::watch::Receiver<bool>,
) {
    let tracked = conn.clone();
    let body_timeout = limits.body_timeout;
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let guard = Busy::start(tracked.clone(), epoch);
        // A request body must arrive within its deadline: one sent a byte at
        // a time would keep the connection busy, and never evicted, for ever.
        let mut req = req.map(|body| {
            let receiving = (!body.is_end_stream()).then(|| Receiving::start(tracked.clone()));
            Body::new(Timed {
                inner: body,
                deadline: Box::pin(tokio::time::sleep(body_timeout)),
                receiving,
            })
        });
        // Who is asking, for the sign-in limit (axum's `ConnectInfo`).
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        let mut router = router.clone();
        async move {
            let response = tower_service::Service::call(&mut router, req).await?;
            Ok::<_, std::convert::Infallible>(response.map(|body| {
                Body::new(Guarded {
                    inner: body,
                    _busy: guard,
                })
            }))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // hyper's own header timeout would also close a keep-alive connection
    // idle longer than it, racing clients that reuse it; the loop below
    // keeps both deadlines instead.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .keep_alive(true);
    let http = builder.serve_connection(TokioIo::new(tcp), service);
    tokio::pin!(http);
    let mut shutting = false;
    loop {
        // Requests come and go while this waits: a stale deadline is only a
        // moment to look again, never a reason to close.
        let wake = conn
            .deadline(&limits, epoch)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(1));
        tokio::select! {
            _ = http.as_mut() => return,
            _ = conn.close.notified() => return,
            _ = stopping.wait_for(|stop| *stop), if !shutting => {
                shutting = true;
                http.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep_until(wake) => {
                if conn.deadline(&limits, epoch).is_some_and(|d| tokio::time::Instant::now() >= d) {
                    stats.timed_out.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    }
}

impl Conn {
    /// When it must have sent a request by, unless one is in flight.
    fn deadline(&self, limits: &Limits, epoch: Instant) -> Option<tokio::time::Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let allowed = if self.served.load(Ordering::Acquire) == 0 {
            limits.header_timeout
        } else {
            limits.idle_timeout
        };
        let since = epoch + Duration::from_millis(self.idle_since.load(Ordering::Acquire));
        Some(tokio::time::Instant::from_std(since + allowed))
    }
}

/// A request in flight on a connection: it is busy until the answer's body
/// has been sent (or dropped), then idle from that moment.
struct Busy {
    conn: Arc<Conn>,
    epoch: Instant,
}

impl Busy {
    fn start(conn: Arc<Conn>, epoch: Instant) -> Busy {
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        conn.served.fetch_add(1, Ordering::AcqRel);
        Busy { conn, epoch }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.conn
            .idle_since
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Release);
        self.conn.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A request's body with a deadline for all of it.
struct Timed {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// Dropped once the body has all arrived (or failed).
    receiving: Option<Receiving>,
}

/// A request whose body is still arriving, on its connection's count.
struct Receiving(Arc<Conn>);

impl Receiving {
    fn start(conn: Arc<Conn>) -> Receiving {
        conn.receiving.fetch_add(1, Ordering::AcqRel);
        Receiving(conn)
    }
}

impl Drop for Receiving {
    fn drop(&mut self) {
        self.0.receiving.fetch_sub(1, Ordering::AcqRel);
    }
}

impl HttpBody for Timed {
    type Data = axum::body::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            if frame.as_ref().is_none_or(|f| f.is_err()) || self.inner.is_end_stream() {
                self.receiving = None;
            }
            return Poll::Ready(frame.map(|f| f.map_err(std::io::Error::other)));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the request's body did not arrive in time",
            )))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An answer's body that keeps its connection busy until it is done.
struct Guarded {
    inner: Body,
    _busy: Busy,
}

impl HttpBody for Guarded {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
