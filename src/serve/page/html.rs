//! The pieces every page is made of: the HTML shell with its style, its one
//! script and its security headers; escaping; times as people read them.

use std::time::SystemTime;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;

use crate::serve::app::App;

/// The one script the pages run (see `live`), served as a file so that the
/// policy can forbid inline scripts: an injected `<script>` would not run.
pub const SCRIPT_PATH: &str = "/assets/page.js";

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub(crate) fn time(ms: i64) -> String {
    crate::run::clock::rfc3339(crate::run::clock::from_unix_ms(ms))
}

/// A span of milliseconds, roughly: `4s`, `3m`, `2h`, `5d`.
pub(crate) fn ago(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// A moment to come, as a `<time>` the page's script counts down to.
pub(crate) fn countdown(ms: i64, now: i64) -> String {
    format!(
        "<time datetime=\"{at}\" data-until=\"{ms}\" title=\"{at}\">in {left}</time>",
        at = time(ms),
        left = ago(ms - now)
    )
}

/// HTML escaping for text and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

// Colours meet WCAG AA contrast on white (4.5:1 for text); focus is always drawn.
const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#0f172a}\
header.top{display:flex;justify-content:space-between;align-items:center;padding:10px 24px;border-bottom:1px solid #e2e8f0}\
main{padding:8px 24px 40px}.skip{position:absolute;left:-9999px}.skip:focus{left:8px;top:8px;background:#fff;padding:4px}\
a:focus-visible,button:focus-visible,summary:focus-visible,input:focus-visible,select:focus-visible{outline:3px solid #2563eb;outline-offset:2px}\
h1{font-size:20px}h2{font-size:16px;margin-top:28px}\
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #e2e8f0;vertical-align:top}\
th{color:#475569;font-weight:600}th a{color:inherit}.mono,.url{font:12px ui-monospace,monospace;word-break:break-all}\
.dim{color:#475569}.error{color:#b91c1c}tr.failed td{background:#fef2f2}\
.filters a{margin-right:8px}.filters a.on{font-weight:700}.count{color:#475569;font-size:12px}\
tr.late td{background:#fff7ed}.mark{font-size:12px;font-weight:600;color:#9a3412;margin-left:4px}.search{margin:12px 0}\
.badge{font-size:12px;padding:2px 8px;border-radius:10px;background:#e2e8f0;vertical-align:middle}\
.badge.succeeded{background:#dcfce7}.badge.failed{background:#fee2e2}.badge.waiting{background:#fef9c3}.badge.running{background:#dbeafe}\
dl.facts{display:grid;grid-template-columns:max-content auto;gap:2px 16px}dt{color:#475569}dd{margin:0}\
.actions a{margin-right:16px}.outcome{padding:10px 14px;border-radius:6px;border:1px solid #cbd5e1;background:#f8fafc;font-size:15px}\
.outcome.ok{border-color:#15803d;background:#f0fdf4}.outcome.bad{border-color:#b91c1c;background:#fef2f2}.outcome.wait{border-color:#a16207;background:#fefce8}\
.status-ok{color:#15803d;font-weight:600}.status-bad{color:#b91c1c;font-weight:600}\
ol.trace{list-style:none;padding:0;margin:0}ol.trace>li{border-left:3px solid #cbd5e1;padding:4px 10px;margin:6px 0}\
ol.trace li.failed{border-color:#b91c1c;background:#fef2f2}ol.trace li.end.ok{border-color:#15803d}ol.trace li.loop{border-color:#6366f1}\
.block-head .at{color:#475569;font:12px ui-monospace,monospace;margin-right:8px}.block-head .kind{color:#475569;font-size:12px}\
ul.lines{list-style:none;margin:4px 0 0;padding-left:18px}ul.lines li{margin:2px 0}pre{background:#f1f5f9;padding:8px;overflow:auto;font-size:12px;margin:4px 0}\
svg text{font:12px system-ui,sans-serif;fill:#0f172a}svg text.detail{fill:#475569;font-size:11px}svg text.edge{fill:#334155;font-size:11px;paint-order:stroke;stroke:#fff;stroke-width:3px;stroke-linejoin:round}svg text.edge.taken{fill:#1d4ed8;font-weight:600}\
svg text.title{font-weight:600}.login label{display:block;margin:12px 0}";

pub(crate) fn page(status: u16, title: &str, body: &str) -> Response {
    page_with(status, title, body, None)
}

/// A whole page. `live`: the address of the events that say it changed,
/// which the page's script follows to fetch itself again.
pub(crate) fn page_with(status: u16, title: &str, body: &str, live: Option<&str>) -> Response {
    let live = live
        .map(|url| format!(" data-live=\"{}\"", esc(url)))
        .unwrap_or_default();
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>{} · handoff</title><style>{STYLE}</style></head><body{live}><a class=\"skip\" href=\"#main\">Skip to the content</a>{body}<script src=\"{}\"></script></body></html>",
        esc(title),
        SCRIPT_PATH
    );
    let mut r = Response::new(Body::from(html));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; script-src 'self'; connect-src 'self'; img-src data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// The sign-out button, where there is anything to sign out of.
pub(crate) fn sign_out(app: &App) -> String {
    if app.token.required() {
        "<form method=\"post\" action=\"/logout\" class=\"sign-out\"><button type=\"submit\" id=\"sign-out\">Sign out</button></form>".into()
    } else {
        String::new()
    }
}

/// The top of every signed-in page: the way back, and signing out.
pub(crate) fn top(app: &App, back: Option<(&str, &str)>) -> String {
    let back = back
        .map(|(href, text)| format!("<a href=\"{}\">{}</a>", esc(href), esc(text)))
        .unwrap_or_else(|| "<span><b>handoff</b></span>".to_string());
    format!("<header class=\"top\">{back}{}</header>", sign_out(app))
}

/// A page that says why it cannot show what was asked.
pub(crate) fn problem(status: u16, title: &str, text: &str) -> Response {
    page(
        status,
        title,
        &format!(
            "<main id=\"main\"><h1>{}</h1><p class=\"error\" role=\"alert\">{}</p><p><a href=\"/\">All runs</a></p></main>",
            esc(title),
            esc(text)
        ),
    )
}

/// A redirect after a form's post.
pub(crate) fn see_other(to: &str) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<script>\"a\" & 'b'</script>"),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
    }
}
