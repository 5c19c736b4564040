//! Who can reach which field, and so where a secret may go.
//!
//! A field is set by a *caller* (a request to `serve`, a hook's event, a
//! batch row, a test case) only when it says `input: true`; an `env:` field
//! is the operator's configuration. Values that decide where a secret is
//! sent must be configuration: this pass finds the fields a caller can reach
//! (inputs, and what steps build from them) and the fields that stay
//! configuration for the whole run, and refuses a flow whose token would
//! follow a caller's value. At run time the engine sends a secret only to
//! the origins these fields and the flow's own literal URLs name.

use std::collections::BTreeSet;

use indexmap::IndexMap;

use crate::language::analyzer::Analyzer;
use crate::language::auth::Auth;
use crate::language::destinations::Destinations;
use crate::language::diagnostic::Diagnostic;
use crate::language::fields::FieldDecl;
use crate::language::fields::FieldType;
use crate::language::flow::Step;

/// Checks who reaches what, and returns where secrets may go.
pub fn check_reach(
    cx: &mut Analyzer,
    fields: &IndexMap<String, FieldDecl>,
    steps: &[Step],
    auth: Option<&Auth>,
) -> Destinations {
    let caller = caller_reached(fields, steps);
    for field in fields.values().filter(|f| f.input && f.env.is_some()) {
        cx.push(
            Diagnostic::warning(format!(
                "field `{}` is both an input and read from ${}",
                field.name,
                field.env.as_deref().unwrap_or_default()
            ))
            .at(&cx.source, field.span)
            .label("a caller's value overrides the operator's")
            .help(
                "an `env:` field is configuration, which callers (the API, hooks, batch rows) cannot set; \
                 with `input: true` as well, the environment is only the default for a caller's value. \
                 Drop `input: true` if callers must not choose it",
            ),
        );
    }
    let written: BTreeSet<&str> = steps
        .iter()
        .flat_map(|s| {
            s.kind
                .writes()
                .into_iter()
                .map(|(f, _)| f)
                .chain(s.output.values().map(String::as_str))
        })
        .collect();
    let config: Vec<String> = fields
        .values()
        .filter(|f| !caller.contains(&f.name) && !written.contains(f.name.as_str()))
        .filter(|f| f.ty == FieldType::Text && !f.secret)
        .map(|f| f.name.clone())
        .collect();
    let mut nwc_literal = BTreeSet::new();
    let mut literal = BTreeSet::new();
    for step in steps {
        for t in step.kind.origin_templates() {
            if let Some(o) = literal_origin(&t.source) {
                if step.kind.is_nwc() {
                    nwc_literal.insert(o.clone());
                }
                literal.insert(o);
            }
        }
    }
    let mut seen_sources: Vec<&str> = Vec::new();
    for step in steps {
        let crate::steps::StepKind::Call(call) = &step.kind else {
            continue;
        };
        let source = &call.source;
        if source.credentials.is_empty() || seen_sources.contains(&source.name.as_str()) {
            continue;
        }
        seen_sources.push(&source.name);
        if let Some(name) = source.server.mentions.iter().find(|m| caller.contains(*m)) {
            cx.push(
                Diagnostic::error(format!(
                    "the server of source `{}` reads `{name}`, which a caller can set",
                    source.name
                ))
                .at(&cx.source, source.server.span)
                .label("its credentials go to this URL")
                .help("build the server URL from configuration: `env:` fields and literal text"),
            );
        }
    }
    if let Some(auth) = auth {
        if let Some(base) = fields.get("base_url")
            && caller.contains("base_url")
        {
            cx.push(
                Diagnostic::error("`base_url` decides where the NWC token goes, but a caller can set it")
                    .at(&cx.source, base.span)
                    .label(if base.input { "input: true" } else { "built from an input" })
                    .help("make it configuration: `env: NWC_BASE_URL` (with a default if you like), without `input: true`"),
            );
        }
        for t in auth.url_templates() {
            if let Some(name) = t.mentions.iter().find(|m| caller.contains(*m)) {
                cx.push(
                    Diagnostic::error(format!(
                        "`auth.token_url` reads `{name}`, which a caller can set"
                    ))
                    .at(&cx.source, t.span)
                    .label("the client secret goes to this URL")
                    .help("build the token URL from configuration: `env:` fields and literal text"),
                );
            }
            if let Some(o) = literal_origin(&t.source) {
                nwc_literal.insert(o);
            }
        }
    }
    Destinations {
        config,
        nwc_literal: nwc_literal.into_iter().collect(),
        literal: literal.into_iter().collect(),
    }
}

/// Fields a caller can reach: inputs, and every field a step builds from one.
fn caller_reached(fields: &IndexMap<String, FieldDecl>, steps: &[Step]) -> BTreeSet<String> {
    crate::language::analyze::secrets::spread(
        fields
            .values()
            .filter(|f| f.input)
            .map(|f| f.name.clone())
            .collect(),
        steps,
    )
}

/// The origin a URL template's own text fixes, before any `{{`: none when a
/// template decides the scheme, host or port.
pub fn literal_origin(source: &str) -> Option<String> {
    let fixed = source
        .find("{{")
        .into_iter()
        .chain(source.find("{%"))
        .min()
        .map_or(source, |i| &source[..i])
        .trim_start();
    let after_scheme = fixed.find("://")? + 3;
    let authority_ends = fixed[after_scheme..].find(['/', '?', '#']);
    if authority_ends.is_none() && fixed.len() != source.trim_start().len() {
        // `https://{{ host }}` or `https://nwc.example{{ path }}`: the host is not fixed.
        return None;
    }
    reqwest::Url::parse(fixed)
        .ok()
        .as_ref()
        .and_then(url_origin)
}

/// `scheme://host:port`, the port spelled out even when it is the scheme's own.
pub fn url_origin(u: &reqwest::Url) -> Option<String> {
    Some(format!(
        "{}://{}:{}",
        u.scheme(),
        u.host_str()?.to_ascii_lowercase(),
        u.port_or_known_default()?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_text_that_fixes_the_host_names_an_origin() {
        let o = |s| literal_origin(s);
        assert_eq!(
            o("https://NWC.example/x/{{ id }}").as_deref(),
            Some("https://nwc.example:443")
        );
        assert_eq!(
            o("http://127.0.0.1:9/a").as_deref(),
            Some("http://127.0.0.1:9")
        );
        assert_eq!(
            o("https://nwc.example").as_deref(),
            Some("https://nwc.example:443")
        );
        assert_eq!(o("https://{{ host }}/x"), None);
        assert_eq!(o("https://nwc.example{{ rest }}"), None);
        assert_eq!(o("https://nwc.example.{{ evil }}/"), None);
        assert_eq!(o("{{ base_url }}/x"), None);
        assert_eq!(
            o("https://nwc.example?{{ q }}").as_deref(),
            Some("https://nwc.example:443")
        );
    }
}
