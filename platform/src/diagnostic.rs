//! Diagnostics: what is wrong, where (a [`Span`]), and how to fix it. The engine collects every
//! problem it finds instead of stopping at the first; the CLI renders them with miette.

use std::fmt;

use miette::{LabeledSpan, NamedSource, SourceSpan};

use crate::source::{SourceMap, Span};

/// A pointer into a source file with a short explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub span: Span,
    pub text: String,
}

/// One problem found while loading, checking or compiling an environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// A lowercase phrase without a trailing period.
    pub message: String,
    /// Where the problem is; `None` for problems that belong to no file.
    pub primary: Option<Label>,
    /// More places in the primary span's file.
    pub secondary: Vec<Label>,
    pub help: Option<String>,
    /// Places in other files that explain the problem (each edge of a dependency cycle, say).
    pub related: Vec<Diagnostic>,
}

impl Diagnostic {
    pub fn error(message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            message: message.into(),
            primary: None,
            secondary: Vec::new(),
            help: None,
            related: Vec::new(),
        }
    }

    pub fn at(mut self, span: Span, text: impl Into<String>) -> Diagnostic {
        self.primary = Some(Label { span, text: text.into() });
        self
    }

    pub fn also_at(mut self, span: Span, text: impl Into<String>) -> Diagnostic {
        self.secondary.push(Label { span, text: text.into() });
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    pub fn related(mut self, related: Diagnostic) -> Diagnostic {
        self.related.push(related);
        self
    }

    /// A self-contained value miette can render: it owns its source text.
    pub fn render(&self, sources: &SourceMap) -> RenderedDiagnostic {
        let source = self.primary.as_ref().map(|label| {
            let file = sources.file(label.span.file);
            NamedSource::new(&file.name, file.text.to_string())
        });
        let mut labels = Vec::new();
        if let Some(label) = &self.primary {
            labels
                .push(LabeledSpan::new_primary_with_span(non_empty(&label.text), to_source_span(label.span)));
            for extra in &self.secondary {
                if extra.span.file == label.span.file {
                    labels
                        .push(LabeledSpan::new_with_span(non_empty(&extra.text), to_source_span(extra.span)));
                }
            }
        }
        RenderedDiagnostic {
            message: self.message.clone(),
            location: self.primary.as_ref().map(|label| sources.location(label.span)),
            source,
            labels,
            help: self.help.clone(),
            related: self.related.iter().map(|r| r.render(sources)).collect(),
        }
    }
}

fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

fn to_source_span(span: Span) -> SourceSpan {
    SourceSpan::new(span.start.into(), span.len())
}

/// A [`Diagnostic`] with its source attached, ready for miette's report handlers.
#[derive(Debug)]
pub struct RenderedDiagnostic {
    pub message: String,
    /// `file:line:col` of the primary label.
    pub location: Option<String>,
    source: Option<NamedSource<String>>,
    labels: Vec<LabeledSpan>,
    help: Option<String>,
    related: Vec<RenderedDiagnostic>,
}

impl fmt::Display for RenderedDiagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RenderedDiagnostic {}

impl miette::Diagnostic for RenderedDiagnostic {
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.source.as_ref().map(|s| s as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if self.labels.is_empty() { None } else { Some(Box::new(self.labels.iter().cloned())) }
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn miette::Diagnostic> + 'a>> {
        if self.related.is_empty() {
            None
        } else {
            Some(Box::new(self.related.iter().map(|r| r as &dyn miette::Diagnostic)))
        }
    }
}

/// Renders diagnostics as plain text (no colors, fixed width): used by tests and when output
/// is not a terminal.
pub fn render_plain(diagnostics: &[Diagnostic], sources: &SourceMap) -> String {
    let handler = miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
        .with_width(100)
        .with_links(false);
    let mut out = String::new();
    for diagnostic in diagnostics {
        let rendered = diagnostic.render(sources);
        handler.render_report(&mut out, &rendered).expect("writing to a String cannot fail");
    }
    out
}
