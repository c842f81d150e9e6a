//! Source files and spans: every value read from a TOML or template file remembers the file and
//! the byte range it came from, so a diagnostic can point at it with `file:line:col`.

use std::sync::{Arc, OnceLock};

/// Index of a file in a [`SourceMap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(u32);

/// A byte range in one source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Span {
    pub file: FileId,
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(file: FileId, range: std::ops::Range<usize>) -> Span {
        Span { file, start: range.start, end: range.end }
    }

    pub fn len(&self) -> usize {
        self.end.saturating_sub(self.start)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One file as it was read: its display name (a path relative to the repository) and its text.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub name: String,
    pub text: Arc<String>,
    /// Byte offset of each line's start, computed on first use.
    line_starts: Arc<OnceLock<Vec<usize>>>,
}

impl SourceFile {
    /// Byte offsets of the lines' starts (the first is 0).
    pub fn line_starts(&self) -> &[usize] {
        self.line_starts.get_or_init(|| {
            std::iter::once(0).chain(self.text.match_indices('\n').map(|(i, _)| i + 1)).collect()
        })
    }

    /// Zero-based index of the line holding a byte offset (clamped to the text).
    pub fn line_index(&self, offset: usize) -> usize {
        self.line_starts().partition_point(|&start| start <= offset.min(self.text.len())).saturating_sub(1)
    }

    /// One-based line and column (in characters) of a byte offset; any offset is accepted (see
    /// [`line_col_in`]).
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = floor_char_boundary(&self.text, offset);
        let line = self.line_index(offset);
        let start = self.line_starts()[line];
        (line + 1, self.text[start..offset].chars().count() + 1)
    }
}

/// All files read while loading an environment, so diagnostics can quote them.
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

impl SourceMap {
    pub fn new() -> SourceMap {
        SourceMap::default()
    }

    pub fn add(&mut self, name: impl Into<String>, text: impl Into<String>) -> FileId {
        let id = FileId(u32::try_from(self.files.len()).expect("fewer than 4 billion files"));
        self.files.push(SourceFile {
            name: name.into(),
            text: Arc::new(text.into()),
            line_starts: Arc::new(OnceLock::new()),
        });
        id
    }

    pub fn file(&self, id: FileId) -> &SourceFile {
        &self.files[id.0 as usize]
    }

    pub fn name(&self, id: FileId) -> &str {
        &self.file(id).name
    }

    /// The text a span covers.
    pub fn snippet(&self, span: Span) -> &str {
        let text = &self.file(span.file).text;
        text.get(span.start..span.end).unwrap_or("")
    }

    /// One-based line and column (in characters) of a span's start.
    pub fn line_col(&self, span: Span) -> (usize, usize) {
        self.file(span.file).line_col(span.start)
    }

    /// `file:line:col` of a span's start.
    pub fn location(&self, span: Span) -> String {
        let (line, col) = self.line_col(span);
        format!("{}:{line}:{col}", self.name(span.file))
    }
}

/// One-based line and column (in characters) of a byte offset in `text`. Any offset is
/// accepted: one past the end counts as the end, one inside a character as that character.
pub fn line_col_in(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

/// The largest character boundary of `text` at or before `offset` (clamped to its length).
pub fn floor_char_boundary(text: &str, offset: usize) -> usize {
    let mut at = offset.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one_and_in_characters() {
        let mut map = SourceMap::new();
        let id = map.add("a.toml", "a = 1\nbé = 2\n");
        let start = "a = 1\nbé = ".len();
        let span = Span::new(id, start..start + 1);
        assert_eq!(map.line_col(span), (2, 6));
        assert_eq!(map.location(span), "a.toml:2:6");
        assert_eq!(map.snippet(span), "2");
    }

    #[test]
    fn spans_inside_a_character_or_past_the_end_still_have_a_location() {
        let mut map = SourceMap::new();
        let id = map.add("a.toml", "é\nx");
        assert_eq!(map.line_col(Span::new(id, 1..2)), (1, 1));
        assert_eq!(map.line_col(Span::new(id, 99..100)), (2, 2));
        assert_eq!(map.snippet(Span::new(id, 1..2)), "");
        for offset in 0..6 {
            assert_eq!(map.file(id).line_col(offset), line_col_in("é\nx", offset), "{offset}");
        }
    }
}
