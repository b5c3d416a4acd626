//! Reading journey specs from YAML, with errors that name the file, line, column and field.

use std::path::Path;

use ahash::AHashMap;
use serde::Deserialize;

use crate::error::{JourneyError, SpecError};
use crate::journey::{Entry, Journey, Message, Step, StepKind, Target};
use crate::spec::{JourneySpec, MessageSpec, StepSpec};
use crate::template::Template;

/// Parses and checks every journey in one YAML text (several documents may be separated by
/// `---`). `file` is only used in error messages.
pub fn load_str(file: &str, text: &str) -> Result<Vec<Journey>, Vec<SpecError>> {
    let mut journeys = Vec::new();
    let mut errors = Vec::new();

    for doc in serde_norway::Deserializer::from_str(text) {
        match JourneySpec::deserialize(doc) {
            Ok(spec) => match compile(file, text, spec) {
                Ok(j) => journeys.push(j),
                Err(mut e) => errors.append(&mut e),
            },
            Err(e) => errors.push(from_yaml_error(file, text, &e)),
        }
    }

    if errors.is_empty() {
        Ok(journeys)
    } else {
        Err(errors)
    }
}

/// Loads every `*.yaml` / `*.yml` file under `dir`, in file-name order. Fails with all the
/// errors found when any file has one.
pub fn load_dir(dir: &Path) -> Result<Vec<Journey>, JourneyError> {
    let io = |source| JourneyError::Io {
        path: dir.display().to_string(),
        source,
    };
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    paths.sort();

    let mut journeys = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(|source| JourneyError::Io {
            path: path.display().to_string(),
            source,
        })?;
        match load_str(&path.display().to_string(), &text) {
            Ok(mut js) => journeys.append(&mut js),
            Err(mut es) => errors.append(&mut es),
        }
    }

    let mut seen = AHashMap::new();
    for j in &journeys {
        if let Some(prev) = seen.insert((j.workspace.clone(), j.id.clone(), j.version), ()) {
            let _ = prev;
            errors.push(SpecError {
                file: dir.display().to_string(),
                line: 1,
                column: 1,
                field: "id".into(),
                message: format!("journey {} version {} is defined twice", j.id, j.version),
            });
        }
    }

    if errors.is_empty() {
        Ok(journeys)
    } else {
        Err(JourneyError::Invalid(errors))
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
    for (i, line) in text.lines().enumerate().skip(from_line.saturating_sub(1) as usize) {
        let trimmed = line.trim_start().trim_start_matches("- ");
        if trimmed.starts_with(&needle) && (value.is_empty() || line.contains(value)) {
            let col = line.len() - line.trim_start().len() + 1;
            return (i as u32 + 1, col as u32);
        }
    }
    (from_line.max(1), 1)
}

struct Checker<'a> {
    file: &'a str,
    text: &'a str,
    errors: Vec<SpecError>,
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
}

