//! Message templates in Liquid.
//!
//! Rule for missing values: a value is missing when its path is absent or `null`, and, for an
//! output tag without filters, when it is a boolean, an object or a list (those would print as
//! `true` or JSON, never what a reader should see). An output tag with a `default` filter
//! renders its default in that case; inside `{% if %}` and friends a missing value is simply
//! false. Any other missing value makes the whole message unsendable: it is skipped and the
//! reason recorded, rather than sent with a hole or raw syntax in it.
//!
//! A filter placed before the `default` gets the missing value as nil, as Liquid has it
//! (`{{ user.bio | size | default: 0 }}`); one that cannot take nil (`join`, `plus`) makes the
//! message unsendable too, and the reason names the value and the filter.
//!
//! Names the template sets are its own, not the data's, and the rule above does not apply to
//! them: `forloop` and `tablerow` inside their loops, and the names `assign`, `capture`,
//! `increment` and `decrement` set (nil until set). A loop's variable stands for each element
//! of its list in turn, and what the body reads under it follows the rule on each element,
//! the reason naming the element as the data holds it (`missing value user.items[2].name
//! with no default`). The lint refuses a template that sets one of the data's roots
//! ([`DATA_ROOTS`]): `{% assign user = ... %}` would hide the user's traits from the rest of it.
//!
//! Work: the text a template renders is bounded ([`MAX_RENDERED_BYTES`]), and so are the loop
//! iterations one render runs ([`MAX_LOOP_ITERATIONS`], every loop and nested loop counted)
//! and the values it makes on the way (each at most [`MAX_VALUE_BYTES`], all together at most
//! [`MAX_MADE_BYTES`]: filters' results, what `assign` copies and `capture` holds); any bound
//! skips the message with its reason. A loop whose written ranges alone go past the iteration
//! bound is refused by the lint ([`Template::lint`]).
//!
//! What fails at every render is refused by the lint too: `include` and `render`, since a
//! message's template has no other templates beside it, and `divided_by` or `modulo` by a
//! zero written in the text. A zero that comes from the data can only be found as the
//! message renders, and skips it with its reason.
//!
//! Escaping: for email every string value is HTML-escaped before rendering, so a product name
//! cannot inject markup; push, in-app and SMS are plain text and are not escaped. `url_encode`
//! is available for links.

use std::sync::{Arc, OnceLock};

use liquid_core::runtime::RuntimeBuilder;
use liquid_core::{Language, ParseBlock, ParseFilter, ParseTag, Renderable, Runtime};
use serde_json::Value;

/// The `BlockReflection` of one of our blocks: its opening and closing tags, and what it does.
macro_rules! block_reflection {
    ($block:ty, $start:literal, $end:literal, $description:literal) => {
        impl liquid_core::BlockReflection for $block {
            fn start_tag(&self) -> &str {
                $start
            }

            fn end_tag(&self) -> &str {
                $end
            }

            fn description(&self) -> &str {
                $description
            }
        }
    };
}

mod always_fails;
mod bounds;
mod elements;
mod loop_lint;
mod loops;
mod reads;
mod tags;

pub use bounds::{MAX_MADE_BYTES, MAX_VALUE_BYTES};
pub use loops::MAX_LOOP_ITERATIONS;

use reads::{PathUse, Reads, display};

/// The roots of the data a message template renders with, as the evaluator builds it: `user`
/// (traits), `event` (the triggering event's properties), `entry` (the entry event's
/// properties), `journey` (its fields) and `last` (earlier events, by name).
pub const DATA_ROOTS: &[&str] = &["user", "event", "entry", "journey", "last"];

/// A compiled template and what it reads.
#[derive(Clone)]
pub struct Template {
    source: String,
    compiled: Arc<liquid_core::Template>,
    reads: Arc<Reads>,
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Template")
            .field("source", &self.source)
            .finish()
    }
}

/// Escaping applied to values before rendering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Escape {
    None,
    Html,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderError {
    /// A value the template needs is missing and has no default.
    Missing(String),
    /// A missing value with a default went through a filter, before the default, that cannot
    /// take nil.
    FilterOnMissing { path: String, filter: String },
    /// The text came out longer than [`MAX_RENDERED_BYTES`] (a loop over a large range, say).
    TooLarge,
    /// A value the template made is longer than [`MAX_VALUE_BYTES`]; what made it
    /// (`filter append`, `capture s`, `assign s`, `ifchanged`).
    ValueTooLarge(String),
    /// The values the template made add up to more than [`MAX_MADE_BYTES`].
    TooMuchMade,
    /// The loops ran more than [`MAX_LOOP_ITERATIONS`] iterations in all.
    TooManyIterations,
    /// Liquid itself failed (an unknown filter argument, a bad comparison), on one line.
    Liquid(String),
}

impl std::fmt::Display for RenderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RenderError::Missing(p) => write!(f, "missing value {p} with no default"),
            RenderError::FilterOnMissing { path, filter } => write!(
                f,
                "missing value {path} goes through filter {filter}, which cannot take a \
                 missing value, before its default"
            ),
            RenderError::TooLarge => write!(
                f,
                "the rendered text is longer than {MAX_RENDERED_BYTES} bytes"
            ),
            RenderError::ValueTooLarge(by) => {
                write!(f, "{by} makes a value longer than {MAX_VALUE_BYTES} bytes")
            }
            RenderError::TooMuchMade => write!(
                f,
                "the template's filters, assigns and captures made more than {MAX_MADE_BYTES} \
                 bytes in all"
            ),
            RenderError::TooManyIterations => write!(
                f,
                "the template's loops ran more than {MAX_LOOP_ITERATIONS} iterations in all"
            ),
            RenderError::Liquid(e) => write!(f, "template failed: {e}"),
        }
    }
}

/// Why a template does not compile, and where in it, when Liquid says or the reason names
/// what was not found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    /// Liquid's reason, on one line.
    pub reason: String,
    /// Line and column in the template (both from 1, the column in characters).
    pub at: Option<(u32, u32)>,
}

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)?;
        if let Some((line, column)) = self.at {
            write!(f, ", at {line}:{column} of the template")?;
        }
        Ok(())
    }
}

