//! A loop's elements, checked as the data is: what the body reads under the loop's variable
//! is looked up on each element before the body runs for it.
//!
//! The rule is the data's: a value the body prints without a `default` (`{{ item.name }}`)
//! that is missing on an element (absent or nil; or a boolean, an object or a list printed as
//! it is) makes the message unsendable, and the reason names it as the data holds it:
//! `missing value user.items[2].name with no default`, indexes from 0 as Liquid writes them.
//! With a `default`, or inside `{% if item.name %}`, a missing value is nil for that element.
//! The numbers of a range and the `[key, value]` pairs of an object are made by the loop, not
//! read from the data, and are not checked.
//!
//! Which loop is which: the scan of the text ([`super::reads`]) lists the loops in the order
//! written, which is the order Liquid parses them in, so each loop takes the next entry when
//! it is parsed, and takes it only if its keyword and variable are the entry's.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use liquid_core::model::{KString, Object, Scalar, Value, ValueView, try_find};
use liquid_core::{Error, Runtime};

use super::reads::{LoopReads, display, push_segments};
use super::{RenderError, Stopped, stop};

/// The loops of one template, as its text was scanned, handed out as Liquid parses them.
#[derive(Debug)]
pub(super) struct Plans {
    loops: Vec<Plan>,
    next: AtomicUsize,
}

/// One loop's reads, with their paths ready to look up.
#[derive(Debug)]
struct Plan {
    reads: LoopReads,
    paths: Vec<Vec<Scalar>>,
}

impl Plans {
    pub fn new(loops: Vec<LoopReads>) -> Arc<Plans> {
        let loops = loops
            .into_iter()
            .map(|reads| {
                let paths = reads
                    .reads
                    .iter()
                    .map(|r| r.path.iter().map(|s| Scalar::new(s.clone())).collect())
                    .collect();
                Plan { reads, paths }
            })
            .collect();
        Arc::new(Plans {
            loops,
            next: AtomicUsize::new(0),
        })
    }

    /// The place of the loop Liquid parses next, taken before its tag is read: a loop in a
    /// comment whose tag does not read still takes its place, as it does in the scan.
    pub fn next(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// The checks of the loop at `ordinal`, when the scan found the same loop there.
    pub fn checks(self: &Arc<Self>, ordinal: usize, keyword: &str, name: &str) -> Option<Checks> {
        let plan = self.loops.get(ordinal)?;
        (plan.reads.keyword == keyword && plan.reads.name == name).then(|| Checks {
            plans: Arc::clone(self),
            ordinal,
        })
    }
}

/// The checks of one loop.
#[derive(Debug)]
pub(super) struct Checks {
    plans: Arc<Plans>,
    ordinal: usize,
}

/// The elements being walked, innermost last: which list, and which element of it.
#[derive(Default)]
struct Elements(Vec<Element>);

struct Element {
    ordinal: usize,
    /// The list as the reasons name it: `user.orders[1].lines`.
    list: String,
    index: u64,
}

/// One element, checked: nil put where the body may read a missing value, and which of those
/// go through filters before their `default`.
pub(super) struct Checked {
    pub patched: Option<Value>,
    nil_for_default: Vec<usize>,
    index: u64,
}

impl Checks {
    fn plan(&self) -> &Plan {
        &self.plans.loops[self.ordinal]
    }

    /// Starts a walk of a list: its name, for reasons, is the path written in the loop's tag,
    /// from the element of the outer loop it starts with (`order.lines` inside a loop on
    /// `user.orders` is `user.orders[1].lines`).
    pub fn begin(&self, runtime: &dyn Runtime) {
        let reads = &self.plan().reads;
        let written = reads.list.as_deref().unwrap_or_default();
        let mut elements = runtime.registers().get_mut::<Elements>();
        let outer = reads
            .outer
            .and_then(|o| elements.0.iter().rev().find(|e| e.ordinal == o));
        let list = match outer {
            Some(outer) => {
                let mut list = format!("{}[{}]", outer.list, outer.index);
                push_segments(&mut list, written.get(1..).unwrap_or_default());
                list
            }
            None => display(written),
        };
        elements.0.push(Element {
            ordinal: self.ordinal,
            list,
            index: 0,
        });
    }

    /// Ends the walk [`Checks::begin`] started.
    pub fn end(&self, runtime: &dyn Runtime) {
        let mut elements = runtime.registers().get_mut::<Elements>();
        if let Some(at) = elements.0.iter().rposition(|e| e.ordinal == self.ordinal) {
            elements.0.truncate(at);
        }
    }

