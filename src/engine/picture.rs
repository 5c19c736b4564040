//! A flow as nodes and edges, for pictures: `handoff graph` draws them as
//! Mermaid or DOT, and `serve`'s run page as SVG. Labels quote the flow's
//! own text (its templates), never a value; a credential written into the
//! file is masked as everywhere else.

use std::collections::BTreeSet;

use crate::language::flow::Flow;
use crate::language::target::Target;
use crate::run::redact::Redactor;
use crate::run::trace::{EventKind, RunStatus, TraceEvent};
use crate::steps::StepKind;

/// What a run did, for highlighting: the steps it started, the edges it
/// went along (`(from, to)`, `end` for the end), and where and how it ended.
#[derive(Debug, Default)]
pub struct Taken {
    pub steps: BTreeSet<String>,
    pub edges: BTreeSet<(String, String)>,
    pub ended_at: Option<String>,
    pub status: Option<RunStatus>,
}

impl Taken {
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a TraceEvent>) -> Taken {
        let mut taken = Taken::default();
        for event in events {
            match &event.kind {
                EventKind::StepStarted { .. } => {
                    if let Some(step) = &event.step {
                        taken.steps.insert(step.to_string());
                    }
                }
                EventKind::StepFinished { next } => {
                    if let Some(step) = &event.step {
                        taken.edges.insert((step.to_string(), next.clone()));
                    }
                }
                EventKind::StepFailed {
                    handled_by: Some(next),
                    ..
                } => {
                    if let Some(step) = &event.step {
                        taken.edges.insert((step.to_string(), next.clone()));
                    }
                }
                EventKind::FlowFinished(outcome) => {
                    taken.ended_at = outcome.at_step.clone();
                    taken.status = Some(outcome.status);
                }
                _ => {}
            }
        }
        taken
    }
}

/// One edge: from, to, its label, and whether it is an `on_error` edge.
pub struct Edge {
    pub from: usize,
    pub to: Option<usize>,
    pub label: Option<String>,
    pub error: bool,
}

#[derive(Clone, Copy, PartialEq)]
pub enum Shape {
    Box,
    Diamond,
    Round,
    Stop,
}

pub struct Node {
    pub title: String,
    pub detail: Option<String>,
    pub shape: Shape,
    /// The block it belongs to: drawn inside a box of its `for_each`.
    pub block: Option<usize>,
}

/// The nodes and edges of a flow; `None` as a target is the end.
pub fn layout(flow: &Flow) -> (Vec<Node>, Vec<Edge>) {
    let redactor = Redactor::for_run(&flow.literal_secrets, &[]);
    let text = |t: &str| short(&redactor.redact(t));
    let target = |t: Target| match t {
        Target::Step(i) => Some(i),
        Target::End => None,
    };
    let mut nodes = Vec::new();
    let mut edges = Vec::new();
    for (i, step) in flow.steps.iter().enumerate() {
        let (detail, shape) = match &step.kind {
            StepKind::SetHeader(s) => {
                (Some(format!("header {}", text(&s.name.source))), Shape::Box)
            }
            StepKind::GetTasks(_) => (Some("GET tasks".to_string()), Shape::Box),
            StepKind::DeserializeId(d) => (Some(format!("{} from {}", d.into, d.from)), Shape::Box),
            StepKind::PatchTask(p) => (
                Some(format!(
                    "PATCH {}, outcome {}",
                    if p.legacy_task_level {
                        "task"
                    } else {
                        "assignment"
                    },
                    text(&p.outcome.source)
                )),
                Shape::Box,
            ),
            StepKind::Decision(_) => (None, Shape::Diamond),
            StepKind::Timer(crate::steps::Timer::Duration(t)) => {
                (Some(format!("wait {}", text(&t.source))), Shape::Round)
            }
            StepKind::Timer(crate::steps::Timer::Until(t)) => (
                Some(format!("wait until {}", text(&t.source))),
                Shape::Round,
            ),
            StepKind::Set(s) => {
                let names: Vec<&str> = s.assignments.iter().map(|(n, _)| n.as_str()).collect();
                (Some(format!("set {}", names.join(", "))), Shape::Box)
            }
            StepKind::Http(h) => (
                Some(format!("{} {}", h.method, text(&h.url.source))),
                Shape::Box,
            ),
            StepKind::Call(c) => (
                Some(format!("{} ({} {})", c.name, c.op().method, c.op().path)),
                Shape::Box,
            ),
            StepKind::Log(_) => (Some("log".to_string()), Shape::Box),
            StepKind::Fail(_) => (Some("fail".to_string()), Shape::Stop),
            StepKind::End(_) => (Some("end".to_string()), Shape::Stop),
            StepKind::WaitFor(w) => (
                Some(format!(
                    "wait for `{}`, at most {}",
                    w.signal,
                    crate::run::clock::format_duration(w.timeout)
                )),
                Shape::Round,
            ),
            StepKind::ForEach(f) => (
                Some(format!(
                    "for each {} in {}, {} at a time",
                    f.item,
                    text(&f.items.source),
                    f.concurrency
                )),
                Shape::Round,
            ),
        };
        nodes.push(Node {
            title: step.id.clone(),
            detail,
            shape,
            block: step.block,
        });
        // In a block, the end is the item's: control goes back to its `for_each`.
        let owner = step.block.map(|b| flow.blocks[b].owner);
        let target = |t: Target| match (target(t), owner) {
            (None, Some(o)) => Some(o),
            (to, _) => to,
        };
        let back =
            |t: Target| (owner.is_some() && t == Target::End).then(|| "next item".to_string());
        match &step.kind {
            StepKind::Decision(d) => {
                for (condition, to) in &d.branches {
                    edges.push(Edge {
                        from: i,
                        to: target(*to),
                        label: Some(text(&condition.source)),
                        error: false,
                    });
                }
                if let Some(to) = d.otherwise {
                    edges.push(Edge {
                        from: i,
                        to: target(to),
                        label: Some("otherwise".to_string()),
                        error: false,
                    });
                }
            }
            // They stop the run: no edge goes on.
            StepKind::WaitFor(w) => {
                edges.push(Edge {
                    from: i,
                    to: target(flow.next_after(i)),
                    label: Some(format!("signal `{}`", w.signal)),
                    error: false,
                });
                edges.push(Edge {
                    from: i,
                    to: target(w.on_timeout),
                    label: Some("timeout".to_string()),
                    error: false,
                });
            }
            StepKind::Fail(_) | StepKind::End(_) if owner.is_none() => {}
            StepKind::Fail(_) | StepKind::End(_) => edges.push(Edge {
                from: i,
                to: owner,
                label: Some("next item".to_string()),
                error: false,
            }),
            StepKind::ForEach(f) => {
                edges.push(Edge {
                    from: i,
                    to: Some(flow.blocks[f.block].steps.start),
                    label: Some("each item".to_string()),
                    error: false,
                });
                edges.push(Edge {
                    from: i,
                    to: target(flow.next_after(i)),
                    label: Some("all done".to_string()),
                    error: false,
                });
            }
            _ => edges.push(Edge {
                from: i,
                to: target(flow.next_after(i)),
                label: back(flow.next_after(i)),
                error: false,
            }),
        }
        if let Some(to) = step.on_error {
            edges.push(Edge {
                from: i,
                to: target(to),
                label: Some("on_error".to_string()),
                error: true,
            });
        }
    }
    (nodes, edges)
}

/// A label's text on one line, and not too long to read in a box.
fn short(text: &str) -> String {
    let one: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() > 60 {
        format!("{}…", one.chars().take(59).collect::<String>())
    } else {
        one
    }
}
