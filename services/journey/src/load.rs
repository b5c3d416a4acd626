//! Reading journey, segment and policy specs from YAML, with errors that name the file, line,
//! column and field.
//!
//! Journeys, segments and policies share folders and files: each YAML document says what it
//! is with `kind:` (`journey` when absent, `segment` or `policy`).

use std::path::Path;

use ahash::AHashMap;
use beckon_core::ids::MAX_KEY_BYTES;
use serde::Deserialize;

use crate::cycle::{self, Edge};
use crate::error::{JourneyError, SpecError};
use crate::eval::MAX_JOURNEY_AND_STEP_ID_BYTES;
use crate::journey::{
    Arm, Cap, Definitions, Entry, EntryTrigger, Journey, LiveActivity, LiveValue, Message, Policy,
    Segment, Step, StepKind, Target, WaitUntil,
};
use crate::localtime::{Hours, LocalTime};
use crate::spec::{
    DelaySpec, HoursSpec, JourneySpec, LiveActivityEvent, LiveActivitySpec, MAX_WAIT,
    MAX_WAIT_DAYS, MessageSpec, PolicySpec, Reentry, SegmentSpec, StepSpec,
};
use crate::strict_yaml::strict;
use crate::template::{Template, TemplateError};

/// The default attribution window of conversions.
const CONVERSION_WINDOW: beckon_core::Duration = beckon_core::Duration(7 * 86_400_000);

/// Documents read from one file at most.
const MAX_DOCUMENTS: usize = 10_000;

#[derive(Deserialize)]
struct Peek {
    #[serde(default)]
    kind: Option<String>,
}

/// Parses and checks every journey in one YAML text (several documents may be separated by
/// `---`). `file` is only used in error messages. Segments and policies in the text are
/// checked too, but only journeys are returned.
pub fn load_str(file: &str, text: &str) -> Result<Vec<Journey>, Vec<SpecError>> {
    load_definitions_str(file, text).map(|d| d.journeys)
}

/// Parses and checks every definition in one YAML text.
pub fn load_definitions_str(file: &str, text: &str) -> Result<Definitions, Vec<SpecError>> {
    load_documents(file, text, Checks::All).map(|(defs, _)| defs)
}

/// Like [`load_definitions_str`], for a text that was published before: what the loop checks
/// refuse is kept in the journey's [`Journey::refused_loops`] instead of refusing it.
pub fn load_published_str(file: &str, text: &str) -> Result<Definitions, Vec<SpecError>> {
    load_documents(file, text, Checks::PublishedBefore).map(|(defs, _)| defs)
}

/// Which checks refuse a journey.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checks {
    /// Every check: a spec being linted or published.
    All,
    /// A spec published by an earlier version, which may have had fewer checks: the loop
    /// checks, added since, are noted and the journey's loops paced rather than refused. A
    /// service that cannot start after an upgrade would be far worse than such a journey.
    PublishedBefore,
}

/// Where each journey and segment of a file is written: its document's text and the number
/// of the file's lines before it, in the order of [`Definitions`].
#[derive(Default)]
struct Places<'t> {
    journeys: Vec<Document<'t>>,
    segments: Vec<Document<'t>>,
}

/// One YAML document of a file: its text, and how many of the file's lines come before it.
type Document<'t> = (&'t str, u32);

/// Parses and checks every definition in one YAML text, and says where each was written.
fn load_documents<'t>(
    file: &str,
    text: &'t str,
    checks: Checks,
) -> Result<(Definitions, Places<'t>), Vec<SpecError>> {
    // A byte-order mark some editors put at the start of a file is not part of the YAML;
    // nothing before it, so lines and columns stay those of the text as shown.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut defs = Definitions::default();
    let mut places = Places::default();
    let mut errors = Vec::new();

    // A first pass reads only each document's kind, and whether it is empty. A document that
    // is not even YAML is parsed as a journey below, which reports its error; nothing after
    // it is read, since the document iterator does not move past a syntax error.
    let mut kinds: Vec<(bool, Option<String>)> = Vec::new();
    let mut whole = true;
    for doc in serde_norway::Deserializer::from_str(text).take(MAX_DOCUMENTS) {
        match Option::<Peek>::deserialize(doc) {
            Ok(p) => kinds.push((p.is_none(), p.and_then(|p| p.kind))),
            Err(_) => {
                kinds.push((false, None));
                whole = false;
                break;
            }
        }
    }

    // Checks after parsing look for keys in the document's own text, so an id used in two
    // documents of a file is not looked for in the wrong one. When the documents cannot be
    // told apart as the reader did, the whole file is searched, as before.
    let mut documents = documents(text);
    if !whole || documents.len() != kinds.len() {
        documents = vec![(text, 0); kinds.len()];
    }

    let shifted = |mut found: Vec<SpecError>, before: u32| {
        for e in &mut found {
            e.line = e.line.saturating_add(before);
        }
        found
    };
    for ((doc, (empty, kind)), (own, before)) in serde_norway::Deserializer::from_str(text)
        .zip(kinds)
        .zip(documents)
    {
        // An empty document (a `---` closing the file, say) defines nothing.
        if empty {
            continue;
        }
        match kind.as_deref() {
            Some("segment") => match SegmentSpec::deserialize(strict(doc)) {
                Ok(spec) => match compile_segment(file, own, spec) {
                    Ok(s) => {
                        defs.segments.push(s);
                        places.segments.push((own, before));
                    }
                    Err(e) => errors.extend(shifted(e, before)),
                },
                Err(e) => errors.push(from_yaml_error(file, text, &e)),
            },
            Some("policy") => match PolicySpec::deserialize(strict(doc)) {
                Ok(spec) => match compile_policy(file, own, spec) {
                    Ok(p) => defs.policies.push(p),
                    Err(e) => errors.extend(shifted(e, before)),
                },
                Err(e) => errors.push(from_yaml_error(file, text, &e)),
            },
            _ => match JourneySpec::deserialize(strict(doc)) {
                Ok(spec) => match compile(file, own, spec, checks) {
                    Ok(j) => {
                        defs.journeys.push(j);
                        places.journeys.push((own, before));
                    }
                    Err(e) => errors.extend(shifted(e, before)),
                },
                Err(e) => errors.push(from_yaml_error(file, text, &e)),
            },
        }
    }

    if errors.is_empty() {
        Ok((defs, places))
    } else {
        Err(errors)
    }
}

/// The documents of a YAML text as the reader splits them: at lines starting with `---` (a
/// document's start, kept with it, as a value may follow on that line) or `...` (an end),
/// followed by a space or nothing, which no value inside a document may start a line with.
/// Directives and comments before a `---` make no document of their own; a text with no
/// document is read as one empty document.
fn documents(text: &str) -> Vec<Document<'_>> {
    let mut found = Vec::new();
    let (mut start, mut before) = (0, 0);
    let (mut content, mut explicit) = (false, false);
    let mut at = 0;
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        let bare = line.trim_end_matches(['\n', '\r']);
        let marker = |m: &str| {
            bare.strip_prefix(m)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
        };
        let (starts, ends) = (marker("---"), marker("..."));
        if starts || ends {
            if content || explicit {
                found.push((&text[start..at], before));
            }
            let rest = bare[3..].trim();
            (start, before) = if starts {
                (at, n)
            } else {
                (at + line.len(), n + 1)
            };
            explicit = starts;
            content = starts && !rest.is_empty() && !rest.starts_with('#');
        } else {
            let written = bare.trim_start();
            let directive = bare.starts_with('%') && !content && !explicit;
            if !written.is_empty() && !written.starts_with('#') && !directive {
                content = true;
            }
        }
        at += line.len();
    }
    if content || explicit || found.is_empty() {
        found.push((&text[start..], before));
    }
    found
}

