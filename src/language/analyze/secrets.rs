//! Secret checks over a parsed flow: which fields can come to hold a secret
//! (secrecy spreads through writes), a warning for one not marked secret,
//! and an error for a secret that would reach a URL.

use std::collections::BTreeSet;

use indexmap::IndexMap;

use crate::language::analyzer::Analyzer;
use crate::language::diagnostic::Diagnostic;
use crate::language::fields::FieldDecl;
use crate::language::flow::Step;

/// `seed`, and every field a step writes from a template that reads one of
/// them, until nothing changes: how secrecy, or a caller's reach, spreads.
pub fn spread(mut seed: BTreeSet<String>, steps: &[Step]) -> BTreeSet<String> {
    loop {
        let before = seed.len();
        for step in steps {
            for (field, reads) in step.kind.writes() {
                if reads.iter().any(|r| seed.contains(r)) {
                    seed.insert(field.to_string());
                }
            }
        }
        if seed.len() == before {
            return seed;
        }
    }
}

/// Which fields can hold secrets, and whether any reaches a URL.
pub fn check_secrets(
    cx: &mut Analyzer,
    fields: &IndexMap<String, FieldDecl>,
    steps: &[Step],
    auth: Option<&crate::language::auth::Auth>,
) {
    let secret = spread(
        fields
            .values()
            .filter(|f| f.secret)
            .map(|f| f.name.clone())
            .collect(),
        steps,
    );
    // An item (`for_each`'s `as:`) cannot be declared secret: it is masked
    // when its list is built from a secret, and says so in no warning.
    let items: Vec<&str> = steps
        .iter()
        .filter_map(|s| match &s.kind {
            crate::steps::StepKind::ForEach(f) => Some(f.item.as_str()),
            _ => None,
        })
        .collect();
    for field in fields
        .values()
        .filter(|f| !f.secret && secret.contains(&f.name) && !items.contains(&f.name.as_str()))
    {
        cx.push(
            Diagnostic::warning(format!(
                "field `{}` receives a value built from a secret",
                field.name
            ))
            .at(&cx.source, field.span)
            .label("not marked secret")
            .help("add `secret: true`; handoff masks it either way, but the flow should say so"),
        );
    }
    for template in auth.map(|a| a.url_templates()).unwrap_or_default() {
        if let Some(name) = template.mentions.iter().find(|r| secret.contains(*r)) {
            cx.push(
                Diagnostic::error(format!(
                    "`auth.token_url` puts secret field `{name}` into a URL"
                ))
                .at(&cx.source, template.span)
                .label("URLs end up in logs and proxies")
                .help("send secrets in headers"),
            );
        }
    }
    for step in steps {
        for template in step.kind.url_templates() {
            if let Some(name) = template.mentions.iter().find(|r| secret.contains(*r)) {
                cx.push(
                    Diagnostic::error(format!("step `{}` puts secret field `{name}` into a URL", step.id))
                        .at(&cx.source, template.span)
                        .label("URLs end up in logs and proxies")
                        .help("send secrets in headers; an `http` step can opt in with `allow_secret_in_url: true`"),
                );
            }
        }
    }
}
