//! `get_tasks`: `GET {base}/workflows/v2/tasks`, filtered, following
//! `nextLink` pages. The worker uses it to find the task its paused NWC
//! instance waits on; an empty list is a normal answer while NWC catches up.
//!
//! A filter the flow gives must render to something: an empty one would widen
//! the query to every task, and the next step could complete another
//! instance's. All pages together are bounded by one byte budget.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::language::analyzer::Analyzer;
use crate::language::fields::FieldType;
use crate::language::keys::{HEADERS, Key, RETRY, Shape, TIMEOUT, TRACEPARENT, names, opt, req};
use crate::language::raw::Node;
use crate::language::template::Template;
use crate::run::http::request::{self, HeaderSource};
use crate::run::http::send::{self, Sending};
use crate::run::step::{ErrorKind, Next, StepCx, StepError};

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

/// What `get_tasks` takes.
pub const KEYS: &[Key] = &[
    req(
        "base_url",
        Shape::Template,
        "The API's base URL, such as `https://us.nintex.io`.",
    ),
    opt(
        "workflow_instance_id",
        Shape::Template,
        "Only the tasks of this instance (`workflowInstanceId`); never empty.",
    ),
    opt(
        "workflow_name",
        Shape::Template,
        "Only the tasks of this workflow (`workflowName`).",
    ),
    opt(
        "assignee",
        Shape::Template,
        "Only the tasks assigned to this address (`assignee`).",
    ),
    opt(
        "status",
        Shape::Template,
        "`active`, `active-escalated`, `expired`, `complete`, `overridden`, `terminated`, `paused` or `all`.",
    ),
    opt(
        "from",
        Shape::Template,
        "Tasks created from this ISO-8601 date; without it NWC lists about 30 days.",
    ),
    opt(
        "to",
        Shape::Template,
        "Tasks created until this ISO-8601 date.",
    ),
    HEADERS,
    opt(
        "max_pages",
        Shape::Count,
        "The most `nextLink` pages to follow (default 20).",
    ),
    opt(
        "max_bytes",
        Shape::Size,
        "The most bytes of all pages together (default 10MB).",
    ),
    TIMEOUT,
    RETRY,
    TRACEPARENT,
];

/// The default budget for all pages' bytes together.
pub const DEFAULT_MAX_BYTES: u64 = 10 * 1024 * 1024;

#[derive(Debug)]
pub struct GetTasks {
    pub base_url: Template,
    pub filters: Vec<(&'static str, Template)>,
    pub headers: Vec<HeaderSource>,
    pub max_pages: u64,
    /// All pages' bytes together.
    pub max_bytes: u64,
    pub sending: Sending,
}

impl GetTasks {
    pub fn parse(cx: &mut Analyzer, node: &Node) -> Option<GetTasks> {
        let (keys, required) = names(KEYS);
        let body = cx.body(node, "`get_tasks`", &keys, &required)?;
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
        let max_bytes = body
            .get("max_bytes")
            .map_or(Some(DEFAULT_MAX_BYTES), |n| cx.byte_size(n, "`max_bytes`"));
        let sending = send::parse_sending(cx, &body);
        ok.then_some(())?;
        Some(GetTasks {
            base_url: base_url?,
            filters,
            headers: headers?,
            max_pages: max_pages?,
            max_bytes: max_bytes?,
            sending: sending?,
        })
    }

    pub fn url_templates(&self) -> Vec<&Template> {
        std::iter::once(&self.base_url)
            .chain(self.filters.iter().map(|(_, t)| t))
            .collect()
    }

