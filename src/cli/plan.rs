//! `handoff plan FLOW`: the worst case of a flow, worked out before it runs.
//!
//! Every loop needs a bound. The one proven is the poll-loop pattern: a
//! simple cycle entered at one step, where a `set` step adds 1 to a number
//! field (and nothing else writes it), and a decision leaves the loop when
//! that field reaches a bound, a number or a field nothing writes. From the
//! bound come the rounds, and from the rounds each step's visits. From the
//! visits come the steps, the requests by method and target, and the time
//! in timers and, if every attempt timed out and every retry waited its
//! longest, in requests. A loop whose bound cannot be proven is named, and
//! then only `max_steps` bounds the run.
//!
//! "At most" adds up every branch, so a run that must take one of two ends
//! is counted with both.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use crate::language::flow::Flow;
use crate::language::target::Target;
use crate::language::template::{Template, TemplateKind};
use crate::steps::{StepKind, Timer};
use std::path::PathBuf;

use crate::cli::common::{Colors, EXIT_INVALID, EXIT_OK, OutputFormat, print_diagnostics};

/// A loop and what bounds it.
pub struct Loop {
    /// Its steps, in the order a round takes them, from its entry.
    pub steps: Vec<usize>,
    /// The most rounds, and how that was proven; or why it could not be.
    pub bound: Result<(u64, String), String>,
}

/// One kind of request a step sends.
pub struct Requests {
    pub step: usize,
    pub method: &'static str,
    /// What the request goes to: a host, or the template that makes it.
    pub target: String,
    /// Sent at most this many times, first attempts only.
    pub times: Option<u64>,
    pub attempts: u32,
    pub pages: u64,
    /// Each attempt's timeout, and the longest wait before each retry.
    pub timeout: Duration,
    pub retry_waits: Duration,
    /// GETs of the task around a PATCH: one to pick the assignment (unless
    /// the flow names it, or uses the legacy form), one to read it back
    /// after a 409.
    pub reads: u64,
}

pub struct Plan {
    pub loops: Vec<Loop>,
    /// Each step's visits at most; `None` when no bound was proven.
    pub visits: Vec<Option<u64>>,
    pub requests: Vec<Requests>,
    /// Timers: step, visits, duration (when known), and where it came from.
    pub timers: Vec<(usize, Option<u64>, Result<Duration, String>)>,
    /// Each `for_each`: its step, its `max_items`, and an item's steps at
    /// most (`None` when a loop in the block has no proven bound).
    pub items: Vec<(usize, u64, Option<u64>)>,
    /// How many of the steps are the flow's own.
    pub top_len: usize,
    /// Each `wait_for`: its step, its visits, and its timeout.
    pub waits: Vec<(usize, Option<u64>, Duration)>,
}

fn successors(flow: &Flow, i: usize) -> Vec<Target> {
    let step = &flow.steps[i];
    let mut out = match &step.kind {
        StepKind::Decision(d) => {
            let mut t: Vec<Target> = d.branches.iter().map(|(_, t)| *t).collect();
            t.extend(d.otherwise);
            t
        }
        StepKind::Fail(_) | StepKind::End(_) => Vec::new(),
        // A signal goes on, a timeout goes to `on_timeout`.
        StepKind::WaitFor(w) => vec![flow.next_after(i), w.on_timeout],
        _ => vec![flow.next_after(i)],
    };
    out.extend(step.on_error);
    out
}

fn step_successors(flow: &Flow, i: usize) -> Vec<usize> {
    successors(flow, i)
        .into_iter()
        .filter_map(|t| match t {
            Target::Step(j) => Some(j),
            Target::End => None,
        })
        .collect()
}

