//! `patch_task`: completes an NWC task with an outcome. With `assignment_id`
//! it uses the assignment-level form; without, the task-level form the seed's
//! K2 method `Patch_tasks__task_id_` calls. Any 2xx is success.

use serde_json::{Map, Value};

use crate::analyzer::Analyzer;
use crate::fields::FieldType;
use crate::raw::Node;
use crate::steps::request::{self, HeaderSource, OutgoingBody, Sending};
use crate::steps::{ErrorKind, Next, StepCx, StepError, shown_text};
use crate::template::Template;
use crate::trace::EventKind;
use crate::transport::{MAX_BODY_BYTES, RequestBody};

pub const OUTPUTS: &[(&str, FieldType)] = &[
    ("status", FieldType::Number),
    ("already_completed", FieldType::Boolean),
];

#[derive(Debug)]
pub struct PatchTask {
    pub base_url: Template,
    pub task_id: Template,
    pub assignment_id: Option<Template>,
    pub outcome: Template,
    pub comment: Option<Template>,
    pub headers: Vec<HeaderSource>,
    pub sending: Sending,
}

impl PatchTask {
    pub fn parse(cx: &mut Analyzer, node: &Node) -> Option<PatchTask> {
        let keys = [
            "base_url",
            "task_id",
            "assignment_id",
            "outcome",
            "comment",
            "headers",
            "timeout",
            "retry",
        ];
        let body = cx.body(
            node,
            "`patch_task`",
            &keys,
            &["base_url", "task_id", "outcome"],
        )?;
        let base_url = body.get("base_url").and_then(|n| cx.template(n));
        let task_id = body.get("task_id").and_then(|n| cx.template(n));
        let outcome = body.get("outcome").and_then(|n| cx.template(n));
        let assignment_id = body.get("assignment_id").map(|n| cx.template(n));
        let comment = body.get("comment").map(|n| cx.template(n));
        let headers = match body.get("headers") {
            Some(n) => request::parse_headers(cx, n),
            None => Some(Vec::new()),
        };
        let sending = request::parse_sending(cx, &body);
        Some(PatchTask {
            base_url: base_url?,
            task_id: task_id?,
            assignment_id: assignment_id.map_or(Some(None), |t| t.map(Some))?,
            outcome: outcome?,
            comment: comment.map_or(Some(None), |t| t.map(Some))?,
            headers: headers?,
            sending: sending?,
        })
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
        let assignment = match &self.assignment_id {
            Some(t) => Some(url_part(cx, t, "assignment_id")?),
            None => None,
        };
        let path = match &assignment {
            Some(aid) => format!(
                "/workflows/v2/tasks/{}/assignments/{}",
                request::segment(&task_id, "task_id")?,
                request::segment(aid, "assignment_id")?
            ),
            None => format!(
                "/workflows/v1/tasks/{}",
                request::segment(&task_id, "task_id")?
            ),
        };
        let url = request::build_url(&base, false, &path, &[])?;
        let (outcome, outcome_secret) = cx.render_text(&self.outcome)?;
        if outcome.trim().is_empty() {
            return Err(StepError::new("`outcome` is empty")
                .hint("NWC needs one of the task's outcomes, such as `Completed`"));
        }
        let mut body = Map::new();
        let mut shown = Map::new();
        body.insert("outcome".into(), Value::String(outcome.clone()));
        shown.insert(
            "outcome".into(),
            Value::String(shown_text(outcome.clone(), outcome_secret)),
        );
        if let Some(t) = &self.comment {
            let (comment, secret) = cx.render_text(t)?;
            shown.insert(
                "comment".into(),
                Value::String(shown_text(comment.clone(), secret)),
            );
            body.insert("comment".into(), Value::String(comment));
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
        // Ids and the outcome are data from here on, in messages.
        let task_shown = cx.data(&task_id);
        let outcome_shown = cx.data(&shown_text(outcome.clone(), outcome_secret));
        // Record the status first: it is worth keeping when the call failed.
        cx.output("status", Value::from(response.status))?;
        if response.is_success() {
            cx.output("already_completed", Value::Bool(false))?;
            return Ok(Next::Continue);
        }
        let refused = request::status_error("PATCH", &url.shown, &response, &cx.rec.redactor);
        if !matches!(response.status, 400 | 409) {
            return Err(refused);
        }
        match self
            .read_back(cx, &base, &task_id, assignment.as_deref())
            .await
        {
            Ok(Some(done)) if done.outcome.as_deref() == Some(outcome.as_str()) => {
                cx.emit(EventKind::Log {
                    message: format!(
                        "task `{task_shown}` is already {} with outcome `{outcome_shown}`: nothing to do",
                        cx.data(&done.status)
                    ),
                });
                cx.output("already_completed", Value::Bool(true))?;
                Ok(Next::Continue)
            }
            Ok(Some(done)) => {
                let theirs = done.outcome.map_or_else(
                    || "no outcome".to_string(),
                    |o| format!("outcome `{}`", cx.data(&o)),
                );
                Err(StepError::new(format!(
                    "task `{task_shown}` is already {} with {theirs}, not `{outcome_shown}`",
                    cx.data(&done.status)
                ))
                .kind(ErrorKind::Conflict)
                .status(response.status)
                .hint("someone or something else completed it first; handoff never completes a task twice"))
            }
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

    /// Reads the task back after a refusal: `None` while it is still open.
    async fn read_back(
        &self,
        cx: &mut StepCx<'_, '_>,
        base: &str,
        task_id: &str,
        assignment: Option<&str>,
    ) -> Result<Option<Done>, StepError> {
        let url = request::build_url(
            base,
            false,
            &format!(
                "/workflows/v2/tasks/{}",
                request::segment(task_id, "task_id")?
            ),
            &[],
        )?;
        let response = cx
            .get(&url, &self.headers, &self.sending, MAX_BODY_BYTES)
            .await?;
        if !response.is_success() {
            return Err(request::status_error(
                "GET",
                &url.shown,
                &response,
                &cx.rec.redactor,
            ));
        }
        let task = response.json().ok_or_else(|| {
            StepError::new(format!("GET {} did not answer JSON", url.shown))
                .kind(ErrorKind::Response)
        })?;
        let status = task
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_ascii_lowercase();
        if status.is_empty() || status.starts_with("active") {
            return Ok(None);
        }
        let assignments = task
            .get("taskAssignments")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let wanted = |a: &&Value| match assignment {
            Some(id) => a.get("id").and_then(Value::as_str) == Some(id),
            None => true,
        };
        let outcome = assignments
            .iter()
            .filter(wanted)
            .find_map(|a| a.get("outcome").and_then(Value::as_str))
            .map(str::to_string);
        Ok(Some(Done { status, outcome }))
    }
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
