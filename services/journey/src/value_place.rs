//! Where a character of a YAML text value is written in its file.
//!
//! A problem found inside a value (a broken Liquid tag on the third line of a message body) is
//! found in the value as parsed, after YAML took away quotes, indentation and line folding. To
//! point at the file, the value's lines are matched back onto the lines they were written on.
//! Where that match is not exact (escapes in a double-quoted string, say), no place is claimed
//! and the caller keeps pointing at the key.

/// A run of the value's text as written on one line of the file.
struct Piece<'a> {
    /// File line, from 1.
    line: u32,
    /// File column of the piece's first character, from 1, in characters.
    column: u32,
    text: &'a str,
}

/// The file line and column (from 1, the column in characters) of the character at `at` (line
/// and column from 1, in characters) of `value`, the value of `key` whose `key:` is written on
/// `key_line` of `text`. `None` when the value's text cannot be matched to the file's.
pub fn place(
    text: &str,
    key_line: u32,
    key: &str,
    value: &str,
    at: (u32, u32),
) -> Option<(u32, u32)> {
    let pieces = pieces(text, key_line, key)?;
    let (target_line, target_column) = (at.0 as usize, at.1.checked_sub(1)? as usize);

    let mut next = 0;
    for (index, line) in value.split('\n').enumerate() {
        let target = index + 1 == target_line;
        if line.is_empty() {
            // An empty line of a block is an empty line of the file.
            if pieces.get(next).is_some_and(|p| p.text.is_empty()) {
                next += 1;
            }
            if target {
                return None;
            }
            continue;
        }
        // Folded text keeps an empty line of the file as a line break of its own.
        while pieces.get(next).is_some_and(|p| p.text.is_empty()) {
            next += 1;
        }

        let mut rest = line;
        let mut done = 0;
        loop {
            let piece = pieces.get(next)?;
            let width = piece.text.chars().count();
            let found = |offset: usize| (piece.line, piece.column + offset as u32);
            next += 1;
            if let Some(after) = rest.strip_prefix(piece.text) {
                // The whole piece is in this line; folding joined the next one with a space.
                if target && (done..=done + width).contains(&target_column) {
                    return Some(found(target_column - done));
                }
                if after.is_empty() {
                    break;
                }
                rest = after.strip_prefix(' ')?;
                done += width + 1;
            } else if piece.text.starts_with(rest) {
                // The line ends inside the piece: a closing quote or a comment follows.
                let width = rest.chars().count();
                if target && (done..=done + width).contains(&target_column) {
                    return Some(found(target_column - done));
                }
                break;
            } else {
                return None;
            }
        }
        if target {
            return None;
        }
    }
    None
}

/// The value of `key` on `key_line`, as the runs of text it is written in: the rest of the key's
/// line (without an opening quote), then the lines that continue it, indentation taken off.
fn pieces<'a>(text: &'a str, key_line: u32, key: &str) -> Option<Vec<Piece<'a>>> {
    let mut lines = text
        .lines()
        .enumerate()
        .skip(key_line.checked_sub(1)? as usize);
    let (_, first) = lines.next()?;
    let indent = indentation(first);
    let key_at = key_in(first, key)?;
    let after_key = key_at + key.len() + 1;
    let value_at = after_key + (first.len() - after_key - first[after_key..].trim_start().len());
    let rest = &first[value_at..];

    let mut pieces = Vec::new();
    let block = rest.starts_with('|') || rest.starts_with('>');
    if !block && !rest.is_empty() {
        let quoted = rest.starts_with('"') || rest.starts_with('\'');
        let skip = usize::from(quoted);
        pieces.push(Piece {
            line: key_line,
            column: column_of(first, value_at) + skip as u32,
            text: &rest[skip..],
        });
    }

    // The lines below that belong to the value: blank ones, and those indented past the key.
    // A block keeps the indentation beyond its first line's; folded text loses all of it.
    let mut content_indent = None;
    for (i, line) in lines {
        let number = u32::try_from(i + 1).ok()?;
        if line.trim().is_empty() {
            pieces.push(Piece {
                line: number,
                column: 1,
                text: "",
            });
            continue;
        }
        let own = indentation(line);
        if own <= indent {
            break;
        }
        let cut = if block {
            (*content_indent.get_or_insert(own)).min(own)
        } else {
            own
        };
        let text = if block {
            &line[cut..]
        } else {
            line[cut..].trim_end()
        };
        pieces.push(Piece {
            line: number,
            column: column_of(line, cut),
            text,
        });
    }
    Some(pieces)
}

