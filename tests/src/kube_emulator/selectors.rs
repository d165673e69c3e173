//! Label selectors (`a=b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`) and
//! field selectors (`metadata.name`, `metadata.namespace`, and the per-type
//! fields the apiserver indexes: `spec.nodeName` and `status.phase` for pods,
//! `type` for secrets), parsed from query strings and matched against objects.

use serde_json::Value;

/// A parsed label selector: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct LabelSelector(Vec<LabelRequirement>);

#[derive(Debug, Clone, PartialEq)]
enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

impl LabelSelector {
    /// Parses `labelSelector`; the error is the apiserver's message for a bad selector.
    pub fn parse(text: &str) -> Result<LabelSelector, String> {
        let mut requirements = Vec::new();
        for term in split_terms(text) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            requirements.push(parse_requirement(term)?);
        }
        Ok(LabelSelector(requirements))
    }

    /// True when `object`'s labels satisfy every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let get = |key: &str| labels.get(key).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            LabelRequirement::Equals(k, v) => get(k) == Some(v.as_str()),
            LabelRequirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            LabelRequirement::In(k, vs) => get(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelRequirement::NotIn(k, vs) => !get(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelRequirement::Exists(k) => get(k).is_some(),
            LabelRequirement::NotExists(k) => get(k).is_none(),
        })
    }
}

/// Splits on commas outside parentheses.
fn split_terms(text: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&text[start..]);
    terms
}

fn parse_requirement(term: &str) -> Result<LabelRequirement, String> {
    let invalid = || {
        format!(
            "unable to parse requirement: found '{term}', expected: key, '!key', 'key=value', 'key!=value', 'key in (...)' or 'key notin (...)'"
        )
    };
    if let Some(key) = term.strip_prefix('!') {
        return Ok(LabelRequirement::NotExists(check_key(key.trim(), term)?));
    }
    if let Some((key, value)) = term.split_once("!=") {
        return Ok(LabelRequirement::NotEquals(
            check_key(key.trim(), term)?,
            value.trim().to_string(),
        ));
    }
    if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return Ok(LabelRequirement::Equals(
            check_key(key.trim(), term)?,
            value.trim().to_string(),
        ));
    }
    for (op, negate) in [(" notin ", true), (" in ", false)] {
        if let Some((key, values)) = term.split_once(op) {
            let values = values.trim();
            let inner = values
                .strip_prefix('(')
                .and_then(|v| v.strip_suffix(')'))
                .ok_or_else(invalid)?;
            let list: Vec<String> = inner
                .split(',')
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .collect();
            let key = check_key(key.trim(), term)?;
            return Ok(if negate {
                LabelRequirement::NotIn(key, list)
            } else {
                LabelRequirement::In(key, list)
            });
        }
    }
    if term.contains(' ') || term.contains('(') {
        return Err(invalid());
    }
    Ok(LabelRequirement::Exists(check_key(term, term)?))
}

fn check_key(key: &str, term: &str) -> Result<String, String> {
    let valid = !key.is_empty()
        && key.len() <= 316
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'));
    if valid {
        Ok(key.to_string())
    } else {
        Err(format!(
            "unable to parse requirement: invalid label key {key:?} in {term:?}"
        ))
    }
}

/// A parsed field selector: every term must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses `fieldSelector` for a resource; `extra` are the fields it indexes beyond metadata.
    pub fn parse(text: &str, extra: &[&str]) -> Result<FieldSelector, String> {
        let mut terms = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, negate, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (f, false, v)
            } else {
                return Err(format!(
                    "invalid selector: '{term}'; can't understand '{term}'"
                ));
            };
            let field = field.trim();
            if !matches!(field, "metadata.name" | "metadata.namespace") && !extra.contains(&field) {
                return Err(format!("field label not supported: {field}"));
            }
            terms.push((field.to_string(), negate, value.trim().to_string()));
        }
        Ok(FieldSelector(terms))
    }

    /// The fields a resource's field selectors may name beyond metadata.
    pub fn indexed_fields(group: &str, resource: &str) -> &'static [&'static str] {
        match (group, resource) {
            ("", "pods") => &["spec.nodeName", "status.phase", "spec.restartPolicy"],
            ("", "secrets") => &["type"],
            ("", "events") => &[
                "involvedObject.kind",
                "involvedObject.name",
                "involvedObject.namespace",
                "reason",
                "type",
            ],
            ("", "namespaces") => &["status.phase"],
            _ => &[],
        }
    }

    /// True when `object` satisfies every term (a missing field reads as "").
    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(field, negate, value)| {
            let mut current = object;
            for part in field.split('.') {
                current = &current[part];
            }
            let actual = current.as_str().unwrap_or_default();
            (actual == value) != *negate
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selector_operators() {
        let obj = json!({"metadata": {"labels": {"app": "web", "tier": "front"}}});
        let check = |s: &str| LabelSelector::parse(s).map(|sel| sel.matches(&obj));
        assert_eq!(check("app=web"), Ok(true));
        assert_eq!(check("app==web,tier!=back"), Ok(true));
        assert_eq!(check("app in (db, web)"), Ok(true));
        assert_eq!(check("app notin (web)"), Ok(false));
        assert_eq!(check("tier,!missing"), Ok(true));
        assert_eq!(check("!app"), Ok(false));
        assert!(check("app in web").is_err());
    }

    #[test]
    fn field_selector_fields() {
        let pod = json!({"metadata": {"name": "p", "namespace": "n"}, "spec": {"nodeName": "a"}});
        let sel = FieldSelector::parse("spec.nodeName=a,metadata.name!=q", &["spec.nodeName"]);
        assert_eq!(sel.map(|s| s.matches(&pod)), Ok(true));
        assert!(FieldSelector::parse("spec.other=a", &[]).is_err());
    }
}
