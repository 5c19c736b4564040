//! Pages that follow what they show, without reloading.
//!
//! A page open on an unfinished run, and the runs list, name an event
//! stream (`data-live` on `<body>`). The stream is server-sent events that
//! carry no data beyond "it changed" (`event: changed`, with the last trace
//! event's number for a run): the page's script then fetches the page again
//! and swaps its `<main>`, keeping what the reader opened, so the HTML has
//! one source and the stream cannot leak what the page would not show. A run
//! that ends says so (`event: ended`) and its stream closes.
//!
//! The changes come from this process's checkpoints (the worker's `changed`
//! signal) and, for other workers on a shared store, a look at the store
//! every few seconds; a stream looks at most twice a second (the list every
//! two seconds), however busy the worker. Each stream holds a connection, so they are capped
//! ([`MAX_STREAMS`]), and each lasts at most [`STREAM_FOR`]: the browser's
//! `EventSource` opens a new one.
//!
//! The script also counts down to the moments a page names (`data-until`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use serde::Deserialize;

use crate::serve::app::App;

/// Event streams open at once, over every page.
pub const MAX_STREAMS: usize = 64;
/// How long one stream stays open before the browser opens the next.
pub const STREAM_FOR: Duration = Duration::from_secs(300);
/// How often a stream looks at the store for changes other workers made.
const LOOK_EVERY: Duration = Duration::from_secs(3);
/// The least time between two looks of one stream at the store, however
/// busy the worker is: a run page's, and the list's (its counts cost more).
const RUN_GAP: Duration = Duration::from_millis(500);
const LIST_GAP: Duration = Duration::from_secs(2);
/// A comment this often keeps proxies from closing a quiet stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The one script the pages run, served as a file so that the policy can
/// forbid inline scripts: an injected `<script>` would not run.
const SCRIPT: &str = r#"(function () {
  "use strict";
  function left(ms) {
    var s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
    return Math.floor(s / 86400) + "d";
  }
  function tick() {
    var now = Date.now();
    document.querySelectorAll("[data-until]").forEach(function (el) {
      var ms = Number(el.getAttribute("data-until")) - now;
      el.textContent = ms > 0 ? "in " + left(ms) : "due now";
    });
  }
  tick();
  setInterval(tick, 1000);
  var live = document.body.getAttribute("data-live");
  if (!live || !window.EventSource) return;
  var source = null, fetching = false, again = false;
  function open() {
    var main = document.getElementById("main");
    var after = main ? main.getAttribute("data-seq") : null;
    source = new EventSource(live + (after ? (live.indexOf("?") < 0 ? "?" : "&") + "after=" + after : ""));
    source.addEventListener("changed", refresh);
    source.addEventListener("ended", function () { source.close(); refresh(); });
  }
  function refresh() {
    if (fetching) { again = true; return; }
    fetching = true;
    fetch(location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) {
        if (r.status === 401) { location.reload(); return null; }
        return r.text();
      })
      .then(function (html) {
        if (html === null) return;
        var next = new DOMParser().parseFromString(html, "text/html");
        var fresh = next.getElementById("main"), main = document.getElementById("main");
        if (!fresh || !main) return;
        // What the reader opened stays open; focus stays where it was.
        var opened = {};
        main.querySelectorAll("details[id][open]").forEach(function (d) { opened[d.id] = true; });
        var focused = document.activeElement && document.activeElement.id;
        main.replaceWith(document.adoptNode(fresh));
        Object.keys(opened).forEach(function (id) {
          var d = document.getElementById(id);
          if (d) d.open = true;
        });
        if (focused) { var f = document.getElementById(focused); if (f) f.focus(); }
        document.title = next.title;
        tick();
        if (!next.body.getAttribute("data-live")) {
          document.body.removeAttribute("data-live");
          if (source) source.close();
        }
      })
      .catch(function () {})
      .then(function () {
        fetching = false;
        if (again) { again = false; refresh(); }
      });
  }
  open();
})();
"#;

pub(crate) async fn script() -> Response {
    let mut r = Response::new(Body::from(SCRIPT));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=3600"),
    );
    r
}

#[derive(Deserialize, Default)]
pub(crate) struct After {
    after: Option<u64>,
}

/// One open stream, counted while it lives.
struct Slot(Arc<App>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.live_streams.fetch_sub(1, Ordering::SeqCst);
    }
}

fn take_slot(app: &Arc<App>) -> Option<Slot> {
    let was = app.live_streams.fetch_add(1, Ordering::SeqCst);
    let slot = Slot(app.clone());
    (was < MAX_STREAMS).then_some(slot)
}

