//! The one diagnostic type for static problems.
//!
//! Loading a flow, a mock file or the inputs reports problems as
//! [`Diagnostic`]s: a severity, a lowercase message that names things in
//! backticks, a position, and an optional hint. Rendering goes through miette
//! so every problem gets the same `file:line:col` header and code frame.

use std::fmt;
use std::sync::Arc;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, SourceCode};

use crate::language::source::{Source, Span};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
    /// Context for another diagnostic, in another file: an API description's
    /// line that a flow's error is about.
    Note,
}

/// A static problem with a position in a source file.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub severity: Severity,
    pub message: String,
    pub source: Option<Arc<Source>>,
    pub span: Option<Span>,
    /// Short text under the carets.
    pub label: Option<String>,
    /// A hint on its own line: "did you mean", or what to write instead.
    pub help: Option<String>,
    /// More labelled places, in this source or another. (Boxed: most
    /// diagnostics have none, and every `Result` carries one.)
    pub also: Option<Box<Also>>,
}

/// The places a diagnostic points at besides its own.
#[derive(Debug, Clone, Default)]
pub struct Also {
    /// In the same source, such as a declaration.
    pub places: Vec<(Span, String)>,
    /// A place in another file that the problem is about (an API
    /// description's line), rendered after it.
    pub note: Option<Diagnostic>,
}

impl Diagnostic {
    pub fn error(message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            message: message.into(),
            source: None,
            span: None,
            label: None,
            help: None,
            also: None,
        }
    }

    pub fn warning(message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(message)
        }
    }

    pub fn at(mut self, source: &Arc<Source>, span: Span) -> Diagnostic {
        self.source = Some(source.clone());
        self.span = Some(span);
        self
    }

    pub fn label(mut self, label: impl Into<String>) -> Diagnostic {
        self.label = Some(label.into());
        self
    }

    /// Labels another place in the same source.
    pub fn also(mut self, span: Span, label: impl Into<String>) -> Diagnostic {
        self.also
            .get_or_insert_with(Box::default)
            .places
            .push((span, label.into()));
        self
    }

    /// Points at a place in another file as well, such as the declaration
    /// in an API description that a flow breaks.
    pub fn note_at(
        mut self,
        source: &Arc<Source>,
        span: Span,
        label: impl Into<String>,
    ) -> Diagnostic {
        let message = label.into();
        let mut note = Diagnostic::error(message.clone()).at(source, span);
        note.severity = Severity::Note;
        note.label = Some(message);
        self.also.get_or_insert_with(Box::default).note = Some(note);
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    pub fn help_opt(mut self, help: Option<String>) -> Diagnostic {
        if help.is_some() {
            self.help = help;
        }
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// `file:line:col`, when the diagnostic has a position.
    pub fn location(&self) -> Option<String> {
        let (source, span) = (self.source.as_ref()?, self.span?);
        let (line, col) = source.line_col(span.offset);
        Some(format!("{}:{line}:{col}", source.name))
    }

    /// Renders the diagnostic with its code frame, coloured or plain.
    pub fn render(&self, color: bool) -> String {
        let theme = if color {
            GraphicalTheme::unicode()
        } else {
            GraphicalTheme::unicode_nocolor()
        };
        // Wrap long lines at spaces only, never inside a word or a file name
        // (by default a line may break after `/` or at a hyphen).
        let handler = GraphicalReportHandler::new_themed(theme)
            .with_width(100)
            .with_break_words(false)
            .with_word_separator(textwrap::WordSeparator::AsciiSpace)
            .with_word_splitter(textwrap::WordSplitter::NoHyphenation)
            .with_context_lines(1);
        let mut out = String::new();
        let view = MietteView(self);
        if handler.render_report(&mut out, &view).is_err() {
            // miette only fails on a broken fmt::Write, which a String is not;
            // still, never lose the message.
            out = format!("{self}\n");
        }
        if let Some(note) = self.also.as_ref().and_then(|a| a.note.as_ref()) {
            out.push_str(&note.render(color));
        }
        out
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        };
        match self.location() {
            Some(loc) => write!(f, "{loc}: {kind}: {}", self.message),
            None => write!(f, "{kind}: {}", self.message),
        }
    }
}