/// Strongly connected components (Tarjan's algorithm), each in index order,
/// of the steps reached from `start`: the flow's first, or a block's.
fn components(flow: &Flow, start: usize) -> Vec<Vec<usize>> {
    struct Walk<'f> {
        flow: &'f Flow,
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(w: &mut Walk, v: usize) {
        w.index[v] = Some(w.next);
        w.low[v] = w.next;
        w.next += 1;
        w.stack.push(v);
        w.on_stack[v] = true;
        for u in step_successors(w.flow, v) {
            match w.index[u] {
                None => {
                    visit(w, u);
                    w.low[v] = w.low[v].min(w.low[u]);
                }
                Some(iu) if w.on_stack[u] => w.low[v] = w.low[v].min(iu),
                Some(_) => {}
            }
        }
        if Some(w.low[v]) == w.index[v] {
            let mut component = Vec::new();
            while let Some(u) = w.stack.pop() {
                w.on_stack[u] = false;
                component.push(u);
                if u == v {
                    break;
                }
            }
            component.sort();
            w.out.push(component);
        }
    }
    let n = flow.steps.len();
    let mut w = Walk {
        flow,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    if start < n {
        visit(&mut w, start);
    }
    w.out
}

/// The fields each step writes, from templates and from its outputs.
fn writers(flow: &Flow, field: &str) -> Vec<usize> {
    flow.steps
        .iter()
        .enumerate()
        .filter(|(_, s)| {
            s.kind.writes().iter().any(|(f, _)| *f == field)
                || s.output.values().any(|f| f == field)
        })
        .map(|(i, _)| i)
        .collect()
}

/// `{{ name }}` alone: the field it reads.
fn single_field(template: &Template) -> Option<&str> {
    match &template.kind {
        TemplateKind::Expr(expr) if crate::language::analyzer::is_identifier(expr.trim()) => {
            Some(expr.trim())
        }
        _ => None,
    }
}

/// A number field's value when the run starts: its default, when it is
/// not an input that could be given another.
fn fixed_number(flow: &Flow, name: &str) -> Option<(i64, bool)> {
    let field = flow.fields.get(name)?;
    let value = field.default.clone().unwrap_or_else(|| field.ty.empty());
    Some((value.as_i64()?, field.input || field.env.is_some()))
}

/// The one step a loop is entered at (from outside it, or as the flow's
/// start), if there is only one.
fn entry(flow: &Flow, start: usize, component: &[usize]) -> Option<usize> {
    let entries: BTreeSet<usize> = component
        .iter()
        .copied()
        .filter(|&i| {
            i == start
                || (0..flow.steps.len())
                    .any(|p| !component.contains(&p) && step_successors(flow, p).contains(&i))
        })
        .collect();
    match entries.into_iter().collect::<Vec<_>>()[..] {
        [one] => Some(one),
        _ => None,
    }
}

/// Whether step `step` sets `counter` to `counter + 1`.
fn adds_one(flow: &Flow, step: usize, counter: &str) -> bool {
    match &flow.steps[step].kind {
        StepKind::Set(s) => s.assignments.iter().any(|(f, t)| {
            f == counter
                && matches!(&t.kind, TemplateKind::Expr(e)
                    if e.split_whitespace().collect::<String>() == format!("{counter}+1"))
        }),
        _ => false,
    }
}

/// A loop of any shape whose every round goes through one decision branch
/// guarded by `COUNTER < LIMIT` (alone, or after `and`), and through the one
/// step that adds 1 to the counter: a retry, as Arazzo's `retryLimit` is
/// lowered. Returns each step's visits, the rounds, and how it was proven.
#[allow(clippy::type_complexity)]
fn guarded(
    flow: &Flow,
    start: usize,
    component: &[usize],
) -> Result<(Vec<(usize, u64)>, u64, String), ()> {
    let inside = |i: usize| component.contains(&i);
    let entry = entry(flow, start, component).ok_or(())?;
    for &d in component {
        let StepKind::Decision(decision) = &flow.steps[d].kind else {
            continue;
        };
        let staying: Vec<usize> = (0..decision.branches.len())
            .filter(|&b| matches!(decision.branches[b].1, Target::Step(j) if inside(j)))
            .collect();
        let [b] = staying[..] else { continue };
        let (condition, Target::Step(target)) = &decision.branches[b] else {
            continue;
        };
        let text = match &condition.kind {
            TemplateKind::Expr(e) => e.clone(),
            _ => condition.source.clone(),
        };
        let parts: Vec<&str> = text.split_whitespace().collect();
        let n = parts.len();
        if n < 3 || (n > 3 && parts[n - 4] != "and") {
            continue;
        }
        let (counter, op, limit) = (parts[n - 3], parts[n - 2], parts[n - 1]);
        if op != "<" && op != "<=" {
            continue;
        }
        let Some(limit_value) = limit.parse::<i64>().ok().or_else(|| {
            fixed_number(flow, limit)
                .filter(|_| writers(flow, limit).is_empty())
                .map(|(v, _)| v)
        }) else {
            continue;
        };
        let Some((first, false)) = fixed_number(flow, counter) else {
            continue;
        };
        let counting: Vec<usize> = writers(flow, counter)
            .into_iter()
            .filter(|&w| inside(w))
            .collect();
        let [w] = counting[..] else { continue };
        let adds_one = adds_one(flow, w, counter);
        // Outside the loop, a counter may only be set back to a literal.
        let resets_only = writers(flow, counter).into_iter().filter(|&o| !inside(o)).all(|o| {
            matches!(&flow.steps[o].kind, StepKind::Set(s) if s.assignments.iter().all(|(f, t)| f != counter || matches!(t.kind, TemplateKind::Literal(_))))
        });
        if !adds_one || !resets_only {
            continue;
        }
        // Every round goes through the guarded branch and the count: without
        // the branch, no cycle is left.
        let cut = |from: usize, to: usize| from == d && to == *target;
        let mut color = vec![0u8; flow.steps.len()];
        fn cyclic(
            flow: &Flow,
            i: usize,
            inside: &dyn Fn(usize) -> bool,
            cut: &dyn Fn(usize, usize) -> bool,
            color: &mut [u8],
        ) -> bool {
            color[i] = 1;
            for j in step_successors(flow, i) {
                if !inside(j) || cut(i, j) {
                    continue;
                }
                if color[j] == 1 || (color[j] == 0 && cyclic(flow, j, inside, cut, color)) {
                    return true;
                }
            }
            color[i] = 2;
            false
        }
        if component
            .iter()
            .any(|&i| color[i] == 0 && cyclic(flow, i, &inside, &cut, &mut color))
        {
            continue;
        }
        // Steps from the branch back to the loop's entry run once fewer.
        let mut after = BTreeSet::new();
        let mut stack = vec![*target];
        while let Some(i) = stack.pop() {
            if i == entry || !inside(i) || !after.insert(i) {
                continue;
            }
            stack.extend(step_successors(flow, i));
        }
        if !after.contains(&w) {
            continue;
        }
        let last = if op == "<" {
            limit_value - 1
        } else {
            limit_value
        };
        let taken = (last - first + 1).max(0) as u64;
        let rounds = taken + 1;
        let visits = component
            .iter()
            .map(|&i| (i, if after.contains(&i) { taken } else { rounds }))
            .collect();
        let how = format!(
            "`{}` adds 1 to `{counter}` (from {first}), and `{}` goes round again only while `{counter} {op} {limit}`",
            flow.steps[w].id, flow.steps[d].id
        );
        return Ok((visits, rounds, how));
    }
    Err(())
}

/// Tries to prove a loop's rounds from the poll-loop pattern.
fn bound(
    flow: &Flow,
    start: usize,
    component: &[usize],
) -> Result<(Vec<usize>, u64, String), String> {
    let inside = |i: usize| component.contains(&i);
    // A simple cycle: one way on from each step, inside the loop.
    for &i in component {
        let on: Vec<usize> = step_successors(flow, i)
            .into_iter()
            .filter(|&j| inside(j))
            .collect();
        if on.len() != 1 {
            return Err(format!(
                "step `{}` has {} ways on inside the loop; only a simple cycle is worked out",
                flow.steps[i].id,
                on.len()
            ));
        }
    }
    let entry = entry(flow, start, component)
        .ok_or_else(|| "it is entered at more than one step".to_string())?;
    let mut order = vec![entry];
    loop {
        let last = *order.last().unwrap_or(&entry);
        let next = step_successors(flow, last)
            .into_iter()
            .find(|&j| inside(j))
            .unwrap_or(entry);
        if next == entry {
            break;
        }
        order.push(next);
    }
    let mut why_not = "no decision leaves it when a counter reaches a bound".to_string();
    for (d_at, &d) in order.iter().enumerate() {
        let StepKind::Decision(decision) = &flow.steps[d].kind else {
            continue;
        };
        for (b, (condition, target)) in decision.branches.iter().enumerate() {
            let leaves = match target {
                Target::End => true,
                Target::Step(j) => !inside(*j),
            };
            if !leaves {
                continue;
            }
            let text = match &condition.kind {
                TemplateKind::Expr(e) => e.clone(),
                _ => condition.source.clone(),
            };
            let parts: Vec<&str> = text.split_whitespace().collect();
            let [counter, op @ (">=" | ">"), limit] = parts[..] else {
                continue;
            };
            // Branches before this one must not keep the run in the loop.
            let bypassed = decision.branches[..b].iter().any(|(_, t)| match t {
                Target::Step(j) => inside(*j),
                Target::End => false,
            });
            if bypassed {
                why_not = format!("a branch before `{text}` stays in the loop");
                continue;
            }
            let (limit_value, limit_from) = match limit.parse::<i64>() {
                Ok(n) => (n, String::new()),
                Err(_) => {
                    let Some((n, input)) = fixed_number(flow, limit) else {
                        why_not = format!("`{limit}` is not a number field with a known value");
                        continue;
                    };
                    if !writers(flow, limit).is_empty() {
                        why_not = format!("a step writes `{limit}`");
                        continue;
                    }
                    let by_default = if input { " by default" } else { "" };
                    (n, format!("; `{limit}` is {n}{by_default}"))
                }
            };
            let Some((start, start_input)) = fixed_number(flow, counter) else {
                why_not = format!("`{counter}` is not a number field");
                continue;
            };
            if start_input {
                why_not = format!("`{counter}` is an input: it could start anywhere");
                continue;
            }
            let counting = writers(flow, counter);
            let [c] = counting[..] else {
                why_not = format!("more than one step writes `{counter}`");
                continue;
            };
            let adds_one = adds_one(flow, c, counter);
            let Some(c_at) = order.iter().position(|&i| i == c).filter(|_| adds_one) else {
                why_not = format!("no step in the loop adds 1 to `{counter}`");
                continue;
            };
            // The value the decision sees in round r: start + r, or start + r - 1
            // when the count comes after it in the round.
            let seen_first = if c_at < d_at { start + 1 } else { start };
            let leave_at = if op == ">" {
                limit_value + 1
            } else {
                limit_value
            };
            let rounds = (leave_at - seen_first + 1).max(1) as u64;
            let how = format!(
                "`{}` adds 1 to `{counter}` (from {start}), and `{}` leaves when `{counter} {op} {limit}`{limit_from}",
                flow.steps[c].id, flow.steps[d].id
            );
            return Ok((order.clone(), rounds, how));
        }
    }
    Err(why_not)
}

/// A duration a timer waits: literal, or a field's default.
fn timer_duration(flow: &Flow, template: &Template) -> Result<Duration, String> {
    let text = match (&template.kind, single_field(template)) {
        (TemplateKind::Literal(v), _) => crate::language::fields::display_text(v),
        (_, Some(field)) => match flow.fields.get(field).and_then(|f| f.default.clone()) {
            Some(v) => crate::language::fields::display_text(&v),
            None => return Err(format!("depends on `{field}`, which has no default")),
        },
        _ => {
            // `{{ headers | retry_after(N) }}` (an Arazzo retry): the step's
            // own wait. An answer's `Retry-After` may ask for more, up to
            // the timer's 7 days; docs/arazzo.md says so.
            if let TemplateKind::Expr(e) = &template.kind
                && let Some(n) = e
                    .split_once("| retry_after(")
                    .and_then(|(_, rest)| rest.trim().strip_suffix(')'))
                    .and_then(|n| n.trim().parse::<f64>().ok())
            {
                return Ok(Duration::from_millis((n * 1000.0).round() as u64));
            }
            return Err(format!("depends on `{}`", template.source));
        }
    };
    crate::language::duration::parse_duration(&text)
}

/// Where a request goes, as far as the flow says before it runs.
fn target(flow: &Flow, template: &Template) -> String {
    let host = |url: &str| {
        reqwest::Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
    };
    match (&template.kind, single_field(template)) {
        (TemplateKind::Literal(v), _) => {
            let text = crate::language::fields::display_text(v);
            host(&text).unwrap_or(text)
        }
        (_, Some(field)) => {
            let default = flow
                .fields
                .get(field)
                .and_then(|f| f.default.as_ref())
                .map(crate::language::fields::display_text)
                .and_then(|d| host(&d));
            match default {
                Some(h) => format!("{h} (`{field}` by default)"),
                None => format!("`{field}`"),
            }
        }
        _ => format!("`{}`", template.source),
    }
}

pub fn plan(flow: &Flow) -> Plan {
    let n = flow.steps.len();
    let mut visits: Vec<Option<u64>> = vec![Some(0); n];
    let mut loops = Vec::new();
    walk(flow, 0, &mut visits, &mut loops);
    // A block runs once per item, at most `max_items` each time its
    // `for_each` runs: its steps' visits are an item's, multiplied.
    let mut items = Vec::new();
    for block in &flow.blocks {
        let mut per_item = vec![Some(0); n];
        walk(flow, block.steps.start, &mut per_item, &mut loops);
        let max_items = match &flow.steps[block.owner].kind {
            StepKind::ForEach(f) => f.max_items,
            _ => 0,
        };
        let times = visits[block.owner].map(|v| v * max_items);
        for i in block.steps.clone() {
            visits[i] = match (per_item[i], times) {
                (Some(a), Some(t)) => Some(a * t),
                _ => None,
            };
        }
        let steps = block
            .steps
            .clone()
            .try_fold(0u64, |sum, i| Some(sum + per_item[i]?));
        items.push((block.owner, max_items, steps));
    }
    let (requests, timers) = sends(flow, &visits);
    let waits = flow
        .steps
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match &s.kind {
            StepKind::WaitFor(w) => Some((i, visits[i], w.timeout)),
            _ => None,
        })
        .collect();
    Plan {
        loops,
        visits,
        requests,
        timers,
        items,
        top_len: flow.top_len,
        waits,
    }
}

