//! `for` and `tablerow`, read as Liquid reads them, with every iteration counted against one
//! budget per render.
//!
//! Liquid's own blocks build the whole list of a range before its first iteration, so
//! `(1..user.n)` with a large `n` costs memory as well as time, and nothing bounds a loop that
//! writes nothing. These blocks walk a range without building it, and each iteration, at any
//! depth of nesting, takes one of the [`MAX_LOOP_ITERATIONS`] a render has (kept in the
//! render's registers, so nested loops share them). The first iteration past the budget ends
//! the render, with its reason.
//!
//! The loops of a template that is compiled for rendering also check each element of a list
//! they walk, as [`super::elements`] says.
//!
//! Everything else reads as it did with Liquid's blocks: `limit:`, `offset:` and `reversed`
//! (with Liquid's rule that a `limit:` past the end pads with nil), `else`, `break`,
//! `continue`, and the `forloop` and `tablerow` variables. Two things differ, both cases where
//! Liquid's blocks failed: `tablerow` with `cols: 0` is an error where it panicked, and `break`
//! or `continue` inside a `tablerow` ends or skips the cell as they do in a `for`, where they
//! left the rest of the table half rendered.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use liquid_core::error::ResultLiquidExt;
use liquid_core::model::{KString, KStringRef, ObjectView, Scalar, Value, ValueCow, ValueView};
use liquid_core::parser::{BlockElement, TryMatchToken};
use liquid_core::runtime::{Interrupt, InterruptRegister, StackFrame};
use liquid_core::{
    BlockReflection, Error, Expression, Language, ParseBlock, Renderable, Result, Runtime,
    TagBlock, TagTokenIter, Template,
};

use super::elements::{Checks, Plans};
use super::{RenderError, stop};

/// Loop iterations one render may run, counting every iteration of every loop, nested or
/// not. A message that lists a cart, a feed or a grid of products runs a few hundred; a loop
/// over a range taken from a trait (`(1..user.n)`) or nested ranges that multiply reach the
/// budget in well under a second, and the message is skipped with its reason rather than
/// holding its partition for minutes.
pub const MAX_LOOP_ITERATIONS: u64 = 100_000;

/// The iterations a render has run so far, in its registers.
#[derive(Default)]
struct Spent(u64);

/// Takes one iteration from the render's budget.
fn spend(runtime: &dyn Runtime) -> Result<()> {
    let mut spent = runtime.registers().get_mut::<Spent>();
    spent.0 += 1;
    if spent.0 > MAX_LOOP_ITERATIONS {
        drop(spent);
        return Err(stop(runtime, RenderError::TooManyIterations));
    }
    Ok(())
}

/// The `for` block, with the checks of the template it parses, if any.
#[derive(Clone, Debug, Default)]
pub(super) struct ForBlock(pub Option<Arc<Plans>>);

/// The `tablerow` block, with the checks of the template it parses, if any.
#[derive(Clone, Debug, Default)]
pub(super) struct TableRowBlock(pub Option<Arc<Plans>>);

/// Reads a loop's tag, with the checks `plans` has for it, if any.
fn head_and_checks(
    plans: &Option<Arc<Plans>>,
    keyword: &str,
    arguments: &mut TagTokenIter<'_>,
    parameters: &[&str],
) -> Result<(Head, Option<Checks>)> {
    let ordinal = plans.as_ref().map(|p| p.next());
    let head = Head::parse(arguments, parameters)?;
    let checks = plans
        .as_ref()
        .zip(ordinal)
        .and_then(|(p, ordinal)| p.checks(ordinal, keyword, head.name.as_str()));
    Ok((head, checks))
}

block_reflection!(
    ForBlock,
    "for",
    "endfor",
    "Renders its body once for each item of a list or number of a range."
);

block_reflection!(
    TableRowBlock,
    "tablerow",
    "endtablerow",
    "Renders its body once for each item, as the cells of HTML table rows."
);

