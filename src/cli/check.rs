//! `handoff check`: analyse flow files (and their mock files) without
//! running them, and print every problem with its place.

use crate::cli::common::{Colors, EXIT_INVALID, EXIT_OK, plural, print_diagnostics};
use crate::language::analyze::{analyze, read_source};
use crate::language::diagnostic::{Diagnostic, Severity};
use crate::run::mock::Mock;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    pub arazzo: crate::cli::common::ArazzoArgs,
    /// Flow files, mock files named `NAME.mock.yaml` and test files named
    /// `NAME.test.yaml` next to `NAME.yaml`, or folders of them (every
    /// `*.yaml` and `*.yml` in a folder, as `serve` reads one).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Also check these mock files against the flow (one flow file), whatever their names.
    #[arg(long, value_name = "MOCK")]
    pub mock: Vec<PathBuf>,
}

/// The files to check: each file given, and each folder's `*.yaml` and
/// `*.yml` files, in order.
fn expand(given: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for path in given {
        if !path.is_dir() {
            out.push(path.clone());
            continue;
        }
        let entries = std::fs::read_dir(path).map_err(|e| {
            format!(
                "cannot read the folder `{}`: {}",
                path.display(),
                crate::language::source::io_reason(&e)
            )
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        if files.is_empty() {
            return Err(format!(
                "the folder `{}` has no `*.yaml` or `*.yml` files",
                path.display()
            ));
        }
        files.sort();
        out.extend(files);
    }
    Ok(out)
}

pub fn check_command(args: &CheckArgs, color: Colors) -> i32 {
    let mut errors = 0;
    let mut warnings = 0;
    let files = match expand(&args.files) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_INVALID;
        }
    };
    let args = &CheckArgs {
        files,
        mock: args.mock.clone(),
        arazzo: args.arazzo.clone(),
    };
    if !args.mock.is_empty() && args.files.len() != 1 {
        eprintln!(
            "error: `--mock` checks mock files against one flow, but {} files were given",
            args.files.len()
        );
        return EXIT_INVALID;
    }
    let flow_path = args.files[0].to_string_lossy().to_string();
    let checks = args
        .files
        .iter()
        .map(|p| (p.to_string_lossy().to_string(), None))
        .chain(
            args.mock
                .iter()
                .map(|m| (m.to_string_lossy().to_string(), Some(flow_path.clone()))),
        );
    let count = args.files.len() + args.mock.len();
    for (name, flow) in checks {
        let result = match flow {
            Some(flow) => check_mock(&name, &flow),
            None => check_one(&name),
        };
        let diagnostics = match result {
            Ok((summary, warns)) => {
                println!("ok  {name} ({summary})");
                warns
            }
            Err(diags) => diags,
        };
        errors += diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count();
        warnings += diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Warning)
            .count();
        print_diagnostics(&diagnostics, color);
    }
    if errors + warnings > 0 {
        eprintln!(
            "{}, {} in {} file(s)",
            plural(errors, "error"),
            plural(warnings, "warning"),
            count
        );
    }
    if errors > 0 { EXIT_INVALID } else { EXIT_OK }
}

/// Checks a flow, or a mock file against the flow it sits next to.
pub fn check_one(path: &str) -> Result<(String, Vec<Diagnostic>), Vec<Diagnostic>> {
    let mock_of = path
        .strip_suffix(".mock.yaml")
        .map(|s| format!("{s}.yaml"))
        .or_else(|| path.strip_suffix(".mock.yml").map(|s| format!("{s}.yml")));
    if let Some(flow_path) = mock_of {
        return check_mock(path, &flow_path);
    }
    if crate::run::cases::is_test_file(std::path::Path::new(path)) {
        let file = crate::run::cases::load(path)?;
        return Ok((
            format!(
                "tests for {}, {}",
                file.flow_path,
                plural(file.cases.len(), "case")
            ),
            Vec::new(),
        ));
    }
    let source = read_source(path).map_err(|d| vec![d])?;
    // An Arazzo document with several workflows, and no `--workflow`: each is checked.
    if let Ok(root) = crate::language::raw::parse(&source)
        && crate::language::arazzo::select::is_arazzo(&root)
        && !crate::language::arazzo::select::selected()
    {
        let ids = crate::language::arazzo::select::workflow_ids(&root);
        if ids.len() > 1 {
            let mut all: Vec<Diagnostic> = Vec::new();
            let mut failed = false;
            for id in &ids {
                let found = match crate::language::analyze::analyze_workflow(&source, Some(id)) {
                    Ok(checked) => checked.warnings,
                    Err(diagnostics) => {
                        failed = true;
                        diagnostics
                    }
                };
                // What the file says once (a literal, a step two workflows
                // share) is reported once.
                for d in found {
                    let same = |o: &Diagnostic| {
                        o.severity == d.severity && o.message == d.message && o.span == d.span
                    };
                    if !all.iter().any(same) {
                        all.push(d);
                    }
                }
            }
            return if failed {
                Err(all)
            } else {
                Ok((format!("Arazzo, {} workflows", ids.len()), all))
            };
        }
    }
    let checked = analyze(&source)?;
    let flow = &checked.flow;
    let mut warnings = checked.warnings.clone();
    // The worst case, worked out as `handoff plan` does: a run that could
    // spend its step budget before it ends is worth a warning.
    if let Some(steps) = crate::cli::plan::plan(flow).total_steps()
        && steps > flow.max_steps
    {
        warnings.push(
            Diagnostic::warning(format!(
                "in the worst case a run takes {steps} steps, more than `max_steps: {}`",
                flow.max_steps
            ))
            .help(
                "raise `max_steps`, or lower the loop's bound; `handoff plan` shows the worst case",
            ),
        );
    }
    Ok((
        format!(
            "flow `{}`, {} fields, {} steps",
            flow.name,
            flow.fields.len(),
            flow.steps.len()
        ),
        warnings,
    ))
}

/// Checks a mock file against a flow.
pub fn check_mock(
    path: &str,
    flow_path: &str,
) -> Result<(String, Vec<Diagnostic>), Vec<Diagnostic>> {
    if !std::path::Path::new(flow_path).exists() {
        return Err(vec![
            Diagnostic::error(format!(
                "cannot check `{path}`: there is no flow `{flow_path}` next to it"
            ))
            .help(format!("name its flow: `handoff check FLOW --mock {path}`")),
        ]);
    }
    let checked = crate::language::analyze::analyze_file(flow_path).map_err(|_| {
        vec![
            Diagnostic::error(format!(
                "cannot check `{path}`: its flow `{flow_path}` does not load"
            ))
            .help(format!("`handoff check {flow_path}` shows why")),
        ]
    })?;
    let source = read_source(path).map_err(|d| vec![d])?;
    let mock = Mock::load(&source, &checked.flow)?;
    Ok((
        if mock.signals.is_empty() {
            format!(
                "mock for {flow_path}, {} scripted responses",
                mock.entries.len()
            )
        } else {
            format!(
                "mock for {flow_path}, {} scripted responses, {}",
                mock.entries.len(),
                crate::cli::common::plural(mock.signals.len(), "signal")
            )
        },
        Vec::new(),
    ))
}
