//! What a template reads and what it sets, found in its text.
//!
//! Every variable a template names is one of three things, decided where it is written, as
//! Liquid decides it when it renders:
//!
//! - a loop's variable (`item` inside `{% for item in user.items %}`): what is read under it
//!   is read on each element in turn, and checked there ([`LoopReads`]);
//! - a name the template sets itself: `forloop` and `tablerow` inside their loops, and every
//!   name an `assign`, `capture`, `increment` or `decrement` sets, anywhere in the template
//!   (a loop may print on one pass what it set on the one before). These are the template's
//!   own and are not checked;
//! - anything else is read from the data, and checked before rendering ([`PathUse`]).
//!
//! A data root set by the template (`{% assign user = ... %}`, refused by the lint) is the
//! data's where it is written before the first tag that sets it, and the template's after.

use super::tags::{Pieces, place};

/// One variable path as written, and how it is used.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct PathUse {
    pub path: Vec<String>,
    /// A missing value is acceptable here (a default filter, or a condition).
    pub guarded: bool,
    /// The tag prints the value as it is, with no filter to turn it into text.
    pub bare: bool,
    /// The filters the value goes through before its `default`, by name.
    pub before_default: Vec<String>,
}

/// What one `for` or `tablerow` reads under its variable.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct LoopReads {
    /// `for` or `tablerow`.
    pub keyword: &'static str,
    /// The loop's variable.
    pub name: String,
    /// The list it walks, when that is written as a path; `None` for a range.
    pub list: Option<Vec<String>>,
    /// The loop whose variable that path starts with, by index, if it does.
    pub outer: Option<usize>,
    /// What the body reads under the variable, without it: `item.name` gives `["name"]`,
    /// `item` itself the empty path.
    pub reads: Vec<PathUse>,
}

/// A name a tag sets, and where.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Binding {
    pub name: String,
    /// The tag that sets it: `assign`, `capture`, `for`, ...
    pub keyword: String,
    /// Line and column of the name, both from 1.
    pub at: (u32, u32),
}

/// What a template reads and sets.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Reads {
    /// Paths read from the data.
    pub data: Vec<PathUse>,
    /// Every loop, in the order written (which is the order Liquid parses them).
    pub loops: Vec<LoopReads>,
    /// The names set by `assign`, `capture`, `increment` and `decrement`.
    pub names: Vec<String>,
    /// Every name a tag sets, loops' variables included, in the order written.
    pub bindings: Vec<Binding>,
}

/// Finds what `source` reads and sets. `source` is a template that compiles.
pub(super) fn scan(source: &str) -> Reads {
    let mut scan = Scan {
        reads: Reads::default(),
        set_at: Vec::new(),
        open: Vec::new(),
    };
    scan.bindings(source);

    // Liquid parses the tags of a comment, loops included, though it never runs them: they
    // are listed, with nothing read, so that the loops after them are found in their place.
    let mut comments = 0usize;
    let mut pieces = Pieces::new(source);
    while let Some(piece) = pieces.next_parsed() {
        let tokens = tokens(piece.text, piece.start);
        match piece.name() {
            "comment" => comments += 1,
            "endcomment" => comments = comments.saturating_sub(1),
            keyword @ ("for" | "tablerow") if comments > 0 => scan.reads.loops.push(LoopReads {
                keyword: if keyword == "for" { "for" } else { "tablerow" },
                name: tokens
                    .get(1)
                    .and_then(Token::word)
                    .unwrap_or_default()
                    .into(),
                list: None,
                outer: None,
                reads: Vec::new(),
            }),
            _ if comments > 0 => {}
            _ if piece.output => scan.output(&tokens),
            _ => scan.tag(&tokens),
        }
    }
    scan.reads
}

