//! Arazzo documents (the OpenAPI Initiative's workflows, 1.0 and 1.1) as
//! handoff flows: one workflow of a document is lowered to the YAML nodes
//! of the flow that does what it says, and the flow's own analyser takes it
//! from there, so every command runs it and every diagnostic points into
//! the Arazzo file (the lowered nodes carry the spans they came from).
//!
//! The lowering, for each step that calls an operation: a `call` step (every
//! status accepted), a `set` of what it sent when its expressions read
//! `$request`, `$url` or `$method`, a `decision` on its `successCriteria`, a
//! `set` of its `outputs`, a `decision` over its `onSuccess` actions, and on
//! failure a `decision` over its `onFailure` actions, with a counter and a
//! `timer` per `retry`. A step that runs another workflow inlines that
//! workflow's steps, ids prefixed `step/`; the workflows of `dependsOn` run
//! first, ids prefixed `@workflow/`. Forms runners accept outside the text
//! (`$steps.s.name`) are read with a warning. What a lowered flow names, and
//! the defaults it picks where the specification is silent, is in
//! docs/arazzo.md.

pub mod expr;
pub mod lower;
pub mod select;

use std::sync::Arc;

use crate::language::diagnostic::Diagnostic;
use crate::language::raw::Node;
use crate::language::source::Source;

/// The flow one workflow of the document is, as YAML nodes, with the
/// descriptions its sources read: `workflow` names it, or else
/// `--workflow`, or else the document's only one.
pub fn lower(
    source: &Arc<Source>,
    root: &Node,
    workflow: Option<&str>,
) -> Result<crate::language::arazzo::lower::Lowered, Vec<Diagnostic>> {
    let selection = crate::language::arazzo::select::selection();
    let wanted = workflow.map(str::to_string).or(selection.workflow.clone());
    crate::language::arazzo::lower::Lowering::new(source.clone(), root, selection)
        .run(wanted.as_deref())
}