/// Loads the journeys of every `*.yaml` / `*.yml` file under `dir`, in file-name order.
pub fn load_dir(dir: &Path) -> Result<Vec<Journey>, JourneyError> {
    load_definitions(dir).map(|d| d.journeys)
}

/// Loads every definition under `dir` (a folder, or a single file), in file-name order. Fails
/// with all the errors found when any file has one.
pub fn load_definitions(dir: &Path) -> Result<Definitions, JourneyError> {
    let (files, mut unreadable) = read_spec_texts(dir)?;
    match load_definitions_texts(&files) {
        Ok(definitions) if unreadable.is_empty() => Ok(definitions),
        Ok(_) => Err(JourneyError::Invalid(unreadable)),
        Err(errors) => {
            unreadable.extend(errors);
            Err(JourneyError::Invalid(unreadable))
        }
    }
}

/// The `*.yaml` / `*.yml` files under `dir` (a folder, or a single file) as `(path, text)`, in
/// path order. Sub-folders are read too, so specs can be grouped by team or product; folders
/// whose name starts with `.` (version control, editors) are skipped.
///
/// When a file is not text, nothing is returned: the error names each such file and, so that
/// they do not hide the rest, every problem of the files that are.
pub fn read_spec_files(dir: &Path) -> Result<Vec<(String, String)>, JourneyError> {
    let (files, mut unreadable) = read_spec_texts(dir)?;
    if unreadable.is_empty() {
        return Ok(files);
    }
    if let Err(errors) = load_definitions_texts(&files) {
        unreadable.extend(errors);
    }
    Err(JourneyError::Invalid(unreadable))
}

/// `(path, text)` of each spec file that is text, and an error for each that is not.
type SpecTexts = (Vec<(String, String)>, Vec<SpecError>);

/// The spec files' texts, and an error for each file that is not UTF-8 text, placed at its
/// first bad byte: one such file does not hide what is wrong with the others.
fn read_spec_texts(dir: &Path) -> Result<SpecTexts, JourneyError> {
    let paths = spec_paths(dir)?;
    let mut files = Vec::with_capacity(paths.len());
    let mut unreadable = Vec::new();
    for path in paths {
        let bytes = std::fs::read(&path).map_err(|source| JourneyError::Io {
            path: path.display().to_string(),
            source,
        })?;
        match String::from_utf8(bytes) {
            Ok(text) => files.push((path.display().to_string(), text)),
            Err(e) => {
                let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
                let line = good.iter().filter(|b| **b == b'\n').count() + 1;
                let column =
                    good.len() - good.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
                unreadable.push(SpecError {
                    file: path.display().to_string(),
                    line: u32::try_from(line).unwrap_or(u32::MAX),
                    column: u32::try_from(column + 1).unwrap_or(u32::MAX),
                    field: String::new(),
                    message: "not UTF-8 text: a spec file must be UTF-8".into(),
                });
            }
        }
    }
    Ok((files, unreadable))
}

/// The spec files `dir` names: itself when it is a file, else every `*.yaml` / `*.yml` file
/// under it, in path order. Anything else (a pipe, a device) is refused as what it is rather
/// than read as a folder, which would fail with "Not a directory".
pub fn spec_paths(dir: &Path) -> Result<Vec<std::path::PathBuf>, JourneyError> {
    let io = |source| JourneyError::Io {
        path: dir.display().to_string(),
        source,
    };
    let kind = std::fs::metadata(dir).map_err(io)?.file_type();
    if kind.is_file() {
        return Ok(vec![dir.to_path_buf()]);
    }
    if !kind.is_dir() {
        let why = "not a regular file or a folder";
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            why,
        )));
    }

    let mut paths = Vec::new();
    collect_spec_paths(dir, &mut paths)?;
    Ok(paths)
}

/// Appends the spec files of `dir` and of its sub-folders, depth first. Entries are sorted by
/// name at each level, so the order (and with it the order of errors) is the same on every
/// machine, whatever order the file system lists them in.
fn collect_spec_paths(dir: &Path, paths: &mut Vec<std::path::PathBuf>) -> Result<(), JourneyError> {
    let io = |source| JourneyError::Io {
        path: dir.display().to_string(),
        source,
    };
    let mut entries: Vec<std::fs::DirEntry> = std::fs::read_dir(dir)
        .map_err(io)?
        .collect::<Result<_, _>>()
        .map_err(io)?;
    entries.sort_by_key(std::fs::DirEntry::file_name);

    for entry in entries {
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        // The entry's own type: a symbolic link to a folder is not followed, so a link
        // back up the tree cannot loop.
        let is_dir = entry.file_type().map_err(io)?.is_dir();
        if is_dir && !hidden {
            collect_spec_paths(&path, paths)?;
        } else if path.is_file()
            && matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            )
        {
            paths.push(path);
        }
    }
    Ok(())
}

/// Parses and checks a set of spec texts as one whole: each `(name, text)` on its own, then
/// the checks between documents (ids defined twice, segments used but not defined).
pub fn load_definitions_texts(files: &[(String, String)]) -> Result<Definitions, Vec<SpecError>> {
    load_texts(files, Checks::All)
}

/// Like [`load_definitions_texts`], for documents published before (read back from the
/// store): a journey the loop checks refuse is loaded with [`Journey::refused_loops`] set.
pub fn load_published_texts(files: &[(String, String)]) -> Result<Definitions, Vec<SpecError>> {
    load_texts(files, Checks::PublishedBefore)
}

fn load_texts(files: &[(String, String)], checks: Checks) -> Result<Definitions, Vec<SpecError>> {
    let mut defs = Definitions::default();
    let mut errors = Vec::new();
    // The file and document each journey and segment came from, in the order of `defs`, so
    // an error between documents can point at one of them.
    let mut sources = Sources::default();
    for (name, text) in files {
        match load_documents(name, text, checks) {
            Ok((d, places)) => {
                for doc in places.journeys {
                    sources.journeys.push((name.as_str(), doc));
                }
                for doc in places.segments {
                    sources.segments.push((name.as_str(), doc));
                }
                defs.journeys.extend(d.journeys);
                defs.segments.extend(d.segments);
                defs.policies.extend(d.policies);
            }
            Err(mut es) => errors.append(&mut es),
        }
    }
    cross_check(&defs, &sources, &mut errors);

    if errors.is_empty() {
        Ok(defs)
    } else {
        Err(errors)
    }
}

/// The file and document of each journey and segment, in the order of [`Definitions`].
#[derive(Default)]
struct Sources<'a> {
    journeys: Vec<(&'a str, Document<'a>)>,
    segments: Vec<(&'a str, Document<'a>)>,
}