/// A word of a tag: a variable, a literal, or a mark, with the byte where it starts in the
/// source.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Token<'s> {
    /// A variable with its indexes as written (`user.items[0].name`), or a keyword.
    Word(&'s str, usize),
    /// A quoted text, quotes included, or a number, as written.
    Literal(&'s str),
    /// Punctuation or an operator: `|`, `:`, `,`, `(`, `)`, `..`, `=`, `==`, `<`, ...
    Mark(&'s str),
}

impl<'s> Token<'s> {
    fn word(&self) -> Option<&'s str> {
        match self {
            Token::Word(w, _) => Some(w),
            _ => None,
        }
    }

    pub(super) fn is(&self, mark: &str) -> bool {
        matches!(self, Token::Mark(m) if *m == mark)
    }
}

/// The tokens of a tag's text, which starts at byte `start` of the source.
pub(super) fn tokens(text: &str, start: usize) -> Vec<Token<'_>> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let from = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'"' || c == b'\'' {
            i = after_quote(bytes, i);
            out.push(Token::Literal(&text[from..i]));
        } else if c.is_ascii_digit()
            || (c == b'-' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            i += 1;
            while i < bytes.len() {
                let fraction = bytes[i] == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit);
                if !(bytes[i].is_ascii_digit() || fraction) {
                    break;
                }
                i += if fraction { 2 } else { 1 };
            }
            out.push(Token::Literal(&text[from..i]));
        } else if c.is_ascii_alphabetic() || c == b'_' {
            i = after_word(bytes, i);
            out.push(Token::Word(&text[from..i], start + from));
        } else {
            let two = text.get(i..i + 2);
            let len = match two {
                Some(".." | "==" | "!=" | "<>" | "<=" | ">=") => 2,
                _ => text[i..].chars().next().map_or(1, char::len_utf8),
            };
            i += len;
            out.push(Token::Mark(&text[from..i]));
        }
    }
    out
}

/// The byte after the quoted text that starts at `i`.
fn after_quote(bytes: &[u8], i: usize) -> usize {
    let quote = bytes[i];
    bytes[i + 1..]
        .iter()
        .position(|&b| b == quote)
        .map_or(bytes.len(), |end| i + 1 + end + 1)
}

/// The byte after the variable that starts at `i`: names joined by `.`, and `[...]` indexes.
fn after_word(bytes: &[u8], mut i: usize) -> usize {
    let name = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'?';
    while i < bytes.len() {
        let b = bytes[i];
        // A `.` goes on to a name; `..` is a range's.
        let dot = b == b'.' && bytes.get(i + 1).is_some_and(|&n| name(n) && n != b'-');
        if name(b) || dot {
            i += 1;
        } else if b == b'[' {
            let mut depth = 0;
            while i < bytes.len() {
                match bytes[i] {
                    b'"' | b'\'' => {
                        i = after_quote(bytes, i);
                        continue;
                    }
                    b'[' => depth += 1,
                    b']' => depth -= 1,
                    _ => {}
                }
                i += 1;
                if depth == 0 {
                    break;
                }
            }
        } else {
            break;
        }
    }
    i
}

/// Words that are Liquid's own, never a variable.
const KEYWORDS: &[&str] = &[
    "true", "false", "nil", "null", "empty", "blank", "and", "or", "contains", "in",
];