    /// Checks the element at `index` of the list, or stops the render naming what is missing.
    pub fn check(
        &self,
        runtime: &dyn Runtime,
        index: u64,
        item: &dyn ValueView,
    ) -> Result<Checked, Error> {
        {
            let mut elements = runtime.registers().get_mut::<Elements>();
            if let Some(e) = elements.0.iter_mut().rfind(|e| e.ordinal == self.ordinal) {
                e.index = index;
            }
        }

        let plan = self.plan();
        let mut checked = Checked {
            patched: None,
            nil_for_default: Vec::new(),
            index,
        };
        for (i, (read, path)) in plan.reads.reads.iter().zip(&plan.paths).enumerate() {
            let found = try_find(item, path);
            let usable = found.is_some_and(|v| {
                let printed_as_is = v.as_scalar().is_some_and(|s| s.to_bool().is_some())
                    || v.is_object()
                    || v.is_array();
                !(v.is_nil() || read.bare && printed_as_is)
            });
            if usable {
                continue;
            }
            if !read.guarded {
                let path = self.name(runtime, index, &read.path);
                return Err(stop(runtime, RenderError::Missing(path)));
            }

            // Liquid refuses an absent index even under `default`; an explicit nil lets the
            // default (or a false condition) apply.
            let patched = checked.patched.get_or_insert_with(|| item.to_value());
            put_nil(patched, &read.path);
            if !read.before_default.is_empty() {
                checked.nil_for_default.push(i);
            }
        }
        Ok(checked)
    }

    /// `error`, from the body on the element `checked`, as the reason that a filter before a
    /// `default` refused the nil given for a missing value of the element.
    pub fn refused(&self, runtime: &dyn Runtime, error: Error, checked: &Checked) -> Error {
        if checked.nil_for_default.is_empty()
            || runtime.registers().get_mut::<Stopped>().0.is_some()
        {
            return error;
        }
        let text = error.to_string();
        let Some(filter) = super::nil_refused_by(&text) else {
            return error;
        };
        let reads = &self.plan().reads.reads;
        let refused = checked
            .nil_for_default
            .iter()
            .map(|&i| &reads[i])
            .find(|r| r.before_default.iter().any(|f| f == filter));
        match refused {
            Some(read) => {
                let path = self.name(runtime, checked.index, &read.path);
                let filter = filter.to_string();
                stop(runtime, RenderError::FilterOnMissing { path, filter })
            }
            None => error,
        }
    }