/// Each step's visits, and the loops, among the steps reached from `start`.
fn walk(flow: &Flow, start: usize, visits: &mut [Option<u64>], loops: &mut Vec<Loop>) {
    for component in components(flow, start) {
        let looping = component.len() > 1
            || component
                .first()
                .is_some_and(|&i| step_successors(flow, i).contains(&i));
        if !looping {
            if let [i] = component[..] {
                visits[i] = Some(1);
            }
            continue;
        }
        if let Ok((visits_of, rounds, how)) = guarded(flow, start, &component) {
            for (i, v) in visits_of {
                visits[i] = Some(v);
            }
            loops.push(Loop {
                steps: component,
                bound: Ok((rounds, how)),
            });
            continue;
        }
        match bound(flow, start, &component) {
            Ok((order, rounds, how)) => {
                let decision_at = order
                    .iter()
                    .position(|&i| matches!(flow.steps[i].kind, StepKind::Decision(_)))
                    .unwrap_or(order.len());
                for (at, &i) in order.iter().enumerate() {
                    visits[i] = Some(if at <= decision_at {
                        rounds
                    } else {
                        rounds - 1
                    });
                }
                loops.push(Loop {
                    steps: order,
                    bound: Ok((rounds, how)),
                });
            }
            Err(why) => {
                for &i in &component {
                    visits[i] = None;
                }
                loops.push(Loop {
                    steps: component,
                    bound: Err(why),
                });
            }
        }
    }
}