/// An id defined twice, reported at the second definition's `id:` line, naming the first.
fn defined_twice(
    what: &str,
    id: &str,
    version: u32,
    at: (&str, Document<'_>),
    first: &str,
) -> SpecError {
    let (file, (text, before)) = at;
    let (line, column) = locate(text, 1, "id", id);
    SpecError {
        file: file.to_string(),
        line: line.saturating_add(before),
        column,
        field: "id".into(),
        message: format!("{what} {id} version {version} is defined twice (also in {first})"),
    }
}

/// Checks between documents: ids defined twice, segments referred to but not defined.
fn cross_check(defs: &Definitions, sources: &Sources<'_>, errors: &mut Vec<SpecError>) {
    let mut seen = AHashMap::new();
    for (j, at) in defs.journeys.iter().zip(&sources.journeys) {
        let key = (j.workspace.clone(), j.id.clone(), j.version);
        if let Some(first) = seen.insert(key, at.0) {
            errors.push(defined_twice("journey", &j.id, j.version, *at, first));
        }
    }
    let mut seen = AHashMap::new();
    for (s, at) in defs.segments.iter().zip(&sources.segments) {
        let key = (s.workspace.clone(), s.id.clone());
        if let Some((version, first)) = seen.insert(key, (s.version, at.0))
            && version == s.version
        {
            errors.push(defined_twice("segment", &s.id, s.version, *at, first));
        }
    }

    let known = |ws: &str, id: &str| {
        defs.segments
            .iter()
            .any(|s| s.workspace == ws && s.id == id)
    };
    for (j, (file, (text, before))) in defs.journeys.iter().zip(&sources.journeys) {
        let mut used = Vec::new();
        if let EntryTrigger::Segment { id, .. } = &j.entry.trigger {
            used.push(id.as_str());
        }
        if let Some(c) = &j.entry.condition {
            c.segments(&mut used);
        }
        for step in &j.steps {
            if let StepKind::Branch { condition, .. } = &step.kind {
                condition.segments(&mut used);
            }
        }
        for id in used.into_iter().filter(|id| !known(&j.workspace, id)) {
            let (line, column) = locate_written(text, 1, "segment", id);
            errors.push(SpecError {
                file: file.to_string(),
                line: line.saturating_add(*before),
                column,
                field: "segment".into(),
                message: format!("expected the id of a segment in this workspace, found `{id}`"),
            });
        }
    }
}

fn from_yaml_error(file: &str, source: &str, e: &serde_norway::Error) -> SpecError {
    let (mut line, mut column) = e
        .location()
        .map_or((1, 1), |l| (l.line() as u32, l.column() as u32));

    // serde_norway writes "path.to.field: message at line L column C".
    let mut text = e.to_string();
    if let Some(at) = text.rfind(" at line ") {
        text.truncate(at);
    }
    let (field, message) = match text.split_once(": ") {
        Some((path, rest)) if !path.contains(' ') => (path.to_string(), rest.to_string()),
        _ => (String::new(), text),
    };

    // For a value rejected by its own parser (a duration, say) the parser points at the start
    // of the enclosing mapping; the quoted value in the message finds the exact line.
    if let Some(value) = message.split('"').nth(1).filter(|v| !v.is_empty()) {
        let found = source
            .lines()
            .enumerate()
            .skip(line.saturating_sub(1) as usize)
            .find_map(|(i, l)| l.find(value).map(|c| (i as u32 + 1, c as u32 + 1)));
        if let Some((l, c)) = found {
            (line, column) = (l, c);
        }
    }
    let message = crate::serde_words::in_spec_terms(&field, &message);
    SpecError {
        file: file.to_string(),
        line,
        column,
        field,
        message,
    }
}

/// Finds where `key: value` is written, starting the search at `from_line` (1-based), so
/// errors found after parsing still point at the right place.
fn locate(text: &str, from_line: u32, key: &str, value: &str) -> (u32, u32) {
    let needle = format!("{key}:");
    for (i, line) in text
        .lines()
        .enumerate()
        .skip(from_line.saturating_sub(1) as usize)
    {
        let trimmed = line.trim_start().trim_start_matches("- ");
        if trimmed.starts_with(&needle) && (value.is_empty() || line.contains(value)) {
            let col = line.len() - line.trim_start().len() + 1;
            return (i as u32 + 1, col as u32);
        }
    }
    (from_line.max(1), 1)
}

/// Where the value of the first `key:` at or after `from_line` (1-based) is written, also
/// inside a flow mapping (`limit: {count: 2, per: 30d}`); the key's line when the value
/// starts on the next one.
fn locate_value(text: &str, from_line: u32, key: &str) -> (u32, u32) {
    let needle = format!("{key}:");
    for (i, line) in text
        .lines()
        .enumerate()
        .skip(from_line.saturating_sub(1) as usize)
    {
        let found = line.match_indices(&needle).find(|(at, _)| {
            line[..*at]
                .chars()
                .next_back()
                .is_none_or(|c| c == ' ' || c == '{' || c == ',' || c == '-')
        });
        if let Some((at, _)) = found {
            let after = &line[at + needle.len()..];
            let value = at + needle.len() + (after.len() - after.trim_start().len());
            let at = if value < line.len() { value } else { at };
            let column = line[..at].chars().count() + 1;
            return (i as u32 + 1, column as u32);
        }
    }
    (from_line.max(1), 1)
}

/// Where `value` is written as the value of the first `key:` at or after `from_line` that
/// has it, also inside a flow mapping (`{arm: a, next: b}`); where `key: value` is when the
/// value is not written as it reads (an escape in quotes).
fn locate_written(text: &str, from_line: u32, key: &str, value: &str) -> (u32, u32) {
    let needle = format!("{key}:");
    for (i, line) in text
        .lines()
        .enumerate()
        .skip(from_line.saturating_sub(1) as usize)
    {
        for (at, _) in line.match_indices(&needle) {
            let boundary = line[..at]
                .chars()
                .next_back()
                .is_none_or(|c| c == ' ' || c == '{' || c == ',' || c == '-');
            let after = &line[at + needle.len()..];
            let written = after.trim_start();
            let unquoted = written.trim_start_matches(['"', '\'']);
            let whole = unquoted.strip_prefix(value).is_some_and(|rest| {
                rest.is_empty() || rest.starts_with([' ', ',', '}', '"', '\'', '#'])
            });
            if boundary && whole {
                let byte = line.len() - written.len();
                return (i as u32 + 1, line[..byte].chars().count() as u32 + 1);
            }
        }
    }
    locate(text, from_line, key, value)
}

struct Checker<'a> {
    file: &'a str,
    text: &'a str,
    errors: Vec<SpecError>,
    /// Which checks refuse. Under [`Checks::PublishedBefore`] what the template lint
    /// ([`Template::lint`]) refuses goes to `set_aside` instead of `errors`: a version
    /// published before that lint still loads (at render time the budget it enforces holds
    /// anyway), and whoever publishes the text again learns what the lint says of it.
    checks: Checks,
    set_aside: Vec<SpecError>,
    /// Under [`Checks::PublishedBefore`], the event names refused for reading as a name
    /// reserved for the gateway's reports ([`Journey::refused_names`]), which that check,
    /// newer than some published versions, refuses in a spec being linted or published.
    refused_names: Vec<SpecError>,
}