impl TemplateError {
    /// Liquid's error text spread over lines (a position, a drawing of the source, the reason,
    /// then details), put on one line: the reason, what was asked for, and where.
    fn from_liquid(text: &str, source: &str) -> TemplateError {
        let mut lines = text.lines().map(str::trim);
        let head = lines.next().unwrap_or_default();
        let head = head.strip_prefix("liquid:").unwrap_or(head).trim();
        let (mut reason, mut at) = match head.strip_prefix("-->") {
            Some(position) => (String::new(), line_column(position.trim())),
            None => (head.to_string(), None),
        };
        for line in lines {
            if let Some(why) = line.strip_prefix("= ") {
                if reason.is_empty() {
                    reason = why.trim_end_matches('.').to_string();
                }
            } else if line.starts_with("requested") {
                reason = format!("{reason} ({line})");
                // An unknown filter comes without a place; its name finds it.
                if at.is_none()
                    && let Some(name) = line.strip_prefix("requested filter=")
                {
                    at = filter_place(source, name.trim());
                }
            }
        }
        if reason.is_empty() {
            reason = "invalid Liquid".into();
        }
        TemplateError { reason, at }
    }
}

/// `2:26` as numbers.
fn line_column(text: &str) -> Option<(u32, u32)> {
    let (line, column) = text.split_once(':')?;
    Some((line.trim().parse().ok()?, column.trim().parse().ok()?))
}

/// Where the first `| name` of `source` is: the line and column of the name.
fn filter_place(source: &str, name: &str) -> Option<(u32, u32)> {
    if name.is_empty() {
        return None;
    }
    for (i, line) in source.lines().enumerate() {
        let mut from = 0;
        while let Some(found) = line[from..].find(name) {
            let start = from + found;
            let before = line[..start].trim_end();
            let after = line[start + name.len()..].chars().next();
            let whole = after.is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
            if before.ends_with('|') && whole {
                let column = line[..start].chars().count() + 1;
                return Some((u32::try_from(i + 1).ok()?, u32::try_from(column).ok()?));
            }
            from = start + name.len();
        }
    }
    None
}

/// Why a render stopped, when one of the template's own blocks or filters stopped it.
#[derive(Default)]
struct Stopped(Option<RenderError>);

/// Ends the render for `reason`: it is kept in the render's registers, where the render
/// finds it, and Liquid's error carries it on the way out.
fn stop(runtime: &dyn Runtime, reason: RenderError) -> liquid_core::Error {
    let message = reason.to_string();
    let mut stopped = runtime.registers().get_mut::<Stopped>();
    stopped.0.get_or_insert(reason);
    liquid_core::Error::with_msg(message)
}

/// The longest text a template may render to. Far above any channel's real size (an APNs
/// payload is 4 KiB, an email body rarely 100 KiB) and below the 4 MiB a gRPC call to the
/// gateway carries, so a template that loops out of bounds fails as a skipped message with its
/// reason, at a bounded cost in memory, instead of growing without end.
pub const MAX_RENDERED_BYTES: usize = 1024 * 1024;

