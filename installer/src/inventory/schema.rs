//! The inventory's JSON Schema, generated from the model by schemars, and the
//! structural check that walks a parsed YAML tree against it.
//!
//! serde stops at the first error it meets; this walk does not. It checks
//! every mapping, sequence and scalar of the tree against the schema and
//! collects every unknown field (with a did-you-mean suggestion), wrong type,
//! missing required field and bad enum value, each at the line and column of
//! the offending YAML node. Only the subset of JSON Schema that schemars emits
//! for the model is understood: `$ref`/`$defs`, `type`, `properties`,
//! `required`, `additionalProperties`, `items`, `enum`, `const`, `oneOf`,
//! `anyOf`, `minimum`/`maximum`. `pattern` and `format` are there for
//! editors; the walk leaves them to the semantic checks, whose messages say
//! more than "does not match".

use serde_json::{Map, Value as Json};

use super::diagnostic::{Diagnostics, did_you_mean};
use super::model::Inventory;
use super::yaml::{Node, ScalarKind, Value};

/// The inventory's JSON Schema (draft 2020-12) with title and description.
pub fn json_schema() -> Json {
    let mut schema = schemars::schema_for!(Inventory).to_value();
    if let Some(obj) = schema.as_object_mut() {
        obj.insert(
            "title".into(),
            Json::String("edgeforge inventory (apiVersion edgeforge/v1)".into()),
        );
        obj.insert(
            "description".into(),
            Json::String(
                "Sites, clusters and nodes that edgeforge brings up, and how to reach them. \
                 Reference: docs/inventory.md."
                    .into(),
            ),
        );
    }
    schema
}

/// Checks `root` against the inventory schema, recording every mismatch.
pub(crate) fn check_structure(root: &Node, schema: &Json, diags: &mut Diagnostics) {
    let empty = Map::new();
    let defs = schema
        .get("$defs")
        .and_then(Json::as_object)
        .unwrap_or(&empty);
    let mut walker = Walker { defs, diags };
    walker.check(root, schema, "the inventory");
}

/// The schema of secret references; a scalar in its place is an inline secret.
const SECRET_REF: &str = "SecretRef";

struct Walker<'a> {
    defs: &'a Map<String, Json>,
    diags: &'a mut Diagnostics,
}

