//! `for_each`: runs a block of steps once per item of a list, up to
//! `concurrency` items at a time, each in a state of its own.
//!
//! An item starts with a copy of the flow's fields its block reads, its own
//! fields empty, and the item under `as:`. It writes only its own fields, so
//! items cannot race on one; what comes back is explicit: each item's
//! `result`, counted and collected in the list's order by this step, and
//! the counts of items that succeeded and failed. Past `tolerated_failures`,
//! no further item starts, those under way finish, and the step fails.
//!
//! A durable run checkpoints after each item, so a restart runs again only
//! the items that had not finished. When the block sends a request that is
//! not safe to send twice, each item is noted before it starts, and one
//! that was under way at a restart fails as `in_doubt` rather than run again.

use std::collections::BTreeSet;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde_json::Value;

use crate::language::analyzer::{Analyzer, PendingBlock, is_identifier};
use crate::language::fields::{FieldDecl, FieldType};
use crate::language::keys::{Key, Shape, names, opt, req};
use crate::language::raw::{Node, NodeValue};
use crate::language::template::Template;
use crate::run::redact::MASK;
use crate::run::state::Each;
use crate::run::step::{ItemRun, Next, StepCx, StepError};
use crate::run::trace::EventKind;

pub const OUTPUTS: &[(&str, FieldType)] = &[
    ("items", FieldType::Number),
    ("succeeded", FieldType::Number),
    ("failed", FieldType::Number),
    ("not_run", FieldType::Number),
    ("results", FieldType::Json),
    ("counts", FieldType::Json),
];

/// The bound on items when the flow gives none.
pub const DEFAULT_MAX_ITEMS: u64 = 1000;
/// The largest bound a flow may give.
pub const MAX_ITEMS: u64 = 1_000_000;
/// The most items at a time.
pub const MAX_CONCURRENCY: u64 = 64;

/// What `for_each` takes.
pub const KEYS: &[Key] = &[
    req(
        "items",
        Shape::Template,
        "The list to go through, such as `{{ tasks }}`.",
    ),
    req(
        "as",
        Shape::Field,
        "The name each item has in the block's steps, such as `task`.",
    ),
    req(
        "steps",
        Shape::Steps,
        "The steps each item runs; `end` there ends the item, `fail` fails it.",
    ),
    opt(
        "fields",
        Shape::Fields,
        "The block's own fields: each item has its own, and only these can it write.",
    ),
    opt(
        "result",
        Shape::Template,
        "What an item that succeeded gives back: collected as `results`, counted in `counts`.",
    ),
    opt(
        "max_items",
        Shape::Count,
        "The most items the list may have (default 1000); a longer list fails the step before any item runs.",
    ),
    opt(
        "concurrency",
        Shape::Count,
        "How many items run at a time (default 1, at most 64).",
    ),
    opt(
        "tolerated_failures",
        Shape::Tolerance,
        "How many items may fail, a count or a percentage such as `10%` (default 0); past it, no more items start and the step fails.",
    ),
];

/// How many failed items a `for_each` tolerates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tolerance {
    Count(u64),
    /// Of the list's items, rounded down.
    Percent(f64),
}

impl Tolerance {
    pub fn of(self, total: usize) -> u64 {
        match self {
            Tolerance::Count(n) => n,
            Tolerance::Percent(p) => ((total as f64) * p / 100.0).floor() as u64,
        }
    }

    pub fn shown(self) -> String {
        match self {
            Tolerance::Count(n) => n.to_string(),
            Tolerance::Percent(p) => format!("{p}%"),
        }
    }
}

#[derive(Debug)]
pub struct ForEach {
    pub items: Template,
    /// The field that holds the item.
    pub item: String,
    pub max_items: u64,
    pub concurrency: u64,
    pub tolerated: Tolerance,
    pub result: Option<Template>,
    /// Its block, in [`Flow::blocks`](crate::language::flow::Flow).
    pub block: usize,
}