/// A buffer that refuses to grow past its limit: Liquid stops rendering at the first refused
/// write.
struct Bounded {
    text: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl Bounded {
    fn new(limit: usize) -> Bounded {
        Bounded {
            text: Vec::new(),
            limit,
            overflowed: false,
        }
    }
}

impl std::io::Write for Bounded {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.text.len() + bytes.len() > self.limit {
            self.overflowed = true;
            return Err(std::io::Error::other("rendered text too long"));
        }
        self.text.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The Liquid every template is parsed with: Liquid's standard tags, blocks and filters, with
/// ours in place of those that loop or hold values, and every filter measured.
fn language() -> &'static Language {
    static LANGUAGE: OnceLock<Language> = OnceLock::new();
    LANGUAGE.get_or_init(|| {
        use liquid_lib::stdlib;

        let mut language = Language::default();
        let tags: [Box<dyn ParseTag>; 8] = [
            Box::new(bounds::AssignTag),
            Box::new(stdlib::BreakTag),
            Box::new(stdlib::ContinueTag),
            Box::new(stdlib::CycleTag),
            Box::new(stdlib::IncludeTag),
            Box::new(stdlib::IncrementTag),
            Box::new(stdlib::DecrementTag),
            Box::new(stdlib::RenderTag),
        ];
        for tag in tags {
            language
                .tags
                .register(tag.reflection().tag().to_string(), tag);
        }
        let blocks: [Box<dyn ParseBlock>; 9] = [
            Box::new(stdlib::RawBlock),
            Box::new(stdlib::IfBlock),
            Box::new(stdlib::UnlessBlock),
            Box::new(bounds::IfChangedBlock),
            Box::new(loops::ForBlock::default()),
            Box::new(loops::TableRowBlock::default()),
            Box::new(stdlib::CommentBlock),
            Box::new(bounds::CaptureBlock),
            Box::new(stdlib::CaseBlock),
        ];
        for block in blocks {
            let name = block.reflection().start_tag().to_string();
            language.blocks.register(name, block);
        }
        let filters: [Box<dyn ParseFilter>; 48] = [
            Box::new(stdlib::Abs),
            Box::new(stdlib::Append),
            Box::new(stdlib::AtLeast),
            Box::new(stdlib::AtMost),
            Box::new(stdlib::Capitalize),
            Box::new(stdlib::Ceil),
            Box::new(stdlib::Compact),
            Box::new(stdlib::Concat),
            Box::new(stdlib::Date),
            Box::new(stdlib::Default),
            Box::new(stdlib::DividedBy),
            Box::new(stdlib::Downcase),
            Box::new(stdlib::Escape),
            Box::new(stdlib::EscapeOnce),
            Box::new(stdlib::First),
            Box::new(stdlib::Floor),
            Box::new(stdlib::Join),
            Box::new(stdlib::Last),
            Box::new(stdlib::Lstrip),
            Box::new(stdlib::Map),
            Box::new(stdlib::Minus),
            Box::new(stdlib::Modulo),
            Box::new(stdlib::NewlineToBr),
            Box::new(stdlib::Plus),
            Box::new(stdlib::Prepend),
            Box::new(stdlib::Remove),
            Box::new(stdlib::RemoveFirst),
            Box::new(stdlib::Replace),
            Box::new(stdlib::ReplaceFirst),
            Box::new(stdlib::Reverse),
            Box::new(stdlib::Round),
            Box::new(stdlib::Rstrip),
            Box::new(stdlib::Size),
            Box::new(stdlib::Slice),
            Box::new(stdlib::Sort),
            Box::new(stdlib::SortNatural),
            Box::new(stdlib::Split),
            Box::new(stdlib::Strip),
            Box::new(stdlib::StripHtml),
            Box::new(stdlib::StripNewlines),
            Box::new(stdlib::Times),
            Box::new(stdlib::Truncate),
            Box::new(stdlib::TruncateWords),
            Box::new(stdlib::Uniq),
            Box::new(stdlib::Upcase),
            Box::new(stdlib::UrlDecode),
            Box::new(stdlib::UrlEncode),
            Box::new(stdlib::Where),
        ];
        for filter in filters {
            let name = filter.reflection().name().to_string();
            language
                .filters
                .register(name, Box::new(bounds::Measured(filter)));
        }
        language
    })
}

/// Parses `source` with [`language`], its loops checking their elements as `reads` says.
fn parse(source: &str, reads: &Reads) -> liquid_core::Result<liquid_core::Template> {
    let plans = elements::Plans::new(reads.loops.clone());
    let mut language = language().clone();
    let blocks: [Box<dyn ParseBlock>; 2] = [
        Box::new(loops::ForBlock(Some(plans.clone()))),
        Box::new(loops::TableRowBlock(Some(plans))),
    ];
    for block in blocks {
        let name = block.reflection().start_tag().to_string();
        language.blocks.register(name, block);
    }
    liquid_core::parser::parse(source, &language).map(liquid_core::Template::new)
}

impl Template {
    /// Compiles `source`; the error is Liquid's own description of the problem on one line,
    /// with where in the template it is.
    pub fn compile(source: &str) -> Result<Template, TemplateError> {
        let reads = reads::scan(source);
        let compiled = parse(source, &reads)
            .map_err(|e| TemplateError::from_liquid(&e.to_string(), source))?;
        Ok(Template {
            source: source.to_string(),
            compiled: Arc::new(compiled),
            reads: Arc::new(reads),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// What the lint refuses in a template that compiles: a tag that sets one of the data's
    /// roots ([`DATA_ROOTS`]), which would hide that data from the rest of the template; a
    /// loop whose written ranges (and those of the loops inside it) run more than
    /// [`MAX_LOOP_ITERATIONS`] iterations, so that rendering it could only fail; and what
    /// fails wherever it runs: an `include` or `render` tag (a message has no other template
    /// to take in) and a `divided_by` or `modulo` by a zero written as a literal. The error
    /// is at the name set, the loop's range, the tag or the filter; the first in the text is
    /// given.
    ///
    /// Only what the text itself says can be refused here. A divisor, or a range's bound,
    /// read from the data is known only when the template renders: a zero or a huge bound
    /// there skips that message, with its reason, and nothing else.
    pub fn lint(&self) -> Result<(), TemplateError> {
        // On a tie the order below decides, though two problems never share a place.
        let found = [
            self.hiding_a_root(),
            self.over_budget(),
            always_fails::first(&self.source),
        ];
        match found.into_iter().flatten().min_by_key(|e| e.at) {
            Some(first) => Err(first),
            None => Ok(()),
        }
    }

    /// The first tag that sets a data root, as the lint's error.
    fn hiding_a_root(&self) -> Option<TemplateError> {
        let binding = self
            .reads
            .bindings
            .iter()
            .find(|b| DATA_ROOTS.contains(&b.name.as_str()))?;
        let what = match binding.name.as_str() {
            "user" => "the user's traits",
            "event" => "the triggering event's properties",
            "entry" => "the entry event's properties",
            "journey" => "the journey's fields",
            _ => "the earlier events",
        };
        let hides = if matches!(binding.keyword.as_str(), "for" | "tablerow") {
            "a loop variable of that name would hide them inside the loop"
        } else {
            "a variable of that name would hide them from there on"
        };
        Some(TemplateError {
            reason: format!(
                "`{}` names {what}; {hides}, so choose another name",
                binding.name
            ),
            at: Some(binding.at),
        })
    }

    /// The first loop bound to run past the iteration budget, as the lint's error.
    fn over_budget(&self) -> Option<TemplateError> {
        let over = loop_lint::over_budget(&self.source)?;
        let what = if over.nested {
            "this loop and the loops inside it run"
        } else {
            "this loop runs"
        };
        let least = if over.at_least { "at least " } else { "" };
        Some(TemplateError {
            reason: format!(
                "{what} {least}{} iterations, more than the {MAX_LOOP_ITERATIONS} one message \
                 may run; bound it with `limit:`",
                over.iterations
            ),
            at: Some(over.at),
        })
    }

    /// True when the template is plain text: rendering it needs no data.
    pub fn is_static(&self) -> bool {
        !self.source.contains("{{") && !self.source.contains("{%")
    }

    /// Whether the template's text contains `word` anywhere. A template can read a root
    /// variable (`user`, `entry`) only by naming it, so a root it does not mention need not
    /// be built for it.
    pub fn mentions(&self, word: &str) -> bool {
        self.source.contains(word)
    }

    /// Names read directly under `root`: `{{ last.product_viewed.name }}` gives
    /// `product_viewed` for `last`.
    pub fn children_of(&self, root: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for usage in &self.reads.data {
            if usage.path.first().is_some_and(|r| r == root)
                && let Some(child) = usage.path.get(1)
                && !out.contains(child)
            {
                out.push(child.clone());
            }
        }
        out
    }

    /// Renders with `data`, a JSON object whose top-level keys are the template's roots
    /// (`user`, `event`, `entry`, `journey`).
    pub fn render(&self, mut data: Value, escape: Escape) -> Result<String, RenderError> {
        // The missing values given nil for their default, should a filter refuse the nil.
        let mut nil_for_default: Vec<&PathUse> = Vec::new();
        for usage in &self.reads.data {
            let usable = match lookup(&data, &usage.path) {
                None | Some(Found::Nil) => false,
                Some(Found::PrintedAsIs) => !usage.bare,
                Some(Found::Text) => true,
            };
            if usable {
                continue;
            }
            if !usage.guarded {
                return Err(RenderError::Missing(display(&usage.path)));
            }

            // Liquid-rust rejects unknown variables even under `default`; an explicit nil
            // lets the default (or a false condition) apply.
            insert_null(&mut data, &usage.path);
            if !usage.before_default.is_empty() {
                nil_for_default.push(usage);
            }
        }

        // A name the template sets is nil until it does, as in Liquid elsewhere (liquid-rust
        // would refuse it as unknown).
        if let Some(roots) = data.as_object_mut() {
            for name in &self.reads.names {
                roots.entry(name.as_str()).or_insert(Value::Null);
            }
        }

        if escape == Escape::Html {
            escape_strings(&mut data);
        }

        let globals =
            liquid_core::to_object(&data).map_err(|e| RenderError::Liquid(e.to_string()))?;
        let runtime = RuntimeBuilder::new().set_globals(&globals).build();
        let mut out = Bounded::new(MAX_RENDERED_BYTES);
        let rendered = self.compiled.render_to(&mut out, &runtime);
        // Why our own blocks or filters stopped the render, if they did.
        let stopped = match &rendered {
            Ok(()) => None,
            Err(_) => runtime.registers().get_mut::<Stopped>().0.take(),
        };
        match (rendered, stopped) {
            (Ok(()), _) => {
                String::from_utf8(out.text).map_err(|e| RenderError::Liquid(e.to_string()))
            }
            (Err(_), Some(reason)) => Err(reason),
            (Err(_), None) if out.overflowed => Err(RenderError::TooLarge),
            (Err(e), None) => {
                let text = e.to_string();
                let refused = nil_refused_by(&text).and_then(|filter| {
                    nil_for_default
                        .iter()
                        .find(|u| u.before_default.iter().any(|f| f == filter))
                        .map(|u| RenderError::FilterOnMissing {
                            path: u.path.join("."),
                            filter: filter.to_string(),
                        })
                });
                Err(refused.unwrap_or_else(|| RenderError::Liquid(one_line(&text))))
            }
        }
    }
}

/// The filter that failed on nil, from the text of Liquid's error: its trace names the
/// filter (`filter=join : ","`) and the value it was given (`input=nil`).
fn nil_refused_by(text: &str) -> Option<&str> {
    let context = |key: &str| {
        text.lines()
            .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
            .next_back()
    };
    if context("input")? != "nil" {
        return None;
    }
    context("filter")?.split_whitespace().next()
}

/// Liquid's error text spread over lines (the message, then each frame of its trace with the
/// values it names) put on one line: `Invalid input (cause=...) in Filter error (filter=...)`.
fn one_line(text: &str) -> String {
    let mut out = String::new();
    let mut values: Vec<&str> = Vec::new();
    let flush = |out: &mut String, values: &mut Vec<&str>| {
        if !values.is_empty() {
            out.push_str(" (");
            out.push_str(&values.join(", "));
            out.push(')');
            values.clear();
        }
    };
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(message) = line.strip_prefix("liquid:") {
            out.push_str(message.trim());
        } else if let Some(frame) = line.strip_prefix("from:") {
            flush(&mut out, &mut values);
            out.push_str(" in ");
            out.push_str(frame.trim());
        } else if line != "with:" {
            values.push(line);
        }
    }
    flush(&mut out, &mut values);
    out
}

/// What a path finds in the data, as the rule for missing values sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    Nil,
    /// A boolean, an object or a list: printed as it is, it would read `true` or JSON.
    PrintedAsIs,
    /// Text or a number.
    Text,
}

/// Looks `path` up in `data` as Liquid does: by key in an object, by position in a list
/// (from the end when negative), and `size`, `first` and `last` where Liquid has them.
fn lookup(data: &Value, path: &[String]) -> Option<Found> {
    let mut at = data;
    for (i, key) in path.iter().enumerate() {
        let next = match at {
            Value::Object(object) => match object.get(key) {
                Some(value) => Some(value),
                None if key == "size" => return size_found(&path[i + 1..]),
                None => None,
            },
            Value::Array(list) => match key.parse::<i64>() {
                Ok(n) => {
                    let n = if n < 0 { list.len() as i64 + n } else { n };
                    usize::try_from(n).ok().and_then(|n| list.get(n))
                }
                Err(_) => match key.as_str() {
                    "first" => list.first(),
                    "last" => list.last(),
                    "size" => return size_found(&path[i + 1..]),
                    _ => None,
                },
            },
            Value::Null => None,
            _ if key == "size" => return size_found(&path[i + 1..]),
            _ => None,
        };
        at = next?;
    }
    Some(match at {
        Value::Null => Found::Nil,
        Value::Bool(_) | Value::Object(_) | Value::Array(_) => Found::PrintedAsIs,
        Value::Number(_) | Value::String(_) => Found::Text,
    })
}

/// What `size` finds: a number, under which nothing more is found.
fn size_found(rest: &[String]) -> Option<Found> {
    rest.is_empty().then_some(Found::Text)
}

fn insert_null(data: &mut Value, path: &[String]) {
    let mut cur = data;
    for (i, key) in path.iter().enumerate() {
        let Some(obj) = cur.as_object_mut() else {
            return;
        };
        let last = i + 1 == path.len();
        let slot = obj.entry(key.clone()).or_insert_with(|| {
            if last {
                Value::Null
            } else {
                Value::Object(Default::default())
            }
        });
        if last {
            *slot = Value::Null;
            return;
        }
        if slot.is_null() {
            *slot = Value::Object(Default::default());
        }
        cur = slot;
    }
}

fn escape_strings(value: &mut Value) {
    match value {
        Value::String(s) if s.contains(['<', '>', '&', '"', '\'']) => {
            *s = html_escape(s);
        }
        Value::Array(items) => items.iter_mut().for_each(escape_strings),
        Value::Object(map) => map.values_mut().for_each(escape_strings),
        _ => {}
    }
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_template_error_is_one_line_with_its_reason_and_place() {
        let error = |src: &str| Template::compile(src).err().map(|e| e.to_string());
        let error = |src: &str| error(src).unwrap_or_default();
        assert_eq!(
            error("Hi {{ user.name "),
            "expected Literal, at 1:7 of the template"
        );
        assert_eq!(
            error("{% endif %}"),
            "Unknown tag (requested=endif), at 1:4 of the template"
        );
        assert_eq!(
            error("{{ a | nofilter }}"),
            "Unknown filter (requested filter=nofilter), at 1:8 of the template"
        );
        let late = Template::compile("Hi\n{{ a | upcase | nofilter }}").err();
        assert_eq!(late.and_then(|e| e.at), Some((2, 17)));
        assert!(error("Hi {% if x %}").starts_with("Unclosed block"));
    }

    fn render(src: &str, data: Value) -> Result<String, RenderError> {
        Template::compile(src)
            .map_err(|e| RenderError::Liquid(e.to_string()))?
            .render(data, Escape::None)
    }

    #[test]
    fn the_language_has_liquids_standard_tags_blocks_and_filters() {
        use liquid::reflection::ParserReflection;

        let liquids = liquid::ParserBuilder::with_stdlib();
        let sorted = |names: Vec<&str>| {
            let mut names: Vec<String> = names.into_iter().map(str::to_string).collect();
            names.sort();
            names
        };
        let ours = language();
        assert_eq!(
            sorted(ours.tags.plugin_names().collect()),
            sorted(liquids.tags().map(|t| t.tag()).collect())
        );
        assert_eq!(
            sorted(ours.blocks.plugin_names().collect()),
            sorted(liquids.blocks().map(|b| b.start_tag()).collect())
        );
        assert_eq!(
            sorted(ours.filters.plugin_names().collect()),
            sorted(liquids.filters().map(|f| f.name()).collect())
        );
    }

    #[test]
    fn text_past_the_bound_is_refused_not_built() {
        // 20 bytes an iteration: the text reaches its bound before the loop its budget.
        let big = "{% for i in (1..2000000) %}xxxxxxxxxxxxxxxxxxxx{% endfor %}";
        assert_eq!(render(big, json!({})), Err(RenderError::TooLarge));
        let fits = "{% for i in (1..1000) %}xxxxxxxxxx{% endfor %}";
        assert_eq!(render(fits, json!({})).map(|t| t.len()), Ok(10_000));
    }

    #[test]
    fn renders_values_and_defaults() {
        let data = json!({"entry": {"name": "Red shoes"}, "user": {}});
        assert_eq!(
            render("You left {{ entry.name }}", data.clone())
                .ok()
                .as_deref(),
            Some("You left Red shoes")
        );
        assert_eq!(
            render("Hi {{ user.first_name | default: \"there\" }}", data)
                .ok()
                .as_deref(),
            Some("Hi there")
        );
    }

    #[test]
    fn defaults_may_chain_through_missing_values() {
        let src = "{{ entry.name | default: entry.sku | default: \"an item\" }}";
        assert_eq!(
            render(src, json!({"entry": {}})).ok().as_deref(),
            Some("an item")
        );
        let sku = json!({"entry": {"sku": "A-1"}});
        assert_eq!(render(src, sku).ok().as_deref(), Some("A-1"));
    }

    #[test]
    fn missing_value_without_default_is_an_error_not_a_hole() {
        let data = json!({"user": {"first_name": null}});
        assert_eq!(
            render("Hi {{ user.first_name }}", data),
            Err(RenderError::Missing("user.first_name".into()))
        );
        assert_eq!(
            render("{{ user.vip }}", json!({"user": {"vip": true}})),
            Err(RenderError::Missing("user.vip".into()))
        );
    }

    #[test]
    fn conditions_treat_missing_as_false() {
        let src = "{% if user.plan == \"pro\" %}Pro{% else %}Free{% endif %}";
        assert_eq!(
            render(src, json!({"user": {}})).ok().as_deref(),
            Some("Free")
        );
    }

    #[test]
    fn printing_inside_its_own_if_is_guarded() {
        let src = "We miss you{% if user.first_name %}, {{ user.first_name }}{% endif %}";
        assert_eq!(
            render(src, json!({"user": {}})).ok().as_deref(),
            Some("We miss you")
        );
        let named = json!({"user": {"first_name": "Ada"}});
        assert_eq!(render(src, named).ok().as_deref(), Some("We miss you, Ada"));
        let other = "{% if user.plan %}{{ user.first_name }}{% endif %}";
        assert!(render(other, json!({"user": {"plan": "pro"}})).is_err());
    }

    #[test]
    fn html_escaping_for_email_only() {
        let t = Template::compile("<p>{{ entry.name }}</p>").ok();
        let data = json!({"entry": {"name": "<b>x</b> & y"}});
        let html = t
            .as_ref()
            .and_then(|t| t.render(data.clone(), Escape::Html).ok());
        assert_eq!(html.as_deref(), Some("<p>&lt;b&gt;x&lt;/b&gt; &amp; y</p>"));
        let plain = t.and_then(|t| t.render(data, Escape::None).ok());
        assert_eq!(plain.as_deref(), Some("<p><b>x</b> & y</p>"));
    }
}

/// The loop iteration budget, and `for` and `tablerow` against Liquid's own blocks.
#[cfg(test)]
mod loop_tests {
    use super::*;
    use serde_json::json;

