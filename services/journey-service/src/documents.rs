//! Spec files split into documents, each identified by kind, id and version and kept in a
//! canonical form, so that "the same version with other content" can be told apart from a
//! file that was only reformatted or recommented.

use std::collections::BTreeMap;

use beckon_journey::{Definitions, Engine, SpecError};
use serde::Deserialize as _;
use serde_json::Value;

use crate::error::DefinitionError;

/// One published definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub kind: &'static str,
    pub id: String,
    pub version: u32,
    /// Canonical JSON (object keys sorted, no insignificant space). JSON is YAML too, so it
    /// loads with the same reader as the file it came from.
    pub canonical: String,
}

impl Document {
    /// The document's name in the store: `journey/cart-abandonment@3`.
    pub fn key(&self) -> String {
        format!("{}/{}@{}", self.kind, self.id, self.version)
    }
}

/// Checks each file on its own and splits them into documents. Every document must belong to
/// `workspace`. References between documents are checked by [`check_with`].
///
/// The checks are the loader's, the ones `beckon lint` makes. A journey version already in
/// `published` with the same content is not refused for what the checks newer than some
/// published versions refuse (its loops, its templates' loop ranges and names): publishing a
/// folder again (as `serve --journeys` does at every start) must not fail on a version that
/// is published already. Any other journey they refuse is refused.
pub fn split(
    workspace: &str,
    files: &[(String, String)],
    published: &[(String, String)],
) -> Result<Vec<Document>, DefinitionError> {
    let mut errors = Vec::new();
    for (name, text) in files {
        let Ok(defs) = beckon_journey::load_published_str(name, text) else {
            // Refused for more than the newer checks: every error, theirs too, as lint gives
            // them.
            if let Err(mut e) = beckon_journey::load_definitions_str(name, text) {
                errors.append(&mut e);
            }
            continue;
        };
        for j in &defs.journeys {
            let refused = j.refused_by_newer_checks();
            if refused.is_empty() {
                continue;
            }
            let key = format!("journey/{}@{}", j.id, j.version);
            let same = canonical_of(workspace, text, &key)
                .is_some_and(|c| published.iter().any(|(k, p)| *k == key && *p == c));
            if same {
                tracing::warn!(
                    beckon.workspace = workspace,
                    journey = %j.id,
                    version = j.version,
                    reason = %reasons(&refused),
                    "published again unchanged with what the checks now refuse; it stays as \
                     it was published"
                );
            } else {
                errors.extend(refused);
            }
        }
    }
    if !errors.is_empty() {
        return Err(DefinitionError::Invalid(errors));
    }

    let mut docs = Vec::new();
    for (name, text) in files {
        for (index, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
            // The set loaded above, so each document parses; a failure here is still reported
            // rather than trusted away.
            let value = match Value::deserialize(doc) {
                Ok(v) => v,
                Err(e) => {
                    errors.push(spec_error(name, "", format!("document {}: {e}", index + 1)));
                    continue;
                }
            };
            // An empty document (a `---` closing the file, say) defines nothing.
            if value.is_null() {
                continue;
            }
            match document(workspace, value) {
                Ok(d) => docs.push(d),
                Err((field, message)) => errors.push(spec_error(
                    name,
                    field,
                    format!("document {}: {message}", index + 1),
                )),
            }
        }
    }
    if errors.is_empty() {
        Ok(docs)
    } else {
        Err(DefinitionError::Invalid(errors))
    }
}

/// The canonical form of the document of `text` stored under `key`, if it has one.
fn canonical_of(workspace: &str, text: &str, key: &str) -> Option<String> {
    serde_norway::Deserializer::from_str(text)
        .filter_map(|doc| Value::deserialize(doc).ok())
        .filter_map(|value| document(workspace, value).ok())
        .find(|d| d.key() == key)
        .map(|d| d.canonical)
}

/// Spec errors on one line, for a log field.
fn reasons(errors: &[SpecError]) -> String {
    let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
    all.join("; ")
}

/// Checks `files` together with the `published` documents they would join (segments used but
/// defined in neither, versions defined twice), reporting problems in the files' own names and
/// lines, and splits them into documents.
pub fn check_with(
    workspace: &str,
    files: &[(String, String)],
    published: &[(String, String)],
) -> Result<Vec<Document>, DefinitionError> {
    let docs = split(workspace, files, published)?;
    let mut combined: Vec<(String, String)> = published
        .iter()
        .filter(|(key, _)| !docs.iter().any(|d| d.key() == *key))
        .cloned()
        .collect();
    combined.extend(files.iter().cloned());
    // Each file passed every check of its own above; what is left are the checks between
    // documents, which published versions must not fail for checks newer than they are.
    beckon_journey::load_published_texts(&combined).map_err(DefinitionError::Invalid)?;
    Ok(docs)
}

fn spec_error(file: &str, field: &str, message: String) -> SpecError {
    SpecError {
        file: file.to_string(),
        line: 1,
        column: 1,
        field: field.to_string(),
        message,
    }
}