    pub async fn run(&self, cx: &mut StepCx<'_, '_>) -> Result<Next, StepError> {
        let (base, base_secret) = cx.render_text(&self.base_url)?;
        let query = cx.render_pairs(&self.filters)?;
        let flow_key = |param: &str| -> &'static str {
            FILTERS
                .iter()
                .find(|(_, p)| *p == param)
                .map_or("filter", |(k, _)| *k)
        };
        if base_secret {
            return Err(secret_in_url("base_url"));
        }
        for (param, value, secret) in &query {
            if *secret {
                return Err(secret_in_url(flow_key(param)));
            }
            if value.trim().is_empty() {
                return Err(StepError::new(format!(
                    "filter `{}` is empty, so the query would list every task",
                    flow_key(param)
                ))
                .hint("check the field it reads was given (`--set`, `--input` or its environment variable); leave the filter out to list without it"));
            }
        }
        let first = send::build_url(&base, false, "/workflows/v2/tasks", &query)?;
        let origin = first
            .parsed
            .as_ref()
            .map_or_else(String::new, |u| u.origin().ascii_serialization());
        let mut url = first;
        let mut seen = BTreeSet::new();
        let mut tasks = Vec::new();
        let mut pages = 0u64;
        let mut left = self.max_bytes;
        let mut status;
        loop {
            seen.insert(url.wire.clone());
            pages += 1;
            let budget = usize::try_from(left).unwrap_or(usize::MAX);
            let mut response = cx
                .get(&url, &self.headers, &self.sending, budget)
                .await
                .map_err(|e| over_budget(e, self.max_bytes, pages))?;
            left = left.saturating_sub(response.body.len() as u64);
            status = response.status;
            if !response.is_success() {
                cx.output("status", Value::from(status))?;
                return Err(send::status_error(
                    "GET",
                    &url.shown,
                    &response,
                    &cx.rec.redactor,
                ));
            }
            // The page the trace parsed already is taken apart, not read
            // again; otherwise only the tasks and the next link are built
            // as values, the rest of the page skipped as it is read.
            let page = match response.take_parsed() {
                Some(parsed) => parsed.map(Page::from_value),
                None => serde_json::from_slice::<Page>(&response.body).ok(),
            };
            let Some(page) = page else {
                return Err(StepError::new(format!(
                    "GET {} answered {} without a JSON body",
                    url.shown,
                    send::status_text(status)
                ))
                .kind(ErrorKind::Response)
                .status(status)
                .hint("the tasks API answers JSON; is the base URL pointing at NWC?"));
            };
            drop(response);
            let (page, next) = match page {
                Page::Listing { tasks, next_link } => (tasks, next_link.filter(|s| !s.is_empty())),
                Page::Bare(list) => (Some(list), None),
                Page::Other => (None, None),
            };
            match page {
                Some(items) => tasks.extend(items),
                _ => {
                    return Err(StepError::new(format!(
                        "GET {}: the answer has no `tasks` list",
                        url.shown
                    ))
                    .kind(ErrorKind::Response)
                    .status(status));
                }
            }
            let Some(next) = next else { break };
            let next = reqwest::Url::parse(&url.wire)
                .and_then(|u| u.join(&next))
                .map(|u| u.to_string())
                .map_err(|_| StepError::new("`nextLink` is not a valid URL"))?;
            if origin_of(&next) != origin {
                // The token goes with every page; never send it to another host.
                return Err(StepError::new(format!(
                    "`nextLink` points to another host ({})",
                    cx.data(&origin_of(&next))
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
            url = send::RequestUrl::whole(next.clone(), cx.data(&next));
        }
        let count = tasks.len();
        cx.output("tasks", Value::Array(tasks))?;
        cx.output("status", Value::from(status))?;
        cx.output("count", Value::from(count))?;
        cx.output("pages", Value::from(pages))?;
        Ok(Next::Continue)
    }
}

/// A page of the tasks API as it is read: `{"tasks": […], "nextLink": …}`,
/// or a bare list. Other keys are skipped unbuilt, in one pass over the
/// bytes (serde's untagged enums would build the whole page first).
#[derive(Debug, PartialEq)]
enum Page {
    Listing {
        tasks: Option<Vec<Value>>,
        next_link: Option<String>,
    },
    Bare(Vec<Value>),
    Other,
}

impl Page {
    /// The page a parsed body holds, as [`Page`]'s reading of the bytes
    /// finds it.
    fn from_value(value: Value) -> Page {
        match value {
            Value::Object(mut map) => Page::Listing {
                tasks: match map.remove("tasks") {
                    Some(Value::Array(items)) => Some(items),
                    _ => None,
                },
                next_link: match map.remove("nextLink") {
                    Some(Value::String(s)) => Some(s),
                    _ => None,
                },
            },
            Value::Array(items) => Page::Bare(items),
            _ => Page::Other,
        }
    }
}

impl<'de> serde::Deserialize<'de> for Page {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Page, D::Error> {
        struct Shape;
        impl<'de> serde::de::Visitor<'de> for Shape {
            type Value = Page;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a page of tasks")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Page, A::Error> {
                let (mut tasks, mut next_link) = (None, None);
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match key.as_ref() {
                        "tasks" => {
                            tasks = match map.next_value::<Value>()? {
                                Value::Array(items) => Some(items),
                                _ => None,
                            }
                        }
                        "nextLink" => {
                            next_link = match map.next_value::<Value>()? {
                                Value::String(s) => Some(s),
                                _ => None,
                            }
                        }
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(Page::Listing { tasks, next_link })
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Page, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Value>()? {
                    items.push(item);
                }
                Ok(Page::Bare(items))
            }

            fn visit_bool<E>(self, _: bool) -> Result<Page, E> {
                Ok(Page::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Page, E> {
                Ok(Page::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Page, E> {
                Ok(Page::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Page, E> {
                Ok(Page::Other)
            }
            fn visit_str<E>(self, _: &str) -> Result<Page, E> {
                Ok(Page::Other)
            }
            fn visit_unit<E>(self) -> Result<Page, E> {
                Ok(Page::Other)
            }
        }
        d.deserialize_any(Shape)
    }
}

/// A URL part that derives from a secret: refused at run time too, in case
/// the static check could not see it.
fn secret_in_url(key: &str) -> StepError {
    StepError::new(format!(
        "`{key}` is built from a secret, and URLs end up in logs and proxies"
    ))
    .hint("send secrets in headers")
}

/// A page past the byte budget says which budget it was.
fn over_budget(e: StepError, max_bytes: u64, pages: u64) -> StepError {
    if e.kind != ErrorKind::Response {
        return e;
    }
    StepError {
        message: format!(
            "{} (page {pages}; `max_bytes` allows {max_bytes} bytes for all pages together)",
            e.message
        ),
        ..e
    }
    .hint("narrow the filters, or raise `max_bytes`")
}

fn origin_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page taken from the body the trace parsed is the page read from
    /// its bytes: listings with other keys, a `tasks` that is not a list, a
    /// bare list, a next link that is not text, and bodies of no page.
    #[test]
    fn a_parsed_page_is_the_page_its_bytes_hold() {
        let bodies = [
            r#"{"tasks":[{"id":"a"},{"id":"b","n":[1,2]}],"nextLink":"/p2","total":2}"#,
            r#"{"other":{"tasks":[1]},"tasks":[]}"#,
            r#"{"tasks":{"id":"a"},"nextLink":7}"#,
            r#"{"nextLink":"/p3"}"#,
            r#"{"tasks":[1],"tasks":[2,3]}"#,
            r#"[{"id":"a"},{"id":"b"}]"#,
            "[]",
            "{}",
            "3",
            r#""tasks""#,
            "null",
            "true",
        ];
        for body in bodies {
            let read: Page = serde_json::from_str(body).unwrap();
            let value: Value = serde_json::from_str(body).unwrap();
            assert_eq!(Page::from_value(value), read, "{body}");
        }
    }
}