    /// `path` under the element at `index`, as the reasons name it.
    fn name(&self, runtime: &dyn Runtime, index: u64, path: &[String]) -> String {
        let elements = runtime.registers().get_mut::<Elements>();
        let list = elements
            .0
            .iter()
            .rfind(|e| e.ordinal == self.ordinal)
            .map_or_else(String::new, |e| e.list.clone());
        let mut name = format!("{list}[{index}]");
        push_segments(&mut name, path);
        name
    }
}

/// Puts nil at `path` in `value`, making objects of what is nil or absent on the way; a path
/// through anything else is left as it is.
fn put_nil(value: &mut Value, path: &[String]) {
    let mut at = value;
    for key in path {
        if at.is_nil() {
            *at = Value::Object(Object::new());
        }
        let Value::Object(object) = at else {
            return;
        };
        at = object
            .entry(KString::from_ref(key))
            .or_insert_with(|| Value::Object(Object::new()));
    }
    *at = Value::Nil;
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::template::{Escape, RenderError, Template};

    fn render(src: &str, data: Value) -> Result<String, RenderError> {
        Template::compile(src)
            .map_err(|e| RenderError::Liquid(e.to_string()))?
            .render(data, Escape::None)
    }

    fn cart() -> Value {
        json!({"user": {
            "items": [{"name": "Tea", "price": 3}, {"name": "Cup"}, {"price": 2}],
            "tags": ["new", null],
            "prefs": {"lang": "en"},
        }})
    }

    fn missing(path: &str) -> Result<String, RenderError> {
        Err(RenderError::Missing(path.into()))
    }

    #[test]
    fn an_element_without_a_field_printed_as_it_is_skips_the_message_naming_it() {
        let src = "{% for item in user.items %}{{ item.name }} {% endfor %}";
        let out = render(src, cart());
        assert_eq!(out, missing("user.items[2].name"));
        assert_eq!(
            out.err().map(|e| e.to_string()).as_deref(),
            Some("missing value user.items[2].name with no default")
        );

        // Filters do not change that, as for the data's own values.
        let src = "{% for item in user.items %}{{ item.name | upcase }}{% endfor %}";
        assert_eq!(render(src, cart()), missing("user.items[2].name"));

        // Indexes are the list's, whatever order the loop walks it in.
        let src = "{% for item in user.items reversed offset: 1 %}{{ item.price }}{% endfor %}";
        assert_eq!(render(src, cart()), missing("user.items[1].price"));
    }

    #[test]
    fn a_default_or_an_if_covers_a_missing_field_element_by_element() {
        let src = "{% for item in user.items %}{{ item.name | default: \"something\" }}, \
                   {% endfor %}";
        assert_eq!(render(src, cart()).as_deref(), Ok("Tea, Cup, something, "));

        let src = "{% for item in user.items %}{% if item.price %}{{ item.price }}{% else %}?\
                   {% endif %}{% endfor %}";
        assert_eq!(render(src, cart()).as_deref(), Ok("3?2"));

        // Only the element that lacks it gets nil: the next one prints its own value.
        let src = "{% for item in user.items %}[{{ item.name | default: item.price }}]{% endfor %}";
        assert_eq!(render(src, cart()).as_deref(), Ok("[Tea][Cup][2]"));
    }

    #[test]
    fn an_element_itself_follows_the_rule_when_printed() {
        let src = "{% for tag in user.tags %}{{ tag }};{% endfor %}";
        assert_eq!(render(src, cart()), missing("user.tags[1]"));
        let src = "{% for tag in user.tags %}{{ tag | default: \"-\" }};{% endfor %}";
        assert_eq!(render(src, cart()).as_deref(), Ok("new;-;"));

        // An object printed as it is would read as JSON.
        let src = "{% for item in user.items %}{{ item }}{% endfor %}";
        assert_eq!(render(src, cart()), missing("user.items[0]"));
    }

    #[test]
    fn nested_loops_name_the_element_of_each_list() {
        let orders = json!({"user": {"orders": [
            {"id": "A", "lines": [{"sku": "a1"}]},
            {"id": "B", "lines": [{"sku": "b1"}, {"qty": 2}]},
        ]}});
        let src = "{% for order in user.orders %}{{ order.id }}:{% for line in order.lines %}\
                   {{ line.sku }},{% endfor %}{% endfor %}";
        assert_eq!(
            render(src, orders.clone()),
            missing("user.orders[1].lines[1].sku")
        );

        let src = "{% for order in user.orders %}{{ order.id }}:{% for line in order.lines %}\
                   {{ line.sku | default: order.id }},{% endfor %}{% endfor %}";
        assert_eq!(render(src, orders).as_deref(), Ok("A:a1,B:b1,B,"));
    }

    #[test]
    fn a_filter_that_refuses_nil_before_a_default_names_the_element_and_the_filter() {
        let src = "{% for item in user.items %}{{ item.tags | join: \",\" | default: \"-\" }}\
                   {% endfor %}";
        assert_eq!(
            render(src, cart()),
            Err(RenderError::FilterOnMissing {
                path: "user.items[0].tags".into(),
                filter: "join".into()
            })
        );
    }

    #[test]
    fn a_list_the_template_made_is_named_as_the_template_names_it() {
        let src = "{% assign items = user.items | reverse %}{% for item in items %}\
                   {{ item.name }}{% endfor %}";
        assert_eq!(render(src, cart()), missing("items[0].name"));
    }

    #[test]
    fn tablerow_cells_are_checked_as_well() {
        let src = "{% tablerow item in user.items cols: 2 %}{{ item.name }}{% endtablerow %}";
        assert_eq!(render(src, cart()), missing("user.items[2].name"));
        let src = "{% tablerow item in user.items limit: 2 %}{{ item.name }}{% endtablerow %}";
        assert_eq!(
            render(src, cart()).as_deref(),
            Ok("<tr class=\"row1\"><td class=\"col1\">Tea</td><td class=\"col2\">Cup</td></tr>")
        );
    }

    #[test]
    fn loops_in_comments_and_raw_text_leave_the_checks_in_place() {
        // Liquid parses the loops of a comment, a broken one included, and not raw text.
        let src = "{% comment %}{% for x in user.items %}{% endfor %}{% for %}{% endcomment %}\
                   {% raw %}{% for y in user.items %}{% endraw %}\
                   {% for item in user.items %}{{ item.name }}{% endfor %}";
        assert_eq!(render(src, cart()), missing("user.items[2].name"));
    }

    #[test]
    fn numbers_of_a_range_and_pairs_of_an_object_are_the_loops_own() {
        let src = "{% for i in (1..3) %}{{ i }}{{ forloop.index0 }} {% endfor %}";
        assert_eq!(render(src, cart()).as_deref(), Ok("10 21 32 "));
        let src = "{% for pair in user.prefs %}{{ pair[0] }}={{ pair[1] }}{% endfor %}";
        assert_eq!(render(src, cart()).as_deref(), Ok("lang=en"));
    }
}
