//! Message templates in Liquid.
//!
//! Rule for missing values: a value is missing when its path is absent or `null`, and, for an
//! output tag without filters, when it is a boolean, an object or a list (those would print as
//! `true` or JSON, never what a reader should see). An output tag with a `default` filter
//! renders its default in that case; inside `{% if %}` and friends a missing value is simply
//! false. Any other missing value makes the whole message unsendable: it is skipped and the
//! reason recorded, rather than sent with a hole or raw syntax in it.
//!
//! Escaping: for email every string value is HTML-escaped before rendering, so a product name
//! cannot inject markup; push, in-app and SMS are plain text and are not escaped. `url_encode`
//! is available for links.

use std::sync::Arc;

use serde_json::Value;

/// A compiled template and the variable paths it reads.
#[derive(Clone)]
pub struct Template {
    source: String,
    compiled: Arc<liquid::Template>,
    paths: Vec<PathUse>,
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Template")
            .field("source", &self.source)
            .finish()
    }
}

#[derive(Clone, Debug, PartialEq)]
struct PathUse {
    path: Vec<String>,
    /// A missing value is acceptable here (a default filter, or a condition).
    guarded: bool,
    /// The tag prints the value as it is, with no filter to turn it into text.
    bare: bool,
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
    /// The text came out longer than [`MAX_RENDERED_BYTES`] (a loop over a large range, say).
    TooLarge,
    /// Liquid itself failed (an unknown filter argument, a bad comparison).
    Liquid(String),
}

