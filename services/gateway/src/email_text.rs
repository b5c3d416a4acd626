//! The two forms of an email body: journeys render HTML, mail clients also want plain text.
//!
//! The rule, applied to the rendered body:
//!
//! - A body that contains a tag (`<` followed by a letter, `/` or `!`) is HTML. It is sent
//!   as the HTML part unchanged, and the text part is derived from it (below).
//! - Any other body is plain text: it is the text part unchanged, and the HTML part is its
//!   escaped copy with line breaks kept (`<br>`).
//!
//! Deriving text from HTML: tags are removed; the content of `head`, `script` and `style`
//! and comments are dropped; runs of whitespace collapse to one space, as a browser shows
//! them; `br` ends a line, block elements (`p`, `div`, headings, lists, tables, `blockquote`,
//! `hr`, ...) start a new paragraph, list items start a line with `- `, and table cells are
//! separated by a space; a link whose address differs from its text is written
//! `text (address)`; entities (`&amp;`, `&nbsp;`, `&#233;`, `&#xE9;`, ...) are decoded, unknown
//! ones kept as written.

/// True when `body` contains markup and is treated as HTML.
pub fn is_html(body: &str) -> bool {
    body.as_bytes()
        .windows(2)
        .any(|w| w[0] == b'<' && (w[1].is_ascii_alphabetic() || w[1] == b'/' || w[1] == b'!'))
}

/// The plain-text form of an HTML body.
pub fn html_to_text(html: &str) -> String {
    let mut out = Text::default();
    let mut links: Vec<(Option<String>, usize)> = Vec::new();
    let mut rest = html;

    while let Some(open) = rest.find('<') {
        out.words(&decode_entities(&rest[..open]));
        rest = &rest[open..];

        if let Some(after) = rest.strip_prefix("<!--") {
            rest = after.find("-->").map_or("", |end| &after[end + 3..]);
            continue;
        }
        let Some(close) = rest.find('>') else {
            // A lone `<` is text.
            out.words(&decode_entities(rest));
            return out.finish();
        };
        let tag = Tag::parse(&rest[1..close]);
        rest = &rest[close + 1..];

        match tag.name.as_str() {
            "head" | "script" | "style" if !tag.closing => {
                rest = skip_element(rest, &tag.name);
            }
            "br" => out.breaks(1),
            "li" if !tag.closing => {
                out.breaks(1);
                out.raw("- ");
            }
            "tr" => out.breaks(1),
            "td" | "th" if tag.closing => out.space(),
            "a" if !tag.closing => links.push((tag.href, out.text.len())),
            "a" => {
                if let Some((Some(href), start)) = links.pop() {
                    out.link_target(start, &href);
                }
            }
            name if is_block(name) => out.breaks(2),
            _ => {}
        }
    }
    out.words(&decode_entities(rest));
    out.finish()
}

fn is_block(name: &str) -> bool {
    matches!(
        name,
        "p" | "div"
            | "h1"
            | "h2"
            | "h3"
            | "h4"
            | "h5"
            | "h6"
            | "ul"
            | "ol"
            | "table"
            | "blockquote"
            | "hr"
            | "pre"
            | "section"
            | "article"
            | "header"
            | "footer"
            | "body"
            | "html"
    )
}

/// The rest of the document after the closing tag of `name`, or nothing when it is missing.
fn skip_element<'a>(rest: &'a str, name: &str) -> &'a str {
    let closing = format!("</{name}");
    let lower = rest.to_ascii_lowercase();
    let Some(at) = lower.find(&closing) else {
        return "";
    };
    rest[at..].find('>').map_or("", |end| &rest[at + end + 1..])
}

struct Tag {
    name: String,
    closing: bool,
    href: Option<String>,
}

impl Tag {
    fn parse(inner: &str) -> Tag {
        let (closing, inner) = match inner.strip_prefix('/') {
            Some(rest) => (true, rest),
            None => (false, inner),
        };
        let name: String = inner
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect::<String>()
            .to_ascii_lowercase();
        let href = (name == "a" && !closing)
            .then(|| attribute(inner, "href"))
            .flatten();
        Tag {
            name,
            closing,
            href,
        }
    }
}

/// The value of attribute `name` in the inside of a tag, entities decoded.
fn attribute(inner: &str, name: &str) -> Option<String> {
    let lower = inner.to_ascii_lowercase();
    let mut from = 0;
    while let Some(found) = lower[from..].find(name) {
        let start = from + found;
        from = start + name.len();
        let before_ok = start == 0 || lower.as_bytes()[start - 1].is_ascii_whitespace();
        let after = inner[from..].trim_start();
        let Some(value) = after.strip_prefix('=').map(str::trim_start) else {
            continue;
        };
        if !before_ok {
            continue;
        }
        let raw = match value.chars().next() {
            Some(q @ ('"' | '\'')) => value[1..].split(q).next().unwrap_or_default(),
            _ => value
                .split(|c: char| c.is_whitespace() || c == '/')
                .next()?,
        };
        return Some(decode_entities(raw));
    }
    None
}