impl Checker<'_> {
    fn error(&mut self, from_line: u32, key: &str, value: &str, field: String, message: String) {
        let (line, column) = locate(self.text, from_line, key, value);
        self.errors.push(SpecError {
            file: self.file.to_string(),
            line,
            column,
            field,
            message,
        });
    }

    /// Refuses a span longer than [`MAX_WAIT`], at the value of `key`.
    fn wait(&mut self, from_line: u32, key: &str, field: String, span: i64) {
        if span.unsigned_abs() > MAX_WAIT.0.unsigned_abs() {
            let found = beckon_core::Duration(span.abs());
            let message = format!("expected a duration of at most {MAX_WAIT}, found {found}");
            self.value_error(from_line, key, field, message);
        }
    }

    /// An error placed at the value of the first `key:` at or after `from_line`.
    fn value_error(&mut self, from_line: u32, key: &str, field: String, message: String) {
        let (line, column) = locate_value(self.text, from_line, key);
        self.errors.push(SpecError {
            file: self.file.to_string(),
            line,
            column,
            field,
            message,
        });
    }

    /// Refuses an event name that ingest would refuse (too long, control characters, or
    /// read as a name reserved for the gateway's reports without being written as it, such
    /// as `message opened`): no event could ever match it. The gateway writes its reports
    /// exactly as they are named, and ingest refuses such a name written otherwise from
    /// anyone else ([`beckon_core::delivery::reserved_name`]).
    ///
    /// Placed at the name, written after `key:` or as the `event:` of the mapping there; the
    /// name is not searched for, as an escape (`"\u0007"`) is written otherwise than it
    /// reads.
    fn event_name(&mut self, from_line: u32, key: &str, field: String, name: &str) {
        let invalid = beckon_core::ids::name_problem(name);
        let newer = invalid.is_none();
        let reads_as = beckon_core::delivery::reserved_name(name).filter(|r| *r != name);
        let problem = match (invalid, reads_as) {
            (Some(problem), _) => problem,
            (None, Some(reserved)) => format!(
                "`{name}` reads as `{reserved}`, which is reserved for the gateway's reports; \
                 the gateway writes it only as `{reserved}`, so write that"
            ),
            (None, None) => return,
        };
        let (line, column) = locate_value(self.text, from_line, key);
        let value: String = self
            .text
            .lines()
            .nth(line.saturating_sub(1) as usize)
            .map(|l| l.chars().skip(column.saturating_sub(1) as usize).collect())
            .unwrap_or_default();

        // A mapping, in braces or on the lines below (`locate_value` then stands on the key).
        let mapping = value.starts_with('{') || value.trim_end().ends_with(':');
        let (line, column) = if mapping {
            locate_value(self.text, line, "event")
        } else {
            (line, column)
        };
        let error = SpecError {
            file: self.file.to_string(),
            line,
            column,
            field,
            message: format!("not an event name ingest accepts: {problem}"),
        };

        // Reading reserved names in any case is newer than some published versions: one
        // with such a name loads as it is, as a service must start with what it has.
        if newer && self.checks == Checks::PublishedBefore {
            self.refused_names.push(error);
        } else {
            self.errors.push(error);
        }
    }

    /// Compiles a template, with the lint's checks when they apply; a problem is reported
    /// under `field`, placed as [`Checker::template_error`] places it.
    fn template(
        &mut self,
        from_line: u32,
        key: &str,
        source: &str,
        field: String,
    ) -> Option<Template> {
        let template = match Template::compile(source) {
            Ok(t) => t,
            Err(e) => {
                let error = self.template_error(from_line, key, source, field, &e);
                self.errors.push(error);
                return None;
            }
        };
        match template.lint() {
            Ok(()) => Some(template),
            Err(e) => {
                let error = self.template_error(from_line, key, source, field, &e);
                if self.checks == Checks::All {
                    self.errors.push(error);
                    None
                } else {
                    self.set_aside.push(error);
                    Some(template)
                }
            }
        }
    }

    /// A template's problem, placed where in the file it is written when the template's text
    /// can be matched to the file's, else at its key.
    fn template_error(
        &self,
        from_line: u32,
        key: &str,
        source: &str,
        field: String,
        e: &TemplateError,
    ) -> SpecError {
        // The key may stand in a flow mapping (`message: { body: "..." }`): its line is found
        // as a value's is, and the value's start is where a problem that cannot be placed
        // more exactly is reported. That is the case of a quoted value with escapes, whose
        // text in the file differs from the text Liquid read, and of a problem placed past
        // the template's last line (a block left open).
        let value_at = locate_value(self.text, from_line, key);
        let inside =
            e.at.and_then(|at| crate::value_place::place(self.text, value_at.0, key, source, at));
        let (line, column) = inside.unwrap_or(value_at);
        SpecError {
            file: self.file.to_string(),
            line,
            column,
            field,
            message: e.to_string(),
        }
    }
}