impl Walker<'_> {
    /// Checks `node` against `schema`; `what` names the node in messages
    /// (e.g. "`port`").
    fn check(&mut self, node: &Node, schema: &Json, what: &str) {
        let Some(obj) = schema.as_object() else {
            return; // `true`: anything goes.
        };
        if let Some(name) = obj
            .get("$ref")
            .and_then(Json::as_str)
            .and_then(|r| r.strip_prefix("#/$defs/"))
        {
            if name == SECRET_REF && !matches!(node.value, Value::Map(_)) && !node.is_null() {
                // Never echo the value: it is most likely the secret itself.
                self.diags.error(
                    node.at(),
                    format!(
                        "{what} is a secret written inline; secrets are only accepted by reference."
                    ),
                    "Put the secret in an environment variable or a file and write \
                     `{env: VAR_NAME}` or `{file: path/to/secret}` instead.",
                );
                return;
            }
            if let Some(def) = self.defs.get(name) {
                self.check(node, def, what);
            }
            return;
        }
        if let Some(branches) = obj.get("anyOf").and_then(Json::as_array) {
            self.check_alternatives(node, branches, what);
            return;
        }
        if let Some(branches) = obj.get("oneOf").and_then(Json::as_array) {
            self.check_alternatives(node, branches, what);
            return;
        }
        if let Some(types) = obj.get("type") {
            let allowed: Vec<&str> = match types {
                Json::String(t) => vec![t.as_str()],
                Json::Array(ts) => ts.iter().filter_map(Json::as_str).collect(),
                _ => Vec::new(),
            };
            if node.is_null() && allowed.contains(&"null") {
                return;
            }
            if !allowed.iter().any(|t| type_matches(node, t)) {
                let expected = allowed
                    .iter()
                    .filter(|t| **t != "null")
                    .map(|t| type_phrase(t))
                    .collect::<Vec<_>>()
                    .join(" or ");
                self.diags.error(
                    node.at(),
                    format!("{what} must be {expected}, but it is {}.", node.kind_name()),
                    type_hint(&allowed),
                );
                return;
            }
        }
        if let Some(value) = obj.get("const").and_then(Json::as_str) {
            if node.as_str() != Some(value) {
                self.diags.error(
                    node.at(),
                    format!("{what} must be `{value}`."),
                    format!("Write `{value}`."),
                );
            }
            return;
        }
        if let Some(values) = obj.get("enum").and_then(Json::as_array) {
            let names: Vec<&str> = values.iter().filter_map(Json::as_str).collect();
            self.check_enum(node, &names, what);
            return;
        }
        if let Some(i) = node.as_int() {
            let min = obj.get("minimum").and_then(Json::as_i64).map(i128::from);
            let max = obj.get("maximum").and_then(Json::as_i64).map(i128::from);
            let too_small = min.is_some_and(|m| i < m);
            let too_big = max.is_some_and(|m| i > m);
            if too_small || too_big {
                let range = match (min, max) {
                    (Some(a), Some(b)) => format!("from {a} to {b}"),
                    (Some(a), None) => format!("at least {a}"),
                    (None, Some(b)) => format!("at most {b}"),
                    (None, None) => String::new(),
                };
                self.diags.error(
                    node.at(),
                    format!("{what} is {i}, out of range: it must be {range}."),
                    format!("Use a value {range} (see docs/inventory.md for what it means)."),
                );
            }
        }
        match &node.value {
            Value::Map(entries) => self.check_object(node, entries, obj, what),
            Value::Seq(items) => {
                if let Some(item_schema) = obj.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.check(item, item_schema, &format!("{what} item {}", i + 1));
                    }
                }
            }
            Value::Scalar { .. } => {}
        }
    }

    fn check_object(
        &mut self,
        node: &Node,
        entries: &[super::yaml::Entry],
        obj: &Map<String, Json>,
        what: &str,
    ) {
        let empty = Map::new();
        let props = obj
            .get("properties")
            .and_then(Json::as_object)
            .unwrap_or(&empty);
        for entry in entries {
            let field = format!("`{}`", entry.key);
            if let Some(prop) = props.get(&entry.key) {
                self.check(&entry.value, prop, &field);
                continue;
            }
            match obj.get("additionalProperties") {
                Some(Json::Bool(false)) => {
                    let known: Vec<&str> = props.keys().map(String::as_str).collect();
                    let hint = match did_you_mean(&entry.key, known.iter().copied()) {
                        Some(s) => format!("Did you mean `{s}`?"),
                        None if known.is_empty() => "Remove it.".to_owned(),
                        None => format!("Known fields here: {}.", known.join(", ")),
                    };
                    self.diags.error(
                        entry.key_at,
                        format!("Unknown field `{}` in {what}.", entry.key),
                        hint,
                    );
                }
                Some(extra @ Json::Object(_)) => self.check(&entry.value, extra, &field),
                _ => {}
            }
        }
        if let Some(required) = obj.get("required").and_then(Json::as_array) {
            for key in required.iter().filter_map(Json::as_str) {
                if node.entry(key).is_none() {
                    self.diags.error(
                        node.at(),
                        format!("{what} is missing the required field `{key}`."),
                        format!("Add `{key}: ...` here (see docs/inventory.md)."),
                    );
                }
            }
        }
    }

    /// `anyOf`/`oneOf`: an optional value, a string enum, a tagged enum
    /// (`type:`/`mode:`), an externally tagged enum (`{env: ...}`), or any
    /// other alternative.
    fn check_alternatives(&mut self, node: &Node, branches: &[Json], what: &str) {
        let non_null: Vec<&Json> = branches
            .iter()
            .filter(|b| b.get("type").and_then(Json::as_str) != Some("null"))
            .collect();
        if node.is_null() && non_null.len() < branches.len() {
            return;
        }
        if let [only] = non_null.as_slice() {
            self.check(node, only, what);
            return;
        }
        let consts: Vec<&str> = non_null
            .iter()
            .filter_map(|b| b.get("const").and_then(Json::as_str))
            .collect();
        if consts.len() == non_null.len() {
            self.check_enum(node, &consts, what);
            return;
        }
        if let Some((tag, variants)) = tag_of(&non_null) {
            self.check_tagged(node, tag, &variants, what);
            return;
        }
        if let Some(variants) = external_tags(&non_null) {
            self.check_external(node, &variants, what);
            return;
        }
        // Anything else: the first alternative that fits, else the errors of
        // the one that fits best.
        let mut best: Option<Diagnostics> = None;
        for branch in non_null {
            let mut scratch = Diagnostics::new(self.diags.file());
            Walker {
                defs: self.defs,
                diags: &mut scratch,
            }
            .check(node, branch, what);
            if !scratch.has_errors() {
                return;
            }
            if best.as_ref().is_none_or(|b| scratch.len() < b.len()) {
                best = Some(scratch);
            }
        }
        if let Some(best) = best {
            self.diags.extend(best);
        }
    }

    fn check_enum(&mut self, node: &Node, names: &[&str], what: &str) {
        let list = names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ");
        match node.as_str() {
            Some(v) if names.contains(&v) => {}
            Some(v) if matches!(node.value, Value::Scalar { .. }) => {
                let hint = match did_you_mean(v, names.iter().copied()) {
                    Some(s) => format!("Did you mean `{s}`?"),
                    None => format!("Use one of {list}."),
                };
                self.diags.error(
                    node.at(),
                    format!("{what} is `{v}`, which is not one of {list}."),
                    hint,
                );
            }
            _ => self.diags.error(
                node.at(),
                format!(
                    "{what} must be one of {list}, but it is {}.",
                    node.kind_name()
                ),
                format!("Use one of {list}."),
            ),
        }
    }

    /// An internally tagged enum: a mapping whose `tag` key picks the variant.
    fn check_tagged(&mut self, node: &Node, tag: &str, variants: &[(&str, &Json)], what: &str) {
        let names: Vec<&str> = variants.iter().map(|(n, _)| *n).collect();
        let list = names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ");
        if !matches!(node.value, Value::Map(_)) {
            self.diags.error(
                node.at(),
                format!(
                    "{what} must be a mapping with `{tag}:` ({list}), but it is {}.",
                    node.kind_name()
                ),
                format!(
                    "Write e.g. `{tag}: {}` and the fields of that {tag}.",
                    names.first().copied().unwrap_or("...")
                ),
            );
            return;
        }
        let Some(tag_node) = node.get(tag) else {
            self.diags.error(
                node.at(),
                format!("{what} is missing `{tag}:`, which says which kind it is ({list})."),
                format!("Add `{tag}: ...` with one of {list}."),
            );
            return;
        };
        match tag_node
            .as_str()
            .and_then(|v| variants.iter().find(|(n, _)| *n == v))
        {
            Some((_, branch)) => self.check(node, branch, what),
            None => self.check_enum(tag_node, &names, &format!("`{tag}`")),
        }
    }

    /// An externally tagged enum: a mapping with exactly one key naming the variant.
    fn check_external(&mut self, node: &Node, variants: &[(&str, &Json)], what: &str) {
        let names: Vec<&str> = variants.iter().map(|(n, _)| *n).collect();
        let forms = names
            .iter()
            .map(|n| format!("`{{{n}: ...}}`"))
            .collect::<Vec<_>>()
            .join(" or ");
        let entries = match &node.value {
            Value::Map(entries) => entries,
            _ => {
                self.diags.error(
                    node.at(),
                    format!("{what} must be {forms}, but it is {}.", node.kind_name()),
                    format!("Write {forms}."),
                );
                return;
            }
        };
        if entries.len() != 1 {
            self.diags.error(
                node.at(),
                format!(
                    "{what} must have exactly one of {}, but it has {}.",
                    names.join(", "),
                    entries.len()
                ),
                format!("Write {forms}."),
            );
            return;
        }
        for entry in entries {
            match variants.iter().find(|(n, _)| *n == entry.key) {
                Some((_, branch)) => self.check(node, branch, what),
                None => {
                    let hint = match did_you_mean(&entry.key, names.iter().copied()) {
                        Some(s) => format!("Did you mean `{s}`?"),
                        None => format!("Write {forms}."),
                    };
                    self.diags.error(
                        entry.key_at,
                        format!("Unknown field `{}` in {what}.", entry.key),
                        hint,
                    );
                }
            }
        }
    }
}

