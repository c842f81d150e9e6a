//! Diagnostics: what is wrong, where (a [`Span`]), and how to fix it. The engine collects every
//! problem it finds instead of stopping at the first; the CLI renders them with miette.

use std::fmt;

use miette::{LabeledSpan, MietteError, MietteSpanContents, SourceCode, SourceSpan, SpanContents};

use crate::source::{SourceFile, SourceMap, Span, floor_char_boundary};

/// A source line longer than this many characters is shown as windows around the labels on
/// it (the rest elided with `…`): miette pads with `format!` widths, which panic at 65,536
/// columns, and a megabyte-long line is of no use on a terminal anyway.
pub const MAX_SHOWN_LINE_CHARS: usize = 160;
/// Characters kept before a label's start (or end) on a shortened line.
const WINDOW_BEFORE: usize = 48;
/// Characters kept after it.
const WINDOW_AFTER: usize = 72;
const ELISION: &str = "…";
/// Lines quoted around the labels (miette shows one).
const CONTEXT_LINES: usize = 2;
/// A label spanning more lines is shown by its first ones.
const MAX_LABEL_LINES: usize = 40;

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
        let mut source = None;
        let mut labels = Vec::new();
        if let Some(label) = &self.primary {
            let file = sources.file(label.span.file);
            let secondary: Vec<&Label> =
                self.secondary.iter().filter(|extra| extra.span.file == label.span.file).collect();
            let spans: Vec<Span> =
                std::iter::once(label.span).chain(secondary.iter().map(|extra| extra.span)).collect();
            let excerpt = Excerpt::new(file, &spans);
            labels.push(LabeledSpan::new_primary_with_span(non_empty(&label.text), excerpt.labels[0]));
            for (extra, span) in secondary.iter().zip(&excerpt.labels[1..]) {
                labels.push(LabeledSpan::new_with_span(non_empty(&extra.text), *span));
            }
            source = Some(excerpt);
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

/// The text miette quotes for one diagnostic: the file with every long line shortened around
/// the labels, and control characters (terminal escapes) shown as `?`. It has the file's lines
/// (so line numbers hold), and the `file:line:col` miette prints comes from the real file.
#[derive(Debug)]
struct Excerpt {
    name: String,
    shown: String,
    /// Kept pieces: (start in the file, end in the file, start in `shown`), in order.
    pieces: Vec<(usize, usize, usize)>,
    /// Zero-based (line, column in characters) in the file of each label start, by its
    /// offset in `shown`.
    starts: Vec<(usize, (usize, usize))>,
    /// The file's zero-based line number of `shown`'s first line.
    first_line: usize,
    /// Each label's span in `shown`, in the order given.
    labels: Vec<SourceSpan>,
}

impl Excerpt {
    fn new(file: &SourceFile, spans: &[Span]) -> Excerpt {
        let text = file.text.as_str();
        let clamp = |offset: usize| floor_char_boundary(text, offset);
        // A label over many lines is shown by its first lines only.
        let spans: Vec<(usize, usize)> = spans
            .iter()
            .map(|span| {
                let start = clamp(span.start);
                let end = clamp(span.end.max(span.start));
                let last_line = file.line_index(start) + MAX_LABEL_LINES - 1;
                let cut = file
                    .line_starts()
                    .get(last_line + 1)
                    .map_or(end, |&next| end.min(next.saturating_sub(1)));
                (start, cut.max(start))
            })
            .collect();
        let mut points: Vec<usize> = spans.iter().flat_map(|&(start, end)| [start, end]).collect();
        points.sort_unstable();
        points.dedup();
        // Only the labelled lines and their neighbours: rendering stays proportional to what
        // is shown, however large the file.
        let first_line = spans.iter().map(|&(start, _)| file.line_index(start)).min().unwrap_or(0);
        let last_line = spans.iter().map(|&(_, end)| file.line_index(end)).max().unwrap_or(0);
        let first_line = first_line.saturating_sub(CONTEXT_LINES);
        let last_line = (last_line + CONTEXT_LINES).min(file.line_starts().len() - 1);
        let mut excerpt = Excerpt {
            name: file.name.clone(),
            shown: String::new(),
            first_line,
            pieces: Vec::new(),
            starts: Vec::new(),
            labels: Vec::new(),
        };
        for line in first_line..=last_line {
            let line_start = file.line_starts()[line];
            let line_end = file.line_starts().get(line + 1).map_or(text.len(), |&next| next - 1);
            let content = &text[line_start..line_end];
            let windows =
                if content.len() <= MAX_SHOWN_LINE_CHARS || content.chars().count() <= MAX_SHOWN_LINE_CHARS {
                    vec![(line_start, line_end)]
                } else {
                    let here = points.iter().copied().filter(|p| (line_start..=line_end).contains(p));
                    line_windows(text, line_start, line_end, here)
                };
            let mut at = line_start;
            for (start, end) in windows {
                if start > at {
                    excerpt.shown.push_str(ELISION);
                }
                excerpt.pieces.push((start, end, excerpt.shown.len()));
                push_sanitized(&mut excerpt.shown, &text[start..end], end == line_end);
                at = end;
            }
            if at < line_end {
                excerpt.shown.push_str(ELISION);
            }
            if line < last_line {
                excerpt.shown.push('\n');
            }
        }
        for &(start, end) in &spans {
            let (line, col) = file.line_col(start);
            let (shown_start, shown_end) = (excerpt.offset(start), excerpt.offset(end));
            excerpt.starts.push((shown_start, (line - 1, col - 1)));
            let len = shown_end.max(shown_start) - shown_start;
            excerpt.labels.push(SourceSpan::new(
                shown_start.into(),
                len.min(excerpt.shown.len() - shown_start.min(excerpt.shown.len())),
            ));
        }
        excerpt
    }

    /// Where a byte offset of the file is in `shown`: an offset in an elided part goes to the
    /// end of the elision mark after it.
    fn offset(&self, offset: usize) -> usize {
        let index = self.pieces.partition_point(|&(start, _, _)| start <= offset);
        let Some(&(start, end, shown)) = index.checked_sub(1).and_then(|i| self.pieces.get(i)) else {
            return 0;
        };
        if offset <= end { shown + (offset - start) } else { shown + (end - start) + ELISION.len() }
    }
}

/// The ranges of a long line to keep: a window around each label point, merged when they
/// overlap; the line's beginning when no label is on it.
fn line_windows(
    text: &str,
    line_start: usize,
    line_end: usize,
    points: impl Iterator<Item = usize>,
) -> Vec<(usize, usize)> {
    let line = &text[line_start..line_end];
    let back = |offset: usize, chars: usize| {
        line[..offset - line_start]
            .char_indices()
            .rev()
            .nth(chars.saturating_sub(1))
            .map_or(line_start, |(i, _)| line_start + i)
    };
    let forward = |offset: usize, chars: usize| {
        line[offset - line_start..].char_indices().nth(chars).map_or(line_end, |(i, _)| offset + i)
    };
    let mut windows: Vec<(usize, usize)> = Vec::new();
    for point in points {
        let window = (back(point, WINDOW_BEFORE), forward(point, WINDOW_AFTER));
        match windows.last_mut() {
            Some(last) if window.0 <= last.1 => last.1 = last.1.max(window.1),
            _ => windows.push(window),
        }
    }
    if windows.is_empty() {
        windows.push((line_start, forward(line_start, MAX_SHOWN_LINE_CHARS)));
    }
    windows
}

/// Appends text with control characters (other than tabs and the `\r` of a line's `\r\n`)
/// replaced by `?`, byte for byte, so offsets and line numbers stay valid and no escape
/// sequence reaches a terminal. `line_end`: the text ends where its line does.
fn push_sanitized(out: &mut String, text: &str, line_end: bool) {
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let last = chars.peek().is_none();
        let keep = c == '\t' || (c == '\r' && last && line_end) || !c.is_control();
        if keep {
            out.push(c);
        } else {
            out.extend(std::iter::repeat_n('?', c.len_utf8()));
        }
    }
}

