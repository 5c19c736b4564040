//! The run page: the web view an operator reads, and acts from.
//!
//! `/` lists the runs ([`list`]): found by id, title or input, filtered by
//! status and flow, sorted by age, status or flow, with counts per status
//! and the runs that are late or in doubt marked. `/runs/{id}` shows one
//! run ([`run`]): what it sent and what came back first, its inputs with
//! secrets masked, its flow's picture with the path taken ([`diagram`]),
//! and its trace read step by step, long loops folded ([`trace`]). From it
//! an operator cancels a run, or starts a failed one again with the same
//! inputs ([`actions`]): each after a confirmation, with a form token, and
//! written into a trace with who did it. A page open on an unfinished run
//! follows it without reloading ([`live`]): server-sent events say that it
//! changed, and the page fetches itself again.
//!
//! Server-rendered HTML and one script file, no front-end build. Access is
//! the API's ([`session`]): the bearer token in a header, or a session
//! cookie that `/login` sets once the token is given. Pages show what the
//! API shows: the stored traces, redacted when they were written, and no
//! field values beyond them. Every text is HTML-escaped, and the Content
//! Security Policy runs no inline script.

pub mod actions;
pub mod diagram;
pub mod html;
pub mod list;
pub mod live;
pub mod run;
pub mod session;
pub mod trace;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

use crate::serve::app::App;

pub fn router(app: Arc<App>) -> Router<Arc<App>> {
    let guarded = Router::new()
        .route("/", get(crate::serve::page::list::runs_page))
        .route("/runs/{id}", get(crate::serve::page::run::run_page))
        .route(
            "/runs/{id}/cancel",
            get(crate::serve::page::actions::cancel_form).post(crate::serve::page::actions::cancel),
        )
        .route(
            "/runs/{id}/retry",
            get(crate::serve::page::actions::retry_form).post(crate::serve::page::actions::retry),
        )
        .route("/live", get(crate::serve::page::live::list_events))
        .route("/runs/{id}/live", get(crate::serve::page::live::run_events))
        .route_layer(axum::middleware::from_fn_with_state(
            app,
            crate::serve::page::session::guard,
        ));
    Router::new()
        .route(
            "/login",
            get(crate::serve::page::session::login_form).post(crate::serve::page::session::login),
        )
        .route("/logout", post(crate::serve::page::session::logout))
        .route(
            crate::serve::page::html::SCRIPT_PATH,
            get(crate::serve::page::live::script),
        )
        .merge(guarded)
}
