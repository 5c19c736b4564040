//! The simulator's answers as HTTP: JSON, and problem documents (RFC 7807)
//! as NWC sends them.

use axum::body::Body;
use axum::http::{HeaderValue, Response, StatusCode, header};
use serde_json::{Value, json};

use crate::sim::model::Problem;

pub fn json_response(status: u16, value: &Value) -> Response<Body> {
    json_text(status, value.to_string())
}

pub fn json_text(status: u16, text: String) -> Response<Body> {
    let mut r = Response::new(Body::from(text));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

/// RFC 7807, as NWC answers errors.
pub fn problem_response(p: &Problem) -> Response<Body> {
    let body = json!({
        "type": format!("https://httpstatuses.io/{}", p.status),
        "title": p.title,
        "status": p.status,
        "detail": p.detail,
    });
    let mut r = json_response(p.status, &body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    r
}