/// Decodes character references; a reference it does not know is kept as written.
pub fn decode_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let decoded = rest
            .find(';')
            .filter(|&end| end <= 12)
            .and_then(|end| entity(&rest[1..end]).map(|c| (c, end)));
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn entity(name: &str) -> Option<char> {
    if let Some(number) = name.strip_prefix('#') {
        let code = match number.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => number.parse().ok()?,
        };
        return char::from_u32(code);
    }
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        // Shown as a space in text; collapsing it with its neighbours is what a reader expects.
        "nbsp" => ' ',
        "ndash" => '–',
        "mdash" => '—',
        "hellip" => '…',
        "copy" => '©',
        "reg" => '®',
        "euro" => '€',
        _ => return None,
    })
}

/// Text being built: breaks and spaces are held back until the next word, so there are
/// none at the start, at the end, or doubled.
#[derive(Default)]
struct Text {
    text: String,
    newlines: usize,
    space: bool,
}

impl Text {
    fn breaks(&mut self, n: usize) {
        self.newlines = self.newlines.max(n);
    }

    fn space(&mut self) {
        self.space = true;
    }

    fn flush(&mut self) {
        if self.text.is_empty() {
            self.newlines = 0;
            self.space = false;
            return;
        }
        if self.newlines > 0 {
            let trimmed = self.text.trim_end_matches(' ').len();
            self.text.truncate(trimmed);
            for _ in 0..self.newlines {
                self.text.push('\n');
            }
        } else if self.space {
            self.text.push(' ');
        }
        self.newlines = 0;
        self.space = false;
    }

    fn raw(&mut self, s: &str) {
        self.flush();
        self.text.push_str(s);
    }

    fn words(&mut self, s: &str) {
        for c in s.chars() {
            if c.is_whitespace() {
                self.space = true;
            } else {
                self.flush();
                self.text.push(c);
            }
        }
    }

    /// Ends a link whose text began at `start`.
    fn link_target(&mut self, start: usize, href: &str) {
        let shown = self.text.get(start..).unwrap_or_default().trim();
        if href.is_empty() || href.starts_with('#') || shown == href {
            return;
        }
        if shown.is_empty() {
            self.words(href);
        } else {
            self.words(&format!(" ({href})"));
        }
    }

    fn finish(self) -> String {
        self.text.trim_end().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_decides_what_is_html() {
        assert!(is_html("<p>Hello Ada</p>"));
        assert!(is_html("Hi<br>there"));
        assert!(!is_html("Your cart is waiting."));
        assert!(!is_html("3 < 4 and 5 > 2"));
    }

    #[test]
    fn paragraphs_lines_and_lists_become_text() {
        let html = "<p>Hello Ada</p>\n  <p>Your   cart\n is <b>waiting</b>.<br>Come back!</p>\
                    <ul><li>Shoes</li><li>Socks &amp; more</li></ul>";
        assert_eq!(
            html_to_text(html),
            "Hello Ada\n\nYour cart is waiting.\nCome back!\n\n- Shoes\n- Socks & more"
        );
    }

    #[test]
    fn links_keep_their_address_and_hidden_content_goes() {
        let html = "<html><head><title>x</title><style>p{color:red}</style></head><body>\
                    <!-- preheader --><p>See <a href=\"https://shop.test/c?a=1&amp;b=2\">your \
                    cart</a> or <a href='https://shop.test'>https://shop.test</a>.</p>\
                    <script>alert(1)</script></body></html>";
        assert_eq!(
            html_to_text(html),
            "See your cart (https://shop.test/c?a=1&b=2) or https://shop.test."
        );
    }

    #[test]
    fn entities_decode_and_unknown_ones_stay() {
        assert_eq!(
            decode_entities("caf&#233; &#xE9;t&eacute; &lt;3&gt; &amp;&nbsp;x &bogus; a&b"),
            "café ét&eacute; <3> & x &bogus; a&b"
        );
    }

    #[test]
    fn broken_markup_does_not_panic() {
        for html in [
            "<",
            "<p",
            "<a href=",
            "<a href='x>y",
            "&#xFFFFFFFF;",
            "<!-- open",
            "é<é",
        ] {
            let _ = html_to_text(html);
        }
        assert_eq!(html_to_text("a <b"), "a <b");
    }
}