/// What the list shows that a change would alter: the runs in each status,
/// and this process's count of checkpoints.
type ListSeen = (Vec<(String, String, u64)>, u64);

async fn list_seen(app: &App) -> ListSeen {
    let counts = app
        .worker
        .runs
        .store
        .counts()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|(f, s, n)| (f, s.as_str().to_string(), n))
        .collect();
    (counts, *app.worker.changed.borrow())
}

/// One stream's state between looks.
struct Follow {
    slot: Slot,
    run: Option<String>,
    /// The run's last event the page has seen.
    seq: u64,
    list: Option<ListSeen>,
    changed: tokio::sync::watch::Receiver<u64>,
    until: tokio::time::Instant,
    sent: tokio::time::Instant,
    started: bool,
    done: bool,
}

impl Follow {
    /// What to tell the page now, if anything.
    async fn look(&mut self) -> Option<String> {
        let app = &self.slot.0;
        let Some(id) = &self.run else {
            let now = list_seen(app).await;
            let changed = self.list.as_ref().is_some_and(|l| *l != now);
            self.list = Some(now);
            return changed.then(|| "event: changed\ndata: list\n\n".to_string());
        };
        let store = &app.worker.runs.store;
        let ended = match store.load(id).await {
            Ok(Some(run)) => run.status.is_finished(),
            Ok(None) => {
                self.done = true;
                return Some("event: ended\ndata: gone\n\n".to_string());
            }
            // The store will answer again; the page keeps what it shows.
            Err(_) => return None,
        };
        let newer = store
            .events_after(id, self.seq)
            .await
            .ok()
            .and_then(|e| e.last().map(|(s, _)| *s));
        if let Some(seq) = newer {
            self.seq = seq;
        }
        if ended {
            self.done = true;
            Some(format!("event: ended\ndata: {}\n\n", self.seq))
        } else {
            newer.map(|seq| format!("event: changed\ndata: {seq}\n\n"))
        }
    }

    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if self.done {
                return None;
            }
            // Marked before looking, so a checkpoint written meanwhile is not missed.
            self.changed.borrow_and_update();
            let said = self.look().await;
            let now = tokio::time::Instant::now();
            if let Some(text) = said {
                self.sent = now;
                return Some(Bytes::from(text));
            }
            if !self.started {
                // How soon the browser comes back when a stream ends.
                self.started = true;
                self.sent = now;
                return Some(Bytes::from_static(b"retry: 2000\n\n"));
            }
            if now - self.sent >= KEEP_ALIVE {
                // Quiet: a comment now and then, so a proxy keeps the stream.
                self.sent = now;
                return Some(Bytes::from_static(b": still here\n\n"));
            }
            if now >= self.until || self.slot.0.worker.stopping() {
                return None;
            }
            // A busy worker signals a change at every checkpoint: a stream
            // looks at most once a gap, so open pages cost the store a bounded load.
            let gap = if self.run.is_some() {
                RUN_GAP
            } else {
                LIST_GAP
            };
            let wait = LOOK_EVERY.min(self.until - now).saturating_sub(gap);
            tokio::time::sleep(gap).await;
            if let Ok(Err(_)) = tokio::time::timeout(wait, self.changed.changed()).await {
                return None;
            }
        }
    }
}

fn stream(app: Arc<App>, run: Option<String>, after: Option<u64>) -> Response {
    let Some(slot) = take_slot(&app) else {
        let mut r = crate::serve::page::html::problem(
            503,
            "Busy",
            "Too many pages follow runs now; this one does not update itself.",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
        return r;
    };
    let now = tokio::time::Instant::now();
    let start = Follow {
        changed: app.worker.changed.subscribe(),
        slot,
        run,
        seq: after.unwrap_or(0),
        list: None,
        until: now + STREAM_FOR,
        sent: now,
        started: false,
        done: false,
    };
    let events = futures_util::stream::unfold(start, |mut f| async move {
        let chunk = f.next().await?;
        Some((Ok::<Bytes, std::io::Error>(chunk), f))
    });
    let mut r = Response::new(Body::from_stream(events));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Says when a run changes, and when it ends.
pub(crate) async fn run_events(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(after): Query<After>,
) -> Response {
    stream(app, Some(id), after.after)
}

/// Says when the runs list would read differently.
pub(crate) async fn list_events(State(app): State<Arc<App>>) -> Response {
    stream(app, None, None)
}
