//! Graph checks over a parsed flow: steps that are never reached (a
//! warning) and loops that nothing leads out of (an error).

use std::collections::BTreeSet;

use crate::language::analyzer::{Analyzer, list};
use crate::language::diagnostic::Diagnostic;
use crate::language::flow::Step;
use crate::language::target::Target;

/// Unreachable steps and loops that nothing leads out of, among `range`
/// of the steps: the flow's own, or a block's, entered at its first.
pub fn check_graph(cx: &mut Analyzer, all: &[Step], range: std::ops::Range<usize>) {
    let offset = range.start;
    let steps = &all[range];
    let n = steps.len();
    let edges: Vec<Vec<usize>> = (0..n)
        .map(|i| {
            let mut out = Vec::new();
            let mut push = |t: Target| {
                if let Target::Step(j) = t
                    && let Some(j) = j.checked_sub(offset).filter(|&j| j < n)
                {
                    out.push(j);
                }
            };
            if steps[i].kind.continues() {
                match steps[i].goto {
                    Some(t) => push(t),
                    None if i + 1 < n => push(Target::Step(offset + i + 1)),
                    None => {}
                }
            }
            steps[i]
                .kind
                .branch_targets()
                .into_iter()
                .for_each(&mut push);
            if let Some(t) = steps[i].on_error {
                push(t);
            }
            out
        })
        .collect();
    let exits_to_end: Vec<bool> = (0..n)
        .map(|i| {
            let s = &steps[i];
            matches!(
                s.kind,
                crate::steps::StepKind::Fail(_) | crate::steps::StepKind::End(_)
            ) || (s.kind.continues()
                && (s.goto == Some(Target::End) || (s.goto.is_none() && i + 1 == n)))
                || s.kind.branch_targets().contains(&Target::End)
                || s.on_error == Some(Target::End)
        })
        .collect();
    let mut seen = vec![false; n];
    let mut stack = vec![0];
    seen[0] = true;
    while let Some(i) = stack.pop() {
        for &j in &edges[i] {
            if !seen[j] {
                seen[j] = true;
                stack.push(j);
            }
        }
    }
    for (i, step) in steps.iter().enumerate() {
        if !seen[i] {
            cx.push(
                Diagnostic::warning(format!("step `{}` is never reached", step.id))
                    .at(&cx.source, step.span)
                    .help("nothing falls through or jumps to it; remove it or add a `goto`"),
            );
        }
    }
    for component in strongly_connected(&edges) {
        let cyclic = component.len() > 1 || edges[component[0]].contains(&component[0]);
        if !cyclic || !seen[component[0]] {
            continue;
        }
        let members: BTreeSet<usize> = component.iter().copied().collect();
        let leaves = component
            .iter()
            .any(|&i| exits_to_end[i] || edges[i].iter().any(|j| !members.contains(j)));
        if !leaves {
            let first = *members.iter().next().unwrap_or(&0);
            let names: Vec<&str> = members.iter().map(|&i| steps[i].id.as_str()).collect();
            // Nothing can leave: the run could only end by exhausting its
            // budget, which is never what the author meant.
            cx.push(
                Diagnostic::error(format!("the loop through {} has no exit", list(&names)))
                    .at(&cx.source, steps[first].span)
                    .help("add a `decision` that leaves the loop, or an `on_error`; otherwise only `max_steps` would stop it"),
            );
        }
    }
}

/// Kosaraju's algorithm, iterative so a huge flow cannot overflow the stack.
fn strongly_connected(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = edges.len();
    let mut order = Vec::with_capacity(n);
    let mut visited = vec![false; n];
    for start in 0..n {
        if visited[start] {
            continue;
        }
        visited[start] = true;
        let mut stack = vec![(start, 0usize)];
        while let Some((node, next)) = stack.pop() {
            if next < edges[node].len() {
                stack.push((node, next + 1));
                let child = edges[node][next];
                if !visited[child] {
                    visited[child] = true;
                    stack.push((child, 0));
                }
            } else {
                order.push(node);
            }
        }
    }
    let mut reverse = vec![Vec::new(); n];
    for (i, outs) in edges.iter().enumerate() {
        for &j in outs {
            reverse[j].push(i);
        }
    }
    let mut assigned = vec![false; n];
    let mut components = Vec::new();
    for &start in order.iter().rev() {
        if assigned[start] {
            continue;
        }
        assigned[start] = true;
        let mut component = vec![start];
        let mut stack = vec![start];
        while let Some(node) = stack.pop() {
            for &prev in &reverse[node] {
                if !assigned[prev] {
                    assigned[prev] = true;
                    component.push(prev);
                    stack.push(prev);
                }
            }
        }
        components.push(component);
    }
    components
}