impl ParseBlock for ForBlock {
    fn parse(
        &self,
        mut arguments: TagTokenIter<'_>,
        mut block: TagBlock<'_, '_>,
        options: &Language,
    ) -> Result<Box<dyn Renderable>> {
        let parameters = ["limit", "offset", "reversed"];
        let (head, checks) = head_and_checks(&self.0, "for", &mut arguments, &parameters)?;

        // The body runs up to an `else` of this block's own; what follows it runs when
        // there is nothing to walk.
        let mut body = Vec::new();
        let mut otherwise = None;
        while let Some(element) = block.next()? {
            match element {
                BlockElement::Tag(mut tag) if tag.name() == "else" => {
                    tag.tokens().expect_nothing()?;
                    otherwise = Some(Template::new(block.parse_all(options)?));
                    break;
                }
                element => body.push(element.parse(&mut block, options)?),
            }
        }

        Ok(Box::new(For {
            head,
            body: Template::new(body),
            otherwise,
            checks,
        }))
    }

    fn reflection(&self) -> &dyn BlockReflection {
        self
    }
}

impl ParseBlock for TableRowBlock {
    fn parse(
        &self,
        mut arguments: TagTokenIter<'_>,
        mut block: TagBlock<'_, '_>,
        options: &Language,
    ) -> Result<Box<dyn Renderable>> {
        let parameters = ["cols", "limit", "offset"];
        let (head, checks) = head_and_checks(&self.0, "tablerow", &mut arguments, &parameters)?;
        let body = Template::new(block.parse_all(options)?);
        Ok(Box::new(TableRow { head, body, checks }))
    }

    fn reflection(&self) -> &dyn BlockReflection {
        self
    }
}

/// What a loop walks, as written.
#[derive(Debug)]
enum Source {
    /// `(first..last)`, both ends included.
    Range(Expression, Expression),
    /// A list (or an object, walked as `[key, value]` pairs).
    Items(Expression),
}

/// The tag of a loop: `item in source` and its parameters.
#[derive(Debug)]
struct Head {
    name: KString,
    source: Source,
    limit: Option<Expression>,
    offset: Option<Expression>,
    cols: Option<Expression>,
    reversed: bool,
}

impl Head {
    /// Reads `name in source` and then any of `parameters` (`reversed` alone, the others with
    /// `: value`), in any order.
    fn parse(arguments: &mut TagTokenIter<'_>, parameters: &[&str]) -> Result<Head> {
        let name = arguments
            .expect_next("expected the name of the loop's variable")?
            .expect_identifier()
            .into_result()?;
        arguments
            .expect_next("expected `in` after the loop's variable")?
            .expect_str("in")
            .into_result_custom_msg("expected `in` after the loop's variable")?;

        let token = arguments.expect_next("expected a list or a range such as (1..5)")?;
        let source = match token.expect_value() {
            TryMatchToken::Matches(items) => Source::Items(items),
            TryMatchToken::Fails(token) => match token.expect_range() {
                TryMatchToken::Matches((first, last)) => Source::Range(first, last),
                TryMatchToken::Fails(token) => return Err(token.raise_error()),
            },
        };

        let mut head = Head {
            name: KString::from_ref(name),
            source,
            limit: None,
            offset: None,
            cols: None,
            reversed: false,
        };
        while let Some(token) = arguments.next() {
            let word = token.as_str().to_string();
            if !parameters.contains(&word.as_str()) {
                let expected = parameters
                    .iter()
                    .map(|p| format!("`{p}`"))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(token.raise_custom_error(&format!("expected one of {expected}")));
            }
            if word == "reversed" {
                head.reversed = true;
                continue;
            }

            arguments
                .expect_next(&format!("expected `:` after `{word}`"))?
                .expect_str(":")
                .into_result_custom_msg(&format!("expected `:` after `{word}`"))?;
            let value = arguments
                .expect_next(&format!("expected a number or a variable for `{word}`"))?
                .expect_value()
                .into_result()?;
            match word.as_str() {
                "limit" => head.limit = Some(value),
                "offset" => head.offset = Some(value),
                _ => head.cols = Some(value),
            }
        }
        Ok(head)
    }

