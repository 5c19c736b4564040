//! `sources:` from a flow's YAML: each name's description loaded (see
//! [`crate::language::openapi`]), its server and credentials checked.

use std::sync::Arc;

use indexmap::IndexMap;

use crate::language::analyzer::{Analyzer, list};
use crate::language::diagnostic::did_you_mean;
use crate::language::openapi::sources::{ApiSource, Credential, KEYS};
use crate::language::openapi::{Api, Scheme};
use crate::language::raw::Node;
use crate::language::source::Span;

/// Parses `sources:`, loading each description. Problems are reported.
pub fn parse(cx: &mut Analyzer, node: &Node) -> IndexMap<String, Arc<ApiSource>> {
    let mut out = IndexMap::new();
    let Some(entries) = node.as_map() else {
        cx.error(
            node.span,
            "`sources` maps names to API descriptions, like `jobs: { openapi: apis/jobs.yaml }`",
        );
        return out;
    };
    for (key, value) in entries {
        let Some(name) = key.as_str() else {
            cx.not_text(key, "a source name");
            continue;
        };
        if !crate::language::analyzer::is_identifier(name) {
            cx.error_help(
                key.span,
                format!("`{name}` is not a usable source name"),
                "use letters, digits and `_`: steps call `name.operationId`",
            );
            continue;
        }
        match parse_one(cx, name, key.span, value) {
            Some(source) => {
                out.insert(name.to_string(), Arc::new(source));
            }
            None => cx.sources_failed.push(name.to_string()),
        }
    }
    out
}

fn parse_one(cx: &mut Analyzer, name: &str, span: Span, node: &Node) -> Option<ApiSource> {
    let body = cx.body(node, &format!("source `{name}`"), &KEYS, &["openapi"])?;
    let file_node = body.get("openapi")?;
    let file = cx.string(file_node, "the path of an OpenAPI document")?;
    let flow_dir = std::path::Path::new(&cx.source.name)
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let path = crate::language::openapi::load::tidy(&flow_dir.join(&file));
    let shown = path.to_string_lossy().into_owned();
    // An Arazzo document's lowering has read its descriptions already.
    let preloaded = cx.preloaded.iter().find(|(p, _)| *p == path);
    let api = match preloaded.map_or_else(
        || Api::load(&path, &shown).map(Arc::new),
        |(_, a)| Ok(a.clone()),
    ) {
        Ok(api) => api,
        Err(e) => {
            let d = e.diagnostic(&cx.source, file_node.span, format!("source `{name}`"));
            cx.push(d);
            return None;
        }
    };
    let server = match body.get("server") {
        Some(n) => cx.template(n)?,
        None => match api.default_server() {
            Some(url) => {
                let literal = Node {
                    span: file_node.span,
                    value: crate::language::raw::NodeValue::Str(url.to_string()),
                };
                cx.template(&literal)?
            }
            None => {
                cx.error_help(
                        node.span,
                        format!("source `{name}` needs a `server`: its document names no absolute server URL"),
                        "add `server: \"{{ jobs_url }}\"` with a field the operator sets (`env:`), never an input",
                    );
                return None;
            }
        },
    };
    let mut credentials = IndexMap::new();
    if let Some(creds) = body.get("credentials") {
        let Some(entries) = creds.as_map() else {
            cx.error(
                creds.span,
                "`credentials` maps the document's security schemes to secret fields",
            );
            return None;
        };
        for (k, v) in entries {
            let Some(scheme_name) = k.as_str() else {
                cx.not_text(k, "a security scheme's name");
                continue;
            };
            let Some(scheme) = api.schemes.get(scheme_name) else {
                let names: Vec<&str> = api.schemes.keys().map(String::as_str).collect();
                let help = did_you_mean(scheme_name, names.iter().copied()).unwrap_or_else(|| {
                    if names.is_empty() {
                        format!("`{}` declares no security schemes", api.shown)
                    } else {
                        format!("its schemes are {}", list(&names))
                    }
                });
                cx.error_help(
                    k.span,
                    format!("`{}` has no security scheme `{scheme_name}`", api.shown),
                    help,
                );
                continue;
            };
            if v.as_str() == Some("auth") {
                if !cx.has_auth {
                    cx.error_help(
                        v.span,
                        "`auth` sends the flow's managed token, but the flow has no `auth:`",
                        "add a top-level `auth:` with `client_id` and `client_secret`",
                    );
                    continue;
                }
                if !matches!(scheme, Scheme::OAuth2 | Scheme::Bearer) {
                    cx.error(
                        v.span,
                        format!(
                            "scheme `{scheme_name}` takes {}, not a bearer token",
                            scheme.describe()
                        ),
                    );
                    continue;
                }
                credentials.insert(scheme_name.to_string(), Credential::Managed);
                continue;
            }
            if let Scheme::Other(what) = scheme {
                cx.error(
                    k.span,
                    format!("scheme `{scheme_name}` is {what}, which handoff does not send"),
                );
                continue;
            }
            let Some(t) = cx.template(v) else { continue };
            let secret = t
                .mentions
                .iter()
                .any(|m| cx.fields.get(m).is_some_and(|f| f.secret));
            if !secret {
                cx.error_help(
                    v.span,
                    format!("the credential for `{scheme_name}` reads no secret field"),
                    "declare the field with `secret: true`: then no trace, log or error shows it",
                );
                continue;
            }
            credentials.insert(scheme_name.to_string(), Credential::Value(Box::new(t)));
        }
    }
    Some(ApiSource {
        name: name.to_string(),
        api,
        server,
        credentials,
        span,
    })
}