impl ForEach {
    pub fn parse(cx: &mut Analyzer, node: &Node) -> Option<ForEach> {
        let (keys, required) = names(KEYS);
        let body = cx.body(node, "`for_each`", &keys, &required)?;
        if cx.in_block {
            cx.error_help(
                node.span,
                "a `for_each` cannot run inside another `for_each`",
                "flatten the list first (a `set` step can build it), or run the inner loop per row with `handoff run --each`",
            );
            return None;
        }
        let items = body.get("items").and_then(|n| cx.template(n));
        let item = body.get("as").and_then(|n| item_name(cx, n));
        let max_items = match body.get("max_items") {
            Some(n) => cx.positive_int(n, "`max_items`").and_then(|v| {
                if v > MAX_ITEMS {
                    cx.error(n.span, format!("`max_items` is at most {MAX_ITEMS}"));
                    return None;
                }
                Some(v)
            }),
            None => Some(DEFAULT_MAX_ITEMS),
        };
        let concurrency = match body.get("concurrency") {
            Some(n) => cx.positive_int(n, "`concurrency`").and_then(|v| {
                if v > MAX_CONCURRENCY {
                    cx.error(
                        n.span,
                        format!("`concurrency` is at most {MAX_CONCURRENCY}"),
                    );
                    return None;
                }
                Some(v)
            }),
            None => Some(1),
        };
        let tolerated = match body.get("tolerated_failures") {
            Some(n) => tolerance(cx, n),
            None => Some(Tolerance::Count(0)),
        };
        let mut locals = Vec::new();
        if let Some(fields) = body.get("fields") {
            for (name, decl) in cx.field_decls(fields) {
                if decl.input || decl.env.is_some() {
                    cx.error_help(
                        decl.span,
                        format!("`{name}` belongs to each item, so it cannot be an input or read from the environment"),
                        "declare it under the flow's `fields`, where the block can read it",
                    );
                    return None;
                }
                locals.push(decl);
            }
        }
        let item = item?;
        let item_span = body.get("as").map(|n| n.span)?;
        locals.insert(
            0,
            FieldDecl {
                name: item.clone(),
                ty: FieldType::Json,
                input: false,
                secret: false,
                env: None,
                allow_empty: true,
                default: None,
                description: Some("the item of the list this run of the block is for".to_string()),
                span: item_span,
            },
        );
        let mut seen = BTreeSet::new();
        for decl in &locals {
            if cx.fields.contains_key(&decl.name) || !seen.insert(decl.name.clone()) {
                cx.error_help(
                    decl.span,
                    format!("`{}` is already a field", decl.name),
                    "an item's fields have names of their own: rename it",
                );
                return None;
            }
        }
        // `result` reads the item's fields, as the block's steps do.
        let result = match body.get("result") {
            Some(n) => {
                let outer = cx.fields.clone();
                for decl in &locals {
                    cx.fields.insert(decl.name.clone(), decl.clone());
                }
                let t = cx.template(n);
                cx.fields = outer;
                Some(t?)
            }
            None => None,
        };
        let steps = body.get("steps")?;
        if steps.as_seq().is_none_or(|s| s.is_empty()) {
            cx.error(
                steps.span,
                "`steps` must be a list of at least one step, run for each item",
            );
            return None;
        }
        cx.pending.push(PendingBlock {
            steps: steps.clone(),
            locals,
        });
        Some(ForEach {
            items: items?,
            item,
            max_items: max_items?,
            concurrency: concurrency?,
            tolerated: tolerated?,
            result,
            block: cx.pending.len() - 1,
        })
    }

    /// The item's field, written from what `items` reads.
    pub fn reads(&self) -> BTreeSet<String> {
        self.items.mentions.clone()
    }

    pub async fn run(&self, cx: &mut StepCx<'_, '_>) -> Result<Next, StepError> {
        let Some(blocks) = cx.blocks else {
            return Err(StepError::new("a `for_each` cannot run inside an item"));
        };
        let (value, tainted) = cx.render(&self.items)?;
        let items = match value {
            Value::Array(items) => items,
            other => {
                return Err(StepError::new(format!(
                    "`items` must be a list, but `{}` gave {}",
                    cx.data(&self.items.source),
                    crate::language::fields::json_type_name(&other)
                ))
                .hint("point it at a JSON list, such as the `tasks` output of `get_tasks`"));
            }
        };
        let total = items.len();
        if total as u64 > self.max_items {
            return Err(StepError::new(format!(
                "the list has {total} items, more than `max_items: {}`; no item was run",
                self.max_items
            ))
            .hint("raise `max_items`, or narrow the list (a `get_tasks` filter, `from`/`to`)"));
        }
        let id = cx.step.id;
        let mut each = match cx.state.each.take() {
            Some(e) if e.step == id && e.total == total => e,
            _ => Box::new(Each::new(id, total, cx.step.output.contains_key("results"))),
        };
        let unrepeatable = blocks.unrepeatable(self.block);
        let tolerated = self.tolerated.of(total);
        // Under way at a restart, and may have sent what is not safe to send twice.
        let doubtful: Vec<usize> = std::mem::take(&mut each.running)
            .into_iter()
            .filter(|&i| unrepeatable && !each.is_done(i))
            .collect();
        for index in doubtful {
            let message = format!(
                "the process stopped while item {index} was under way, and its steps send a request that is not safe to send twice; it is not run again"
            );
            cx.emit(EventKind::ItemFinished {
                index: index as u64,
                status: "failed".to_string(),
                result: None,
                error: Some(message),
            });
            each.finish(index, Err(()), MASK);
        }
        let mut running = FuturesUnordered::new();
        let mut next = 0;
        let mut halted = each.failed > tolerated;
        let mut stopped = false;
        loop {
            while running.len() < self.concurrency as usize && !halted && !stopped {
                while next < total && each.is_done(next) {
                    next += 1;
                }
                if next >= total {
                    break;
                }
                if blocks.stopping() {
                    stopped = true;
                    break;
                }
                if unrepeatable && blocks.durable() {
                    // Noted before it starts, so a restart knows it may have sent.
                    each.running.insert(next);
                    cx.state.each = Some(each);
                    let kept = blocks.checkpoint(cx.state, cx.rec).await;
                    each = cx.state.each.take().unwrap_or_default();
                    if !kept {
                        return Ok(Next::Pause);
                    }
                }
                let state = blocks.item_state(self.block, cx.state, items[next].clone(), tainted);
                running.push(blocks.run_item(
                    self.block,
                    (next, total),
                    state,
                    cx.rec.redactor.clone(),
                    cx.rec.listening(),
                ));
                next += 1;
            }
            let Some(run) = running.next().await else {
                break;
            };
            self.finish_item(cx, &mut each, run);
            if each.failed > tolerated {
                halted = true;
            }
            if blocks.durable() {
                cx.state.each = Some(each);
                let kept = blocks.checkpoint(cx.state, cx.rec).await;
                each = cx.state.each.take().unwrap_or_default();
                if !kept {
                    return Ok(Next::Pause);
                }
            }
        }
        if stopped {
            cx.state.each = Some(each);
            return Ok(Next::Pause);
        }
        let not_run = total as u64 - each.finished();
        cx.output("items", Value::from(total as u64))?;
        cx.output("succeeded", Value::from(each.succeeded))?;
        cx.output("failed", Value::from(each.failed))?;
        cx.output("not_run", Value::from(not_run))?;
        let counts: serde_json::Map<String, Value> = std::mem::take(&mut each.counts)
            .into_iter()
            .map(|(k, v)| (k, Value::from(v)))
            .collect();
        cx.output("counts", Value::Object(counts))?;
        if let Some(results) = each.results.take() {
            cx.output_tainted("results", Value::Array(results), each.results_secret)?;
        }
        if halted {
            return Err(StepError::new(format!(
                "{} of {total} items failed, more than `tolerated_failures: {}`; {not_run} were not run",
                each.failed,
                self.tolerated.shown()
            ))
            .hint("each item's failure is in its `item_finished` event; raise `tolerated_failures` to go on past more"));
        }
        Ok(Next::Continue)
    }