    fn render(src: &str, data: Value) -> Result<String, RenderError> {
        Template::compile(src)
            .map_err(|e| RenderError::Liquid(e.to_string()))?
            .render(data, Escape::None)
    }

    #[test]
    fn nested_literal_loops_stop_at_the_budget() {
        let src = "{% for i in (1..100000000) %}{% for j in (1..1000) %}{% endfor %}{% endfor %}";
        assert_eq!(render(src, json!({})), Err(RenderError::TooManyIterations));
        assert_eq!(
            RenderError::TooManyIterations.to_string(),
            "the template's loops ran more than 100000 iterations in all"
        );
    }

    #[test]
    fn a_loop_bounded_by_a_trait_stops_at_the_budget() {
        let user = json!({"user": {"n": 1_000_000_000_i64}});
        let src = "Hi{% for i in (1..user.n) %}{% endfor %}";
        assert_eq!(
            render(src, user.clone()),
            Err(RenderError::TooManyIterations)
        );
        let src = "{% for i in (1..user.n) reversed %}{% endfor %}";
        assert_eq!(
            render(src, user.clone()),
            Err(RenderError::TooManyIterations)
        );
        // Each cell runs a loop of its own, so the budget is spent before the cells' markup
        // reaches the bound of the text.
        let src = "{% tablerow i in (1..user.n) cols: 3 %}{% for j in (1..1000) %}{% endfor %}\
                   {% endtablerow %}";
        assert_eq!(
            render(src, user.clone()),
            Err(RenderError::TooManyIterations)
        );
        // Captured, the cells are held to the bound of one value, which they reach first.
        let src = "{% capture t %}{% tablerow i in (1..user.n) cols: 3 %}{% endtablerow %}\
                   {% endcapture %}";
        assert_eq!(
            render(src, user),
            Err(RenderError::ValueTooLarge("capture t".into()))
        );

        let small = json!({"user": {"n": 3}});
        let src = "{% for i in (1..user.n) %}{{ i | default: 0 }}{% endfor %}";
        assert_eq!(render(src, small).as_deref(), Ok("123"));
    }