/// `user.items[0]["first name"]` as `["user", "items", "0", "first name"]`; a keyword, or an
/// index given by a variable (`items[i]`), gives `None`.
pub(super) fn as_path(word: &str) -> Option<Vec<String>> {
    if KEYWORDS.contains(&word) {
        return None;
    }
    let bytes = word.as_bytes();
    let mut path = Vec::new();
    let mut i = 0;
    let mut segment = String::new();
    while i < bytes.len() {
        match bytes[i] {
            b'.' => {
                path.push(std::mem::take(&mut segment));
                i += 1;
            }
            b'[' => {
                if !segment.is_empty() {
                    path.push(std::mem::take(&mut segment));
                }
                let close = word[i..].find(']').map(|c| i + c)?;
                let index = word[i + 1..close].trim();
                let unquoted = index
                    .strip_prefix('"')
                    .and_then(|s| s.strip_suffix('"'))
                    .or_else(|| index.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')));
                match unquoted {
                    Some(key) => path.push(key.to_string()),
                    None if index.parse::<i64>().is_ok() => path.push(index.to_string()),
                    None => return None,
                }
                i = close + 1;
                // What follows an index is `.name` or another index.
                if bytes.get(i) == Some(&b'.') {
                    i += 1;
                }
            }
            _ => {
                let next = word[i..].find(['.', '[']).map_or(word.len(), |n| i + n);
                segment.push_str(&word[i..next]);
                i = next;
            }
        }
    }
    if !segment.is_empty() {
        path.push(segment);
    }
    // A name, then names or indexes; an empty name (`a..b`, `a.`) is no path.
    let named = |s: &String| !s.is_empty();
    (path.first().is_some_and(named) && !word.ends_with('.')).then_some(path)
}

/// A path as a template writes it: `user.items[2].name`, `entry["first name"]`.
pub(super) fn display(path: &[String]) -> String {
    let mut out = path.first().cloned().unwrap_or_default();
    push_segments(&mut out, path.get(1..).unwrap_or_default());
    out
}

/// Writes `segments` after a path already in `out`: `.name`, `[2]` or `["first name"]`.
pub(super) fn push_segments(out: &mut String, segments: &[String]) {
    for segment in segments {
        let plain = segment
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '?')
            && segment.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_');
        if segment.parse::<i64>().is_ok() {
            out.push('[');
            out.push_str(segment);
            out.push(']');
        } else if plain {
            out.push('.');
            out.push_str(segment);
        } else {
            out.push_str("[\"");
            out.push_str(segment);
            out.push_str("\"]");
        }
    }
}

/// What a name written at some point stands for.
enum Meaning {
    /// The variable of the loop of this index.
    Loop(usize),
    /// A name the template sets.
    Own,
    /// A path in the data.
    Data,
}

/// A block open at some point of the text.
struct Open {
    /// The loop it is, by index, and whether its `else` part has begun.
    looping: Option<(usize, bool)>,
    /// The paths its current branch tests (`{% if user.name %}`), which it prints safely.
    guards: Vec<Vec<String>>,
}

struct Scan {
    reads: Reads,
    /// The names set by `assign`, `capture`, `increment` and `decrement`, with the byte of
    /// the first tag that sets each.
    set_at: Vec<(String, usize)>,
    open: Vec<Open>,
}

impl Scan {
    /// Every name a tag sets, before reading anything: a name set anywhere is the
    /// template's everywhere.
    fn bindings(&mut self, source: &str) {
        let mut pieces = Pieces::new(source);
        while let Some(piece) = pieces.next_read() {
            if piece.output {
                continue;
            }
            let tokens = tokens(piece.text, piece.start);
            let keyword = piece.name();
            let Some(Token::Word(name, at)) = tokens.get(1).copied() else {
                continue;
            };
            match keyword {
                "assign" | "capture" | "increment" | "decrement" => {
                    if !self.set_at.iter().any(|(n, _)| n == name) {
                        self.set_at.push((name.to_string(), at));
                        self.reads.names.push(name.to_string());
                    }
                }
                "for" | "tablerow" => {}
                _ => continue,
            }
            self.reads.bindings.push(Binding {
                name: name.to_string(),
                keyword: keyword.to_string(),
                at: place(source, at),
            });
        }
    }

    /// What `root`, written at byte `at`, stands for there.
    fn meaning(&self, root: &str, at: usize) -> Meaning {
        for open in self.open.iter().rev() {
            let Some((index, false)) = open.looping else {
                continue;
            };
            let l = &self.reads.loops[index];
            if l.name == root {
                return Meaning::Loop(index);
            }
            let own = match l.keyword {
                "for" => "forloop",
                _ => "tablerow",
            };
            if root == own {
                return Meaning::Own;
            }
        }
        match self.set_at.iter().find(|(name, _)| name == root) {
            Some((_, first)) if super::DATA_ROOTS.contains(&root) && *first >= at => Meaning::Data,
            Some(_) => Meaning::Own,
            None => Meaning::Data,
        }
    }

