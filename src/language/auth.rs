//! A flow's `auth:` section: how the NWC steps get their bearer token, so a
//! flow need not build the `Authorization` header by hand.
//!
//! ```yaml
//! auth:                                  # a personal access token
//!   token: "{{ token }}"
//!
//! auth:                                  # an app: client credentials
//!   client_id: "{{ client_id }}"
//!   client_secret: "{{ client_secret }}"
//!   token_url: "{{ base_url }}/authentication/v1/token"   # the default
//!   format: json                         # or `form`
//! ```
//!
//! The token and the client secret must come from secret fields: they are
//! credentials, and the analyser proves they are masked everywhere.

use crate::language::analyzer::Analyzer;
use crate::language::raw::Node;
use crate::language::source::Span;
use crate::language::template::Template;

/// The path the token URL defaults to, after the flow's `base_url` field.
pub const TOKEN_PATH: &str = "/authentication/v1/token";

// Built once per flow, never moved in a hot loop: variant size does not matter.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Auth {
    /// A personal access token, sent as it is.
    Token { token: Template, span: Span },
    /// An app token, fetched with client credentials and renewed before it expires.
    Client(ClientCredentials),
}

#[derive(Debug)]
pub struct ClientCredentials {
    pub client_id: Template,
    pub client_secret: Template,
    /// `None`: the flow's `base_url` field, then [`TOKEN_PATH`].
    pub token_url: Option<Template>,
    /// Send the credentials as a form rather than as JSON.
    pub form: bool,
    pub span: Span,
}

pub const KEYS: [&str; 5] = ["token", "client_id", "client_secret", "token_url", "format"];

impl Auth {
    pub fn parse(cx: &mut Analyzer, node: &Node) -> Option<Auth> {
        let body = cx.body(node, "`auth`", &KEYS, &[])?;
        let secret = |cx: &mut Analyzer, key: &str| -> Option<Template> {
            let n = body.get(key)?;
            let t = cx.template(n)?;
            if !t
                .mentions
                .iter()
                .any(|m| cx.fields.get(m).is_some_and(|f| f.secret))
            {
                cx.error_help(
                    t.span,
                    format!("`auth.{key}` is a credential, but it reads no secret field"),
                    "read it from a field with `secret: true` (and `env:`), so it is masked everywhere and never written in the file",
                );
                return None;
            }
            Some(t)
        };
        match (body.get("token"), body.get("client_id")) {
            (Some(_), None) => {
                for key in ["client_secret", "token_url", "format"] {
                    if let Some(n) = body.get(key) {
                        cx.error(
                            n.span,
                            format!("`auth.{key}` goes with `client_id`, not with `token`"),
                        );
                        return None;
                    }
                }
                Some(Auth::Token {
                    token: secret(cx, "token")?,
                    span: node.span,
                })
            }
            (None, Some(id)) => {
                let client_id = cx.template(id);
                if body.get("client_secret").is_none() {
                    cx.error(node.span, "`auth` with `client_id` needs `client_secret`");
                    return None;
                }
                let client_secret = secret(cx, "client_secret");
                let token_url = match body.get("token_url") {
                    Some(n) => Some(cx.template(n)?),
                    None if cx.fields.contains_key("base_url") => None,
                    None => {
                        cx.error_help(
                            node.span,
                            "`auth` needs `token_url`, as the flow has no `base_url` field",
                            format!("say `token_url: \"https://us.nintex.io{TOKEN_PATH}\"`, or declare a `base_url` field"),
                        );
                        return None;
                    }
                };
                let form = match body.get("format") {
                    None => false,
                    Some(n) => match n.as_str() {
                        Some("json") => false,
                        Some("form") => true,
                        _ => {
                            cx.error_help(
                                n.span,
                                "`auth.format` is `json` or `form`",
                                "how the client credentials are sent to the token URL",
                            );
                            return None;
                        }
                    },
                };
                Some(Auth::Client(ClientCredentials {
                    client_id: client_id?,
                    client_secret: client_secret?,
                    token_url,
                    form,
                    span: node.span,
                }))
            }
            (Some(t), Some(_)) => {
                cx.error(
                    t.span,
                    "`auth` has `token` (a personal access token) or `client_id` (an app), not both",
                );
                None
            }
            (None, None) => {
                cx.error_help(
                    node.span,
                    "`auth` needs `token` or `client_id`",
                    "`token: \"{{ token }}\"` for a personal access token; `client_id` and `client_secret` for an app",
                );
                None
            }
        }
    }

    /// The fields its templates mention: what a request with the token reads.
    pub fn reads(&self) -> std::collections::BTreeSet<String> {
        match self {
            Auth::Token { token, .. } => token.mentions.clone(),
            Auth::Client(c) => c
                .client_id
                .mentions
                .iter()
                .chain(&c.client_secret.mentions)
                .chain(c.token_url.iter().flat_map(|t| &t.mentions))
                .cloned()
                .collect(),
        }
    }

    /// Templates that end up in a URL: the token URL's.
    pub fn url_templates(&self) -> Vec<&Template> {
        match self {
            Auth::Client(c) => c.token_url.iter().collect(),
            Auth::Token { .. } => Vec::new(),
        }
    }
}