impl std::fmt::Display for RenderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RenderError::Missing(p) => write!(f, "missing value {p} with no default"),
            RenderError::TooLarge => write!(
                f,
                "the rendered text is longer than {MAX_RENDERED_BYTES} bytes"
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

/// The longest text a template may render to. Far above any channel's real size (an APNs
/// payload is 4 KiB, an email body rarely 100 KiB) and below the 4 MiB a gRPC call to the
/// gateway carries, so a template that loops out of bounds fails as a skipped message with its
/// reason, at a bounded cost in memory, instead of growing without end.
pub const MAX_RENDERED_BYTES: usize = 1024 * 1024;

/// A buffer that refuses to grow past [`MAX_RENDERED_BYTES`]: Liquid stops rendering at the
/// first refused write.
#[derive(Default)]
struct Bounded {
    text: Vec<u8>,
    overflowed: bool,
}

impl std::io::Write for Bounded {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.text.len() + bytes.len() > MAX_RENDERED_BYTES {
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

fn parser() -> &'static liquid::Parser {
    static PARSER: std::sync::OnceLock<liquid::Parser> = std::sync::OnceLock::new();
    PARSER.get_or_init(|| {
        // The standard library cannot fail to build; fall back to an empty parser regardless.
        liquid::ParserBuilder::with_stdlib()
            .build()
            .unwrap_or_else(|_| liquid::Parser::default())
    })
}

impl Template {
    /// Compiles `source`; the error is Liquid's own description of the problem on one line,
    /// with where in the template it is.
    pub fn compile(source: &str) -> Result<Template, TemplateError> {
        let compiled = parser()
            .parse(source)
            .map_err(|e| TemplateError::from_liquid(&e.to_string(), source))?;
        Ok(Template {
            source: source.to_string(),
            compiled: Arc::new(compiled),
            paths: scan_paths(source),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
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
        for usage in &self.paths {
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
        for usage in &self.paths {
            let usable = match lookup(&data, &usage.path) {
                None | Some(Value::Null) => false,
                Some(Value::Bool(_) | Value::Object(_) | Value::Array(_)) => !usage.bare,
                Some(_) => true,
            };
            if usable {
                continue;
            }
            if !usage.guarded {
                return Err(RenderError::Missing(usage.path.join(".")));
            }

            // Liquid-rust rejects unknown variables even under `default`; an explicit nil
            // lets the default (or a false condition) apply.
            insert_null(&mut data, &usage.path);
        }

        if escape == Escape::Html {
            escape_strings(&mut data);
        }

        let globals = liquid::to_object(&data).map_err(|e| RenderError::Liquid(e.to_string()))?;
        let mut out = Bounded::default();
        match self.compiled.render_to(&mut out, &globals) {
            Ok(()) => String::from_utf8(out.text).map_err(|e| RenderError::Liquid(e.to_string())),
            Err(_) if out.overflowed => Err(RenderError::TooLarge),
            Err(e) => Err(RenderError::Liquid(e.to_string())),
        }
    }
}

fn lookup<'a>(data: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = data;
    for key in path {
        cur = cur.as_object()?.get(key)?;
    }
    Some(cur)
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

/// Finds the variable paths a template reads, and how each is used.
///
/// Inside `{% if x %}` ... `{% endif %}`, printing `x` is guarded: when `x` is missing the block
/// does not render at all.
fn scan_paths(source: &str) -> Vec<PathUse> {
    let mut uses = Vec::new();
    let mut rest = source;
    let mut guards: Vec<Vec<Vec<String>>> = Vec::new();

    while let Some(open) = rest.find('{') {
        let after = &rest[open..];
        let (close, is_output) = if after.starts_with("{{") {
            ("}}", true)
        } else if after.starts_with("{%") {
            ("%}", false)
        } else {
            rest = &rest[open + 1..];
            continue;
        };
        let Some(end) = after[2..].find(close) else {
            break;
        };
        let body = after[2..2 + end].trim_matches(|c: char| c == '-' || c.is_whitespace());
        rest = &after[2 + end + 2..];

        if is_output {
            let start = uses.len();
            scan_output(body, &mut uses);
            for usage in &mut uses[start..] {
                usage.guarded |= guards.iter().flatten().any(|g| *g == usage.path);
            }
        } else {
            let start = uses.len();
            scan_tag(body, &mut uses);
            let tested = || {
                uses[start..]
                    .iter()
                    .map(|u| u.path.clone())
                    .collect::<Vec<_>>()
            };
            match body.split_whitespace().next().unwrap_or("") {
                "if" => guards.push(tested()),
                "unless" | "case" | "for" => guards.push(Vec::new()),
                "elsif" => {
                    if let Some(top) = guards.last_mut() {
                        *top = tested();
                    }
                }
                "else" => {
                    if let Some(top) = guards.last_mut() {
                        top.clear();
                    }
                }
                "endif" | "endunless" | "endcase" | "endfor" => {
                    guards.pop();
                }
                _ => {}
            }
        }
    }
    uses
}

fn scan_output(body: &str, uses: &mut Vec<PathUse>) {
    let mut parts = body.split('|');
    let head = parts.next().unwrap_or("").trim();
    let filters: Vec<&str> = parts.map(str::trim).collect();
    if let Some(path) = as_path(head) {
        uses.push(PathUse {
            path,
            guarded: filters.iter().any(|f| f.starts_with("default")),
            bare: filters.is_empty(),
        });
    }

    // Filter arguments (`default: entry.sku`) may be missing too: they then act as nil.
    for filter in &filters {
        let Some((_, args)) = filter.split_once(':') else {
            continue;
        };
        for arg in args.split(',') {
            if let Some(path) = as_path(arg.trim()).filter(|p| p.len() > 1) {
                uses.push(PathUse {
                    path,
                    guarded: true,
                    bare: false,
                });
            }
        }
    }
}

fn scan_tag(body: &str, uses: &mut Vec<PathUse>) {
    let mut words = body.split_whitespace();
    let keyword = words.next().unwrap_or("");
    if !matches!(
        keyword,
        "if" | "elsif" | "unless" | "case" | "when" | "for" | "assign"
    ) {
        return;
    }
    for word in words {
        if let Some(path) = as_path(word.trim_matches(|c| c == '(' || c == ')' || c == ','))
            && path.len() > 1
        {
            uses.push(PathUse {
                path,
                guarded: true,
                bare: false,
            });
        }
    }
}

/// `user.first_name` becomes `["user", "first_name"]`; literals and keywords give `None`.
fn as_path(token: &str) -> Option<Vec<String>> {
    let first = token.chars().next()?;
    if !(first.is_ascii_alphabetic() || first == '_') {
        return None;
    }
    if matches!(
        token,
        "true" | "false" | "nil" | "null" | "empty" | "blank" | "and" | "or" | "in"
    ) {
        return None;
    }
    if !token
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
    {
        return None;
    }
    Some(token.split('.').map(str::to_string).collect())
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
    fn text_past_the_bound_is_refused_not_built() {
        let big = "{% for i in (1..2000000) %}xxxxxxxxxx{% endfor %}";
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