    #[test]
    fn every_loop_of_a_render_draws_on_one_budget() {
        let at_budget = "{% for i in (1..100000) %}{% endfor %}";
        assert_eq!(render(at_budget, json!({})).as_deref(), Ok(""));
        let past = "{% for i in (1..100001) %}{% endfor %}";
        assert_eq!(render(past, json!({})), Err(RenderError::TooManyIterations));

        // The outer loop's 10 iterations count as well as the inner loops' 100000.
        let nested = "{% for i in (1..10) %}{% for j in (1..10000) %}{% endfor %}{% endfor %}";
        assert_eq!(
            render(nested, json!({})),
            Err(RenderError::TooManyIterations)
        );

        let one_after_another = |n: u64| {
            format!(
                "{{% for i in (1..{n}) %}}{{% endfor %}}{{% for i in (1..{n}) %}}.{{% endfor %}}"
            )
        };
        assert_eq!(
            render(&one_after_another(50_000), json!({})).map(|t| t.len()),
            Ok(50_000)
        );
        assert_eq!(
            render(&one_after_another(50_001), json!({})),
            Err(RenderError::TooManyIterations)
        );
    }

    #[test]
    fn each_render_has_a_budget_of_its_own() {
        let t = Template::compile("{% for i in (1..90000) %}{% endfor %}done").ok();
        for _ in 0..2 {
            let out = t.as_ref().map(|t| t.render(json!({}), Escape::None));
            assert_eq!(out, Some(Ok("done".to_string())));
        }
    }