fn compile(
    file: &str,
    text: &str,
    spec: JourneySpec,
    checks: Checks,
) -> Result<Journey, Vec<SpecError>> {
    let mut ck = Checker {
        file,
        text,
        errors: Vec::new(),
        checks,
        set_aside: Vec::new(),
        refused_names: Vec::new(),
    };
    let top = locate(text, 1, "id", &spec.id).0;

    if let Some(kind) = &spec.kind
        && kind != "journey"
    {
        ck.error(
            1,
            "kind",
            kind,
            "kind".into(),
            format!("expected `journey`, found `{kind}`"),
        );
    }
    if !id_is_valid(&spec.id) {
        let message = "expected letters, digits, `-` or `_`".to_string();
        ck.value_error(top, "id", "id".into(), message);
    }
    let e = &spec.entry;
    let starts = [e.event.is_some(), e.first_seen, e.segment.is_some(), e.api]
        .iter()
        .filter(|x| **x)
        .count();
    if starts != 1 {
        ck.error(
            top,
            "entry",
            "",
            "entry".into(),
            "expected exactly one of `event`, `first_seen: true`, `segment` or `api: true`".into(),
        );
    }
    if let Some(event) = &e.event {
        let entry_line = locate(text, top, "entry", "").0;
        ck.event_name(entry_line, "entry", "entry.event".into(), event);
    }
    if let Some(goal) = &spec.goal {
        ck.event_name(top, "goal", "goal".into(), &goal.event);
    }
    if e.on.is_some() && e.segment.is_none() {
        ck.error(
            top,
            "on",
            "",
            "entry.on".into(),
            "`on` is only for segment entries".into(),
        );
    }
    if let Some(limit) = &e.limit
        && (limit.count == 0 || limit.per.0 <= 0)
    {
        ck.error(
            top,
            "limit",
            "",
            "entry.limit".into(),
            "expected a count above 0 and a period".into(),
        );
    }
    if let Some(w) = spec.conversion_window {
        ck.wait(top, "conversion_window", "conversion_window".into(), w.0);
    }
    if let Reentry::Cooldown(c) = e.reentry {
        ck.wait(top, "cooldown", "entry.reentry.cooldown".into(), c.0);
    }
    if let Some(limit) = &e.limit {
        ck.wait(top, "per", "entry.limit.per".into(), limit.per.0);
    }
    if spec.holdout.is_some_and(|h| h > 100) {
        ck.error(
            top,
            "holdout",
            "",
            "holdout".into(),
            "expected a percentage from 0 to 100".into(),
        );
    }
    if let Some(c) = &spec.entry.condition {
        let mut found = Vec::new();
        c.check("entry.if", &mut found);
        for (field, message) in found {
            ck.error(top, "if", "", field, message);
        }
    }
    if spec.steps.is_empty() {
        ck.error(
            top,
            "steps",
            "",
            "steps".into(),
            "a journey needs at least one step".into(),
        );
    }

    let mut index = AHashMap::new();
    let mut last_line: AHashMap<&str, u32> = AHashMap::new();
    for (i, s) in spec.steps.iter().enumerate() {
        // Looked for after the previous step with the same id, so an id used twice is
        // reported where it is used again, not at its first use.
        let from = last_line.get(s.id.as_str()).map_or(top, |line| line + 1);
        last_line.insert(s.id.as_str(), locate(ck.text, from, "id", &s.id).0);
        if s.id == "exit" || index.insert(s.id.clone(), i).is_some() {
            ck.error(
                from,
                "id",
                &s.id,
                format!("steps[{i}].id"),
                format!("step id `{}` is reserved or used twice", s.id),
            );
        }
    }

    refuse_ids_too_long_for_keys(&mut ck, top, &spec);

    let mut last_events = Vec::new();
    let steps: Vec<Step> = spec
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| compile_step(&mut ck, top, &index, spec.steps.len(), i, s))
        .collect();
    // The loop checks came after journeys were first published: their errors are set aside,
    // so that a journey published before them can still be loaded.
    let before_loops = ck.errors.len();
    refuse_loops_without_waiting(&mut ck, top, &spec.steps, &steps);
    refuse_loops_waiting_too_little(&mut ck, top, &spec.steps, &steps);
    let mut refused_loops = Vec::new();
    if checks == Checks::PublishedBefore {
        refused_loops = ck.errors.split_off(before_loops);
    }
    for step in &steps {
        if let StepKind::Message(m) = &step.kind {
            let templates = [Some(&m.body), m.title.as_ref(), m.subject.as_ref()];
            for t in templates.into_iter().flatten() {
                for name in t.children_of("last") {
                    if !last_events.contains(&name) {
                        last_events.push(name);
                    }
                }
            }
        }
    }

    let mut refused_templates = std::mem::take(&mut ck.set_aside);
    let mut refused_names = std::mem::take(&mut ck.refused_names);
    if !ck.errors.is_empty() {
        // A journey refused for something else is refused with all of it.
        ck.errors.append(&mut refused_loops);
        ck.errors.append(&mut refused_templates);
        ck.errors.append(&mut refused_names);
        // Checks run by kind, not by place: a step's `next` is checked before its body.
        ck.errors.sort_by_key(|e| (e.line, e.column));
        return Err(ck.errors);
    }
    let paced = if refused_loops.is_empty() {
        Vec::new()
    } else {
        cycle::back_edges(&steps)
    };
    let entry = spec.entry;
    let trigger = if let Some(event) = entry.event {
        EntryTrigger::Event(event)
    } else if let Some(id) = entry.segment {
        EntryTrigger::Segment {
            id,
            edge: entry.on.unwrap_or_default(),
        }
    } else if entry.api {
        EntryTrigger::Api
    } else {
        EntryTrigger::FirstSeen
    };
    Ok(Journey {
        name: spec.name.unwrap_or_else(|| spec.id.clone()),
        id: spec.id,
        version: spec.version,
        workspace: spec.workspace,
        entry: Entry {
            trigger,
            filter: entry.filter,
            condition: entry.condition,
            reentry: entry.reentry,
            key: entry.key,
            limit: entry.limit.map(|l| (l.count, l.per)),
        },
        goal: spec.goal,
        exit_on: spec.exit_on,
        conversion_window: spec.conversion_window.unwrap_or(CONVERSION_WINDOW),
        holdout: spec.holdout.unwrap_or(0),
        context: serde_json::Value::Object(spec.context),
        steps,
        index,
        last_events,
        refused_loops,
        refused_templates,
        refused_names,
        paced,
    })
}

/// Refuses each loop of steps in which no step waits, at the target that closes it: one
/// trigger would run it until the step limit, sending its messages again and again at once.
fn refuse_loops_without_waiting(
    ck: &mut Checker<'_>,
    top: u32,
    specs: &[StepSpec],
    steps: &[Step],
) {
    for c in cycle::without_waiting(steps) {
        let head = if c.steps.len() == 1 {
            format!(
                "step `{}` goes back to itself without waiting",
                steps[c.steps[0]].id
            )
        } else {
            format!("steps {} loop without waiting", loop_names(steps, &c))
        };
        let why = "a loop must pass through a delay, a wait_for or a wait_until";
        refuse_loop(ck, top, specs, steps, &c, head, why);
    }
}

/// Refuses each loop whose waits add up to less than `MIN_LOOP_WAIT`, at the target that
/// closes it: the scheduler would bring the instance round again and again, sending on every
/// round, for as long as the journey is published.
fn refuse_loops_waiting_too_little(
    ck: &mut Checker<'_>,
    top: u32,
    specs: &[StepSpec],
    steps: &[Step],
) {
    for short in cycle::waiting_too_little(steps) {
        let c = &short.cycle;
        let waits = beckon_core::Duration(short.waits);
        let head = if c.steps.len() == 1 {
            format!(
                "step `{}` goes back to itself after waiting only {waits}",
                steps[c.steps[0]].id
            )
        } else {
            format!(
                "steps {} loop after waiting only {waits}",
                loop_names(steps, c)
            )
        };
        let why = format!(
            "the waits on a loop must add up to at least {}",
            cycle::MIN_LOOP_WAIT
        );
        refuse_loop(ck, top, specs, steps, c, head, &why);
    }
}

/// The loop's step ids in the order they run, back to the first: `a` -> `b` -> `a`.
fn loop_names(steps: &[Step], c: &cycle::Cycle) -> String {
    let first = c.steps.first().copied().unwrap_or_default();
    let names: Vec<String> = c
        .steps
        .iter()
        .chain([&first])
        .map(|&s| format!("`{}`", steps[s].id))
        .collect();
    names.join(" -> ")
}