    /// The tag as written, for the trace of an error inside the loop.
    fn describe(&self, tag: &str) -> KString {
        let source = match &self.source {
            Source::Range(first, last) => format!("({first}..{last})"),
            Source::Items(items) => items.to_string(),
        };
        KString::from_string(format!("{{% {tag} {} in {source} %}}", self.name))
    }

    /// Evaluates the source and the parameters: what this run of the loop walks.
    fn walk<'r>(&'r self, runtime: &'r dyn Runtime) -> Result<Walk<'r>> {
        let items = match &self.source {
            Source::Range(first, last) => {
                let first = whole_number(first, runtime, "start")?;
                let last = whole_number(last, runtime, "end")?;
                let len = (i128::from(last) - i128::from(first) + 1).max(0);
                Items::Counted {
                    first,
                    len: u64::try_from(len).unwrap_or(u64::MAX),
                }
            }
            Source::Items(items) => Items::of(items.evaluate(runtime)?)?,
        };

        // Liquid reads both as unsigned: a negative number stands for a very large one.
        let limit = self
            .limit
            .as_ref()
            .map(|l| whole_number(l, runtime, "limit"))
            .transpose()?
            .map(|l| l as u64);
        let offset = self
            .offset
            .as_ref()
            .map(|o| whole_number(o, runtime, "offset"))
            .transpose()?
            .map_or(0, |o| o as u64);

        // Liquid's rule: skip `offset` items, then take `limit` of them, counting the limit
        // against the whole length, so a limit past the end is made up with nil.
        let len = items.len();
        let offset = offset.min(len);
        let count = limit.map_or(len - offset, |l| l.min(len));
        Ok(Walk {
            items,
            offset,
            count,
            reversed: self.reversed,
        })
    }
}

/// A whole number a loop's tag needs (a bound of a range, a limit, an offset, a column count).
fn whole_number(expression: &Expression, runtime: &dyn Runtime, what: &str) -> Result<i64> {
    let value = expression.evaluate(runtime)?;
    value
        .as_scalar()
        .and_then(|s| s.to_integer())
        .ok_or_else(|| {
            Error::with_msg(format!(
                "expected a whole number for the {what}, found `{}`",
                value.type_name()
            ))
            .context(what.to_string(), value.to_kstr().into_owned())
        })
}

/// What a loop walks, before `limit`, `offset` and `reversed`.
enum Items<'r> {
    /// The numbers from `first`, `len` of them; never built as a list.
    Counted { first: i64, len: u64 },
    /// A list, read in place.
    List(ValueCow<'r>),
    /// An object's `[key, value]` pairs.
    Pairs(Vec<Value>),
}

impl<'r> Items<'r> {
    fn of(value: ValueCow<'r>) -> Result<Items<'r>> {
        if value.as_array().is_some() {
            return Ok(Items::List(value));
        }
        if let Some(object) = value.as_object() {
            let pairs = object
                .iter()
                .map(|(key, value)| {
                    Value::Array(vec![Value::scalar(key.into_owned()), value.to_value()])
                })
                .collect();
            return Ok(Items::Pairs(pairs));
        }
        // Nil, `empty` and `blank` have nothing in them.
        if value.is_nil() || value.is_state() {
            return Ok(Items::Pairs(Vec::new()));
        }
        Err(Error::with_msg(format!(
            "expected a list to loop over, found `{}`",
            value.type_name()
        )))
    }

    fn len(&self) -> u64 {
        match self {
            Items::Counted { len, .. } => *len,
            Items::List(list) => list
                .as_array()
                .map_or(0, |a| u64::try_from(a.size()).unwrap_or(0)),
            Items::Pairs(pairs) => pairs.len() as u64,
        }
    }

    /// The item at `index`, nil past the end.
    fn at(&self, index: u64) -> ValueCow<'_> {
        let found = match self {
            Items::Counted { first, len } if index < *len => {
                let n = i128::from(*first) + i128::from(index);
                return ValueCow::Owned(Value::scalar(i64::try_from(n).unwrap_or(i64::MAX)));
            }
            Items::Counted { .. } => None,
            Items::List(list) => i64::try_from(index)
                .ok()
                .and_then(|i| list.as_array().and_then(|a| a.get(i))),
            Items::Pairs(pairs) => usize::try_from(index)
                .ok()
                .and_then(|i| pairs.get(i))
                .map(|v| v as &dyn ValueView),
        };
        found.map_or(ValueCow::Owned(Value::Nil), ValueCow::Borrowed)
    }
}