    #[test]
    fn a_break_stops_spending() {
        let src = "{% for i in (1..1000000000) %}{% if i > 3 %}{% break %}{% endif %}\
                   {% for j in (1..3) %}.{% endfor %}{% endfor %}";
        assert_eq!(render(src, json!({})).as_deref(), Ok("........."));
    }

    /// Templates rendered by Liquid's own blocks and by ours, with the same data.
    const SAME_AS_LIQUID: &[&str] = &[
        "{% for i in (1..5) %}{{ i }},{% endfor %}",
        "{% for i in (1..5) limit:2 %}{{ i }},{% endfor %}",
        "{% for i in (1..5) offset:1 %}{{ i }},{% endfor %}",
        "{% for i in (1..5) limit: 2, offset: 1 %}{{ i }},{% endfor %}",
        "{% for i in (1..5) offset:2 limit:10 %}[{{ i }}]{% endfor %}",
        "{% for i in (1..5) offset:4 limit:3 %}[{{ i }}]{% endfor %}",
        "{% for i in (1..5) offset:9 %}[{{ i }}]{% else %}none{% endfor %}",
        "{% for i in (1..5) offset:9 limit:2 %}[{{ i }}]{% else %}none{% endfor %}",
        "{% for i in (1..5) limit:0 %}[{{ i }}]{% else %}none{% endfor %}",
        "{% for i in (1..5) limit:-1 %}[{{ i }}]{% endfor %}",
        "{% for i in (1..5) offset:-1 %}[{{ i }}]{% else %}none{% endfor %}",
        "{% for i in (1..5) reversed %}{{ i }}{% endfor %}",
        "{% for i in (1..10) reversed offset:2 limit:3 %}{{ i }}{% endfor %}",
        "{% for i in (1..10) limit: three reversed %}{{ i }}{% endfor %}",
        "{% for i in (-2..2) %}{{ i }} {% endfor %}",
        "{% for i in (a..b) %}{{ i }}{% endfor %}",
        "{% for i in (texta..textb) %}{{ i }}{% endfor %}",
        "{% for i in (3..1) %}{{ i }}{% else %}empty{% endfor %}",
        "{% for i in items %}{{ i }}{% else %}empty{% endfor %}",
        "{% for i in nothing %}{{ i }}{% else %}empty{% endfor %}",
        "{% for i in none %}{{ i }}{% else %}empty{% endfor %}",
        "{% for i in empty %}{{ i }}{% else %}empty{% endfor %}",
        "{% for i in items reversed limit:2 %}{{ i }}{% endfor %}",
        "{% for p in pairs %}{{ p[0] }}={{ p[1] }};{% endfor %}",
        "{% for i in items %}{{ forloop.index }}/{{ forloop.index0 }}/{{ forloop.rindex }}/\
         {{ forloop.rindex0 }}/{{ forloop.first }}/{{ forloop.last }}/{{ forloop.length }} \
         {% endfor %}",
        "{% for i in (1..3) %}{{ forloop.parentloop.index | default: \"top\" }} {% endfor %}",
        "{% for i in (1..2) %}{% for j in items %}{{ forloop.parentloop.index }}.\
         {{ forloop.index }}:{{ i }}{{ j }} {% endfor %}{% endfor %}",
        "{% for i in (1..2) %}{% for j in (1..2) %}{% for k in (1..2) %}\
         {{ forloop.parentloop.parentloop.index }}{{ forloop.parentloop.index }}\
         {{ forloop.index }} {% endfor %}{% endfor %}{% endfor %}",
        "{% for i in (1..2) %}{{ forloop.size }}{{ forloop.last | default: \"no\" }}{% endfor %}",
        "{% for i in (1..10) %}{% if i == 3 %}{% continue %}{% endif %}\
         {% if i == 6 %}{% break %}{% endif %}{{ i }}{% endfor %}after",
        "{% for i in (1..3) %}{% for j in (1..3) %}{% if j == 2 %}{% break %}{% endif %}\
         {{ i }}{{ j }} {% endfor %}{% if i == 2 %}{% continue %}{% endif %}|{% endfor %}",
        "{% for i in (1..3) %}{% case i %}{% when 2 %}{% break %}{% else %}{{ i }}\
         {% endcase %}{% endfor %}",
        "{% for i in (1..3) %}{% unless i == 2 %}{{ i }}{% endunless %}{% endfor %}",
        "{% for i in (1..5) %}{% capture c %}{{ i }}{% if i == 3 %}{% break %}{% endif %}\
         {% endcapture %}{{ c }}{% endfor %}",
        "{% assign i = 9 %}{% for i in (1..2) %}{{ i }}{% endfor %}{{ i }}",
        "{% for i in (1..3) %}{% assign last = i %}{% endfor %}{{ last }}",
        "{% for i in (1..4) %}{% cycle \"a\", \"b\", \"c\" %}{% endfor %}",
        "{% for i in (1..3) %}{% increment n %}{% endfor %}",
        "{% for i in (1..3) %}{% ifchanged %}{{ i | divided_by: 2 }}{% endifchanged %}{% endfor %}",
        "{%- for i in (1..3) -%} {{ i }} {%- endfor -%}",
        "{% for i in (1..3) %}{% else %}{% break %}{% endfor %}x",
        "{% for i in (1..2) %}{% for j in (3..1) %}{% else %}{{ forloop.index }}{% endfor %}\
         {% endfor %}",
        "{{ forloop.index | default: \"outside\" }}",
        "{% tablerow i in (1..5) cols:2 %}{{ i }}{% endtablerow %}",
        "{% tablerow i in (1..5) %}{{ i }}{% endtablerow %}",
        "{% tablerow i in items cols:2 limit:2 offset:1 %}{{ i }}{% endtablerow %}",
        "{% tablerow i in (1..4) cols: 3 %}{{ tablerow.index }}{{ tablerow.index0 }}\
         {{ tablerow.rindex }}{{ tablerow.rindex0 }}{{ tablerow.first }}{{ tablerow.last }}\
         {{ tablerow.col }}{{ tablerow.col0 }}{{ tablerow.col_first }}{{ tablerow.col_last }}\
         {{ tablerow.length }}{% endtablerow %}",
        "{% tablerow i in (3..1) %}{{ i }}{% endtablerow %}after",
        "{% for i in (1..2) %}{% tablerow j in (1..2) %}{{ i }}{{ j }}\
         {{ forloop.index }}{% endtablerow %}{% endfor %}",
        // Failures: both fail, whatever they say.
        "{% for i in (1..x) %}{% endfor %}",
        "{% for i in (1..2.5) %}{% endfor %}",
        "{% for i in text %}{{ i }}{% endfor %}",
        "{% for i in (1..3) limit: nothing %}{% endfor %}",
        "{% for i in (1..3) offset: text %}{% endfor %}",
        "{% tablerow i in (1..3) cols: text %}{% endtablerow %}",
        "{% for i in (1..3) %}{{ i | nosuchfilter }}{% endfor %}",
        "{% for i in (1..3) %}{{ i | divided_by: 0 }}{% endfor %}",
    ];

