//! `handoff graph FLOW`: the flow as a picture, in Mermaid (for Markdown on
//! GitHub) or Graphviz DOT, optionally with the path a run took.
//!
//! Nodes show what a step does: a decision is a diamond whose edges carry
//! their conditions, a timer shows its duration, a request its method and
//! URL. `on_error` edges are dashed. Labels quote the flow's own text (its
//! templates), never a value, and a credential written into the file is
//! masked as everywhere else.

use std::fmt::Write;

use crate::engine::picture::Taken;
use crate::engine::picture::{Shape, layout};
use crate::language::flow::Flow;
use crate::run::trace::RunStatus;
use clap::ValueEnum;
use std::path::PathBuf;

use crate::cli::common::{Colors, EXIT_FAILED, EXIT_INVALID, EXIT_OK, print_diagnostics};

/// Mermaid's entity escapes for text in a quoted label.
fn mermaid_text(text: &str) -> String {
    text.replace('&', "#amp;")
        .replace('"', "#quot;")
        .replace('<', "#lt;")
        .replace('>', "#gt;")
        .replace('|', "#124;")
}

/// The flow as a Mermaid flowchart.
pub fn mermaid(flow: &Flow, taken: Option<&Taken>) -> String {
    let (nodes, edges) = layout(flow);
    let mut out = String::from("flowchart TD\n");
    let _ = writeln!(out, "    start([\"{}\"])", mermaid_text(&flow.name));
    for (i, node) in nodes.iter().enumerate() {
        let label = match &node.detail {
            Some(d) => format!(
                "{}<br/><small>{}</small>",
                mermaid_text(&node.title),
                mermaid_text(d)
            ),
            None => mermaid_text(&node.title),
        };
        let (open, close) = match node.shape {
            Shape::Box => ("[\"", "\"]"),
            Shape::Diamond => ("{\"", "\"}"),
            Shape::Round => ("(\"", "\")"),
            Shape::Stop => ("([\"", "\"])"),
        };
        let line = format!("s{i}{open}{label}{close}");
        match node.block {
            // A block's steps go in a box named for their `for_each`.
            Some(b) if nodes[..i].iter().all(|n| n.block != Some(b)) => {
                let _ = writeln!(
                    out,
                    "    subgraph b{b} [\"each {}\"]\n        {line}",
                    mermaid_text(&flow.blocks[b].item)
                );
            }
            Some(_) => {
                let _ = writeln!(out, "        {line}");
            }
            None => {
                let _ = writeln!(out, "    {line}");
            }
        }
        if let Some(b) = node.block
            && nodes.get(i + 1).is_none_or(|n| n.block != Some(b))
        {
            out.push_str("    end\n");
        }
    }
    let ends = edges.iter().any(|e| e.to.is_none());
    if ends {
        out.push_str("    done((end))\n");
    }
    if !nodes.is_empty() {
        out.push_str("    start --> s0\n");
    }
    for edge in &edges {
        let to = edge.to.map_or("done".to_string(), |i| format!("s{i}"));
        let arrow = if edge.error { "-.->" } else { "-->" };
        match &edge.label {
            Some(label) => {
                let _ = writeln!(
                    out,
                    "    s{} {arrow}|\"{}\"| {to}",
                    edge.from,
                    mermaid_text(label)
                );
            }
            None => {
                let _ = writeln!(out, "    s{} {arrow} {to}", edge.from);
            }
        }
    }
    if let Some(taken) = taken {
        out.push_str("    classDef taken fill:#dbeafe,stroke:#1d4ed8,stroke-width:2px\n");
        out.push_str("    classDef failed fill:#fee2e2,stroke:#b91c1c,stroke-width:3px\n");
        out.push_str("    classDef stopped fill:#dcfce7,stroke:#15803d,stroke-width:3px\n");
        for (class, ids) in classes(flow, taken) {
            if !ids.is_empty() {
                let _ = writeln!(out, "    class {} {class}", ids.join(","));
            }
        }
    }
    out
}

/// The node ids of each highlight class: steps taken, and the last one,
/// coloured by how the run ended.
fn classes(flow: &Flow, taken: &Taken) -> Vec<(&'static str, Vec<String>)> {
    let mut path = Vec::new();
    let mut last = Vec::new();
    for (i, step) in flow.steps.iter().enumerate() {
        if taken.ended_at.as_deref() == Some(step.id.as_str()) {
            last.push(format!("s{i}"));
        } else if taken.steps.contains(&step.id) {
            path.push(format!("s{i}"));
        }
    }
    let end_class = match taken.status {
        Some(RunStatus::Succeeded) => "stopped",
        _ => "failed",
    };
    vec![("taken", path), (end_class, last)]
}

