//! `patch_task`: completes an NWC task with an outcome, through an assignment,
//! as every current client does. Any 2xx is success.
//!
//! Without `assignment_id`, the step reads the task first and picks the
//! assignment: the one for `assignee` (the service account) when given, else
//! the only active one. The outcome is checked against the task's `outcomes`
//! then too, so a typo fails before anything is sent. `legacy_task_level:
//! true` sends the seed's K2-era form, `PATCH /workflows/v1/tasks/{id}`,
//! which current clients no longer use.

use serde_json::{Map, Value};

use crate::language::analyzer::Analyzer;
use crate::language::fields::FieldType;
use crate::language::keys::{HEADERS, Key, RETRY, Shape, TIMEOUT, TRACEPARENT, names, opt, req};
use crate::language::raw::Node;
use crate::language::template::Template;
use crate::run::http::request::{self, HeaderSource};
use crate::run::http::send::{self, OutgoingBody, Sending};
use crate::run::step::{ErrorKind, Next, StepCx, StepError, shown_text};
use crate::run::trace::EventKind;
use crate::run::transport::{MAX_BODY_BYTES, RequestBody};

pub const OUTPUTS: &[(&str, FieldType)] = &[
    ("status", FieldType::Number),
    ("already_completed", FieldType::Boolean),
    ("assignment_id", FieldType::Text),
];

/// What `patch_task` takes.
pub const KEYS: &[Key] = &[
    req(
        "base_url",
        Shape::Template,
        "The API's base URL, such as `https://us.nintex.io`.",
    ),
    req(
        "task_id",
        Shape::Template,
        "The task's `id`, from the task list.",
    ),
    req(
        "outcome",
        Shape::Template,
        "One of the task's outcomes, such as `Completed` or `Canceled`; checked before anything is sent.",
    ),
    opt(
        "assignee",
        Shape::Template,
        "The service account whose assignment to complete; empty: the task's only active assignment.",
    ),
    opt(
        "assignment_id",
        Shape::Template,
        "Complete this assignment, without reading the task first.",
    ),
    opt("comment", Shape::Template, "Sent only when not empty."),
    opt(
        "legacy_task_level",
        Shape::Bool,
        "`true`: the seed's K2-era `PATCH /workflows/v1/tasks/{id}`, which current clients no longer use.",
    ),
    HEADERS,
    TIMEOUT,
    RETRY,
    TRACEPARENT,
];

#[derive(Debug)]
pub struct PatchTask {
    pub base_url: Template,
    pub task_id: Template,
    pub assignment_id: Option<Template>,
    /// Whose assignment to complete: the service account's address.
    pub assignee: Option<Template>,
    /// The seed's task-level form, `PATCH /workflows/v1/tasks/{id}`.
    pub legacy_task_level: bool,
    pub outcome: Template,
    pub comment: Option<Template>,
    pub headers: Vec<HeaderSource>,
    pub sending: Sending,
}

impl PatchTask {
    pub fn parse(cx: &mut Analyzer, node: &Node) -> Option<PatchTask> {
        let (keys, required) = names(KEYS);
        let body = cx.body(node, "`patch_task`", &keys, &required)?;
        let base_url = body.get("base_url").and_then(|n| cx.template(n));
        let task_id = body.get("task_id").and_then(|n| cx.template(n));
        let outcome = body.get("outcome").and_then(|n| cx.template(n));
        let assignment_id = body.get("assignment_id").map(|n| cx.template(n));
        let comment = body.get("comment").map(|n| cx.template(n));
        let assignee = body.get("assignee").map(|n| cx.template(n));
        let legacy_task_level = body
            .get("legacy_task_level")
            .map_or(Some(false), |n| cx.boolean(n))?;
        if legacy_task_level {
            for key in ["assignment_id", "assignee"] {
                if let Some(n) = body.get(key) {
                    cx.error_help(
                        n.span,
                        format!("`{key}` picks an assignment, but `legacy_task_level: true` completes the whole task"),
                        "drop one of them; the assignment form is the one current NWC clients use",
                    );
                    return None;
                }
            }
        }
        let headers = match body.get("headers") {
            Some(n) => request::parse_headers(cx, n),
            None => Some(Vec::new()),
        };
        let sending = send::parse_sending(cx, &body);
        Some(PatchTask {
            base_url: base_url?,
            task_id: task_id?,
            assignment_id: assignment_id.map_or(Some(None), |t| t.map(Some))?,
            assignee: assignee.map_or(Some(None), |t| t.map(Some))?,
            legacy_task_level,
            outcome: outcome?,
            comment: comment.map_or(Some(None), |t| t.map(Some))?,
            headers: headers?,
            sending: sending?,
        })
    }

