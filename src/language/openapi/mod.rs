//! API descriptions a flow names under `sources:`, read once at load time.
//!
//! ```text
//! load (files, sibling $refs, 3.0 → 3.1 shapes) ─▶ Api (operations by id, in oas3's types)
//!                                                   └─▶ schema (jsonschema validators, by place)
//! ```
//!
//! The operations are read into oas3's types; `$ref`s are followed here, by
//! RFC 6901 pointer, to any place in the document or a sibling file (oas3
//! itself follows only `#/components/…`). Schemas are checked by jsonschema
//! against the files registered by their `file://` URIs, so a schema's own
//! `$ref`s resolve as the document wrote them. Nothing is fetched.

pub mod load;
pub mod schema;
pub mod sources;

use std::sync::{Arc, Mutex, OnceLock};

use indexmap::IndexMap;
use oas3::spec::{ObjectOrReference, Parameter, ParameterIn, SecurityScheme};
use serde_json::Value;

use crate::language::openapi::load::{Files, LoadError, Version};
use crate::language::source::{Source, Span};

/// A place in a description: a file (by its index) and a JSON pointer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Loc {
    pub file: usize,
    pub pointer: String,
}

impl Loc {
    fn child(&self, token: &str) -> Loc {
        Loc {
            file: self.file,
            pointer: format!("{}/{}", self.pointer, escape(token)),
        }
    }
}

/// A pointer token: `~` and `/` escaped (RFC 6901).
pub fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Where a parameter goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum In {
    Path,
    Query,
    Header,
    Cookie,
}

