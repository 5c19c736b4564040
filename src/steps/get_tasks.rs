//! `get_tasks`: `GET {base}/workflows/v2/tasks`, filtered, following
//! `nextLink` pages. The worker uses it to find the task its paused NWC
//! instance waits on; an empty list is a normal answer while NWC catches up.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::analyze::Analyzer;
use crate::fields::FieldType;
use crate::raw::Node;
use crate::steps::request::{self, HeaderSource, Sending};
use crate::steps::{ErrorKind, Next, StepCx, StepError};
use crate::template::Template;

pub const OUTPUTS: &[(&str, FieldType)] = &[
    ("tasks", FieldType::Json),
    ("status", FieldType::Number),
    ("count", FieldType::Number),
    ("pages", FieldType::Number),
];

/// Flow key → NWC query parameter.
const FILTERS: [(&str, &str); 6] = [
    ("workflow_instance_id", "workflowInstanceId"),
    ("workflow_name", "workflowName"),
    ("assignee", "assignee"),
    ("status", "status"),
    ("from", "from"),
    ("to", "to"),
];

const DEFAULT_MAX_PAGES: u64 = 20;

#[derive(Debug)]
pub struct GetTasks {
    pub base_url: Template,
    pub filters: Vec<(&'static str, Template)>,
    pub headers: Vec<HeaderSource>,
    pub max_pages: u64,
    pub sending: Sending,
}

impl GetTasks {
    pub fn parse(cx: &mut Analyzer, node: &Node) -> Option<GetTasks> {
        let mut keys = vec!["base_url", "headers", "max_pages", "timeout", "retry"];
        keys.extend(FILTERS.iter().map(|(k, _)| *k));
        let body = cx.body(node, "`get_tasks`", &keys, &["base_url"])?;
        let base_url = body.get("base_url").and_then(|n| cx.template(n));
        let mut filters = Vec::new();
        let mut ok = true;
        for (key, param) in FILTERS {
            if let Some(n) = body.get(key) {
                match cx.template(n) {
                    Some(t) => filters.push((param, t)),
                    None => ok = false,
                }
            }
        }
        let headers = match body.get("headers") {
            Some(n) => request::parse_headers(cx, n),
            None => Some(Vec::new()),
        };
        let max_pages = body.get("max_pages").map_or(Some(DEFAULT_MAX_PAGES), |n| {
            cx.positive_int(n, "`max_pages`")
        });
        let sending = request::parse_sending(cx, &body);
        ok.then_some(())?;
        Some(GetTasks {
            base_url: base_url?,
            filters,
            headers: headers?,
            max_pages: max_pages?,
            sending: sending?,
        })
    }

    pub fn url_templates(&self) -> Vec<&Template> {
        std::iter::once(&self.base_url)
            .chain(self.filters.iter().map(|(_, t)| t))
            .collect()
    }

    pub async fn run(&self, cx: &mut StepCx<'_, '_>) -> Result<Next, StepError> {
        let (base, _) = cx.render_text(&self.base_url)?;
        let query = cx.render_pairs(&self.filters)?;
        let first = request::build_url(&base, "/workflows/v2/tasks", &query)?;
        let origin = origin_of(&first);
        let mut url = first;
        let mut seen = BTreeSet::new();
        let mut tasks = Vec::new();
        let mut pages = 0u64;
        let mut status;
        loop {
            seen.insert(url.clone());
            pages += 1;
            let headers = cx.headers(&self.headers)?;
            let response = cx
                .exchange("GET", url.clone(), headers, None, &self.sending, true)
                .await?;
            status = response.status;
            if !response.is_success() {
                cx.output("status", Value::from(status))?;
                return Err(request::status_error("GET", &url, &response));
            }
            let Some(body) = response.json() else {
                return Err(StepError::new(format!(
                    "GET {url} answered {} without a JSON body",
                    request::status_text(status)
                ))
                .kind(ErrorKind::Response)
                .status(status)
                .hint("the tasks API answers JSON; is the base URL pointing at NWC?"));
            };
            let page = match &body {
                Value::Object(map) => map.get("tasks").cloned(),
                Value::Array(_) => Some(body.clone()),
                _ => None,
            };
            match page {
                Some(Value::Array(items)) => tasks.extend(items),
                _ => {
                    return Err(StepError::new(format!(
                        "GET {url}: the answer has no `tasks` list"
                    ))
                    .kind(ErrorKind::Response)
                    .status(status));
                }
            }
            let next = body
                .get("nextLink")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty());
            let Some(next) = next else { break };
            let next = reqwest::Url::parse(&url)
                .and_then(|u| u.join(next))
                .map(|u| u.to_string())
                .map_err(|_| StepError::new("`nextLink` is not a valid URL"))?;
            if origin_of(&next) != origin {
                // The token goes with every page; never send it to another host.
                return Err(StepError::new(format!(
                    "`nextLink` points to another host ({})",
                    origin_of(&next)
                ))
                .hint("handoff only follows pages on the base URL's host"));
            }
            if seen.contains(&next) {
                return Err(StepError::new(format!(
                    "`nextLink` loops back to a page already read, after {pages} pages"
                )));
            }
            if pages >= self.max_pages {
                return Err(
                    StepError::new(format!("more than {} pages of tasks", self.max_pages))
                        .hint("narrow the filters, or raise `max_pages`"),
                );
            }
            url = next;
        }
        let count = tasks.len();
        cx.output("tasks", Value::Array(tasks))?;
        cx.output("status", Value::from(status))?;
        cx.output("count", Value::from(count))?;
        cx.output("pages", Value::from(pages))?;
        Ok(Next::Continue)
    }
}

fn origin_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default()
}
