//! What the command line chose for Arazzo documents (`--workflow`,
//! `--source`), and reading a document's workflows by id.

use std::sync::OnceLock;

use crate::language::raw::Node;

/// What the command line says about Arazzo documents: which workflow to
/// run, and local copies of sources the document gives by URL.
#[derive(Debug, Default, Clone)]
pub struct Selection {
    pub workflow: Option<String>,
    /// `NAME=FILE`: the source `NAME` is read from `FILE`.
    pub sources: Vec<(String, String)>,
}

static SELECTION: OnceLock<Selection> = OnceLock::new();

/// Set once, by the command line, before any document is read.
pub fn select(selection: Selection) {
    let _ = SELECTION.set(selection);
}

/// Whether the command line names a workflow.
pub fn selected() -> bool {
    SELECTION.get().is_some_and(|s| s.workflow.is_some())
}

pub fn selection() -> Selection {
    SELECTION.get().cloned().unwrap_or_default()
}

/// Whether a document is an Arazzo one: its root has `arazzo:`.
pub fn is_arazzo(root: &Node) -> bool {
    root.as_map()
        .is_some_and(|m| m.iter().any(|(k, _)| k.as_str() == Some("arazzo")))
}

/// The ids of a document's workflows, in order.
pub fn workflow_ids(root: &Node) -> Vec<String> {
    let Some(workflows) = get(root, "workflows").and_then(Node::as_seq) else {
        return Vec::new();
    };
    workflows
        .iter()
        .filter_map(|w| get(w, "workflowId").and_then(Node::as_str))
        .map(str::to_string)
        .collect()
}

/// The value under `key` in a mapping.
pub fn get<'n>(node: &'n Node, key: &str) -> Option<&'n Node> {
    node.as_map()?
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}