/// The byte offset of `key:` in `line` as a key: at the start, or after a space, a brace, a
/// comma or a list marker, so `url` is not found in `base_url:`.
fn key_in(line: &str, key: &str) -> Option<usize> {
    let needle = format!("{key}:");
    line.match_indices(&needle).map(|(at, _)| at).find(|at| {
        let after = line[at + needle.len()..].chars().next();
        let before = line[..*at].chars().next_back();
        before.is_none_or(|c| matches!(c, ' ' | '{' | ',' | '-'))
            && after.is_none_or(char::is_whitespace)
    })
}

/// Leading spaces of a line, as the value's `- ` list marker counts for indentation too.
fn indentation(line: &str) -> usize {
    let spaces = line.len() - line.trim_start().len();
    let mut at = spaces;
    while line[at..].starts_with("- ") {
        at += 2;
        at += line[at..].len() - line[at..].trim_start().len();
    }
    at
}

/// The column (from 1, in characters) of byte `at` of `line`.
fn column_of(line: &str, at: usize) -> u32 {
    u32::try_from(line[..at].chars().count() + 1).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::place;

    #[test]
    fn a_plain_value_on_the_key_line() {
        let text = "steps:\n  - id: a\n    message:\n      body: Hi {{ user.name }\n";
        let value = "Hi {{ user.name }";
        assert_eq!(place(text, 4, "body", value, (1, 7)), Some((4, 19)));
    }

    #[test]
    fn a_quoted_value_and_a_list_item() {
        let text = "- body: \"Hi {{ x\"\n";
        assert_eq!(place(text, 1, "body", "Hi {{ x", (1, 4)), Some((1, 13)));
        let text = "  - title: 'a {{'\n";
        assert_eq!(place(text, 1, "title", "a {{", (1, 3)), Some((1, 15)));
    }

    #[test]
    fn a_literal_block() {
        let text = "x:\n  body: |\n    Hello\n\n    and {{ oops: }}\n      indented\n  next: y\n";
        let value = "Hello\n\nand {{ oops: }}\n  indented\n";
        assert_eq!(place(text, 2, "body", value, (3, 5)), Some((5, 9)));
        assert_eq!(place(text, 2, "body", value, (4, 3)), Some((6, 7)));
    }

    #[test]
    fn folded_lines() {
        let text = "body: >\n  Hi there\n  {{ user.name | }}\n";
        let value = "Hi there {{ user.name | }}\n";
        assert_eq!(place(text, 1, "body", value, (1, 25)), Some((3, 18)));
        let text = "body: Hi there\n  {{ user.name | }}\n";
        let value = "Hi there {{ user.name | }}";
        assert_eq!(place(text, 1, "body", value, (1, 10)), Some((2, 3)));
    }

    #[test]
    fn a_value_in_a_flow_mapping() {
        let text = "  - id: hi\n    message: { channel: push, body: \"{{ x | nope }}\" }\n";
        let value = "{{ x | nope }}";
        assert_eq!(place(text, 2, "body", value, (1, 8)), Some((2, 45)));
        let text = "webhook: { base_url: x, url: \"{{ a |\" }\n";
        assert_eq!(place(text, 1, "url", "{{ a |", (1, 4)), Some((1, 34)));
    }

    #[test]
    fn escapes_claim_no_place() {
        let text = "body: \"Say \\\"hi\\\" {{ x\"\n";
        assert_eq!(place(text, 1, "body", "Say \"hi\" {{ x", (1, 10)), None);
    }
}