/// The requests and timers of every step, with its visits.
#[allow(clippy::type_complexity)]
fn sends(
    flow: &Flow,
    visits: &[Option<u64>],
) -> (
    Vec<Requests>,
    Vec<(usize, Option<u64>, Result<Duration, String>)>,
) {
    let mut requests = Vec::new();
    let mut timers = Vec::new();
    for (i, step) in flow.steps.iter().enumerate() {
        let sending = match &step.kind {
            StepKind::GetTasks(g) => Some(("GET", &g.base_url, &g.sending, g.max_pages, 0)),
            StepKind::PatchTask(p) => Some(("PATCH", &p.base_url, &p.sending, 1, p.task_reads())),
            StepKind::Http(h) => Some((method(&h.method), &h.url, &h.sending, 1, 0)),
            StepKind::Call(c) => Some((method(&c.op().method), &c.source.server, &c.sending, 1, 0)),
            StepKind::Timer(Timer::Duration(t)) => {
                timers.push((i, visits[i], timer_duration(flow, t)));
                None
            }
            StepKind::Timer(Timer::Until(_)) => {
                timers.push((i, visits[i], Err("waits until a time".to_string())));
                None
            }
            _ => None,
        };
        if let Some((method, url, sending, pages, reads)) = sending {
            let retry = &sending.retry;
            let mut waits = Duration::ZERO;
            for k in 1..retry.attempts {
                let backoff = retry
                    .backoff
                    .checked_mul(2u32.saturating_pow(k - 1))
                    .unwrap_or(retry.max_backoff)
                    .min(retry.max_backoff);
                waits += backoff.max(retry.max_retry_after);
            }
            let mut target = target(flow, url);
            if let StepKind::Call(c) = &step.kind {
                target = format!("{} at {target}", c.name);
            }
            requests.push(Requests {
                step: i,
                method,
                target,
                times: visits[i],
                attempts: retry.attempts,
                pages,
                timeout: sending.timeout,
                retry_waits: waits,
                reads,
            });
        }
    }
    (requests, timers)
}