    /// Templates both refuse to compile.
    const REFUSED_AS_BY_LIQUID: &[&str] = &[
        "{% for i (1..3) %}{% endfor %}",
        "{% for in (1..3) %}{% endfor %}",
        "{% for i in %}{% endfor %}",
        "{% for i on (1..3) %}{% endfor %}",
        "{% for i in (1..3) limit %}{% endfor %}",
        "{% for i in (1..3) limit 3 %}{% endfor %}",
        "{% for i in (1..3) foo %}{% endfor %}",
        "{% for i in (1..3) cols: 2 %}{% endfor %}",
        "{% for i in (1..3) %}{% else x %}{% endfor %}",
        "{% for i in (1..3) %}",
        "{% for a.b in (1..3) %}{% endfor %}",
        "{% tablerow i in (1..3) reversed %}{% endtablerow %}",
        "{% tablerow i in (1..3) %}{% else %}{% endtablerow %}",
        "{% tablerow i in (1..3) %}",
    ];

    fn globals() -> liquid::Object {
        let data = json!({
            "a": 2, "b": 4, "texta": "2", "textb": "4", "three": 3,
            "items": ["x", "y", "z"],
            "pairs": {"k": "v", "n": 1},
            "nothing": null,
            "text": "abc",
        });
        liquid::to_object(&data).unwrap_or_default()
    }

