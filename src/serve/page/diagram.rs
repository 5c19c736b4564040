//! A flow's picture on the run page, as SVG: steps in a column in flow
//! order, the next step's arrow straight down, other edges as arcs in lanes
//! on the right (dashed for `on_error`), each decision's condition beside
//! the edge it labels. The steps a run took are filled, the edges it went
//! along drawn bold, and the step it stopped at outlined.

use std::fmt::Write;

use crate::engine::picture::{Shape, Taken, layout};
use crate::language::flow::Flow;
use crate::run::trace::RunStatus;
use crate::serve::page::html::esc;

const BOX_W: i32 = 300;
const BOX_H: i32 = 46;
const GAP: i32 = 30;
const LEFT: i32 = 20;
const TOP: i32 = 20;

/// The flow as SVG, with what the run took.
pub fn svg(flow: &Flow, taken: &Taken) -> String {
    let (nodes, edges) = layout(flow);
    let row = |i: usize| TOP + i as i32 * (BOX_H + GAP);
    let end_y = row(nodes.len());
    let arcs = edges
        .iter()
        .filter(|e| e.to != Some(e.from + 1) && !(e.to.is_none() && e.from + 1 == nodes.len()))
        .count() as i32;
    let width = LEFT + BOX_W + 60 + arcs * 22 + 220;
    let height = end_y + BOX_H + TOP;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"diagram\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"The steps of flow {}, with the path the run took\">",
        esc(&flow.name)
    );
    out.push_str("<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#475569\"/></marker><marker id=\"arrow-taken\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"6\" markerHeight=\"6\" orient=\"auto-start-reverse\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#1d4ed8\"/></marker></defs>");
    // Taken edges are drawn last among the edges, so that they show on top.
    let ids: Vec<&str> = flow.steps.iter().map(|s| s.id.as_str()).collect();
    let went = |e: &crate::engine::picture::Edge| {
        let to = e.to.map_or("end", |t| ids[t]);
        taken
            .edges
            .contains(&(ids[e.from].to_string(), to.to_string()))
    };
    let mut order: Vec<usize> = (0..edges.len()).collect();
    order.sort_by_key(|&k| went(&edges[k]));
    // Each arc gets its own lane on the right, in flow order, whatever the drawing order.
    let mut lanes = vec![0; edges.len()];
    let mut lane = 0;
    for (k, edge) in edges.iter().enumerate() {
        let straight = match edge.to {
            Some(t) => t == edge.from + 1,
            None => edge.from + 1 == nodes.len(),
        };
        if !straight {
            lane += 1;
            lanes[k] = lane;
        }
    }
    let mut labels = String::new();
    let column = LEFT + BOX_W + 20 + (lane + 1) * 22;
    let mut used: Vec<i32> = Vec::new();
    for k in order {
        let edge = &edges[k];
        let taken_edge = went(edge);
        let from_y = row(edge.from) + BOX_H;
        let to_y = match edge.to {
            Some(t) => row(t),
            None => end_y,
        };
        let dash = if edge.error {
            " stroke-dasharray=\"5,4\""
        } else {
            ""
        };
        let (stroke, width, marker) = if taken_edge {
            ("#1d4ed8", "2.5", "arrow-taken")
        } else {
            ("#475569", "1", "arrow")
        };
        let class = if taken_edge { "edge taken" } else { "edge" };
        let cx = LEFT + BOX_W / 2;
        if lanes[k] == 0 {
            let _ = write!(
                out,
                "<line x1=\"{cx}\" y1=\"{from_y}\" x2=\"{cx}\" y2=\"{to_y}\" stroke=\"{stroke}\" stroke-width=\"{width}\"{dash} marker-end=\"url(#{marker})\" class=\"{class}\"/>"
            );
            if let Some(label) = &edge.label {
                let _ = write!(
                    labels,
                    "<text x=\"{}\" y=\"{}\" class=\"{class}\">{}</text>",
                    cx + 8,
                    (from_y + to_y) / 2 + 4,
                    esc(label)
                );
            }
            continue;
        }
        let x = LEFT + BOX_W;
        let out_x = x + 20 + lanes[k] * 22;
        let y1 = row(edge.from) + BOX_H / 2;
        let y2 = match edge.to {
            Some(t) => row(t) + BOX_H / 2,
            None => end_y + BOX_H / 2,
        };
        let _ = write!(
            out,
            "<path d=\"M{x},{y1} H{out_x} V{y2} H{}\" fill=\"none\" stroke=\"{stroke}\" stroke-width=\"{width}\"{dash} marker-end=\"url(#{marker})\" class=\"{class}\"/>",
            if edge.to.is_none() {
                LEFT + BOX_W / 2 + 22
            } else {
                x
            }
        );
        // In a column past every lane, halfway along its arc and led to it
        // by a dotted line, so that no other arc runs through the text; moved
        // down a line when another label holds the place.
        if let Some(label) = &edge.label {
            let mut y = (y1 + y2) / 2 + 4;
            while used.iter().any(|u: &i32| (u - y).abs() < 14) {
                y += 14;
            }
            used.push(y);
            let _ = write!(
                labels,
                "<line x1=\"{out_x}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{stroke}\" stroke-dasharray=\"1,3\" class=\"leader\"/><text x=\"{}\" y=\"{y}\" class=\"{class}\">{}</text>",
                y - 4,
                column - 4,
                y - 4,
                column,
                esc(label)
            );
        }
    }
    for (i, node) in nodes.iter().enumerate() {
        let id = &flow.steps[i].id;
        let ended = taken.ended_at.as_deref() == Some(id.as_str());
        let (fill, stroke, width) = if ended {
            match taken.status {
                Some(RunStatus::Succeeded) => ("#dcfce7", "#15803d", 3),
                Some(_) => ("#fee2e2", "#b91c1c", 3),
                None => ("#fef9c3", "#a16207", 3),
            }
        } else if taken.steps.contains(id) {
            ("#dbeafe", "#1d4ed8", 2)
        } else {
            ("#ffffff", "#94a3b8", 1)
        };
        let y = row(i);
        let rx = match node.shape {
            Shape::Round | Shape::Stop => 20,
            Shape::Diamond => 2,
            Shape::Box => 6,
        };
        let class = if ended {
            "step current"
        } else if taken.steps.contains(id) {
            "step taken"
        } else {
            "step"
        };
        let _ = write!(
            out,
            "<g class=\"{class}\" data-step=\"{sid}\"><rect x=\"{LEFT}\" y=\"{y}\" width=\"{BOX_W}\" height=\"{BOX_H}\" rx=\"{rx}\" fill=\"{fill}\" stroke=\"{stroke}\" stroke-width=\"{width}\"/>",
            sid = esc(id)
        );
        if node.shape == Shape::Diamond {
            let _ = write!(
                out,
                "<text x=\"{}\" y=\"{}\" class=\"kind\">◆</text>",
                LEFT + 10,
                y + 28
            );
        }
        let _ = write!(
            out,
            "<text x=\"{}\" y=\"{}\" class=\"title\">{}</text>",
            LEFT + 28,
            y + 19,
            esc(&node.title)
        );
        if let Some(detail) = &node.detail {
            let _ = write!(
                out,
                "<text x=\"{}\" y=\"{}\" class=\"detail\">{}</text>",
                LEFT + 28,
                y + 36,
                esc(detail)
            );
        }
        out.push_str("</g>");
    }
    out.push_str(&labels);
    let _ = write!(
        out,
        "<g class=\"end\"><circle cx=\"{}\" cy=\"{}\" r=\"16\" fill=\"#f1f5f9\" stroke=\"#475569\"/><text x=\"{}\" y=\"{}\" class=\"detail\">end</text></g>",
        LEFT + BOX_W / 2,
        end_y + 18,
        LEFT + BOX_W / 2 - 10,
        end_y + 22
    );
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_flow_draws_with_its_path() {
        let checked =
            crate::language::analyze::analyze_file("flows/complete-nwc-task.yaml").unwrap();
        let flow = checked.flow;
        let mut taken = Taken::default();
        taken.steps.insert("find_task".into());
        taken.steps.insert("give_up".into());
        taken.ended_at = Some("give_up".into());
        taken.status = Some(RunStatus::Failed);
        let svg = svg(&flow, &taken);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        for step in &flow.steps {
            assert!(
                svg.contains(&format!("data-step=\"{}\"", step.id)),
                "{}",
                step.id
            );
        }
        assert!(svg.contains("<g class=\"step taken\" data-step=\"find_task\">"));
        assert!(svg.contains("<g class=\"step current\" data-step=\"give_up\"><rect x=\"20\" y=\"476\" width=\"300\" height=\"46\" rx=\"20\" fill=\"#fee2e2\""));
        assert!(svg.contains("<g class=\"step\" data-step=\"complete\">"));
        assert!(svg.contains("tries &gt;= max_tries"), "labels are escaped");
    }

    /// The `(x, y)` of the label that ends with `text`.
    fn label_at(svg: &str, text: &str) -> (i32, i32) {
        let end = svg.find(&format!(">{text}</text>")).expect(text);
        let start = svg[..end].rfind("<text ").unwrap();
        let attr = |name: &str| -> i32 {
            let at = svg[start..end].find(&format!("{name}=\"")).unwrap() + start + name.len() + 2;
            svg[at..at + svg[at..].find('"').unwrap()].parse().unwrap()
        };
        (attr("x"), attr("y"))
    }

    #[test]
    fn a_decision_labels_each_edge_beside_it_and_the_path_taken_is_drawn() {
        let flow = crate::language::analyze::analyze_file("flows/complete-nwc-task.yaml")
            .unwrap()
            .flow;
        let row = |id: &str| {
            let i = flow.steps.iter().position(|s| s.id == id).unwrap() as i32;
            TOP + i * (BOX_H + GAP) + BOX_H / 2
        };
        let mut taken = Taken::default();
        for (from, to) in [
            ("find_task", "read_id"),
            ("task_ready", "wait"),
            ("wait", "find_task"),
        ] {
            taken.edges.insert((from.into(), to.into()));
        }
        let svg = svg(&flow, &taken);
        // The two arcs of `task_ready` each carry their condition halfway
        // along their own run, not stacked at the decision.
        let (x1, y1) = label_at(&svg, "task_id | length &gt; 0");
        let (x2, y2) = label_at(&svg, "tries &gt;= max_tries");
        assert_ne!((x1, y1), (x2, y2));
        assert!(y1 > row("task_ready") && y1 < row("complete"), "{y1}");
        assert!(y2 > row("task_ready") && y2 < row("give_up"), "{y2}");
        assert!((y1 - y2).abs() > 13, "the labels overlap: {y1} {y2}");
        // Three edges drawn as taken, the others not.
        assert_eq!(svg.matches("class=\"edge taken\"/>").count(), 3, "{svg}");
        assert!(svg.contains("marker-end=\"url(#arrow-taken)\""));
        assert!(
            svg.contains("class=\"edge taken\">otherwise</text>"),
            "{svg}"
        );
    }
}