fn compile(file: &str, text: &str, spec: JourneySpec) -> Result<Journey, Vec<SpecError>> {
    let mut ck = Checker {
        file,
        text,
        errors: Vec::new(),
    };
    let top = locate(text, 1, "id", &spec.id).0;

    if let Some(kind) = &spec.kind {
        if kind != "journey" {
            ck.error(1, "kind", kind, "kind".into(), format!("expected `journey`, found `{kind}`"));
        }
    }
    if spec.id.is_empty() || !spec.id.chars().all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
    {
        ck.error(1, "id", "", "id".into(), "expected letters, digits, `-` or `_`".into());
    }
    if spec.entry.event.is_some() == spec.entry.first_seen {
        ck.error(
            top,
            "entry",
            "",
            "entry".into(),
            "expected exactly one of `event` or `first_seen: true`".into(),
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
        ck.error(top, "steps", "", "steps".into(), "a journey needs at least one step".into());
    }

    let mut index = AHashMap::new();
    for (i, s) in spec.steps.iter().enumerate() {
        if s.id == "exit" || index.insert(s.id.clone(), i).is_some() {
            ck.error(
                top,
                "id",
                &s.id,
                format!("steps[{i}].id"),
                format!("step id `{}` is reserved or used twice", s.id),
            );
        }
    }

    let steps: Vec<Step> = spec
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| compile_step(&mut ck, top, &index, spec.steps.len(), i, s))
        .collect();

    if !ck.errors.is_empty() {
        return Err(ck.errors);
    }
    Ok(Journey {
        name: spec.name.unwrap_or_else(|| spec.id.clone()),
        id: spec.id,
        version: spec.version,
        workspace: spec.workspace,
        entry: Entry {
            event: spec.entry.event,
            first_seen: spec.entry.first_seen,
            filter: spec.entry.filter,
            condition: spec.entry.condition,
            reentry: spec.entry.reentry,
        },
        goal: spec.goal,
        exit_on: spec.exit_on,
        steps,
        index,
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
    let fallthrough = if i + 1 < len { Target::Step(i + 1) } else { Target::End };
    let target = |ck: &mut Checker<'_>, key: &str, name: &Option<String>| match name {
        None => fallthrough,
        Some(n) if n == "exit" => Target::Exit,
        Some(n) => match index.get(n) {
            Some(&t) => Target::Step(t),
            None => {
                ck.error(at, key, n, format!("{field}.{key}"), format!("no step with id `{n}`"));
                Target::Exit
            }
        },
    };

    let kinds = [
        s.delay.is_some(),
        s.wait_for.is_some(),
        s.branch.is_some(),
        s.message.is_some(),
        s.exit.is_some(),
    ];
    if kinds.iter().filter(|k| **k).count() != 1 {
        ck.error(
            at,
            "id",
            &s.id,
            field.clone(),
            "expected exactly one of delay, wait_for, branch, message, exit".into(),
        );
    }

    let next = target(ck, "next", &s.next);
    let kind = if let Some(d) = s.delay {
        StepKind::Delay(d)
    } else if let Some(w) = &s.wait_for {
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
            condition: b.condition.clone(),
            then: target(ck, "then", &Some(b.then.clone())),
            otherwise: target(ck, "else", &b.otherwise),
        }
    } else if let Some(m) = &s.message {
        // On a template error the checker holds the error and no journey is returned, so the
        // placeholder kind is never run.
        compile_message(ck, at, &field, m).map_or(StepKind::Exit, StepKind::Message)
    } else {
        StepKind::Exit
    };

    Step {
        id: s.id.clone(),
        kind,
        next,
    }
}

fn compile_message(
    ck: &mut Checker<'_>,
    at: u32,
    field: &str,
    m: &MessageSpec,
) -> Option<Message> {
    let template = |ck: &mut Checker<'_>, key: &str, src: &str| match Template::compile(src) {
        Ok(t) => Some(t),
        Err(e) => {
            let first = e.lines().next().unwrap_or("invalid Liquid").to_string();
            ck.error(at, key, "", format!("{field}.message.{key}"), first);
            None
        }
    };
    let body = template(ck, "body", &m.body);
    let title = m.title.as_deref().map(|t| template(ck, "title", t));
    let subject = m.subject.as_deref().map(|t| template(ck, "subject", t));
    Some(Message {
        channel: m.channel,
        title: title.map_or(Some(None), |t| t.map(Some))?,
        subject: subject.map_or(Some(None), |t| t.map(Some))?,
        body: body?,
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
        assert!(errs[0].message.contains("unknown field `timout`"), "{}", errs[0]);
    }

    #[test]
    fn bad_duration_and_dangling_step_are_located() {
        let bad = GOOD.replace("timeout: 1h", "timeout: 1 hour");
        let errs = load_str("bad.yaml", &bad).err().unwrap_or_default();
        assert_eq!(errs[0].line, 10, "{}", errs[0]);
        assert!(errs[0].message.contains("1 hour"));

        let bad = GOOD.replace("on_event: exit", "on_event: nowhere");
        let errs = load_str("bad.yaml", &bad).err().unwrap_or_default();
        assert_eq!((errs[0].line, errs[0].field.as_str()), (11, "steps[0].on_event"));
    }

    #[test]
    fn bad_template_is_an_error() {
        let bad = GOOD.replace("body: hi", "body: \"{{ oops\"");
        let errs = load_str("bad.yaml", &bad).err().unwrap_or_default();
        assert_eq!(errs[0].field, "steps[1].message.body");
        assert_eq!(errs[0].line, 15);
    }
}