fn document(workspace: &str, value: Value) -> Result<Document, (&'static str, String)> {
    let kind = match value.get("kind").and_then(Value::as_str) {
        None | Some("journey") => "journey",
        Some("segment") => "segment",
        Some("policy") => "policy",
        Some(other) => return Err(("kind", format!("unknown kind `{other}`"))),
    };
    let id = value
        .get("id")
        .and_then(Value::as_str)
        .ok_or(("id", "expected a string".to_string()))?
        .to_string();
    // Policies may leave their version out; it then counts as 1, as the loader reads it.
    let version = match value.get("version") {
        None if kind == "policy" => 1,
        v => v
            .and_then(Value::as_u64)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or(("version", "expected a whole number".to_string()))?,
    };
    let ws = value.get("workspace").and_then(Value::as_str).unwrap_or("");
    if ws != workspace {
        return Err((
            "workspace",
            format!("expected `{workspace}` (the request's workspace), found `{ws}`"),
        ));
    }
    Ok(Document {
        kind,
        id,
        version,
        canonical: canonical(&value),
    })
}

/// Serialises with object keys sorted, whatever order the file had them in.
fn canonical(value: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(map) => {
                let ordered: BTreeMap<&String, Value> =
                    map.iter().map(|(k, v)| (k, sorted(v))).collect();
                let mut out = serde_json::Map::new();
                for (k, v) in ordered {
                    out.insert(k.clone(), v);
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}

/// Builds the evaluator for a workspace from every published document: all versions of each
/// journey (users finish the version they entered), the newest of each segment, and the
/// newest policy.
pub fn engine(workspace: &str, docs: &[(String, String)]) -> Result<Engine, DefinitionError> {
    let newest_policy = docs
        .iter()
        .filter_map(|(key, _)| key.strip_prefix("policy/"))
        .filter_map(|rest| rest.rsplit_once('@'))
        .filter_map(|(id, v)| Some((v.parse::<u32>().ok()?, id)))
        .max()
        .map(|(v, id)| format!("policy/{id}@{v}"));
    let files: Vec<(String, String)> = docs
        .iter()
        .filter(|(key, _)| !key.starts_with("policy/") || Some(key) == newest_policy.as_ref())
        .cloned()
        .collect();
    let defs = load_stored(&files)?.for_workspace(workspace);
    for j in defs.journeys.iter().filter(|j| !j.refused_loops.is_empty()) {
        tracing::warn!(
            beckon.workspace = workspace,
            journey = %j.id,
            version = j.version,
            reason = %reasons(&j.refused_loops),
            "published journey has a loop the checks now refuse; it is evaluated with each \
             round of its loops held a minute"
        );
    }
    Ok(Engine::from_definitions(defs))
}

/// Loads documents read back from the store. They were checked when published, so an error
/// here means the stored data is damaged, except for checks added since: a journey with a loop
/// that the loop checks refuse is loaded with [`beckon_journey::Journey::refused_loops`] set.
pub(crate) fn load_stored(docs: &[(String, String)]) -> Result<Definitions, DefinitionError> {
    beckon_journey::load_published_texts(docs).map_err(|errors| DefinitionError::Corrupt {
        key: errors.first().map(|e| e.file.clone()).unwrap_or_default(),
        reason: errors.first().map(|e| e.to_string()).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOURNEY: &str = "id: j\nversion: 1\nworkspace: w\nentry:\n  event: Signed Up\nsteps:\n  \
        - id: hello\n    message:\n      channel: email\n      subject: Hi\n      body: Hello\n";

    #[test]
    fn reformatting_keeps_the_canonical_form() {
        let a = check_with("w", &[("a.yaml".into(), JOURNEY.into())], &[]).expect("valid spec");
        let moved = format!(
            "# a comment\nworkspace: w\n{}",
            JOURNEY.replace("workspace: w\n", "")
        );
        let b = check_with("w", &[("b.yaml".into(), moved)], &[]).expect("valid spec");
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].key(), "journey/j@1");
        assert_eq!(a[0].canonical, b[0].canonical);
    }

    #[test]
    fn another_workspace_is_refused_with_the_field() {
        let err = check_with("other", &[("a.yaml".into(), JOURNEY.into())], &[])
            .expect_err("another workspace");
        let DefinitionError::Invalid(errors) = err else {
            panic!("expected Invalid, got {err:?}");
        };
        assert_eq!(errors[0].field, "workspace");
        assert_eq!(errors[0].file, "a.yaml");
    }

    #[test]
    fn canonical_documents_load_back_into_an_engine() {
        let docs = check_with("w", &[("a.yaml".into(), JOURNEY.into())], &[]).expect("valid spec");
        let stored: Vec<_> = docs
            .iter()
            .map(|d| (d.key(), d.canonical.clone()))
            .collect();
        let engine = engine("w", &stored).expect("engine");
        assert_eq!(engine.journeys().len(), 1);
        assert_eq!(engine.journeys()[0].id, "j");
    }
}
