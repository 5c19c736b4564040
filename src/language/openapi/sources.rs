//! A flow's `sources:`: each a name for an API description, the server its
//! operations are sent to, and the credentials its security schemes take.
//!
//! ```yaml
//! sources:
//!   jobs:
//!     openapi: apis/jobs.yaml        # beside the flow file
//!     server: "{{ jobs_url }}"       # configuration: never a caller's input
//!     credentials:
//!       bearerAuth: "{{ jobs_token }}"   # a secret field
//!       oauth: auth                      # the flow's managed token
//! ```
//!
//! The analyser reads them (`crate::language::analyze::sources`); these are
//! the types it builds, which the `call:` steps hold.

use std::sync::Arc;

use indexmap::IndexMap;

use crate::language::openapi::Api;
use crate::language::source::Span;
use crate::language::template::Template;

pub const KEYS: [&str; 3] = ["openapi", "server", "credentials"];

/// One named description, ready for `call:` steps.
#[derive(Debug)]
pub struct ApiSource {
    pub name: String,
    pub api: Arc<Api>,
    /// The server URL its operations' paths are appended to.
    pub server: Template,
    pub credentials: IndexMap<String, Credential>,
    pub span: Span,
}

#[derive(Debug)]
pub enum Credential {
    /// A template over secret fields.
    Value(Box<Template>),
    /// The flow's managed token (`auth:`).
    Managed,
}

impl ApiSource {
    /// Whether some alternative of an operation's security is fully given.
    pub fn covers(&self, security: &[Vec<String>]) -> bool {
        security.is_empty()
            || security
                .iter()
                .any(|alt| alt.iter().all(|s| self.credentials.contains_key(s)))
    }

    pub fn templates(&self) -> Vec<&Template> {
        std::iter::once(&self.server)
            .chain(self.credentials.values().filter_map(|c| match c {
                Credential::Value(t) => Some(&**t),
                Credential::Managed => None,
            }))
            .collect()
    }
}