    /// How many GETs of the task a completion sends at most: the read that
    /// picks the assignment, and the read-back after a refusal.
    pub fn task_reads(&self) -> u64 {
        if self.assignment_id.is_some() || self.legacy_task_level {
            1
        } else {
            2
        }
    }

    pub fn url_templates(&self) -> Vec<&Template> {
        [
            Some(&self.base_url),
            Some(&self.task_id),
            self.assignment_id.as_ref(),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    pub async fn run(&self, cx: &mut StepCx<'_, '_>) -> Result<Next, StepError> {
        let base = url_part(cx, &self.base_url, "base_url")?;
        let task_id = url_part(cx, &self.task_id, "task_id")?;
        let (outcome, outcome_secret) = cx.render_text(&self.outcome)?;
        if outcome.trim().is_empty() {
            return Err(StepError::new("`outcome` is empty")
                .hint("NWC needs one of the task's outcomes, such as `Completed`"));
        }
        let outcome_shown = cx.data(&shown_text(outcome.clone(), outcome_secret));
        let assignment = match (&self.assignment_id, self.legacy_task_level) {
            (_, true) => None,
            (Some(t), false) => Some(url_part(cx, t, "assignment_id")?),
            (None, false) => {
                let task = self.read_task(cx, &base, &task_id).await?;
                if let Some(done) = task.closed() {
                    // A completion whose answer was lost, or someone else's.
                    return settle(cx, done, &outcome, &outcome_shown, &task_id, None);
                }
                if !task.outcomes.is_empty() && !task.outcomes.contains(&outcome) {
                    let valid = task
                        .outcomes
                        .iter()
                        .map(|o| format!("`{}`", cx.data(o)))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let mut e = StepError::new(format!(
                        "outcome `{outcome_shown}` is not one of task `{}`'s outcomes: {valid}",
                        cx.data(&task_id)
                    ));
                    if !outcome_secret
                        && let Some(hint) = crate::language::diagnostic::did_you_mean(
                            &outcome,
                            task.outcomes.iter().map(String::as_str),
                        )
                    {
                        e = e.hint(format!("{hint} (nothing was sent)"));
                    } else {
                        e = e.hint("nothing was sent; the outcome must be one the task offers");
                    }
                    return Err(e);
                }
                let assignee = match &self.assignee {
                    Some(t) => Some(cx.render_text(t)?.0.trim().to_string()),
                    None => None,
                };
                let chosen = pick(cx, &task, assignee.as_deref(), &task_id)?;
                cx.output("assignment_id", Value::String(chosen.clone()))?;
                Some(chosen)
            }
        };
        let path = match &assignment {
            Some(aid) => format!(
                "/workflows/v2/tasks/{}/assignments/{}",
                send::segment(&task_id, "task_id")?,
                send::segment(aid, "assignment_id")?
            ),
            None => format!(
                "/workflows/v1/tasks/{}",
                send::segment(&task_id, "task_id")?
            ),
        };
        let url = send::build_url(&base, false, &path, &[])?;
        let mut body = Map::new();
        let mut shown = Map::new();
        body.insert("outcome".into(), Value::String(outcome.clone()));
        shown.insert(
            "outcome".into(),
            Value::String(shown_text(outcome.clone(), outcome_secret)),
        );
        if let Some(t) = &self.comment {
            let (comment, secret) = cx.render_text(t)?;
            // As Nintex's own client does: no `comment` at all when there is none.
            if !comment.trim().is_empty() {
                shown.insert(
                    "comment".into(),
                    Value::String(shown_text(comment.clone(), secret)),
                );
                body.insert("comment".into(), Value::String(comment));
            }
        }
        let headers = cx.headers(&self.headers)?;
        // Repeatable: a second PATCH of a completed task is a 409, which the
        // read-back below turns into "already completed", never a second completion.
        let response = cx
            .exchange(
                "PATCH",
                &url,
                headers,
                Some(OutgoingBody {
                    wire: RequestBody::Json(Value::Object(body)),
                    shown: Value::Object(shown),
                }),
                &self.sending,
                true,
                MAX_BODY_BYTES,
            )
            .await?;
        // Record the status first: it is worth keeping when the call failed.
        cx.output("status", Value::from(response.status))?;
        if response.is_success() {
            cx.output("already_completed", Value::Bool(false))?;
            return Ok(Next::Continue);
        }
        let refused = send::status_error("PATCH", &url.shown, &response, &cx.rec.redactor);
        if !matches!(response.status, 400 | 409) {
            return Err(refused);
        }
        let read = self.read_task(cx, &base, &task_id).await;
        match read.map(|task| task.closed_for(assignment.as_deref())) {
            Ok(Some(done)) => settle(
                cx,
                done,
                &outcome,
                &outcome_shown,
                &task_id,
                Some(response.status),
            ),
            // Still open: the refusal was about something else, such as the outcome.
            Ok(None) => Err(refused),
            Err(e) => Err(StepError {
                message: format!(
                    "{} (reading the task back failed: {})",
                    refused.message, e.message
                ),
                ..refused
            }),
        }
    }

    /// Reads the task: before completing it, and back after a refusal.
    async fn read_task(
        &self,
        cx: &mut StepCx<'_, '_>,
        base: &str,
        task_id: &str,
    ) -> Result<TaskView, StepError> {
        let url = send::build_url(
            base,
            false,
            &format!("/workflows/v2/tasks/{}", send::segment(task_id, "task_id")?),
            &[],
        )?;
        let mut response = cx
            .get(&url, &self.headers, &self.sending, MAX_BODY_BYTES)
            .await?;
        if !response.is_success() {
            let e = send::status_error("GET", &url.shown, &response, &cx.rec.redactor);
            return Err(if response.status == 404 {
                e.hint("NWC has no task with this id: is `task_id` the task's `id` from the list?")
            } else {
                e
            });
        }
        let dry = cx.clock.is_virtual();
        let task = response.take_json().filter(Value::is_object).ok_or_else(|| {
            let e = StepError::new(format!("GET {} did not answer a task as JSON", url.shown))
                .kind(ErrorKind::Response);
            if dry {
                e.hint("`patch_task` reads the task before completing it: give the mock a reply for `GET /workflows/v2/tasks/*` with the task, before the step's PATCH reply")
            } else {
                e
            }
        })?;
        Ok(TaskView::read(&task))
    }
}

/// What a task's JSON says that completing it needs.
struct TaskView {
    status: String,
    outcomes: Vec<String>,
    assignments: Vec<AssignmentView>,
}

struct AssignmentView {
    id: String,
    assignee: String,
    status: String,
    outcome: Option<String>,
}

impl TaskView {
    fn read(task: &Value) -> TaskView {
        let text =
            |v: &Value, key: &str| v.get(key).and_then(Value::as_str).unwrap_or("").to_string();
        TaskView {
            status: text(task, "status").to_ascii_lowercase(),
            outcomes: task
                .get("outcomes")
                .and_then(Value::as_array)
                .map(|list| {
                    list.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            assignments: task
                .get("taskAssignments")
                .and_then(Value::as_array)
                .map(|list| {
                    list.iter()
                        .map(|a| AssignmentView {
                            id: text(a, "id"),
                            assignee: text(a, "assignee"),
                            status: text(a, "status").to_ascii_lowercase(),
                            outcome: a.get("outcome").and_then(Value::as_str).map(str::to_string),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    fn closed(&self) -> Option<Done> {
        self.closed_for(None)
    }

    /// `None` while the task is open. The outcome is the assignment's when
    /// it has one, else the one another assignment completed the task with.
    fn closed_for(&self, assignment: Option<&str>) -> Option<Done> {
        if self.status.is_empty() || self.status.starts_with("active") {
            return None;
        }
        let ours = assignment.and_then(|id| {
            self.assignments
                .iter()
                .find(|a| a.id.eq_ignore_ascii_case(id))
                .and_then(|a| a.outcome.clone())
        });
        let outcome = ours.or_else(|| self.assignments.iter().find_map(|a| a.outcome.clone()));
        Some(Done {
            status: self.status.clone(),
            outcome,
        })
    }
}

/// Picks the assignment to complete: `assignee`'s, or the only active one.
fn pick(
    cx: &StepCx<'_, '_>,
    task: &TaskView,
    assignee: Option<&str>,
    task_id: &str,
) -> Result<String, StepError> {
    let seen = || {
        let list: Vec<String> = task
            .assignments
            .iter()
            .map(|a| format!("{} ({})", cx.data(&a.assignee), cx.data(&a.status)))
            .collect();
        if list.is_empty() {
            "none".to_string()
        } else {
            list.join(", ")
        }
    };
    let task_shown = cx.data(task_id);
    let active = |a: &&AssignmentView| a.status.starts_with("active");
    let candidates: Vec<&AssignmentView> = match assignee.filter(|a| !a.is_empty()) {
        Some(who) => {
            let theirs: Vec<_> = task
                .assignments
                .iter()
                .filter(|a| a.assignee.eq_ignore_ascii_case(who))
                .collect();
            if theirs.is_empty() {
                return Err(StepError::new(format!(
                    "task `{task_shown}` has no assignment for `{}`; its assignments: {}",
                    cx.data(who),
                    seen()
                ))
                .hint(
                    "is `assignee` the service account the task is assigned to? Nothing was sent",
                ));
            }
            let open: Vec<_> = theirs.iter().copied().filter(active).collect();
            if open.is_empty() {
                return Err(StepError::new(format!(
                    "`{}`'s assignment of task `{task_shown}` is not active; its assignments: {}",
                    cx.data(who),
                    seen()
                ))
                .hint("nothing was sent"));
            }
            open
        }
        None => task.assignments.iter().filter(active).collect(),
    };
    match candidates.as_slice() {
        [one] if !one.id.is_empty() => Ok(one.id.clone()),
        [_] => Err(StepError::new(format!(
            "task `{task_shown}`'s assignment has no `id`"
        ))
        .kind(ErrorKind::Response)),
        [] => Err(StepError::new(format!(
            "task `{task_shown}` has no active assignment; its assignments: {}",
            seen()
        ))
        .hint("nothing was sent")),
        _ => Err(StepError::new(format!(
            "task `{task_shown}` has {} active assignments, and handoff will not guess which is the worker's: {}",
            candidates.len(),
            seen()
        ))
        .hint("say whose with `assignee:` (the service account's address); nothing was sent")),
    }
}

/// A task found closed: done when it was closed with our outcome, else a
/// conflict, as handoff never completes a task twice. `status`: the refused
/// PATCH's, when there was one.
fn settle(
    cx: &mut StepCx<'_, '_>,
    done: Done,
    outcome: &str,
    outcome_shown: &str,
    task_id: &str,
    status: Option<u16>,
) -> Result<Next, StepError> {
    let task_shown = cx.data(task_id);
    if done.outcome.as_deref() == Some(outcome) {
        cx.emit(EventKind::Log {
            message: format!(
                "task `{task_shown}` is already {} with outcome `{outcome_shown}`: nothing to do",
                cx.data(&done.status)
            ),
        });
        cx.output("already_completed", Value::Bool(true))?;
        return Ok(Next::Continue);
    }
    let theirs = done.outcome.map_or_else(
        || "no outcome".to_string(),
        |o| format!("outcome `{}`", cx.data(&o)),
    );
    let e = StepError::new(format!(
        "task `{task_shown}` is already {} with {theirs}, not `{outcome_shown}`",
        cx.data(&done.status)
    ))
    .kind(ErrorKind::Conflict)
    .hint("someone or something else completed it first; handoff never completes a task twice");
    Err(match status {
        Some(s) => e.status(s),
        None => e,
    })
}

/// A URL part: refused when it derives from a secret (the static check
/// normally catches that first).
fn url_part(cx: &mut StepCx<'_, '_>, template: &Template, key: &str) -> Result<String, StepError> {
    let (text, secret) = cx.render_text(template)?;
    if secret {
        return Err(StepError::new(format!(
            "`{key}` is built from a secret, and URLs end up in logs and proxies"
        ))
        .hint("send secrets in headers"));
    }
    Ok(text)
}

/// A task found closed on read-back.
struct Done {
    status: String,
    outcome: Option<String>,
}
