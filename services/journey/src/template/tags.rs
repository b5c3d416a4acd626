//! The tags of a template's text, in order, as the checks that read the text see them.
//!
//! A template compiles before any of this runs, so the text is well formed; what matters here
//! is to cut it where Liquid does: `{{ ... }}` and `{% ... %}`, with quoted text inside them
//! passed over, and the content of `raw` and `comment` never read as tags.

/// One `{{ ... }}` or `{% ... %}`: its text without the delimiters and whitespace control, and
/// the byte where that text starts in the source.
pub(super) struct Piece<'s> {
    pub text: &'s str,
    pub start: usize,
    /// `{{ ... }}` rather than `{% ... %}`.
    pub output: bool,
}

impl Piece<'_> {
    /// The tag's name (`for`, `endif`), or the empty text for an output.
    pub fn name(&self) -> &str {
        if self.output {
            return "";
        }
        self.text.split_whitespace().next().unwrap_or_default()
    }
}

/// The pieces of a template in order.
pub(super) struct Pieces<'s> {
    source: &'s str,
    from: usize,
}

impl<'s> Pieces<'s> {
    pub fn new(source: &'s str) -> Pieces<'s> {
        Pieces { source, from: 0 }
    }

    /// The next piece that runs, with what `raw` and `comment` hold passed over.
    pub fn next_read(&mut self) -> Option<Piece<'s>> {
        let piece = self.next_parsed()?;
        if piece.name() == "comment" {
            self.skip_to("endcomment", Some("comment"));
        }
        Some(piece)
    }

    /// The next piece Liquid parses: what `raw` holds is passed over (it is not even Liquid),
    /// while the tags in a `comment` are parsed, though never run.
    pub fn next_parsed(&mut self) -> Option<Piece<'s>> {
        let piece = self.next_piece()?;
        if piece.name() == "raw" {
            self.skip_to("endraw", None);
        }
        Some(piece)
    }

    fn next_piece(&mut self) -> Option<Piece<'s>> {
        loop {
            let rest = &self.source[self.from..];
            let open = rest.find('{')?;
            let at = self.from + open;
            let (close, output) = match rest[open..].get(..2) {
                Some("{%") => ("%}", false),
                Some("{{") => ("}}", true),
                _ => {
                    self.from = at + 1;
                    continue;
                }
            };
            let inner_from = at + 2;
            let Some(end) = closing(&self.source[inner_from..], close) else {
                self.from = self.source.len();
                return None;
            };
            self.from = inner_from + end + 2;

            let raw = &self.source[inner_from..inner_from + end];
            let text = raw.trim_start_matches(|c: char| c == '-' || c.is_whitespace());
            let start = inner_from + (raw.len() - text.len());
            let text = text.trim_end_matches(|c: char| c == '-' || c.is_whitespace());
            return Some(Piece {
                text,
                start,
                output,
            });
        }
    }

    /// Moves past the tag named `end`, counting `nests` tags as opening another level.
    fn skip_to(&mut self, end: &str, nests: Option<&str>) {
        let mut depth = 1;
        while let Some(piece) = self.next_piece() {
            let name = piece.name();
            if Some(name) == nests {
                depth += 1;
            } else if name == end {
                depth -= 1;
                if depth == 0 {
                    return;
                }
            }
        }
    }
}

/// Where `close` ends the text of a tag, passing over quoted strings.
fn closing(text: &str, close: &str) -> Option<usize> {
    let mut quote = None;
    for (i, c) in text.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if text[i..].starts_with(close) => return Some(i),
            None => {}
        }
    }
    None
}

/// Line and column (in characters) of byte `offset` of `source`, both from 1.
pub(super) fn place(source: &str, offset: usize) -> (u32, u32) {
    let before = &source[..offset.min(source.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(column).unwrap_or(u32::MAX),
    )
}
