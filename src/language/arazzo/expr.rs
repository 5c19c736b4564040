//! Arazzo's runtime expressions (`$inputs.x`, `$steps.s.outputs.o#/0/id`,
//! `$response.header.Retry-After`, `$statusCode`) and its criteria (simple
//! conditions, `regex`, `jsonpath`), written as handoff templates over the
//! fields a workflow is lowered to.
//!
//! Where the specification leaves room, what handoff does is in
//! docs/arazzo.md: string comparisons fold case (the text says they MUST be
//! case-insensitive), a pointer that finds nothing is `null`, and a
//! `jsonpath` condition is asked of a list that holds the context, so
//! `$[?count(@.products) > 0]` tests the body itself.

/// A runtime expression, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Inputs(String),
    StepOutput {
        step: String,
        name: String,
    },
    StatusCode,
    ResponseBody,
    ResponseHeader(String),
    /// `$outputs.name`: a workflow's own outputs, or in a step that runs a
    /// workflow, that workflow's.
    Outputs(String),
    WorkflowOutput {
        workflow: String,
        name: String,
    },
    WorkflowInput {
        workflow: String,
        name: String,
    },
    SourceUrl(String),
    ComponentsParameter(String),
    /// `$request.header.X`, `$request.query.X`, `$request.path.X` (the part
    /// and the name), `$request.body` (name empty): what the step sent.
    Request(RequestPart, String),
    /// `$url`: the URL the step called.
    Url,
    /// `$method`: the HTTP method the step used.
    Method,
}

/// Which part of the request a `$request` expression reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RequestPart {
    Header,
    Query,
    Path,
    Body,
}

/// An expression and the JSON pointer after it (`#/0/id`, or `.items[0]`
/// in a condition), `""` for the whole value.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    pub expr: Expr,
    pub pointer: String,
    /// A form outside the specification that runners accept and handoff
    /// reads too (`$steps.s.name` for `$steps.s.outputs.name`): the warning
    /// that says how the text writes it.
    pub loose: Option<String>,
}

/// How the lowering names things: the field each expression reads.
pub trait Names {
    /// The template expression for `r` (`find_pet__my_pet_id | pointer('/0')`).
    fn read(&self, r: &Reference) -> Result<String, String>;

    /// Warnings for what `read` accepted loosely since last asked.
    fn take_notes(&self) -> Vec<String> {
        Vec::new()
    }
}

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

fn token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// Parses one expression at the start of `text`; returns it and how many
/// bytes it took. `in_condition`: `.` and `[…]` after a value are lookups
/// (Arazzo's property and index operators), not part of a name.
pub fn parse(text: &str, in_condition: bool) -> Result<(Reference, usize), String> {
    parse_names(text, in_condition, false)
}