    /// An item is over: its events into the trace, its result counted.
    fn finish_item(&self, cx: &mut StepCx<'_, '_>, each: &mut Each, run: ItemRun) {
        let ItemRun {
            index,
            mut state,
            events,
            redactor,
            failure,
        } = run;
        cx.rec.redactor.merge(&redactor);
        for event in events {
            cx.rec.forward(event);
        }
        let mut failure = failure.map(|f| f.message);
        let mut result = None;
        if failure.is_none()
            && let Some(template) = &self.result
        {
            // The result reads the item's own fields.
            std::mem::swap(cx.state, &mut state);
            let rendered = cx.render(template);
            std::mem::swap(cx.state, &mut state);
            match rendered {
                Ok((value, tainted)) => {
                    result = Some((value, tainted));
                }
                Err(e) => failure = Some(format!("its `result` failed: {}", e.message)),
            }
        }
        let shown = result.as_ref().map(|(v, tainted)| {
            if *tainted {
                Value::String(MASK.to_string())
            } else {
                crate::run::trace::bounded(v)
            }
        });
        if result.as_ref().is_some_and(|(_, tainted)| *tainted) {
            // A result built from a secret is hunted from now on.
            if let Some((v, _)) = &result {
                cx.rec.redactor.add_received(v);
            }
        }
        cx.emit(EventKind::ItemFinished {
            index: index as u64,
            status: if failure.is_some() {
                "failed"
            } else {
                "succeeded"
            }
            .to_string(),
            result: shown,
            error: failure.clone(),
        });
        match failure {
            Some(_) => each.finish(index, Err(()), MASK),
            None => each.finish(index, Ok(result.unwrap_or((Value::Null, false))), MASK),
        }
    }
}

fn item_name(cx: &mut Analyzer, node: &Node) -> Option<String> {
    let name = cx.string(node, "the item's name")?;
    if !is_identifier(&name) {
        cx.error_help(
            node.span,
            format!("`{name}` is not a valid field name"),
            "use letters, digits and `_`, starting with a letter or `_`, so templates can read it",
        );
        return None;
    }
    Some(name)
}

/// `3`, or `10%`.
fn tolerance(cx: &mut Analyzer, node: &Node) -> Option<Tolerance> {
    match &node.value {
        NodeValue::Int(n) if *n >= 0 => Some(Tolerance::Count(*n as u64)),
        NodeValue::Str(s) => {
            let p = s
                .trim()
                .strip_suffix('%')
                .and_then(|p| p.trim().parse::<f64>().ok())
                .filter(|p| (0.0..=100.0).contains(p));
            if p.is_none() {
                cx.error_help(
                    node.span,
                    format!("`tolerated_failures` is a count or a percentage, found `{s}`"),
                    "write `3` or `10%`",
                );
            }
            p.map(Tolerance::Percent)
        }
        _ => {
            cx.error_help(
                node.span,
                "`tolerated_failures` is a count or a percentage",
                "write `3` or `10%`",
            );
            None
        }
    }
}