    /// Records a read of `word`, written at byte `at`.
    fn read(&mut self, word: &str, at: usize, mut usage: PathUse) -> Option<Meaning> {
        let path = as_path(word)?;
        usage.guarded |= self.open.iter().any(|o| o.guards.contains(&path));
        let meaning = self.meaning(&path[0], at);
        match meaning {
            Meaning::Loop(index) => {
                usage.path = path[1..].to_vec();
                self.reads.loops[index].reads.push(usage);
            }
            Meaning::Own => {}
            Meaning::Data => {
                usage.path = path;
                self.reads.data.push(usage);
            }
        }
        Some(meaning)
    }

    /// Records every variable among `tokens` as read where a missing value is nil
    /// (a condition, a filter's argument), and returns their paths.
    fn read_all(&mut self, tokens: &[Token<'_>]) -> Vec<Vec<String>> {
        let mut tested = Vec::new();
        for (i, token) in tokens.iter().enumerate() {
            let Token::Word(word, at) = *token else {
                continue;
            };
            // `name: value` names a parameter; the value is read.
            if tokens.get(i + 1).is_some_and(|t| t.is(":")) {
                continue;
            }
            if self.read(word, at, guarded()).is_some()
                && let Some(path) = as_path(word)
            {
                tested.push(path);
            }
        }
        tested
    }

    /// Records every variable among `tokens` as read where a missing value cannot stand.
    fn read_needed(&mut self, tokens: &[Token<'_>]) {
        for (i, token) in tokens.iter().enumerate() {
            let Token::Word(word, at) = *token else {
                continue;
            };
            if !tokens.get(i + 1).is_some_and(|t| t.is(":")) {
                let needed = PathUse {
                    guarded: false,
                    ..guarded()
                };
                self.read(word, at, needed);
            }
        }
    }

    /// `{{ value | filter: argument, ... }}`.
    fn output<'s>(&mut self, tokens: &[Token<'s>]) {
        let mut parts = tokens.split(|t| t.is("|"));
        let head = parts.next().unwrap_or_default();
        let filters: Vec<&[Token<'s>]> = parts.collect();
        let name = |f: &&[Token<'s>]| f.first().and_then(Token::word).unwrap_or_default();
        let default_at = filters.iter().position(|f| name(f) == "default");

        match head {
            [Token::Word(word, at)] => {
                let usage = PathUse {
                    path: Vec::new(),
                    guarded: default_at.is_some(),
                    bare: filters.is_empty(),
                    before_default: filters[..default_at.unwrap_or(0)]
                        .iter()
                        .map(|f| name(f).to_string())
                        .collect(),
                };
                self.read(word, *at, usage);
            }
            _ => {
                self.read_all(head);
            }
        }
        // Filter arguments (`default: entry.sku`) may be missing too: they then act as nil.
        for filter in filters {
            self.read_all(filter.get(1..).unwrap_or_default());
        }
    }

    /// `{% name ... %}`.
    fn tag(&mut self, tokens: &[Token<'_>]) {
        let keyword = tokens.first().and_then(Token::word).unwrap_or_default();
        let rest = tokens.get(1..).unwrap_or_default();
        match keyword {
            "if" => {
                let guards = self.read_all(rest);
                self.open.push(Open {
                    looping: None,
                    guards,
                });
            }
            "elsif" => {
                let guards = self.read_all(rest);
                if let Some(top) = self.open.last_mut() {
                    top.guards = guards;
                }
            }
            "unless" | "case" => {
                self.read_all(rest);
                self.open.push(Open {
                    looping: None,
                    guards: Vec::new(),
                });
            }
            "when" | "cycle" => {
                self.read_all(rest);
            }
            "else" => {
                if let Some(top) = self.open.last_mut() {
                    top.guards.clear();
                    if let Some((_, in_else)) = &mut top.looping {
                        *in_else = true;
                    }
                }
            }
            "for" | "tablerow" => self.a_loop(keyword, rest),
            "assign" => {
                // The value is read before the name is set.
                let value = rest
                    .iter()
                    .position(|t| t.is("="))
                    .map_or(rest, |i| &rest[i + 1..]);
                let mut parts = value.split(|t| t.is("|"));
                self.read_all(parts.next().unwrap_or_default());
                for filter in parts {
                    self.read_all(filter.get(1..).unwrap_or_default());
                }
            }
            "capture" | "ifchanged" => self.open.push(Open {
                looping: None,
                guards: Vec::new(),
            }),
            word if word.starts_with("end") => {
                self.open.pop();
            }
            _ => {}
        }
    }

    /// `for item in list limit: n ...` or `tablerow item in (a..b) cols: n`, from after its
    /// keyword.
    fn a_loop(&mut self, keyword: &str, rest: &[Token<'_>]) {
        let name = rest.first().and_then(Token::word).unwrap_or_default();
        let source = rest.get(2..).unwrap_or_default();

        // The list, or the bounds of a range, are read outside the loop. A missing list has
        // nothing to walk; a missing bound or parameter leaves nothing to count with.
        let (list, outer, after) = match source {
            [Token::Word(word, at), after @ ..] => {
                let meaning = self.read(word, *at, guarded());
                let outer = match meaning {
                    Some(Meaning::Loop(index)) => Some(index),
                    _ => None,
                };
                (as_path(word), outer, after)
            }
            _ => {
                let close = source.iter().position(|t| t.is(")")).map_or(0, |c| c + 1);
                self.read_needed(&source[..close]);
                (None, None, &source[close..])
            }
        };
        let parameters: Vec<Token<'_>> = after
            .iter()
            .copied()
            .filter(|t| t.word() != Some("reversed"))
            .collect();
        self.read_needed(&parameters);

        let keyword = if keyword == "for" { "for" } else { "tablerow" };
        self.reads.loops.push(LoopReads {
            keyword,
            name: name.to_string(),
            list,
            outer,
            reads: Vec::new(),
        });
        self.open.push(Open {
            looping: Some((self.reads.loops.len() - 1, false)),
            guards: Vec::new(),
        });
    }
}

fn guarded() -> PathUse {
    PathUse {
        path: Vec::new(),
        guarded: true,
        bare: false,
        before_default: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(uses: &[PathUse]) -> Vec<String> {
        uses.iter().map(|u| display(&u.path)).collect()
    }

    #[test]
    fn paths_read_with_indexes_and_quoted_keys() {
        let path = as_path("user.items[0][\"first name\"].tags[-1]");
        assert_eq!(
            path.as_deref().map(display),
            Some("user.items[0][\"first name\"].tags[-1]".to_string())
        );
        assert_eq!(
            as_path("items[i]"),
            None,
            "an index from a variable is no path"
        );
        assert_eq!(as_path("contains"), None);
        assert_eq!(
            as_path("user.first-name?"),
            Some(vec!["user".to_string(), "first-name?".to_string()])
        );
    }

    #[test]
    fn a_loop_variable_forloop_and_names_set_are_not_read_from_the_data() {
        let reads = scan(
            "{% for item in user.items %}{{ item.name }}{{ forloop.index }}{% endfor %}\
             {% assign x = user.name | upcase %}{{ x }}{% capture c %}{{ x }}{% endcapture %}\
             {{ c | default: \"\" }}{% increment n %}{{ n }}",
        );
        assert_eq!(paths(&reads.data), ["user.items", "user.name"]);
        assert_eq!(reads.loops.len(), 1);
        assert_eq!(reads.loops[0].reads.len(), 1);
        assert_eq!(reads.loops[0].reads[0].path, ["name"]);
        assert!(!reads.loops[0].reads[0].guarded);
        assert!(reads.loops[0].reads[0].bare);
        assert_eq!(reads.names, ["x", "c", "n"]);

        // Past its loop, and in its `else`, the variable is not bound: it is read as data.
        let reads = scan(
            "{% for item in user.items %}{% else %}{{ item.name }}{% endfor %}{{ item.size }}",
        );
        assert_eq!(paths(&reads.data), ["user.items", "item.name", "item.size"]);
    }

    #[test]
    fn a_name_set_later_in_the_text_is_the_templates_everywhere() {
        // On the second pass the body prints what the first set.
        let reads = scan("{% for i in (1..3) %}{{ prev }}{% assign prev = i %}{% endfor %}");
        assert!(reads.data.is_empty(), "{:?}", reads.data);
        assert_eq!(reads.names, ["prev"]);
    }

    #[test]
    fn nested_loops_read_under_the_right_variable() {
        let reads = scan(
            "{% for o in user.orders %}{{ o.id }}{% for l in o.lines %}{{ l.sku }}{{ o.id }}\
             {% if l.note %}{{ l.note }}{% endif %}{% endfor %}{% endfor %}",
        );
        assert_eq!(paths(&reads.data), ["user.orders"]);
        let outer = &reads.loops[0];
        let inner = &reads.loops[1];
        assert_eq!(
            outer.list.as_deref().map(display).as_deref(),
            Some("user.orders")
        );
        assert_eq!(inner.outer, Some(0));
        assert_eq!(
            inner.list.as_deref().map(display).as_deref(),
            Some("o.lines")
        );

        let read = |l: &LoopReads| {
            l.reads
                .iter()
                .map(|r| (r.path.join("."), r.guarded))
                .collect::<Vec<_>>()
        };
        // The inner list is read on the outer element, where it may be missing.
        assert_eq!(
            read(outer),
            [
                ("id".into(), false),
                ("lines".into(), true),
                ("id".into(), false)
            ]
        );
        assert_eq!(
            read(inner),
            [
                ("sku".into(), false),
                ("note".into(), true),
                ("note".into(), true)
            ]
        );
    }

    #[test]
    fn a_data_root_set_by_the_template_is_the_data_until_then() {
        let reads = scan("{{ user.name }}{% assign user = \"x\" %}{{ user.name }}");
        assert_eq!(paths(&reads.data), ["user.name"]);
        assert_eq!(
            reads.bindings,
            [Binding {
                name: "user".into(),
                keyword: "assign".into(),
                at: (1, 26)
            }]
        );

        // A loop's variable named after a root is the element inside the loop.
        let reads = scan("{% for event in user.events %}{{ event.name }}{% endfor %}{{ event.x }}");
        assert_eq!(paths(&reads.data), ["user.events", "event.x"]);
        assert_eq!(reads.loops[0].reads[0].path, ["name"]);
    }

    #[test]
    fn bounds_and_parameters_of_a_loop_are_needed_and_its_list_is_not() {
        let reads = scan(
            "{% for i in (1..user.n) limit: user.limit reversed %}{% endfor %}\
             {% for x in user.list offset: 2 %}{% endfor %}",
        );
        let needed: Vec<(String, bool)> = reads
            .data
            .iter()
            .map(|u| (display(&u.path), u.guarded))
            .collect();
        assert_eq!(
            needed,
            [
                ("user.n".into(), false),
                ("user.limit".into(), false),
                ("user.list".into(), true)
            ]
        );
    }

    #[test]
    fn loops_in_comments_are_listed_and_raw_text_is_not_read() {
        let reads = scan(
            "{% comment %}{% for a in user.a %}{{ a.x }}{% endfor %}{% endcomment %}\
             {% raw %}{% for b in user.b %}{{ b.x }}{% endfor %}{% endraw %}\
             {% for c in user.c %}{{ c.x }}{% endfor %}{{ \"{% for d in e %}\" }}",
        );
        let names: Vec<&str> = reads.loops.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["a", "c"]);
        assert!(reads.loops[0].reads.is_empty());
        assert_eq!(paths(&reads.data), ["user.c"]);
    }

    #[test]
    fn filters_before_a_default_and_their_arguments_are_noted() {
        let reads = scan("{{ user.tags | join: sep | default: user.none, key: user.k }}");
        let head = &reads.data[0];
        assert_eq!(display(&head.path), "user.tags");
        assert!(head.guarded && !head.bare);
        assert_eq!(head.before_default, ["join"]);
        // `key:` names a parameter; the values after the colons are read, as nil if missing.
        assert_eq!(paths(&reads.data[1..]), ["sep", "user.none", "user.k"]);
        assert!(reads.data[1..].iter().all(|u| u.guarded));
    }
}
