//! Who may see the pages: the API's bearer token in a header, or a session
//! cookie that `/login` sets once the token is given. The cookie is signed
//! with the token's digest and holds no token; each sign-in gets its own, it
//! expires after 12 hours, `/logout` revokes it, and it is `Secure` behind
//! TLS. A client gets five wrong tokens a minute.

use std::fmt::Write;
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::serve::app::App;

/// The session cookie's name.
pub const COOKIE: &str = "handoff_session";

/// Lets a request through with the bearer token or the session cookie;
/// otherwise answers the login form.
pub(crate) async fn guard(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    let by_header = bearer.is_some() && app.token.check(bearer, None).is_ok();
    if !app.token.required() || by_header || session_ok(&app, headers) {
        return next.run(request).await;
    }
    let mut r = crate::serve::page::html::page(401, "Sign in", &login_body(None));
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

fn session_ok(app: &App, headers: &HeaderMap) -> bool {
    session_nonce(app, headers).is_some()
}

/// The nonce of the request's live session, if it has one.
pub(crate) fn session_nonce(app: &App, headers: &HeaderMap) -> Option<String> {
    let now = crate::serve::page::html::now_ms();
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == COOKIE)
        .filter_map(|(_, value)| app.token.session_ok(value, now))
        .find(|nonce| !app.revoked.holds(nonce.as_bytes(), now))
}

/// A cookie's attributes: HttpOnly, no script reads it; Strict, no other
/// site sends it; Secure behind TLS.
fn cookie(app: &App, value: &str, max_age_s: i64) -> Option<HeaderValue> {
    let secure = if app.secure_cookies { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/; Max-Age={max_age_s}; HttpOnly; SameSite=Strict{secure}"
    ))
    .ok()
}

pub(crate) async fn logout(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let now = crate::serve::page::html::now_ms();
    if let Some(nonce) = session_nonce(&app, &headers) {
        app.revoked.seen(
            nonce.as_bytes(),
            now,
            now.saturating_add(crate::serve::access::SESSION_TTL_MS),
        );
    }
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::SEE_OTHER;
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/login"));
    if let Some(v) = cookie(&app, "", 0) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

pub(crate) async fn login_form() -> Response {
    crate::serve::page::html::page(200, "Sign in", &login_body(None))
}

/// A field of a form's body (`application/x-www-form-urlencoded`); empty
/// when it has none.
pub(crate) fn form_field(body: &[u8], name: &str) -> String {
    crate::run::transport::decode_pairs(&String::from_utf8_lossy(body))
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
        .unwrap_or_default()
}

/// The token from the sign-in form's body.
fn form_token(body: &[u8]) -> String {
    form_field(body, "token")
}

pub(crate) async fn login(
    State(app): State<Arc<App>>,
    extensions: axum::http::Extensions,
    body: Bytes,
) -> Response {
    let client = extensions
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    let now = crate::serve::page::html::now_ms();
    if let Some(wait) = app.attempts.wait_ms(client, now) {
        let mut r = crate::serve::page::html::page(
            429,
            "Sign in",
            &login_body(Some("Too many wrong tokens from here: wait a minute.")),
        );
        if let Ok(v) = HeaderValue::from_str(&(wait / 1000 + 1).to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    let given = form_token(&body);
    let header = format!("Bearer {}", given.trim());
    if !app.token.required() || app.token.check(Some(header.as_bytes()), None).is_ok() {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::SEE_OTHER;
        r.headers_mut()
            .insert(header::LOCATION, HeaderValue::from_static("/"));
        let nonce = crate::run::trace::new_run_id(SystemTime::now());
        if let Some(session) = app.token.session(now, &nonce)
            && let Some(v) = cookie(&app, &session, crate::serve::access::SESSION_TTL_MS / 1000)
        {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
        return r;
    }
    app.attempts.failed(client, now);
    crate::serve::page::html::page(
        401,
        "Sign in",
        &login_body(Some("That is not the worker's API token.")),
    )
}

fn login_body(error: Option<&str>) -> String {
    let mut out = String::from("<h1>handoff</h1>");
    if let Some(e) = error {
        let _ = write!(
            out,
            "<p class=\"error\" role=\"alert\">{}</p>",
            crate::serve::page::html::esc(e)
        );
    }
    out.push_str(
        "<form method=\"post\" action=\"/login\" class=\"login\">\
         <label>API token <input type=\"password\" name=\"token\" id=\"token\" autocomplete=\"current-password\" required></label>\
         <button type=\"submit\" id=\"sign-in\">Sign in</button></form>\
         <p class=\"dim\">The token is the worker's <code>HANDOFF_API_TOKEN</code>. The page keeps a session cookie, not the token.</p>",
    );
    out
}

/// Who acts from a page, as its trace records it: the session (a digest of
/// its nonce, which the cookie's holder cannot forge and nobody can use), or
/// the API token in a header, and the client's address.
pub(crate) fn who(app: &App, headers: &HeaderMap, client: Option<std::net::IpAddr>) -> String {
    use sha2::Digest;
    let by = match session_nonce(app, headers) {
        Some(nonce) => {
            let digest = sha2::Sha256::digest(format!("handoff session\0{nonce}").as_bytes());
            let short: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
            format!("session {short}")
        }
        None if app.token.required() => "the API token".to_string(),
        None => "an open page".to_string(),
    };
    match client {
        Some(ip) => format!("the run page ({by}, from {ip})"),
        None => format!("the run page ({by})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_body_is_decoded() {
        assert_eq!(form_token(b"token=a%2Bb+c&x=1"), "a+b c");
    }
}