/// Places a loop's error at the target that closes it, with `head` saying what the loop is,
/// `why` what a loop needs, and what keeps each of its would-be waits from waiting.
fn refuse_loop(
    ck: &mut Checker<'_>,
    top: u32,
    specs: &[StepSpec],
    steps: &[Step],
    c: &cycle::Cycle,
    mut message: String,
    why: &str,
) {
    let from = c.from();
    let to = c.steps.first().copied().unwrap_or_default();
    let spec = &specs[from];

    // A target left out is the next step in the list; the loop is then closed by the step's
    // place, not by anything written, and the error stands at its id.
    let written = match c.edge {
        Edge::Next => spec.next.is_some(),
        Edge::Then | Edge::Arm(_) => true,
        Edge::Else => spec.branch.as_ref().is_some_and(|b| b.otherwise.is_some()),
        Edge::OnEvent => spec.wait_for.as_ref().is_some_and(|w| w.on_event.is_some()),
        Edge::OnTimeout => spec
            .wait_for
            .as_ref()
            .is_some_and(|w| w.on_timeout.is_some()),
    };
    let at = locate(ck.text, top, "id", &spec.id).0;
    let key = c.edge.key();
    let (line, column, field) = if written {
        let (line, column) = locate_written(ck.text, at, key, &steps[to].id);
        (line, column, format!("steps[{from}].{key}"))
    } else {
        message.push_str(&format!(
            " (`{}` goes on to the step after it)",
            steps[from].id
        ));
        let (line, column) = locate_written(ck.text, at, "id", &spec.id);
        (line, column, format!("steps[{from}]"))
    };

    message.push_str(": ");
    message.push_str(why);
    for &s in &c.steps {
        if let Some(why) = cycle::why_not_waiting(&steps[s].kind) {
            message.push_str(&format!("; `{}` does not wait: {why}", steps[s].id));
        }
    }
    ck.errors.push(SpecError {
        file: ck.file.to_string(),
        line,
        column,
        field,
        message,
    });
}

/// Refuses a journey id, or a step id beside it, that could make a message's idempotency
/// key longer than a gateway accepts: the gateway would refuse every send from the step.
fn refuse_ids_too_long_for_keys(ck: &mut Checker<'_>, top: u32, spec: &JourneySpec) {
    let most = MAX_JOURNEY_AND_STEP_ID_BYTES;
    let why = format!(
        "so that a message's idempotency key (workspace, user id, journey id, instance, step \
         id, visit) fits the gateway's {MAX_KEY_BYTES} bytes"
    );

    // A step id takes at least one byte.
    let journey = spec.id.len();
    if journey >= most {
        let message = format!("{journey} bytes; at most {} {why}", most - 1);
        ck.value_error(top, "id", "id".into(), message);
        return;
    }
    for (i, s) in spec.steps.iter().enumerate() {
        let both = journey + s.id.len();
        if both > most {
            let message = format!(
                "{} bytes, with the journey id's {journey} bytes {both}; at most {most} \
                 together {why}",
                s.id.len()
            );
            let at = locate(ck.text, top, "id", &s.id).0;
            let (line, column) = locate_written(ck.text, at, "id", &s.id);
            ck.errors.push(SpecError {
                file: ck.file.to_string(),
                line,
                column,
                field: format!("steps[{i}].id"),
                message,
            });
        }
    }
}

fn id_is_valid(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
}

fn compile_segment(file: &str, text: &str, spec: SegmentSpec) -> Result<Segment, Vec<SpecError>> {
    let mut ck = Checker {
        file,
        text,
        errors: Vec::new(),
        checks: Checks::All,
        set_aside: Vec::new(),
        refused_names: Vec::new(),
    };
    let top = locate(text, 1, "id", &spec.id).0;
    if !id_is_valid(&spec.id) {
        let message = "expected letters, digits, `-` or `_`".to_string();
        ck.value_error(top, "id", "id".into(), message);
    }
    let mut found = Vec::new();
    spec.condition.check("condition", &mut found);
    for (field, message) in found {
        let key = field.rsplit('.').next().unwrap_or("condition").to_string();
        let key = key.split('[').next().unwrap_or("condition").to_string();
        ck.error(top, &key, "", field, message);
    }
    if !ck.errors.is_empty() {
        return Err(ck.errors);
    }
    Ok(Segment {
        name: spec.name.unwrap_or_else(|| spec.id.clone()),
        id: spec.id,
        version: spec.version,
        workspace: spec.workspace,
        condition: spec.condition,
    })
}

fn compile_hours(ck: &mut Checker<'_>, top: u32, field: &str, h: &HoursSpec) -> Option<Hours> {
    let mut time = |key: &str, text: &str| match LocalTime::parse(text) {
        Ok(t) => Some(t),
        Err(e) => {
            ck.error(top, key, text, format!("{field}.{key}"), e);
            None
        }
    };
    let from = time("from", &h.from);
    let to = time("to", &h.to);
    Some(Hours {
        from: from?,
        to: to?,
    })
}

fn compile_policy(file: &str, text: &str, spec: PolicySpec) -> Result<Policy, Vec<SpecError>> {
    let mut ck = Checker {
        file,
        text,
        errors: Vec::new(),
        checks: Checks::All,
        set_aside: Vec::new(),
        refused_names: Vec::new(),
    };
    let top = locate(text, 1, "id", &spec.id).0;
    let default_timezone = spec.default_timezone.unwrap_or_else(|| "UTC".into());
    if crate::localtime::zone(&default_timezone).is_none() {
        let message = format!("expected an IANA time zone, found `{default_timezone}`");
        ck.error(
            top,
            "default_timezone",
            "",
            "default_timezone".into(),
            message,
        );
    }
    let mut cap_line = top;
    for (i, cap) in spec.caps.iter().enumerate() {
        if cap.max == 0 || cap.per.0 <= 0 {
            let message = "expected `max` above 0 and a period `per`".to_string();
            ck.error(top, "max", "", format!("caps[{i}]"), message);
        }
        // Each cap's `per` is looked for after the one before it.
        cap_line = locate_value(text, cap_line, "per").0;
        ck.wait(cap_line, "per", format!("caps[{i}].per"), cap.per.0);
        cap_line += 1;
    }
    let quiet = spec
        .quiet_hours
        .as_ref()
        .and_then(|h| compile_hours(&mut ck, top, "quiet_hours", h));
    if !ck.errors.is_empty() {
        return Err(ck.errors);
    }
    Ok(Policy {
        workspace: spec.workspace,
        timezone_trait: spec.timezone_trait.unwrap_or_else(|| "timezone".into()),
        default_timezone,
        caps: spec
            .caps
            .into_iter()
            .map(|c| Cap {
                channel: c.channel,
                max: c.max,
                per: c.per,
            })
            .collect(),
        quiet_hours: quiet,
        quiet_channels: spec.quiet_hours.and_then(|h| h.channels),
    })
}