    /// `src` parsed with our language, without the checks of a compiled template, and
    /// rendered as Liquid renders.
    fn ours(src: &str, globals: &liquid::Object) -> liquid_core::Result<String> {
        let template = liquid_core::parser::parse(src, language())?;
        let runtime = RuntimeBuilder::new().set_globals(globals).build();
        let mut out = Vec::new();
        liquid_core::Template::new(template).render_to(&mut out, &runtime)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    #[test]
    fn loops_render_as_liquids_own_blocks_do() {
        let liquids = liquid::ParserBuilder::with_stdlib().build();
        let Ok(liquids) = liquids else {
            panic!("Liquid's parser builds");
        };
        let globals = globals();
        for src in SAME_AS_LIQUID {
            let ours = ours(src, &globals);
            let theirs = liquids.parse(src).and_then(|t| t.render(&globals));
            match (ours, theirs) {
                (Ok(ours), Ok(theirs)) => assert_eq!(ours, theirs, "{src}"),
                (Err(_), Err(_)) => {}
                (ours, theirs) => panic!("{src}: ours {ours:?}, Liquid's {theirs:?}"),
            }
        }
        for src in REFUSED_AS_BY_LIQUID {
            assert!(liquids.parse(src).is_err(), "Liquid takes {src}");
            assert!(
                liquid_core::parser::parse(src, language()).is_err(),
                "we take {src}"
            );
        }
    }

    #[test]
    fn tablerow_takes_break_and_refuses_zero_columns() {
        let src = "{% tablerow i in (1..5) cols:2 %}{{ i | default: 0 }}{% if i == 3 %}{% break %}\
                   {% endif %}{% endtablerow %}after";
        assert_eq!(
            render(src, json!({})).as_deref(),
            Ok(
                "<tr class=\"row1\"><td class=\"col1\">1</td><td class=\"col2\">2</td></tr>\
                <tr class=\"row2\"><td class=\"col1\">3</td></tr>after"
            )
        );
        let zero = render(
            "{% tablerow i in (1..3) cols:0 %}{% endtablerow %}",
            json!({}),
        );
        assert!(
            matches!(&zero, Err(RenderError::Liquid(e)) if e.contains("`cols` must be at least 1")),
            "{zero:?}"
        );
    }

    #[test]
    fn the_lint_names_a_nest_of_written_ranges_past_the_budget() {
        let lint = |src: &str| Template::compile(src).and_then(|t| t.lint()).err();
        let nested = "Hi\n{% for i in (1..100000000) %}{% for j in (1..1000) %}{% endfor %}\
                      {% endfor %}";
        let error = lint(nested);
        assert_eq!(
            error.as_ref().map(|e| e.to_string()),
            Some(
                "this loop and the loops inside it run 100100000000 iterations, more than the \
                 100000 one message may run; bound it with `limit:`, at 2:13 of the template"
                    .to_string()
            )
        );
        let by_trait =
            "{% for i in (1..user.n) %}{% for j in (1..200000) %}{% endfor %}{% endfor %}";
        assert_eq!(
            lint(by_trait).and_then(|e| e.at),
            Some((1, 39)),
            "the inner loop alone is past the budget"
        );
        assert_eq!(lint("{% for i in (1..user.n) %}{% endfor %}"), None);
        assert_eq!(
            lint("{% for i in (1..1000) %}{{ i | default: 0 }}{% endfor %}"),
            None
        );
    }

    #[test]
    fn what_fails_at_every_render_is_refused_by_the_lint_at_its_place() {
        let data = json!({"user": {"seats": 0}});
        for (src, at, reason) in [
            (
                "Hi {% include 'footer' %}",
                (1, 7),
                "`include` takes in another template",
            ),
            (
                "Hi\n{% render 'card' %}",
                (2, 4),
                "`render` takes in another template",
            ),
            (
                "{{ 12 | divided_by: 0 }}",
                (1, 9),
                "`divided_by: 0` divides by zero",
            ),
            (
                "{{ 12 | modulo: \"0\" }}",
                (1, 9),
                "`modulo: \"0\"` divides by zero",
            ),
        ] {
            // Rendering it fails whatever the data, so its message would always be skipped.
            assert!(
                matches!(render(src, data.clone()), Err(RenderError::Liquid(_))),
                "{src}"
            );

            let template = Template::compile(src).expect("compiles");
            let error = template.lint().expect_err(src);
            assert_eq!(error.at, Some(at), "{src}");
            assert!(error.reason.starts_with(reason), "{src}: {error}");
        }

        // A zero read from the data is only known as the message renders.
        let src = "{{ 12 | divided_by: user.seats }}";
        assert!(render(src, data).is_err());
        assert_eq!(Template::compile(src).map(|t| t.lint()), Ok(Ok(())));

        // The first problem in the text is the one given.
        let src = "{% assign user = 1 %}{{ 1 | divided_by: 0 }}";
        let first = Template::compile(src).and_then(|t| t.lint()).err();
        assert_eq!(first.and_then(|e| e.at), Some((1, 11)));
        let src = "{% include 'x' %}{% assign user = 1 %}";
        let first = Template::compile(src).and_then(|t| t.lint()).err();
        assert_eq!(first.and_then(|e| e.at), Some((1, 4)));
    }
}

/// Filters on a missing value.
#[cfg(test)]
mod missing_tests {
    use super::*;
    use serde_json::json;

    fn render(src: &str, data: Value) -> Result<String, RenderError> {
        Template::compile(src)
            .map_err(|e| RenderError::Liquid(e.to_string()))?
            .render(data, Escape::None)
    }

    #[test]
    fn a_filter_without_default_on_a_missing_value_skips_the_message_naming_the_value() {
        let user = json!({"user": {"name": "Ada"}});
        for (src, path) in [
            ("{{ user.bio | size }}", "user.bio"),
            ("Hi {{ user.nick | upcase }}", "user.nick"),
            ("{{ user.nick | upcase | append: user.name }}", "user.nick"),
        ] {
            let out = render(src, user.clone());
            assert_eq!(out, Err(RenderError::Missing(path.into())), "{src}");
            let reason = out.err().map(|e| e.to_string()).unwrap_or_default();
            assert_eq!(reason, format!("missing value {path} with no default"));
        }
        let null = json!({"user": {"bio": null}});
        assert_eq!(
            render("{{ user.bio | size }}", null),
            Err(RenderError::Missing("user.bio".into()))
        );
        assert_eq!(
            render("{{ user.name | upcase }}", user).as_deref(),
            Ok("ADA")
        );
    }

    #[test]
    fn filters_before_the_default_get_nil() {
        let nobody = json!({"user": {}});
        assert_eq!(
            render(
                "Hi {{ user.nick | upcase | default: \"friend\" }}",
                nobody.clone()
            )
            .as_deref(),
            Ok("Hi friend")
        );
        assert_eq!(
            render("{{ user.bio | size | default: 0 }}", nobody.clone()).as_deref(),
            Ok("0")
        );

        let out = render(
            "{{ user.tags | join: \", \" | default: \"none\" }}",
            nobody.clone(),
        );
        assert_eq!(
            out,
            Err(RenderError::FilterOnMissing {
                path: "user.tags".into(),
                filter: "join".into()
            })
        );
        assert_eq!(
            out.err().map(|e| e.to_string()).as_deref(),
            Some(
                "missing value user.tags goes through filter join, which cannot take a \
                 missing value, before its default"
            )
        );

        // With the default first, the filter gets the default.
        assert_eq!(
            render("{{ user.nick | default: \"friend\" | upcase }}", nobody).as_deref(),
            Ok("FRIEND")
        );
    }

    #[test]
    fn a_liquid_failure_reads_on_one_line() {
        let out = render(
            "{{ user.name | plus: 1 }}",
            json!({"user": {"name": "Ada"}}),
        );
        let Err(RenderError::Liquid(reason)) = out else {
            panic!("expected a Liquid failure, got {out:?}");
        };
        assert!(!reason.contains('\n'), "{reason}");
        assert_eq!(
            reason,
            "Invalid argument (argument=operand, cause=Number expected) in Filter error \
             (filter=plus : 1, input=\"Ada\")"
        );
    }
}