/// A method as the plan counts it.
fn method(m: &str) -> &'static str {
    match m.to_ascii_uppercase().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        _ => "other",
    }
}

fn seconds(d: Duration) -> String {
    crate::run::clock::format_duration(d)
}

impl Plan {
    /// The flow's own steps at most: what `max_steps` bounds (an item's
    /// steps have a budget of their own).
    pub fn total_steps(&self) -> Option<u64> {
        self.visits
            .iter()
            .take(self.top_len)
            .try_fold(0u64, |sum, v| Some(sum + (*v)?))
    }

    /// First attempts, by method and target.
    fn by_method(&self) -> BTreeMap<(&'static str, String), Option<u64>> {
        let mut out: BTreeMap<(&'static str, String), Option<u64>> = BTreeMap::new();
        let mut add = |key: (&'static str, String), n: Option<u64>| {
            let entry = out.entry(key).or_insert(Some(0));
            *entry = match (*entry, n) {
                (Some(a), Some(b)) => Some(a + b),
                _ => None,
            };
        };
        for r in &self.requests {
            add((r.method, r.target.clone()), r.times);
            if r.reads > 0 {
                add(("GET", r.target.clone()), r.times.map(|t| t * r.reads));
            }
        }
        out
    }

    fn timer_time(&self) -> Result<Duration, String> {
        let mut total = Duration::ZERO;
        for (_, visits, duration) in &self.timers {
            let Some(v) = visits else {
                return Err("a timer is in a loop with no proven bound".to_string());
            };
            total += duration.clone()?.saturating_mul(*v as u32);
        }
        Ok(total)
    }

    fn request_time(&self) -> Option<Duration> {
        let mut total = Duration::ZERO;
        for r in &self.requests {
            let per = r.timeout.saturating_mul(r.attempts) + r.retry_waits;
            let each = per.saturating_mul((r.pages + r.reads) as u32);
            total += each.saturating_mul(r.times? as u32);
        }
        Some(total)
    }

    pub fn text(&self, flow: &Flow) -> String {
        let name = |i: usize| flow.steps[i].id.as_str();
        let mut out = format!("flow `{}`: the worst case, before it runs\n\n", flow.name);
        for l in &self.loops {
            let mut path: Vec<&str> = l.steps.iter().map(|&i| name(i)).collect();
            if let Some(&first) = l.steps.first() {
                path.push(name(first));
            }
            match &l.bound {
                Ok((rounds, how)) => {
                    let _ = writeln!(out, "loop {}: at most {rounds} rounds", path.join(" → "));
                    let _ = writeln!(out, "  {how}");
                }
                Err(why) => {
                    let _ = writeln!(
                        out,
                        "loop {}: no bound proven ({why}); only `max_steps` stops it",
                        path.join(" → ")
                    );
                }
            }
        }
        if !self.loops.is_empty() {
            out.push('\n');
        }
        match self.total_steps() {
            Some(n) => {
                let over = if n > flow.max_steps {
                    " — more than max_steps: a run could stop on its step budget"
                } else {
                    ""
                };
                let _ = writeln!(
                    out,
                    "steps     at most {n} (max_steps: {}){over}",
                    flow.max_steps
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "steps     at most {} (max_steps), as a loop has no proven bound",
                    flow.max_steps
                );
            }
        }
        for &(step, visits, timeout) in &self.waits {
            let StepKind::WaitFor(w) = &flow.steps[step].kind else {
                continue;
            };
            let times = match visits {
                Some(1) => String::new(),
                Some(v) => format!(", {v} times"),
                None => ", in a loop with no proven bound".to_string(),
            };
            let _ = writeln!(
                out,
                "waits     `{}`: for signal `{}`, at most {} each{times}",
                name(step),
                w.signal,
                seconds(timeout)
            );
        }
        for &(owner, max_items, steps) in &self.items {
            let per = match steps {
                Some(s) => format!("each at most {s} steps"),
                None => format!(
                    "each at most {} steps (max_steps), as a loop has no proven bound",
                    flow.max_steps
                ),
            };
            let _ = writeln!(
                out,
                "items     `{}`: at most {max_items} items (max_items), {per}",
                name(owner)
            );
        }
        let counted: Vec<String> = self
            .by_method()
            .iter()
            .map(|((m, t), n)| match n {
                Some(n) => format!("{n} {m} to {t}"),
                None => format!("any number of {m} to {t}"),
            })
            .collect();
        if counted.is_empty() {
            out.push_str("requests  none\n");
        } else {
            let _ = writeln!(out, "requests  at most {}", counted.join(", "));
            if self.requests.iter().any(|r| r.reads > 1) {
                out.push_str(
                    "          (`patch_task` reads its task to pick the assignment, and again after a 409)\n",
                );
            } else if self.requests.iter().any(|r| r.reads > 0) {
                out.push_str(
                    "          (a PATCH refused with 409 reads its task back: one GET more each)\n",
                );
            }
            for r in &self.requests {
                let mut more = Vec::new();
                if r.attempts > 1 {
                    more.push(format!("{} attempts", r.attempts));
                }
                if r.pages > 1 {
                    more.push(format!("up to {} pages", r.pages));
                }
                if !more.is_empty() {
                    let _ = writeln!(
                        out,
                        "          `{}`: each {} may take {}",
                        name(r.step),
                        r.method,
                        more.join(" and ")
                    );
                }
            }
        }
        match self.timer_time() {
            Ok(d) if self.timers.is_empty() || d.is_zero() => {
                let _ = writeln!(out, "timers    none");
            }
            Ok(d) => {
                let parts: Vec<String> = self
                    .timers
                    .iter()
                    .filter_map(|(i, v, d)| {
                        Some(format!(
                            "{} × {} at `{}`",
                            v.as_ref()?,
                            seconds(*d.as_ref().ok()?),
                            name(*i)
                        ))
                    })
                    .collect();
                let _ = writeln!(
                    out,
                    "timers    at most {} ({})",
                    seconds(d),
                    parts.join(", ")
                );
            }
            Err(why) => {
                let _ = writeln!(out, "timers    unknown: {why}");
            }
        }
        match self.request_time() {
            Some(d) if !self.requests.is_empty() => {
                let _ = writeln!(
                    out,
                    "waiting   at most {} more on requests, if every attempt timed out and every retry waited its longest",
                    seconds(d)
                );
            }
            _ => {}
        }
        out
    }

    pub fn json(&self, flow: &Flow) -> Value {
        let name = |i: usize| flow.steps[i].id.clone();
        json!({
            "flow": flow.name,
            "loops": self.loops.iter().map(|l| json!({
                "steps": l.steps.iter().map(|&i| name(i)).collect::<Vec<_>>(),
                "rounds": l.bound.as_ref().ok().map(|(r, _)| r),
                "why": match &l.bound { Ok((_, how)) => how.clone(), Err(why) => why.clone() },
            })).collect::<Vec<_>>(),
            "visits": flow.steps.iter().zip(&self.visits).map(|(s, v)| (s.id.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "steps": self.total_steps(),
            "max_steps": flow.max_steps,
            "waits": self.waits.iter().map(|&(step, visits, timeout)| json!({
                "step": name(step),
                "at_most": visits,
                "timeout_ms": timeout.as_millis() as u64,
            })).collect::<Vec<_>>(),
            "longest_wait_ms": self.waits.iter().map(|w| w.2.as_millis() as u64).max(),
            "items": self.items.iter().map(|&(owner, max_items, steps)| json!({
                "step": name(owner),
                "max_items": max_items,
                "steps_per_item": steps,
            })).collect::<Vec<_>>(),
            "requests": self.by_method().iter().map(|((m, t), n)| json!({"method": m, "target": t, "at_most": n})).collect::<Vec<_>>(),
            "timer_ms": self.timer_time().ok().map(|d| d.as_millis() as u64),
            "request_wait_ms": self.request_time().map(|d| d.as_millis() as u64),
        })
    }
}

#[derive(clap::Args, Debug)]
pub struct PlanArgs {
    #[command(flatten)]
    pub arazzo: crate::cli::common::ArazzoArgs,
    /// The flow file.
    pub flow: PathBuf,
    /// Text for people, or JSON for scripts.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

/// `handoff plan`: the flow's worst case, as text or JSON.
pub fn plan_command(args: &PlanArgs, color: Colors) -> i32 {
    match crate::language::analyze::analyze_file(&args.flow.to_string_lossy()) {
        Ok(checked) => {
            let plan = plan(&checked.flow);
            match args.format {
                OutputFormat::Text => print!("{}", plan.text(&checked.flow)),
                OutputFormat::Json => println!("{}", plan.json(&checked.flow)),
            }
            EXIT_OK
        }
        Err(diagnostics) => {
            print_diagnostics(&diagnostics, color);
            EXIT_INVALID
        }
    }
}