fn compile_step(
    ck: &mut Checker<'_>,
    top: u32,
    index: &AHashMap<String, usize>,
    len: usize,
    i: usize,
    s: &StepSpec,
) -> Step {
    let at = locate(ck.text, top, "id", &s.id).0;
    let field = format!("steps[{i}]");
    let fallthrough = if i + 1 < len {
        Target::Step(i + 1)
    } else {
        Target::End
    };
    let target = |ck: &mut Checker<'_>, key: &str, name: &Option<String>| match name {
        None => fallthrough,
        Some(n) if n == "exit" => Target::Exit,
        Some(n) => match index.get(n) {
            Some(&t) => Target::Step(t),
            None => {
                let (line, column) = locate_written(ck.text, at, key, n);
                ck.errors.push(SpecError {
                    file: ck.file.to_string(),
                    line,
                    column,
                    field: format!("{field}.{key}"),
                    message: format!("no step with id `{n}`"),
                });
                Target::Exit
            }
        },
    };

    let kinds = [
        s.delay.is_some(),
        s.wait_for.is_some(),
        s.wait_until.is_some(),
        s.branch.is_some(),
        s.split.is_some(),
        s.message.is_some(),
        s.live_activity.is_some(),
        s.set_traits.is_some(),
        s.webhook.is_some(),
        s.exit.is_some(),
    ];
    if kinds.iter().filter(|k| **k).count() != 1 {
        ck.error(
            at,
            "id",
            &s.id,
            field.clone(),
            "expected exactly one of delay, wait_for, wait_until, branch, split, message, \
             live_activity, set_traits, webhook, exit"
                .into(),
        );
    }

    let next = target(ck, "next", &s.next);
    let kind = if let Some(d) = s.delay {
        match d {
            DelaySpec::Span(d) => {
                ck.wait(at, "delay", format!("{field}.delay"), d.0);
                StepKind::Delay(d)
            }
            DelaySpec::Calendar(c) => {
                if c.days > MAX_WAIT_DAYS {
                    let message = format!(
                        "expected at most {MAX_WAIT_DAYS} calendar days, found {}",
                        c.days
                    );
                    ck.value_error(at, "days", format!("{field}.delay.days"), message);
                }
                StepKind::DelayDays(c.days)
            }
        }
    } else if let Some(w) = &s.wait_until {
        if let Some(offset) = w.offset {
            ck.wait(at, "offset", format!("{field}.wait_until.offset"), offset.0);
        }
        let time = w.time.as_deref().and_then(|t| match LocalTime::parse(t) {
            Ok(t) => Some(t),
            Err(e) => {
                ck.error(at, "time", t, format!("{field}.wait_until.time"), e);
                None
            }
        });
        if w.time.is_none() && w.date_trait.is_none() {
            let message = "expected `time`, `date_trait` or both".to_string();
            ck.error(at, "wait_until", "", format!("{field}.wait_until"), message);
        }
        StepKind::WaitUntil(WaitUntil {
            time,
            date_trait: w.date_trait.clone(),
            offset: w.offset.map_or(0, |o| o.0),
            timezone_trait: w.timezone_trait.clone(),
        })
    } else if let Some(arms) = &s.split {
        let total: u32 = arms.iter().map(|a| a.percent).sum();
        if total != 100 {
            let message = format!("arm percentages must add up to 100, found {total}");
            ck.error(at, "split", "", format!("{field}.split"), message);
        }
        let arms = arms
            .iter()
            .map(|a| Arm {
                name: a.arm.clone(),
                percent: a.percent,
                next: target(ck, "next", &Some(a.next.clone())),
            })
            .collect();
        StepKind::Split(arms)
    } else if let Some(traits) = &s.set_traits {
        StepKind::SetTraits(traits.clone())
    } else if let Some(w) = &s.webhook {
        let m = MessageSpec {
            channel: crate::spec::Channel::Webhook,
            title: Some(w.url.clone()),
            subject: None,
            body: w.body.clone(),
            transactional: true,
            on_cap: Default::default(),
            send_window: None,
        };
        compile_message(ck, at, &field, "webhook", &m).map_or(StepKind::Exit, StepKind::Message)
    } else if let Some(w) = &s.wait_for {
        ck.event_name(at, "wait_for", format!("{field}.wait_for.event"), &w.event);
        ck.wait(
            at,
            "timeout",
            format!("{field}.wait_for.timeout"),
            w.timeout.0,
        );
        StepKind::WaitFor {
            event: w.event.clone(),
            filter: w.filter.clone(),
            timeout: w.timeout,
            on_event: target(ck, "on_event", &w.on_event),
            on_timeout: target(ck, "on_timeout", &w.on_timeout),
        }
    } else if let Some(b) = &s.branch {
        let mut found = Vec::new();
        b.condition.check(&format!("{field}.branch.if"), &mut found);
        for (f, m) in found {
            ck.error(at, "if", "", f, m);
        }
        StepKind::Branch {
            condition: Box::new(b.condition.clone()),
            then: target(ck, "then", &Some(b.then.clone())),
            otherwise: target(ck, "else", &b.otherwise),
        }
    } else if let Some(l) = &s.live_activity {
        compile_live_activity(ck, at, &field, l)
    } else if let Some(m) = &s.message {
        // On a template error the checker holds the error and no journey is returned, so the
        // placeholder kind is never run.
        compile_message(ck, at, &field, "message", m).map_or(StepKind::Exit, StepKind::Message)
    } else {
        StepKind::Exit
    };

    Step {
        id: s.id.clone(),
        kind,
        next,
    }
}

/// Compiles string values to templates; an error names the key under `field`.
fn live_values(
    ck: &mut Checker<'_>,
    at: u32,
    field: &str,
    values: &serde_json::Map<String, serde_json::Value>,
) -> Vec<(String, LiveValue)> {
    let mut out = Vec::with_capacity(values.len());
    for (key, value) in values {
        let compiled = match value {
            serde_json::Value::String(src) => {
                match ck.template(at, key, src, format!("{field}.{key}")) {
                    Some(t) => LiveValue::Text(t),
                    None => continue,
                }
            }
            other => LiveValue::Fixed(other.clone()),
        };
        out.push((key.clone(), compiled));
    }
    out
}

fn compile_live_activity(
    ck: &mut Checker<'_>,
    at: u32,
    field: &str,
    l: &LiveActivitySpec,
) -> StepKind {
    let field = format!("{field}.live_activity");
    if l.content_state.is_empty() {
        let message = "must have at least one value".to_string();
        ck.error(
            at,
            "content_state",
            "",
            format!("{field}.content_state"),
            message,
        );
    }
    let start = l.event == LiveActivityEvent::Start;
    if start && l.attributes_type.is_none() {
        let message = "a start needs the app's attributes type".to_string();
        ck.error(at, "event", "", format!("{field}.attributes_type"), message);
    }
    if !start && (l.attributes_type.is_some() || l.attributes.is_some()) {
        let message = "only a start carries attributes".to_string();
        ck.error(at, "attributes", "", format!("{field}.attributes"), message);
    }
    if l.dismiss_after.is_some() && l.event != LiveActivityEvent::End {
        let message = "only an end is dismissed".to_string();
        ck.error(
            at,
            "dismiss_after",
            "",
            format!("{field}.dismiss_after"),
            message,
        );
    }

    for (key, span) in [
        ("stale_after", l.stale_after),
        ("dismiss_after", l.dismiss_after),
    ] {
        if let Some(span) = span {
            ck.wait(at, key, format!("{field}.{key}"), span.0);
        }
    }

    let content_field = format!("{field}.content_state");
    let attributes_field = format!("{field}.attributes");
    StepKind::LiveActivity(LiveActivity {
        event: l.event,
        content_state: live_values(ck, at, &content_field, &l.content_state),
        attributes_type: l.attributes_type.clone(),
        attributes: l
            .attributes
            .as_ref()
            .map(|a| live_values(ck, at, &attributes_field, a))
            .unwrap_or_default(),
        dismiss_after: l.dismiss_after,
        stale_after: l.stale_after,
    })
}