impl In {
    pub fn as_str(self) -> &'static str {
        match self {
            In::Path => "path",
            In::Query => "query",
            In::Header => "header",
            In::Cookie => "cookie",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub location: In,
    pub required: bool,
    pub schema: Option<Loc>,
    /// The parameter's declaration.
    pub at: Loc,
}

#[derive(Debug, Clone)]
pub struct BodySpec {
    pub required: bool,
    /// The first media type the document lists (JSON preferred).
    pub content_type: String,
    pub schema: Option<Loc>,
    pub at: Loc,
}

#[derive(Debug, Clone)]
pub struct ResponseSpec {
    /// `200`, `2XX` or `default`, as written.
    pub status: String,
    /// The JSON schema of its body, when it declares one.
    pub schema: Option<Loc>,
}

impl BodySpec {
    /// Whether the body is sent as `application/x-www-form-urlencoded`.
    pub fn is_form(&self) -> bool {
        self.content_type
            .to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
    }
}

impl ResponseSpec {
    pub fn matches(&self, status: u16) -> bool {
        let s = self.status.to_ascii_uppercase();
        if let Some(class) = s.strip_suffix("XX") {
            return class.parse::<u16>().ok() == Some(status / 100);
        }
        s.parse::<u16>().ok() == Some(status)
    }
}

/// How an operation is authenticated, as its document declares.
#[derive(Debug, Clone, PartialEq)]
pub enum Scheme {
    Bearer,
    Basic,
    ApiKey {
        location: In,
        name: String,
    },
    /// OAuth2 client credentials: the flow's managed token (`auth:`).
    OAuth2,
    /// One handoff does not send (OpenID Connect, mutual TLS, other HTTP schemes).
    Other(String),
}

impl Scheme {
    pub fn describe(&self) -> String {
        match self {
            Scheme::Bearer => "an HTTP bearer token".into(),
            Scheme::Basic => "HTTP basic credentials".into(),
            Scheme::ApiKey { location, name } => {
                format!("an API key in the {} `{name}`", location.as_str())
            }
            Scheme::OAuth2 => "an OAuth2 token".into(),
            Scheme::Other(s) => format!("`{s}`, which handoff does not send"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Operation {
    pub id: String,
    pub method: String,
    /// The path template, such as `/jobs/{jobId}`.
    pub path: String,
    pub summary: Option<String>,
    pub params: Vec<Param>,
    pub body: Option<BodySpec>,
    pub responses: Vec<ResponseSpec>,
    /// Alternatives, each a set of scheme names that together suffice; empty
    /// when the operation needs no credentials.
    pub security: Vec<Vec<String>>,
    pub at: Loc,
}

impl Operation {
    /// The response declared for a status: the exact code, then its class, then `default`.
    pub fn response_for(&self, status: u16) -> Option<&ResponseSpec> {
        let exact = self
            .responses
            .iter()
            .find(|r| r.status == status.to_string());
        exact
            .or_else(|| {
                self.responses
                    .iter()
                    .find(|r| r.status.len() == 3 && r.status.ends_with("XX") && r.matches(status))
            })
            .or_else(|| self.responses.iter().find(|r| r.status == "default"))
    }
}

/// One loaded description.
pub struct Api {
    /// The file as the flow names it.
    pub shown: String,
    pub version: Version,
    pub files: Vec<load::ApiFile>,
    /// Where each operation is, by `operationId`: found when the document
    /// loads; read into an [`Operation`] only when a flow uses it.
    index: IndexMap<String, Located>,
    built: Mutex<std::collections::HashMap<String, Arc<Operation>>>,
    pub schemes: IndexMap<String, Scheme>,
    /// The validators' registry of the files, built at the first validation.
    registry: OnceLock<Result<jsonschema::Registry<'static>, String>>,
    validators: Mutex<std::collections::HashMap<Loc, Arc<jsonschema::Validator>>>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("shown", &self.shown)
            .field("operations", &self.index.len())
            .finish()
    }
}

/// Where an operation is declared.
#[derive(Debug, Clone)]
struct Located {
    method: &'static str,
    path: String,
    item: Loc,
    op: Loc,
}

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

impl Api {
    /// Reads a description and indexes its operations by `operationId`.
    pub fn load(path: &std::path::Path, shown: &str) -> Result<Api, LoadError> {
        let Files { version, files } = load::load(path, shown)?;
        let mut api = Api {
            shown: shown.to_string(),
            version,
            files,
            index: IndexMap::new(),
            built: Mutex::new(Default::default()),
            schemes: IndexMap::new(),
            registry: OnceLock::new(),
            validators: Mutex::new(Default::default()),
        };
        api.index()?;
        Ok(api)
    }

    fn root(&self) -> &Value {
        &self.files[0].value
    }

    /// The source and span of a place, for a diagnostic's second label.
    pub fn span(&self, loc: &Loc) -> Option<(Arc<Source>, Span)> {
        let file = self.files.get(loc.file)?;
        Some((
            file.source.clone(),
            load::span_of(&file.source, &loc.pointer)?,
        ))
    }

    /// The document's first server, when it is an absolute URL with no
    /// variables: where its operations go unless the flow says otherwise.
    pub fn default_server(&self) -> Option<&str> {
        self.files[0]
            .value
            .pointer("/servers/0/url")
            .and_then(Value::as_str)
            .filter(|u| (u.starts_with("https://") || u.starts_with("http://")) && !u.contains('{'))
    }

    pub fn value(&self, loc: &Loc) -> Option<&Value> {
        let file = self.files.get(loc.file)?;
        if loc.pointer.is_empty() {
            return Some(&file.value);
        }
        file.value.pointer(&loc.pointer)
    }

    /// Follows `$ref`s from `loc` to the object they name.
    pub fn resolve(&self, loc: &Loc) -> Result<(Loc, &Value), String> {
        let mut loc = loc.clone();
        for _ in 0..32 {
            let value = self
                .value(&loc)
                .ok_or_else(|| format!("`{}` names nothing", self.name_of(&loc)))?;
            let Some(r) = value.get("$ref").and_then(Value::as_str) else {
                return Ok((loc, value));
            };
            loc = self.target(loc.file, r)?;
        }
        Err(format!(
            "`$ref`s at `{}` go round in a circle",
            self.name_of(&loc)
        ))
    }

    /// Where a `$ref` written in file `from` points.
    fn target(&self, from: usize, r: &str) -> Result<Loc, String> {
        let (file_part, fragment) = r.split_once('#').unwrap_or((r, ""));
        let file = if file_part.is_empty() {
            from
        } else {
            let dir = self.files[from]
                .path
                .parent()
                .unwrap_or(std::path::Path::new("/"));
            let wanted = dir.join(file_part);
            self.files
                .iter()
                .position(|f| same_file(&f.path, &wanted))
                .ok_or_else(|| format!("`$ref: {r}` names a file that did not load"))?
        };
        let pointer = percent_encoding::percent_decode_str(fragment)
            .decode_utf8_lossy()
            .into_owned();
        if !pointer.is_empty() && !pointer.starts_with('/') {
            return Err(format!(
                "`$ref: {r}` uses an anchor; handoff follows JSON pointers (`#/…`)"
            ));
        }
        Ok(Loc { file, pointer })
    }

    /// A place as a reader finds it: `file#/pointer`.
    pub fn name_of(&self, loc: &Loc) -> String {
        format!(
            "{}#{}",
            self.files
                .get(loc.file)
                .map_or("?", |f| f.source.name.as_str()),
            loc.pointer
        )
    }

    fn index(&mut self) -> Result<(), LoadError> {
        let err = |m: String| LoadError {
            message: m,
            at: None,
        };
        let root = self.files[0].value.clone();
        if let Some(schemes) = root
            .pointer("/components/securitySchemes")
            .and_then(Value::as_object)
        {
            for (name, _) in schemes {
                let at = Loc {
                    file: 0,
                    pointer: format!("/components/securitySchemes/{}", escape(name)),
                };
                let (_, value) = self.resolve(&at).map_err(err)?;
                let scheme: SecurityScheme =
                    serde_json::from_value(value.clone()).map_err(|e| {
                        err(format!(
                            "security scheme `{name}` in `{}` is not valid OpenAPI: {e}",
                            self.shown
                        ))
                    })?;
                self.schemes.insert(name.clone(), scheme_of(&scheme));
            }
        }
        let Some(paths) = root.get("paths").and_then(Value::as_object) else {
            return Ok(());
        };
        let mut found: Vec<(String, Located)> = Vec::new();
        for (path, item) in paths {
            let item_loc = Loc {
                file: 0,
                pointer: format!("/paths/{}", escape(path)),
            };
            let (item_loc, item) = if item.get("$ref").is_some() {
                self.resolve(&item_loc).map_err(err)?
            } else {
                (item_loc, item)
            };
            for method in METHODS {
                let Some(op) = item.get(method) else {
                    continue;
                };
                // An operation without an id is named by its method and
                // path (`GET /info.0.json`), which no `operationId` can be
                // mistaken for.
                let id = match op.get("operationId").and_then(Value::as_str) {
                    Some(id) => id.to_string(),
                    None => format!("{} {path}", method.to_ascii_uppercase()),
                };
                let located = Located {
                    method,
                    path: path.clone(),
                    op: item_loc.child(method),
                    item: item_loc.clone(),
                };
                found.push((id, located));
            }
        }
        for (id, located) in found {
            if self.index.insert(id.clone(), located).is_some() {
                return Err(err(format!(
                    "`{}` has two operations with the id `{id}`",
                    self.shown
                )));
            }
        }
        Ok(())
    }

    /// The operation with this `operationId`, read into its types at its
    /// first use; `Err` when the document declares it wrongly.
    pub fn operation(&self, id: &str) -> Option<Result<Arc<Operation>, String>> {
        let located = self.index.get(id)?;
        if let Some(op) = self.built.lock().ok().and_then(|b| b.get(id).cloned()) {
            return Some(Ok(op));
        }
        let built = self.build(id, located).map(Arc::new);
        if let (Ok(op), Ok(mut cache)) = (&built, self.built.lock()) {
            cache.insert(id.to_string(), op.clone());
        }
        Some(built)
    }

    fn build(&self, id: &str, located: &Located) -> Result<Operation, String> {
        let err = |m: String| m;
        let op_loc = located.op.clone();
        let item_loc = located.item.clone();
        let method = located.method;
        let path = &located.path;
        let op_value = self
            .value(&op_loc)
            .ok_or_else(|| format!("`{}` names nothing", self.name_of(&op_loc)))?;
        let global_security = security_of(self.root().get("security"));
        let shared: Vec<Value> = self
            .value(&item_loc)
            .and_then(|item| item.get("parameters"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        {
            {
                let op: oas3::spec::Operation =
                    serde_json::from_value(op_value.clone()).map_err(|e| {
                        err(format!(
                            "`{}` is not a valid OpenAPI operation: {e}",
                            self.name_of(&op_loc)
                        ))
                    })?;
                let id = id.to_string();
                let mut params: Vec<Param> = Vec::new();
                let own = op_loc.child("parameters");
                let shared_loc = item_loc.child("parameters");
                let declared = op
                    .parameters
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (own.child(&i.to_string()), p.clone()))
                    .chain(shared.iter().enumerate().filter_map(|(i, v)| {
                        let p = serde_json::from_value::<ObjectOrReference<Parameter>>(v.clone())
                            .ok()?;
                        Some((shared_loc.child(&i.to_string()), p))
                    }));
                for (at, declared) in declared {
                    let (at, param) = match declared {
                        ObjectOrReference::Object(p) => (at, p),
                        ObjectOrReference::Ref { .. } => {
                            let (at, v) = self.resolve(&at).map_err(err)?;
                            let p: Parameter = serde_json::from_value(v.clone()).map_err(|e| {
                                err(format!(
                                    "`{}` is not a valid parameter: {e}",
                                    self.name_of(&at)
                                ))
                            })?;
                            (at, p)
                        }
                    };
                    let location = match param.location {
                        ParameterIn::Path => In::Path,
                        ParameterIn::Query => In::Query,
                        ParameterIn::Header => In::Header,
                        ParameterIn::Cookie => In::Cookie,
                    };
                    // OpenAPI: these header parameters "SHALL be ignored" (the
                    // body's media type, `Accept` and security say them).
                    if location == In::Header
                        && ["accept", "content-type", "authorization"]
                            .contains(&param.name.to_ascii_lowercase().as_str())
                    {
                        continue;
                    }
                    // An operation's own parameter overrides the path's of the same name and place.
                    if params
                        .iter()
                        .any(|p| p.name == param.name && p.location == location)
                    {
                        continue;
                    }
                    let schema = self
                        .value(&at)
                        .and_then(|v| v.get("schema"))
                        .map(|_| at.child("schema"));
                    params.push(Param {
                        required: param.required.unwrap_or(false) || location == In::Path,
                        name: param.name,
                        location,
                        schema,
                        at,
                    });
                }
                let body = match op_value.get("requestBody") {
                    Some(_) => Some(self.body_of(&op_loc.child("requestBody")).map_err(err)?),
                    None => None,
                };
                let mut responses = Vec::new();
                if let Some(declared) = op_value.get("responses").and_then(Value::as_object) {
                    for status in declared.keys() {
                        let at = op_loc.child("responses").child(status);
                        let (at, value) = self.resolve(&at).map_err(err)?;
                        let schema = json_media(value.get("content"))
                            .filter(|(_, m)| m.get("schema").is_some())
                            .map(|(t, _)| at.child("content").child(&t).child("schema"));
                        responses.push(ResponseSpec {
                            status: status.clone(),
                            schema,
                        });
                    }
                }
                let security = match op_value.get("security") {
                    Some(s) => security_of(Some(s)),
                    None => global_security.clone(),
                };
                Ok(Operation {
                    id,
                    method: method.to_ascii_uppercase(),
                    path: path.clone(),
                    summary: op.summary.clone(),
                    params,
                    body,
                    responses,
                    security,
                    at: op_loc,
                })
            }
        }
    }

    fn body_of(&self, at: &Loc) -> Result<BodySpec, String> {
        let (at, value) = self.resolve(at)?;
        let content = value.get("content");
        // JSON when the operation takes it, else its first media type (a form, say).
        let chosen = json_media(content).or_else(|| {
            content
                .and_then(Value::as_object)
                .and_then(|c| c.iter().next())
                .map(|(t, m)| (t.clone(), m))
        });
        let (content_type, schema) = match chosen {
            Some((t, m)) => {
                let schema = m
                    .get("schema")
                    .map(|_| at.child("content").child(&t).child("schema"));
                (t, schema)
            }
            None => ("application/json".to_string(), None),
        };
        Ok(BodySpec {
            required: value.get("required").and_then(Value::as_bool) == Some(true),
            content_type,
            schema,
            at,
        })
    }

    /// The operation names, in the document's order, for did-you-mean.
    pub fn operation_ids(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    /// The registry of every file, for validators.
    fn registry(&self) -> Result<&jsonschema::Registry<'static>, String> {
        self.registry
            .get_or_init(|| {
                let resources = self.files.iter().map(|f| (f.uri.clone(), f.value.clone()));
                jsonschema::Registry::new()
                    .draft(jsonschema::Draft::Draft202012)
                    .retrieve_known_draft_meta_schemas(false)
                    .extend(resources)
                    .and_then(|b| b.prepare())
                    .map_err(|e| format!("the schemas of `{}` do not load: {e}", self.shown))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The validator of the schema at `loc`, compiled once.
    pub fn validator(&self, loc: &Loc) -> Result<Arc<jsonschema::Validator>, String> {
        if let Some(v) = self
            .validators
            .lock()
            .ok()
            .and_then(|m| m.get(loc).cloned())
        {
            return Ok(v);
        }
        let registry = self.registry()?;
        let uri = format!(
            "{}#{}",
            self.files[loc.file].uri,
            percent_encoding::utf8_percent_encode(&loc.pointer, FRAGMENT)
        );
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .with_registry(registry)
            .build(&serde_json::json!({ "$ref": uri }))
            .map_err(|e| {
                format!(
                    "the schema at `{}` cannot be used: {}",
                    self.name_of(loc),
                    schema::words(&e)
                )
            })?;
        let validator = Arc::new(validator);
        if let Ok(mut m) = self.validators.lock() {
            m.insert(loc.clone(), validator.clone());
        }
        Ok(validator)
    }

    /// Checks `instance` against the schema at `loc`: each problem as a JSON
    /// path and words that never quote the instance's values.
    pub fn check(&self, loc: &Loc, instance: &Value) -> Result<Vec<schema::Problem>, String> {
        let validator = self.validator(loc)?;
        Ok(schema::problems(&validator, instance))
    }
}

/// Characters a JSON pointer keeps in a URI fragment.
const FRAGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'~')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.');

fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    let clean = |p: &std::path::Path| {
        let mut out = std::path::PathBuf::new();
        for part in p.components() {
            match part {
                std::path::Component::ParentDir => {
                    out.pop();
                }
                std::path::Component::CurDir => {}
                other => out.push(other),
            }
        }
        out
    };
    clean(a) == clean(b)
}

/// The JSON media type of a `content` map (`application/json`, `*+json`),
/// else none.
fn json_media(content: Option<&Value>) -> Option<(String, &Value)> {
    let map = content?.as_object()?;
    map.iter()
        .find(|(t, _)| {
            let t = t
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            t == "application/json" || t.ends_with("+json") || t == "*/*"
        })
        .map(|(t, m)| (t.clone(), m))
}

fn security_of(value: Option<&Value>) -> Vec<Vec<String>> {
    let Some(list) = value.and_then(Value::as_array) else {
        return Vec::new();
    };
    let alternatives: Vec<Vec<String>> = list
        .iter()
        .filter_map(Value::as_object)
        .map(|req| req.keys().cloned().collect())
        .collect();
    // `{}` among the alternatives: credentials are optional.
    if alternatives.iter().any(Vec::is_empty) {
        return Vec::new();
    }
    alternatives
}

fn scheme_of(scheme: &SecurityScheme) -> Scheme {
    match scheme {
        SecurityScheme::Http { scheme, .. } if scheme.eq_ignore_ascii_case("bearer") => {
            Scheme::Bearer
        }
        SecurityScheme::Http { scheme, .. } if scheme.eq_ignore_ascii_case("basic") => {
            Scheme::Basic
        }
        SecurityScheme::Http { scheme, .. } => Scheme::Other(format!("http {scheme}")),
        SecurityScheme::ApiKey { name, location, .. } => match location.as_str() {
            "header" => Scheme::ApiKey {
                location: In::Header,
                name: name.clone(),
            },
            "query" => Scheme::ApiKey {
                location: In::Query,
                name: name.clone(),
            },
            "cookie" => Scheme::ApiKey {
                location: In::Cookie,
                name: name.clone(),
            },
            other => Scheme::Other(format!("apiKey in {other}")),
        },
        SecurityScheme::OAuth2 { .. } => Scheme::OAuth2,
        SecurityScheme::OpenIdConnect { .. } => Scheme::Other("openIdConnect".into()),
        #[allow(unreachable_patterns)]
        _ => Scheme::Other("mutualTLS".into()),
    }
}