/// One run of a loop: which items, in which order.
struct Walk<'r> {
    items: Items<'r>,
    offset: u64,
    count: u64,
    reversed: bool,
}

impl Walk<'_> {
    /// Where in the list the item of the `k`-th iteration is.
    fn position(&self, k: u64) -> u64 {
        let k = if self.reversed { self.count - 1 - k } else { k };
        self.offset.saturating_add(k)
    }

    /// The item of the `k`-th iteration.
    fn item(&self, k: u64) -> ValueCow<'_> {
        self.items.at(self.position(k))
    }

    /// Whether the items are a list, whose elements are checked (not numbers of a range, nor
    /// pairs of an object, which the loop makes).
    fn is_list(&self) -> bool {
        matches!(self.items, Items::List(_))
    }
}

/// Runs `each` on every iteration of `walk`, with the iteration's number and its element,
/// checked by `checks` when `walk` is over a list; `each` says whether to go on.
fn walk_checked(
    walk: &Walk<'_>,
    checks: Option<&Checks>,
    runtime: &dyn Runtime,
    mut each: impl FnMut(u64, &dyn ValueView) -> Result<bool>,
) -> Result<()> {
    let checks = checks.filter(|_| walk.is_list());
    let Some(checks) = checks else {
        for k in 0..walk.count {
            spend(runtime)?;
            if !each(k, walk.item(k).as_view())? {
                break;
            }
        }
        return Ok(());
    };

    checks.begin(runtime);
    let mut walked = || {
        for k in 0..walk.count {
            spend(runtime)?;
            let item = walk.item(k);
            let checked = checks.check(runtime, walk.position(k), item.as_view())?;
            let element = checked
                .patched
                .as_ref()
                .map_or(item.as_view(), |p| p.as_view());
            match each(k, element) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => return Err(checks.refused(runtime, e, &checked)),
            }
        }
        Ok(())
    };
    let walked = walked();
    checks.end(runtime);
    walked
}

/// The variables a loop sets for one iteration: the item, under the loop's name, and the
/// loop's own object (`forloop`, `tablerow`).
fn scope<'a>(
    name: &'a KString,
    item: &'a dyn ValueView,
    loop_name: &'static str,
    loop_object: &'a dyn ValueView,
) -> BTreeMap<KStringRef<'a>, &'a dyn ValueView> {
    let mut scope = BTreeMap::new();
    scope.insert(KStringRef::from_static(loop_name), loop_object);
    scope.insert(name.as_ref(), item);
    scope
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `forloop`, as a template reads it inside a `for`.
#[derive(Debug, liquid::ValueView, liquid::ObjectView)]
struct Forloop<'p> {
    length: i64,
    parentloop: Option<&'p dyn ValueView>,
    index0: i64,
    index: i64,
    rindex0: i64,
    rindex: i64,
    first: bool,
    last: bool,
}