/// The discriminating property of a set of object alternatives (each has a
/// `const` under the same property name), with each variant's branch.
fn tag_of<'a>(branches: &[&'a Json]) -> Option<(&'a str, Vec<(&'a str, &'a Json)>)> {
    let first = branches.first()?.get("properties")?.as_object()?;
    let tag = first
        .iter()
        .find(|(_, p)| p.get("const").is_some())
        .map(|(k, _)| k.as_str())?;
    let mut variants = Vec::new();
    for b in branches {
        let name = b.get("properties")?.get(tag)?.get("const")?.as_str()?;
        variants.push((name, *b));
    }
    Some((tag, variants))
}

/// The variant names of an externally tagged enum: each alternative is an
/// object with exactly one property, which is required.
fn external_tags<'a>(branches: &[&'a Json]) -> Option<Vec<(&'a str, &'a Json)>> {
    let mut variants = Vec::new();
    for b in branches {
        let props = b.get("properties")?.as_object()?;
        let required = b.get("required")?.as_array()?;
        if props.len() != 1 || required.len() != 1 {
            return None;
        }
        variants.push((required.first()?.as_str()?, *b));
    }
    Some(variants)
}

/// Whether `node` has JSON Schema type `t`. Any non-null scalar is a string,
/// as serde reads it.
fn type_matches(node: &Node, t: &str) -> bool {
    match t {
        "null" => node.is_null(),
        "boolean" => node.as_bool().is_some(),
        "integer" => node.as_int().is_some(),
        "number" => matches!(
            node.value,
            Value::Scalar {
                kind: ScalarKind::Int(_) | ScalarKind::Float,
                ..
            }
        ),
        "string" => node.as_str().is_some(),
        "array" => matches!(node.value, Value::Seq(_)),
        "object" => matches!(node.value, Value::Map(_)),
        _ => true,
    }
}

fn type_phrase(t: &str) -> &'static str {
    match t {
        "boolean" => "`true` or `false`",
        "integer" => "a whole number",
        "number" => "a number",
        "string" => "a string",
        "array" => "a list",
        "object" => "a mapping",
        _ => "a value",
    }
}

fn type_hint(allowed: &[&str]) -> &'static str {
    match allowed
        .iter()
        .find(|t| **t != "null")
        .copied()
        .unwrap_or("")
    {
        "boolean" => "Write `true` or `false` without quotes.",
        "integer" | "number" => "Write the number without quotes.",
        "string" => "Write a text value; `key:` with nothing after it means null.",
        "array" => "Write a list: items on their own lines starting with `- `, or `[a, b]`.",
        "object" => "Write a mapping: `key: value` lines indented under this key.",
        _ => "See docs/inventory.md for the expected value.",
    }
}