/// DOT's escapes for a quoted string.
fn dot_text(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The flow as a Graphviz digraph.
pub fn dot(flow: &Flow, taken: Option<&Taken>) -> String {
    let (nodes, edges) = layout(flow);
    let mut out = format!("digraph \"{}\" {{\n", dot_text(&flow.name));
    out.push_str("    rankdir=TB;\n    node [shape=box, style=rounded, fontname=\"Helvetica\"];\n");
    out.push_str("    edge [fontname=\"Helvetica\", fontsize=10];\n");
    let _ = writeln!(
        out,
        "    start [label=\"{}\", shape=oval];",
        dot_text(&flow.name)
    );
    let highlight = taken.map(|t| classes(flow, t)).unwrap_or_default();
    let fill = |id: &str| {
        highlight.iter().find_map(|(class, ids)| {
            ids.iter().any(|i| i == id).then_some(match *class {
                "taken" => "#dbeafe",
                "stopped" => "#dcfce7",
                _ => "#fee2e2",
            })
        })
    };
    for (i, node) in nodes.iter().enumerate() {
        let label = match &node.detail {
            Some(d) => format!("{}\\n{}", dot_text(&node.title), dot_text(d)),
            None => dot_text(&node.title),
        };
        let shape = match node.shape {
            Shape::Box => "box",
            Shape::Diamond => "diamond",
            Shape::Round => "ellipse",
            Shape::Stop => "doubleoctagon",
        };
        let id = format!("s{i}");
        let style = match fill(&id) {
            Some(colour) => format!(", style=\"rounded,filled\", fillcolor=\"{colour}\""),
            None => String::new(),
        };
        if let Some(b) = node.block
            && nodes[..i].iter().all(|n| n.block != Some(b))
        {
            let _ = writeln!(
                out,
                "    subgraph cluster_b{b} {{\n    label=\"each {}\";\n    style=dashed;",
                dot_text(&flow.blocks[b].item)
            );
        }
        let _ = writeln!(out, "    {id} [label=\"{label}\", shape={shape}{style}];");
        if let Some(b) = node.block
            && nodes.get(i + 1).is_none_or(|n| n.block != Some(b))
        {
            out.push_str("    }\n");
        }
    }
    if edges.iter().any(|e| e.to.is_none()) {
        out.push_str("    done [label=\"end\", shape=circle];\n");
    }
    if !nodes.is_empty() {
        out.push_str("    start -> s0;\n");
    }
    for edge in &edges {
        let to = edge.to.map_or("done".to_string(), |i| format!("s{i}"));
        let mut attrs = Vec::new();
        if let Some(label) = &edge.label {
            attrs.push(format!("label=\"{}\"", dot_text(label)));
        }
        if edge.error {
            attrs.push("style=dashed".to_string());
        }
        let attrs = if attrs.is_empty() {
            String::new()
        } else {
            format!(" [{}]", attrs.join(", "))
        };
        let _ = writeln!(out, "    s{} -> {to}{attrs};", edge.from);
    }
    out.push_str("}\n");
    out
}

#[derive(clap::Args, Debug)]
pub struct GraphArgs {
    #[command(flatten)]
    pub arazzo: crate::cli::common::ArazzoArgs,
    /// The flow file.
    pub flow: PathBuf,
    /// Mermaid (for Markdown on GitHub and most editors) or Graphviz DOT.
    #[arg(long, value_enum, default_value_t = GraphFormat::Mermaid)]
    pub format: GraphFormat,
    /// Highlight the steps a run took, from its JSONL trace (`--trace-file run.jsonl`).
    #[arg(long, value_name = "FILE", conflicts_with = "run")]
    pub trace: Option<PathBuf>,
    /// Highlight the steps a durable run took, from the store.
    #[arg(long, value_name = "RUN_ID")]
    pub run: Option<String>,
    #[command(flatten)]
    pub store: crate::cli::runs::StoreArg,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum GraphFormat {
    Mermaid,
    Dot,
}

pub async fn graph_command(args: GraphArgs, color: Colors) -> i32 {
    let flow = match crate::language::analyze::analyze_file(&args.flow.to_string_lossy()) {
        Ok(checked) => checked.flow,
        Err(diagnostics) => {
            print_diagnostics(&diagnostics, color);
            return EXIT_INVALID;
        }
    };
    let events = if let Some(path) = &args.trace {
        match crate::cli::report::read_trace(path) {
            Ok(events) => Some(events),
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_INVALID;
            }
        }
    } else if let Some(id) = &args.run {
        let runs = match crate::cli::runs::existing_store(&args.store.target()).await {
            Ok(r) => r,
            Err(code) => return code,
        };
        match runs.trace(id).await {
            Ok(events) if !events.is_empty() => Some(events),
            Ok(_) => {
                eprintln!("error: there is no run `{id}` in the store, or it has no trace yet");
                return EXIT_INVALID;
            }
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_FAILED;
            }
        }
    } else {
        None
    };
    let taken = events
        .as_deref()
        .map(crate::engine::picture::Taken::from_events);
    let text = match args.format {
        GraphFormat::Mermaid => crate::cli::graph::mermaid(&flow, taken.as_ref()),
        GraphFormat::Dot => crate::cli::graph::dot(&flow, taken.as_ref()),
    };
    print!("{text}");
    EXIT_OK
}