/// As [`parse`]; `spaces`: names may hold spaces (a `stepId` SHOULD NOT,
/// but may), read so only where the expression is a whole value.
pub fn parse_names(
    text: &str,
    in_condition: bool,
    spaces: bool,
) -> Result<(Reference, usize), String> {
    let Some(rest) = text.strip_prefix('$') else {
        return Err(format!("`{text}` is not a runtime expression"));
    };
    let word_end = rest
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(rest.len());
    let word = &rest[..word_end];
    let mut at = 1 + word_end;
    // The dotted segments after the first word, each a name.
    let segment = |at: &mut usize, what: &str, chars: fn(char) -> bool| {
        let tail = &text[*at..];
        let Some(tail) = tail.strip_prefix('.') else {
            return Err(format!("`${word}` needs {what} after a `.`"));
        };
        let len = tail.find(|c: char| !chars(c)).unwrap_or(tail.len());
        if len == 0 {
            return Err(format!("`${word}.` needs {what}"));
        }
        *at += 1 + len;
        Ok(tail[..len].to_string())
    };
    let dotted_name: fn(char) -> bool = if spaces {
        |c| (name_char(c) && c != '.') || c == ' '
    } else {
        |c| name_char(c) && c != '.'
    };
    let mut loose = None;
    let expr = match word {
        "statusCode" => Expr::StatusCode,
        "url" => Expr::Url,
        "method" => Expr::Method,
        "inputs" => Expr::Inputs(segment(&mut at, "an input's name", dotted_name)?),
        "outputs" => Expr::Outputs(segment(&mut at, "an output's name", dotted_name)?),
        "steps" => {
            let step = segment(&mut at, "a step's id", dotted_name)?;
            let kind = segment(&mut at, "`outputs`", dotted_name)?;
            if kind == "outputs" {
                let name = segment(&mut at, "an output's name", dotted_name)?;
                Expr::StepOutput { step, name }
            } else {
                // Jentic's runner and the specification's own `bnpl`
                // example leave `.outputs` out.
                loose = Some(format!(
                    "`$steps.{step}.{kind}` is read as `$steps.{step}.outputs.{kind}`: the specification writes `.outputs.`"
                ));
                Expr::StepOutput { step, name: kind }
            }
        }
        "workflows" => {
            let workflow = segment(&mut at, "a workflow's id", dotted_name)?;
            let kind = segment(&mut at, "`inputs` or `outputs`", dotted_name)?;
            let name = segment(&mut at, "a name", dotted_name)?;
            match kind.as_str() {
                "outputs" => Expr::WorkflowOutput { workflow, name },
                "inputs" => Expr::WorkflowInput { workflow, name },
                _ => {
                    return Err(format!(
                        "`$workflows.{workflow}.{kind}`: a workflow's expressions read its `inputs` or `outputs`"
                    ));
                }
            }
        }
        "sourceDescriptions" => {
            let name = segment(&mut at, "a source's name", dotted_name)?;
            let field = segment(&mut at, "`url`", dotted_name)?;
            if field != "url" {
                return Err(format!(
                    "`$sourceDescriptions.{name}.{field}` names an operation; only `operationId` takes one"
                ));
            }
            Expr::SourceUrl(name)
        }
        "components" => {
            let kind = segment(&mut at, "`parameters`", dotted_name)?;
            let name = segment(&mut at, "a parameter's name", dotted_name)?;
            if kind != "parameters" {
                return Err(format!(
                    "`$components.{kind}` is not a value: reusable actions are named by `reference`"
                ));
            }
            Expr::ComponentsParameter(name)
        }
        "response" | "request" => {
            let part = segment(&mut at, "`body`, `header`, `query` or `path`", dotted_name)?;
            match (word, part.as_str()) {
                ("response", "body") => Expr::ResponseBody,
                ("response", "header") => {
                    Expr::ResponseHeader(segment(&mut at, "a header's name", token_char)?)
                }
                ("response", other) => {
                    return Err(format!(
                        "`$response.{other}`: an answer has a `body` and `header`s"
                    ));
                }
                ("request", "body") => Expr::Request(RequestPart::Body, String::new()),
                ("request", "header") => Expr::Request(
                    RequestPart::Header,
                    segment(&mut at, "a header's name", token_char)?,
                ),
                ("request", "query") => Expr::Request(
                    RequestPart::Query,
                    segment(&mut at, "a parameter's name", dotted_name)?,
                ),
                ("request", "path") => Expr::Request(
                    RequestPart::Path,
                    segment(&mut at, "a parameter's name", dotted_name)?,
                ),
                (_, other) => {
                    return Err(format!(
                        "`$request.{other}`: a request has a `body`, `header`s, `query` and `path` parameters"
                    ));
                }
            }
        }
        _ => {
            return Err(format!(
                "`${word}` is not a runtime expression: they start with `$inputs`, `$steps`, `$outputs`, `$workflows`, `$response`, `$statusCode`, `$sourceDescriptions` or `$components`"
            ));
        }
    };
    let mut pointer = String::new();
    if text[at..].starts_with('#') {
        let tail = &text[at + 1..];
        let len = if in_condition {
            tail.find(|c: char| c.is_whitespace() || "()=!<>&|,".contains(c))
                .unwrap_or(tail.len())
        } else {
            tail.len()
        };
        pointer = tail[..len].to_string();
        if !pointer.is_empty() && !pointer.starts_with('/') {
            return Err(format!(
                "`#{pointer}` is not a JSON pointer: it starts with `/`"
            ));
        }
        at += 1 + len;
    }
    if in_condition {
        // `.name` and `[0]` / `['name']` after a value look into it.
        loop {
            let tail = &text[at..];
            if let Some(t) = tail.strip_prefix('.') {
                let len = t
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(t.len());
                if len == 0 {
                    break;
                }
                pointer.push('/');
                pointer.push_str(&escape(&t[..len]));
                at += 1 + len;
            } else if let Some(t) = tail.strip_prefix('[') {
                let Some(end) = t.find(']') else { break };
                let inner = t[..end].trim();
                let key = inner
                    .strip_prefix('\'')
                    .and_then(|k| k.strip_suffix('\''))
                    .unwrap_or(inner);
                pointer.push('/');
                pointer.push_str(&escape(key));
                at += 1 + end + 1;
            } else {
                break;
            }
        }
    }
    Ok((
        Reference {
            expr,
            pointer,
            loose,
        },
        at,
    ))
}

fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// A literal as a minijinja string literal.
pub fn quote(text: &str) -> String {
    let mut out = String::from("'");
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A value as Arazzo writes one: a whole runtime expression (the value, its
/// type kept), text with `{$…}` inside (text), or plain text.
pub enum Written {
    Expr(String),
    Text(String),
    Plain,
}

/// A string value of the document as a handoff template.
pub fn value(text: &str, names: &dyn Names) -> Result<Written, String> {
    let trimmed = text.trim();
    if trimmed.starts_with('$') {
        // `$response.body.result.passed`, as runners also read it: the
        // lookups after the value are a pointer.
        // A whole value whose step or workflow ids hold spaces.
        if trimmed.contains(' ')
            && !trimmed.contains("{$")
            && let Ok((r, used)) = parse_names(trimmed, true, true)
            && used == trimmed.len()
        {
            return Ok(Written::Expr(format!("{{{{ {} }}}}", names.read(&r)?)));
        }
        let (r, used) = parse(trimmed, true)?;
        if used == trimmed.len() {
            return Ok(Written::Expr(format!("{{{{ {} }}}}", names.read(&r)?)));
        }
        if !trimmed.contains("{$") {
            return Err(format!(
                "`{trimmed}` is not one runtime expression: `{}` follows it",
                &trimmed[used..]
            ));
        }
    }
    embedded(text, names)
}

/// Text with `{$…}` expressions inside, and nothing else read as one.
pub fn embedded(text: &str, names: &dyn Names) -> Result<Written, String> {
    if !text.contains("{$") {
        return Ok(Written::Plain);
    }
    let mut out = String::new();
    let mut rest = text;
    while let Some(open) = rest.find("{$") {
        out.push_str(&literal_text(&rest[..open]));
        let inner = &rest[open + 1..];
        let Some(close) = inner.find('}') else {
            return Err(format!(
                "`{{{inner}` opens an expression with `{{` and never closes it"
            ));
        };
        // `{$inputs.customer.name}`: lookups after the value, as in a
        // condition (the braces end it).
        let (r, used) = parse(&inner[..close], true)?;
        if used != close {
            return Err(format!(
                "`{}` is not one runtime expression",
                &inner[..close]
            ));
        }
        out.push_str(&format!("{{{{ {} }}}}", names.read(&r)?));
        rest = &inner[close + 1..];
    }
    out.push_str(&literal_text(rest));
    Ok(Written::Text(out))
}

/// Literal text inside a template: as it is, unless it holds template syntax.
fn literal_text(text: &str) -> String {
    if text.contains("{{") || text.contains("{%") || text.contains("{#") {
        format!("{{{{ {} }}}}", quote(text))
    } else {
        text.to_string()
    }
}

/// A simple condition (`$statusCode == 200 && $response.body#/ok == true`)
/// as a handoff condition. Comparisons fold the case of text on both sides.
pub fn condition(text: &str, names: &dyn Names) -> Result<String, String> {
    #[derive(Debug, PartialEq)]
    enum Tok {
        Value(String),
        Op(&'static str),
        Not,
        And,
        Or,
        Open,
        Close,
    }
    let mut toks = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i] as char;
        let rest = &text[i..];
        if c.is_whitespace() {
            i += 1;
        } else if c == '$' {
            let (r, used) = parse(rest, true)?;
            toks.push(Tok::Value(names.read(&r)?));
            i += used;
        } else if c == '\'' {
            // '' inside a string is a quote.
            let mut j = i + 1;
            let mut s = String::new();
            loop {
                let Some(ch) = text[j..].chars().next() else {
                    return Err(format!("a string in `{text}` is not closed with `'`"));
                };
                if ch == '\'' {
                    if text[j + 1..].starts_with('\'') {
                        s.push('\'');
                        j += 2;
                        continue;
                    }
                    j += 1;
                    break;
                }
                s.push(ch);
                j += ch.len_utf8();
            }
            toks.push(Tok::Value(quote(&s)));
            i = j;
        } else if let Some(op) = ["==", "!=", "<=", ">=", "&&", "||"]
            .into_iter()
            .find(|op| rest.starts_with(op))
        {
            toks.push(match op {
                "&&" => Tok::And,
                "||" => Tok::Or,
                "==" => Tok::Op("=="),
                "!=" => Tok::Op("!="),
                "<=" => Tok::Op("<="),
                _ => Tok::Op(">="),
            });
            i += 2;
        } else if c == '<' || c == '>' {
            toks.push(Tok::Op(if c == '<' { "<" } else { ">" }));
            i += 1;
        } else if c == '!' {
            toks.push(Tok::Not);
            i += 1;
        } else if c == '(' {
            toks.push(Tok::Open);
            i += 1;
        } else if c == ')' {
            toks.push(Tok::Close);
            i += 1;
        } else if c.is_ascii_digit() || c == '-' || c == '.' {
            let len = rest
                .find(|ch: char| !(ch.is_ascii_digit() || "-+.eE".contains(ch)))
                .unwrap_or(rest.len());
            let number = &rest[..len];
            if number.parse::<f64>().is_err() {
                return Err(format!("`{number}` in `{text}` is not a number"));
            }
            toks.push(Tok::Value(number.to_string()));
            i += len;
        } else if c.is_ascii_alphabetic() {
            let len = rest
                .find(|ch: char| !ch.is_ascii_alphanumeric())
                .unwrap_or(rest.len());
            let word = &rest[..len];
            toks.push(Tok::Value(match word {
                "true" | "false" => word.to_string(),
                "null" => "none".to_string(),
                _ => {
                    return Err(format!(
                        "`{word}` in `{text}` is not a value: text is written in single quotes, values come from `$` expressions"
                    ));
                }
            }));
            i += len;
        } else {
            return Err(format!(
                "`{c}` in `{text}` is not an operator Arazzo conditions have"
            ));
        }
    }
    if toks.is_empty() {
        return Err("an empty condition".to_string());
    }
    // Comparisons bind tighter than `!`, `&&` and `||`, as in minijinja:
    // each operand of a comparison is folded.
    let mut out = Vec::new();
    let mut k = 0;
    while k < toks.len() {
        match &toks[k] {
            Tok::Value(v) => {
                if let (Some(Tok::Op(op)), Some(Tok::Value(w))) = (toks.get(k + 1), toks.get(k + 2))
                {
                    // Text folds its case; a number, a boolean or null has none.
                    let plain = |x: &str| {
                        x.parse::<f64>().is_ok() || matches!(x, "true" | "false" | "none")
                    };
                    if plain(v) || plain(w) {
                        out.push(format!("{v} {op} {w}"));
                    } else {
                        out.push(format!("({v} | fold_case) {op} ({w} | fold_case)"));
                    }
                    k += 3;
                    continue;
                }
                out.push(v.clone());
            }
            Tok::Op(op) => {
                return Err(format!(
                    "`{op}` in `{text}` compares two values: put a value on each side"
                ));
            }
            Tok::Not => out.push("not".to_string()),
            Tok::And => out.push("and".to_string()),
            Tok::Or => out.push("or".to_string()),
            Tok::Open => out.push("(".to_string()),
            Tok::Close => out.push(")".to_string()),
        }
        k += 1;
    }
    Ok(out.join(" ").replace("( ", "(").replace(" )", ")"))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Plain;
    impl Names for Plain {
        fn read(&self, r: &Reference) -> Result<String, String> {
            let base = match &r.expr {
                Expr::Inputs(n) => n.replace('-', "_"),
                Expr::StatusCode => "status".into(),
                Expr::ResponseBody => "body".into(),
                Expr::ResponseHeader(h) => format!("headers[{}]", quote(&h.to_lowercase())),
                Expr::StepOutput { step, name } => format!("{step}__{name}"),
                other => return Err(format!("{other:?}")),
            };
            Ok(if r.pointer.is_empty() {
                base
            } else {
                format!("({base} | pointer({}))", quote(&r.pointer))
            })
        }
    }

    #[test]
    fn expressions_parse_with_their_pointers() {
        let (r, used) = parse("$response.body#/0/id", false).unwrap();
        assert_eq!(
            (r.expr, r.pointer.as_str(), used),
            (Expr::ResponseBody, "/0/id", 20)
        );
        let (r, _) = parse("$steps.find-pet.outputs.my_pet_id", false).unwrap();
        assert_eq!(
            r.expr,
            Expr::StepOutput {
                step: "find-pet".into(),
                name: "my_pet_id".into()
            }
        );
        let (r, _) = parse("$response.header.X-Expires-After", false).unwrap();
        assert_eq!(r.expr, Expr::ResponseHeader("X-Expires-After".into()));
        // Without `.outputs`, as some runners write it: read, with a note.
        let (r, _) = parse("$steps.a.result", false).unwrap();
        assert_eq!(
            r.expr,
            Expr::StepOutput {
                step: "a".into(),
                name: "result".into()
            }
        );
        assert!(r.loose.is_some());
        assert!(parse("$request.cookie.x", false).is_err());
        assert!(parse("$nothing", false).is_err());
        assert_eq!(
            parse("$request.body", false).unwrap().0.expr,
            Expr::Request(RequestPart::Body, String::new())
        );
    }

    #[test]
    fn conditions_become_templates() {
        let c = |t: &str| condition(t, &Plain).unwrap();
        assert_eq!(c("$statusCode == 200"), "status == 200");
        assert_eq!(
            c("$response.body#/state == 'Ready' && !($statusCode >= 500)"),
            "((body | pointer('/state')) | fold_case) == ('Ready' | fold_case) and not (status >= 500)"
        );
        assert_eq!(
            c("$response.body.items[0].name != 'it''s'"),
            "((body | pointer('/items/0/name')) | fold_case) != ('it\\'s' | fold_case)"
        );
        assert!(condition("$statusCode == ", &Plain).is_err());
        assert!(condition("status == 200", &Plain).is_err());
        // Two values of unknown type fold both sides.
        assert_eq!(
            c("$response.header.X-State == $inputs.state"),
            "(headers['x-state'] | fold_case) == (state | fold_case)"
        );
    }

    #[test]
    fn values_keep_their_type_or_become_text() {
        let Written::Expr(e) = value("$inputs.pet-id", &Plain).unwrap() else {
            panic!()
        };
        assert_eq!(e, "{{ pet_id }}");
        let Written::Text(t) = value("Bearer {$inputs.token} {{x}}", &Plain).unwrap() else {
            panic!()
        };
        assert_eq!(t, "Bearer {{ token }}{{ ' {{x}}' }}");
        assert!(matches!(
            value("available", &Plain).unwrap(),
            Written::Plain
        ));
    }
}