impl SourceCode for Excerpt {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        let contents = self.shown.as_str().read_span(span, context_lines_before, context_lines_after)?;
        // miette counts columns in bytes of what it is shown; the location is the file's, in
        // characters, as everywhere else.
        let (line, column) = match self.starts.iter().find(|(offset, _)| *offset == span.offset()) {
            Some(&(_, position)) if context_lines_before == 0 && context_lines_after == 0 => position,
            _ => (self.first_line + contents.line(), contents.column()),
        };
        Ok(Box::new(MietteSpanContents::new_named(
            self.name.clone(),
            contents.data(),
            *contents.span(),
            line,
            column,
            contents.line_count(),
        )))
    }
}

/// A [`Diagnostic`] with its source attached, ready for miette's report handlers.
#[derive(Debug)]
pub struct RenderedDiagnostic {
    pub message: String,
    /// `file:line:col` of the primary label.
    pub location: Option<String>,
    source: Option<Excerpt>,
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
    for diagnostic in diagnostics.iter().take(MAX_RENDERED_DIAGNOSTICS) {
        let rendered = diagnostic.render(sources);
        handler.render_report(&mut out, &rendered).expect("writing to a String cannot fail");
    }
    if let Some(note) = not_shown(diagnostics.len()) {
        out.push_str(&note);
        out.push('\n');
    }
    out
}

