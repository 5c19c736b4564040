//! The folder of flows a worker serves: every `*.yaml` and `*.yml` in it
//! (not `*.mock.yaml` or `*.test.yaml`), each checked before the worker starts. A flow is
//! addressed by its `flow:` name (an Arazzo workflow by its `workflowId`, each workflow
//! of a document a flow); two flows with one name are an error.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::language::analyze::{Checked, analyze_file, analyze_workflow, read_source};
use crate::language::diagnostic::Diagnostic;
use crate::language::flow::Flow;

/// The flows one file holds: a flow file one; an Arazzo document one per
/// workflow (or the one `--workflow` names), each named by its id.
fn analyze_each(path: &str) -> Vec<Result<Checked, Vec<Diagnostic>>> {
    let Ok(source) = read_source(path) else {
        return vec![analyze_file(path)];
    };
    match crate::language::raw::parse(&source) {
        Ok(root)
            if crate::language::arazzo::select::is_arazzo(&root)
                && !crate::language::arazzo::select::selected() =>
        {
            let ids = crate::language::arazzo::select::workflow_ids(&root);
            if ids.len() < 2 {
                return vec![analyze_workflow(&source, None)];
            }
            ids.iter()
                .map(|id| analyze_workflow(&source, Some(id)))
                .collect()
        }
        _ => vec![analyze_file(path)],
    }
}

#[derive(Clone)]
pub struct Served {
    pub flow: Arc<Flow>,
}

impl Served {
    /// Its version, as runs started from it are pinned to.
    pub fn hash(&self) -> &str {
        self.flow.source.hash()
    }
}

/// The flows by name, with the warnings found while checking them.
pub struct Flows {
    pub by_name: BTreeMap<String, Served>,
    pub warnings: Vec<Diagnostic>,
}

impl Flows {
    /// Loads and checks every flow in `dir`; every problem in every file
    /// comes back at once.
    pub fn load(dir: &Path) -> Result<Flows, Vec<Diagnostic>> {
        let shown = dir.display();
        let entries = std::fs::read_dir(dir).map_err(|e| {
            vec![Diagnostic::error(format!(
                "cannot read the flows folder `{shown}`: {}",
                crate::language::source::io_reason(&e)
            ))]
        })?;
        let mut paths: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .filter(|p| {
                let name = p.file_name().map(|n| n.to_string_lossy().to_string());
                name.is_some_and(|n| {
                    (n.ends_with(".yaml") || n.ends_with(".yml"))
                        && !n.contains(".mock.")
                        && !n.contains(".test.")
                })
            })
            .collect();
        // The same order every time, so errors and listings are stable.
        paths.sort();
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        let mut by_name: BTreeMap<String, Served> = BTreeMap::new();
        for path in paths {
            let name = path.to_string_lossy().to_string();
            for found in analyze_each(&name) {
                match found {
                    Ok(checked) => {
                        warnings.extend(checked.warnings);
                        let flow = checked.flow;
                        if let Some(other) = by_name.get(&flow.name) {
                            problems.push(
                                Diagnostic::error(format!(
                                    "two flows are named `{}`: `{}` and `{name}`",
                                    flow.name, other.flow.source.name
                                ))
                                .help("the API addresses a flow by its `flow:` name; rename one"),
                            );
                            continue;
                        }
                        by_name.insert(
                            flow.name.clone(),
                            Served {
                                flow: Arc::new(flow),
                            },
                        );
                    }
                    Err(diagnostics) => problems.extend(diagnostics),
                }
            }
        }
        if by_name.is_empty() && problems.is_empty() {
            problems.push(
                Diagnostic::error(format!("the flows folder `{shown}` has no flows")).help(
                    "put flow files (`*.yaml`) in it, such as `flows/complete-nwc-task.yaml`",
                ),
            );
        }
        if problems.iter().any(Diagnostic::is_error) {
            problems.extend(warnings);
            return Err(problems);
        }
        Ok(Flows { by_name, warnings })
    }

    /// Every problem a flow's trigger would meet at run time that can be
    /// found now: a signature secret that is not set.
    pub fn check_env(&self, env: &dyn Fn(&str) -> Option<String>) -> Vec<Diagnostic> {
        let mut problems = Vec::new();
        for served in self.by_name.values() {
            let Some(signature) = served
                .flow
                .trigger
                .as_ref()
                .and_then(|t| t.signature.as_ref())
            else {
                continue;
            };
            if env(&signature.secret_env).is_none_or(|v| v.trim().is_empty()) {
                problems.push(
                    Diagnostic::error(format!(
                        "flow `{}` checks its hook's signature with `${}`, which is not set",
                        served.flow.name, signature.secret_env
                    ))
                    .help(format!(
                        "set `{}` to the secret the sender signs with",
                        signature.secret_env
                    )),
                );
            }
        }
        problems
    }
}
