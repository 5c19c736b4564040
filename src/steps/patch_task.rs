//! `patch_task`: completes an NWC task with an outcome. With `assignment_id`
//! it uses the assignment-level form; without, the task-level form the seed's
//! K2 method `Patch_tasks__task_id_` calls. Any 2xx is success.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::analyze::Analyzer;
use crate::fields::FieldType;
use crate::raw::Node;
use crate::steps::request::{self, HeaderSource};
use crate::steps::{Next, StepCx, StepError};
use crate::template::Template;
use crate::transport::RequestBody;

pub const OUTPUTS: &[(&str, FieldType)] = &[("status", FieldType::Number)];

#[derive(Debug)]
pub struct PatchTask {
    pub base_url: Template,
    pub task_id: Template,
    pub assignment_id: Option<Template>,
    pub outcome: Template,
    pub comment: Option<Template>,
    pub headers: Vec<HeaderSource>,
    pub timeout: Duration,
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
        let timeout = request::parse_timeout(cx, body.get("timeout"));
        Some(PatchTask {
            base_url: base_url?,
            task_id: task_id?,
            assignment_id: assignment_id.map_or(Some(None), |t| t.map(Some))?,
            outcome: outcome?,
            comment: comment.map_or(Some(None), |t| t.map(Some))?,
            headers: headers?,
            timeout,
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
        let (base, _) = cx.render_text(&self.base_url)?;
        let (task_id, _) = cx.render_text(&self.task_id)?;
        if task_id.trim().is_empty() {
            return Err(StepError::new("`task_id` is empty")
                .hint("check that the task was found before completing it"));
        }
        let path = match &self.assignment_id {
            Some(t) => {
                let (aid, _) = cx.render_text(t)?;
                if aid.trim().is_empty() {
                    return Err(StepError::new("`assignment_id` is empty"));
                }
                format!(
                    "/workflows/v2/tasks/{}/assignments/{}",
                    request::segment(&task_id),
                    request::segment(&aid)
                )
            }
            None => format!("/workflows/v1/tasks/{}", request::segment(&task_id)),
        };
        let url = request::build_url(&base, &path, &[])?;
        let (outcome, _) = cx.render_text(&self.outcome)?;
        if outcome.trim().is_empty() {
            return Err(StepError::new("`outcome` is empty")
                .hint("NWC needs one of the task's outcomes, such as `Completed`"));
        }
        let mut body = Map::new();
        body.insert("outcome".into(), Value::String(outcome));
        if let Some(t) = &self.comment {
            body.insert("comment".into(), Value::String(cx.render_text(t)?.0));
        }
        let headers = cx.headers(&self.headers)?;
        let response = cx
            .exchange(
                "PATCH",
                url.clone(),
                headers,
                Some(RequestBody::Json(Value::Object(body))),
                self.timeout,
            )
            .await?;
        // Record the status first: it is worth keeping when the call failed.
        cx.output("status", Value::from(response.status))?;
        if !response.is_success() {
            return Err(request::status_error("PATCH", &url, &response));
        }
        Ok(Next::Continue)
    }
}