/// At most this many diagnostics are rendered: a mangled file can have tens of thousands of
/// problems, and the first ones say what is wrong.
pub const MAX_RENDERED_DIAGNOSTICS: usize = 100;

/// The line that stands for the diagnostics past [`MAX_RENDERED_DIAGNOSTICS`], if any.
pub fn not_shown(total: usize) -> Option<String> {
    (total > MAX_RENDERED_DIAGNOSTICS).then(|| {
        format!(
            "… and {} more problems, not shown (only the first {MAX_RENDERED_DIAGNOSTICS} are)",
            total - MAX_RENDERED_DIAGNOSTICS
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(name: &str, text: &str, span: std::ops::Range<usize>) -> (String, String) {
        let mut sources = SourceMap::new();
        let file = sources.add(name, text);
        let diagnostic = Diagnostic::error("bad value").at(Span::new(file, span), "this one");
        let location = sources.location(diagnostic.primary.as_ref().unwrap().span);
        (render_plain(&[diagnostic], &sources), location)
    }

    #[test]
    fn a_label_past_column_65536_renders_with_its_exact_location() {
        let text = format!("first = 1\nkey = \"{}\" # end\nlast = 2\n", "x".repeat(70_000));
        let start = text.find(" # end").unwrap() + 3;
        let (out, location) = rendered("env.toml", &text, start..start + 3);
        assert_eq!(location, "env.toml:2:70012");
        assert!(out.contains("[env.toml:2:70012]"), "{out}");
        assert!(out.contains("# end"), "{out}");
        assert!(out.lines().all(|line| line.chars().count() < 400), "{out}");
    }

    #[test]
    fn a_huge_span_on_a_huge_line_renders_shortened() {
        let text = format!("a = \"{}\"\n", "é".repeat(100_000));
        let (out, location) = rendered("a.toml", &text, 4..text.len() - 1);
        assert_eq!(location, "a.toml:1:5");
        assert!(out.contains("[a.toml:1:5]"), "{out}");
        assert!(out.lines().all(|line| line.chars().count() < 400), "{out}");
    }

    #[test]
    fn only_the_labelled_lines_are_quoted_with_their_numbers_and_at_most_100_diagnostics() {
        let text: String = (1..=6000).map(|i| format!("key{i} = {i}\n")).collect();
        let mut sources = SourceMap::new();
        let file = sources.add("big.toml", text.clone());
        let at = text.find("key5000 ").unwrap();
        let one = Diagnostic::error("bad").at(Span::new(file, at..at + 7), "here");
        let out = render_plain(std::slice::from_ref(&one), &sources);
        assert!(out.contains("[big.toml:5000:1]") && out.contains("5000 │ key5000 = 5000"), "{out}");
        assert!(out.contains("4999 │") && !out.contains("4997 │"), "{out}");
        let whole = Diagnostic::error("all").at(Span::new(file, 0..text.len()), "everything");
        let out = render_plain(&[whole], &sources);
        assert!(out.lines().count() < 60, "a label over every line is cut:\n{out}");
        let many = vec![one; 5000];
        let out = render_plain(&many, &sources);
        assert!(out.ends_with("… and 4900 more problems, not shown (only the first 100 are)\n"), "{out}");
    }

    #[test]
    fn control_characters_and_odd_offsets_do_not_reach_the_terminal() {
        let text = "a = \"\u{1b}[31mred\r\"\nb = 1\u{85}\n";
        let (out, location) = rendered("a.toml", text, 6..text.len() + 10);
        assert_eq!(location, "a.toml:1:7");
        assert!(!out.contains('\u{1b}') && !out.contains('\r') && !out.contains('\u{85}'), "{out:?}");
        assert!(out.contains("[a.toml:1:7]"), "{out}");
        let (out, _) = rendered("e.toml", "", 0..1);
        assert!(out.contains("bad value"), "{out}");
    }
}