/// Compiles a message step, or a webhook step (`kind` says which: its URL is the title).
fn compile_message(
    ck: &mut Checker<'_>,
    at: u32,
    field: &str,
    kind: &str,
    m: &MessageSpec,
) -> Option<Message> {
    let template = |ck: &mut Checker<'_>, key: &str, src: &str| {
        ck.template(at, key, src, format!("{field}.{kind}.{key}"))
    };
    let title_key = if kind == "webhook" { "url" } else { "title" };
    let body = template(ck, "body", &m.body);
    let title = m.title.as_deref().map(|t| template(ck, title_key, t));
    let subject = m.subject.as_deref().map(|t| template(ck, "subject", t));
    let window = m
        .send_window
        .as_ref()
        .map(|h| compile_hours(ck, at, &format!("{field}.message.send_window"), h));
    Some(Message {
        channel: m.channel,
        title: title.map_or(Some(None), |t| t.map(Some))?,
        subject: subject.map_or(Some(None), |t| t.map(Some))?,
        body: body?,
        transactional: m.transactional,
        on_cap: m.on_cap,
        send_window: window.map_or(Some(None), |w| w.map(Some))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "id: demo\nversion: 1\nworkspace: w\nentry:\n  event: Product Added\n\
steps:\n  - id: wait\n    wait_for:\n      event: Order Completed\n      timeout: 1h\n      \
on_event: exit\n  - id: push\n    message:\n      channel: push\n      body: hi\n";

    #[test]
    fn a_good_spec_compiles() {
        let js = load_str("good.yaml", GOOD).unwrap_or_default();
        assert_eq!(js.len(), 1);
        assert_eq!(js[0].steps.len(), 2);
    }

    #[test]
    fn unknown_field_names_line_and_field() {
        let bad = GOOD.replace("      timeout: 1h", "      timout: 1h");
        let errs = load_str("bad.yaml", &bad).err().unwrap_or_default();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].line, 10, "{}", errs[0]);
        assert_eq!(errs[0].field, "steps[0].wait_for");
        assert!(
            errs[0].message.contains("unknown field `timout`"),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn bad_duration_and_dangling_step_are_located() {
        let bad = GOOD.replace("timeout: 1h", "timeout: 1 hour");
        let errs = load_str("bad.yaml", &bad).err().unwrap_or_default();
        assert_eq!(errs[0].line, 10, "{}", errs[0]);
        assert!(errs[0].message.contains("1 hour"));

        let bad = GOOD.replace("on_event: exit", "on_event: nowhere");
        let errs = load_str("bad.yaml", &bad).err().unwrap_or_default();
        assert_eq!(
            (errs[0].line, errs[0].field.as_str()),
            (11, "steps[0].on_event")
        );
    }

    #[test]
    fn written_ranges_past_the_loop_budget_are_refused_unless_published_before() {
        let body = "body: \"{% for i in (1..1000) %}{% for j in (1..1000) %}{% endfor %}\
                    {% endfor %}\"";
        let heavy = GOOD.replace("body: hi", body);
        let errs = load_str("heavy.yaml", &heavy).err().unwrap_or_default();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].field, "steps[1].message.body");
        assert_eq!((errs[0].line, errs[0].column), (15, 26), "{}", errs[0]);
        assert!(
            errs[0].message.contains("1001000 iterations"),
            "{}",
            errs[0]
        );

        // A version stored before the lint had this check still loads: the budget holds at
        // render time.
        let stored = crate::load_published_str("heavy.yaml", &heavy);
        assert_eq!(stored.map(|d| d.journeys.len()).ok(), Some(1));
    }

    #[test]
    fn bad_template_is_an_error() {
        let bad = GOOD.replace("body: hi", "body: \"{{ oops\"");
        let errs = load_str("bad.yaml", &bad).err().unwrap_or_default();
        assert_eq!(errs[0].field, "steps[1].message.body");
        assert_eq!(errs[0].line, 15);
    }
}

#[cfg(test)]
mod syntax_tests {
    #[test]
    fn broken_yaml_is_one_error_not_a_hang() {
        let bad = "id: x\nversion: 1\nworkspace: w\nsteps:\n  - id: a\n    message:\n      \
                   title: New: PDF\n";
        let errs = super::load_definitions_str("bad.yaml", bad)
            .err()
            .unwrap_or_default();
        assert_eq!(errs.len(), 1, "{errs:?}");
    }

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_spec() {
        let spec = "id: x\nversion: 1\nworkspace: w\nentry:\n  event: A\nsteps:\n  - id: a\n    \
                    exit: true\n";
        let marked = format!("\u{feff}{spec}");
        let defs = super::load_definitions_str("bom.yaml", &marked).unwrap_or_default();
        assert_eq!(defs.journeys.len(), 1);

        // Errors keep the lines and columns of the text as an editor shows it.
        let bad = marked.replace("event: A", "event: [");
        let plain = spec.replace("event: A", "event: [");
        let at = |text: &str| {
            super::load_definitions_str("bom.yaml", text)
                .err()
                .unwrap_or_default()
                .iter()
                .map(|e| (e.line, e.column))
                .collect::<Vec<_>>()
        };
        assert!(!at(&plain).is_empty());
        assert_eq!(at(&bad), at(&plain));
    }
}

#[cfg(test)]
mod segment_tests {
    const SEGMENT: &str = "kind: segment\nid: buyers\nversion: 1\nworkspace: w\ncondition:\n  \
all:\n    - trait:\n        name: plan\n        equals: pro\n    - did:\n        \
event: Order Completed\n        within: 7d\n        at_least: 2\n";

    #[test]
    fn segments_load_beside_journeys() {
        let defs = super::load_definitions_str("s.yaml", SEGMENT).unwrap_or_default();
        assert_eq!(defs.segments.len(), 1);
        assert!(defs.journeys.is_empty());
    }

    #[test]
    fn a_window_past_90_days_names_line_and_field() {
        let bad = SEGMENT.replace("within: 7d", "within: 120d");
        let errs = super::load_definitions_str("s.yaml", &bad)
            .err()
            .unwrap_or_default();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].field, "condition[1].within");
        assert_eq!(errs[0].line, 12, "{}", errs[0]);
        assert!(errs[0].message.contains("from 1ms to 90d"), "{}", errs[0]);
    }

    #[test]
    fn an_unknown_condition_key_is_located() {
        let bad = SEGMENT.replace("at_least: 2", "at_leest: 2");
        let errs = super::load_definitions_str("s.yaml", &bad)
            .err()
            .unwrap_or_default();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].message.contains("at_leest"), "{}", errs[0]);
        assert!(errs[0].line >= 10, "{}", errs[0]);
    }

    #[test]
    fn a_journey_on_an_unknown_segment_is_an_error() {
        let journey = "id: j\nversion: 1\nworkspace: w\nentry:\n  segment: nobody\nsteps:\n  \
- id: s\n    exit: true\n";
        let dir = std::env::temp_dir().join(format!("beckon-seg-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join("j.yaml"), journey);
        let _ = std::fs::write(dir.join("s.yaml"), SEGMENT);
        let err = super::load_definitions(&dir).err();
        let _ = std::fs::remove_dir_all(&dir);
        let Some(crate::JourneyError::Invalid(errs)) = err else {
            panic!("expected a spec error");
        };
        assert_eq!((errs[0].line, errs[0].field.as_str()), (5, "segment"));
        assert!(errs[0].message.contains("`nobody`"));
    }
}