/// Adapts a [`Diagnostic`] to miette's trait without exposing miette in our API.
struct MietteView<'a>(&'a Diagnostic);

impl fmt::Debug for MietteView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

impl fmt::Display for MietteView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl std::error::Error for MietteView<'_> {}

impl miette::Diagnostic for MietteView<'_> {
    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.0.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
            Severity::Note => miette::Severity::Advice,
        })
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.0
            .help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.0.source.as_ref().map(|s| &**s as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let span = self.0.span?;
        self.0.source.as_ref()?;
        // Primary, so the frame's `file:line:col` is this place, not the first in the file.
        let label = LabeledSpan::new_primary_with_span(
            self.0.label.clone(),
            (span.offset, span.len.max(1)),
        );
        let also = self
            .0
            .also
            .iter()
            .flat_map(|a| a.places.iter())
            .map(|(s, l)| LabeledSpan::new(Some(l.clone()), s.offset, s.len.max(1)));
        Some(Box::new(std::iter::once(label).chain(also)))
    }
}

/// A code frame wider than this shows a window around the span instead.
const MAX_FRAME_LINE: usize = 240;

impl SourceCode for Source {
    fn read_span<'a>(
        &'a self,
        span: &miette::SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn miette::SpanContents<'a> + 'a>, miette::MietteError> {
        let inner = self
            .text
            .read_span(span, context_lines_before, context_lines_after)?;
        if inner
            .data()
            .split(|b| *b == b'\n')
            .any(|l| l.len() > MAX_FRAME_LINE)
        {
            return Ok(self.window(span.offset()));
        }
        Ok(Box::new(miette::MietteSpanContents::new_named(
            self.name.clone(),
            inner.data(),
            *inner.span(),
            inner.line(),
            inner.column(),
            inner.line_count(),
        )))
    }
}

impl Source {
    /// Part of one long line around `offset`, so a 1 MB line (minified JSON,
    /// a generated file) does not become a 1 MB error message.
    fn window(&self, offset: usize) -> Box<dyn miette::SpanContents<'_> + '_> {
        let text = &self.text;
        let offset = offset.min(text.len());
        let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
        let mut start = offset.saturating_sub(MAX_FRAME_LINE / 2).max(line_start);
        while !text.is_char_boundary(start) {
            start += 1;
        }
        let mut end = (start + MAX_FRAME_LINE).min(line_end);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let line = text[..line_start].matches('\n').count();
        let column = text[line_start..start].chars().count();
        Box::new(miette::MietteSpanContents::new_named(
            self.name.clone(),
            &text.as_bytes()[start..end],
            (start, end - start).into(),
            line,
            column,
            1,
        ))
    }
}

/// The closest candidate to `name`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let mut best: Option<(usize, &str)> = None;
    for candidate in candidates {
        let d = edit_distance(&name.to_lowercase(), &candidate.to_lowercase());
        let limit = (candidate.chars().count().max(name.chars().count()) / 3).max(1);
        if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, candidate));
        }
    }
    best.map(|(_, c)| format!("did you mean `{c}`?"))
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Renders a list of diagnostics, errors first, in source order.
pub fn render_all(diagnostics: &[Diagnostic], color: bool) -> String {
    let mut sorted: Vec<&Diagnostic> = diagnostics.iter().collect();
    sorted.sort_by_key(|d| {
        (
            d.source.as_ref().map(|s| s.name.clone()),
            d.span.map(|s| s.offset),
            d.severity,
        )
    });
    sorted
        .iter()
        .map(|d| d.render(color))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        let kinds = ["get_tasks", "patch_task", "timer"];
        assert_eq!(
            did_you_mean("get_task", kinds).as_deref(),
            Some("did you mean `get_tasks`?")
        );
        assert_eq!(did_you_mean("frobnicate", kinds), None);
    }
}