impl<'p> Forloop<'p> {
    fn new(k: u64, count: u64, parentloop: Option<&'p dyn ValueView>) -> Forloop<'p> {
        let (k, count) = (to_i64(k), to_i64(count));
        Forloop {
            length: count,
            parentloop,
            index0: k,
            index: k + 1,
            rindex0: count - k - 1,
            rindex: count - k,
            first: k == 0,
            last: k == count - 1,
        }
    }
}

#[derive(Debug)]
struct For {
    head: Head,
    body: Template,
    otherwise: Option<Template>,
    checks: Option<Checks>,
}

impl Renderable for For {
    fn render_to(&self, writer: &mut dyn Write, runtime: &dyn Runtime) -> Result<()> {
        let walk = self
            .head
            .walk(runtime)
            .trace_with(|| self.head.describe("for"))?;
        if walk.count == 0 {
            if let Some(otherwise) = &self.otherwise {
                otherwise
                    .render_to(writer, runtime)
                    .trace_with(|| self.head.describe("for"))?;
            }
            return Ok(());
        }

        // A loop inside another sees the outer one's `forloop` as `parentloop`.
        let parent = runtime.try_get(&[Scalar::new("forloop")]);
        let parent = parent.as_ref().map(|p| p.as_view());
        walk_checked(&walk, self.checks.as_ref(), runtime, |k, item| {
            let forloop = Forloop::new(k, walk.count, parent);
            let scope = scope(&self.head.name, item, "forloop", &forloop);
            let frame = StackFrame::new(runtime, &scope);
            self.body
                .render_to(writer, &frame)
                .trace_with(|| self.head.describe("for"))
                .context_key("index")
                .value_with(|| (k + 1).to_string().into())?;

            // `continue` has already skipped the rest of the body; `break` ends the loop.
            let interrupt = frame.registers().get_mut::<InterruptRegister>().reset();
            Ok(interrupt != Some(Interrupt::Break))
        })
    }
}

/// `tablerow`, as a template reads it inside a `tablerow`.
#[derive(Debug, liquid::ValueView, liquid::ObjectView)]
struct TableRowObject {
    length: i64,
    index0: i64,
    index: i64,
    rindex0: i64,
    rindex: i64,
    first: bool,
    last: bool,
    col0: i64,
    col: i64,
    col_first: bool,
    col_last: bool,
}

#[derive(Debug)]
struct TableRow {
    head: Head,
    body: Template,
    checks: Option<Checks>,
}

impl TableRow {
    fn render_cells(&self, writer: &mut dyn Write, runtime: &dyn Runtime) -> Result<()> {
        let walk = self.head.walk(runtime)?;
        // Without `cols`, one row holds every cell.
        let cols = match &self.head.cols {
            Some(cols) => whole_number(cols, runtime, "cols")? as u64,
            None => walk.count,
        };
        if cols == 0 && walk.count > 0 {
            return Err(Error::with_msg("`cols` must be at least 1"));
        }

        walk_checked(&walk, self.checks.as_ref(), runtime, |k, item| {
            let (row, col) = (k / cols, k % cols);
            let last = k + 1 == walk.count;
            let cell = TableRowObject {
                length: to_i64(walk.count),
                index0: to_i64(k),
                index: to_i64(k + 1),
                rindex0: to_i64(walk.count - k - 1),
                rindex: to_i64(walk.count - k),
                first: k == 0,
                last,
                col0: to_i64(col),
                col: to_i64(col + 1),
                col_first: col == 0,
                col_last: col + 1 == cols || last,
            };

            if cell.col_first {
                write_markup(writer, format_args!("<tr class=\"row{}\">", row + 1))?;
            }
            write_markup(writer, format_args!("<td class=\"col{}\">", col + 1))?;
            let scope = scope(&self.head.name, item, "tablerow", &cell);
            let frame = StackFrame::new(runtime, &scope);
            self.body
                .render_to(writer, &frame)
                .context_key("index")
                .value_with(|| (k + 1).to_string().into())?;
            let interrupt = frame.registers().get_mut::<InterruptRegister>().reset();

            write_markup(writer, format_args!("</td>"))?;
            if interrupt == Some(Interrupt::Break) || cell.col_last {
                write_markup(writer, format_args!("</tr>"))?;
            }
            Ok(interrupt != Some(Interrupt::Break))
        })
    }
}

impl Renderable for TableRow {
    fn render_to(&self, writer: &mut dyn Write, runtime: &dyn Runtime) -> Result<()> {
        self.render_cells(writer, runtime)
            .trace_with(|| self.head.describe("tablerow"))
    }
}

fn write_markup(writer: &mut dyn Write, markup: std::fmt::Arguments<'_>) -> Result<()> {
    writer
        .write_fmt(markup)
        .map_err(|_| Error::with_msg("the rendered text could not be written"))
}
