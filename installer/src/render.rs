//! Rendering: the one tera environment of the program.
//!
//! Templates come from the data directory ([`DataDir`]: `--data-dir` when
//! given, else the copy embedded at build time). Strings inside playbooks
//! (`{{ node.name }}` in a parameter, `when:` expressions) go through the same
//! environment. Undefined variables are errors that name the variable, the
//! template and the line. Values reach files and commands escaped for where
//! they land: `{{ v | quote }}` makes one inert shell word, `{{ v | yaml }}`
//! a YAML value (a JSON scalar, list or map, which YAML reads as written), so
//! no inventory value is ever pasted raw into a command or a YAML file.
//!
//! A leaf: it knows templates and JSON contexts, nothing of playbooks,
//! inventories or hosts.

use std::collections::HashMap;
use std::sync::RwLock;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::data::{DataDir, DataError};

/// Errors of rendering templates and expressions.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A template file could not be read.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A template the caller named is not loaded.
    #[error(
        "template {name} not found in {where_}; check the name or pass --data-dir with a directory that has it"
    )]
    NoTemplate {
        /// Name below templates/, e.g. `os/hosts.j2`.
        name: String,
        /// Which data directory, and who asked.
        where_: String,
    },
    /// A variable the template uses is not defined.
    #[error(
        "{template}{line}: variable `{variable}` is not defined; define it (inventory, playbook vars) or guard it with `{{% if {variable} is defined %}}`",
        line = line.map(|l| format!(" line {l}")).unwrap_or_default()
    )]
    Undefined {
        /// The variable as written.
        variable: String,
        /// The template (file name, or playbook and step for inline strings).
        template: String,
        /// 1-based line in the template, when found.
        line: Option<usize>,
    },
    /// Any other template error (syntax, filter), phrased from tera's error chain.
    #[error("{template}: {message}")]
    Template {
        /// The template.
        template: String,
        /// tera's messages joined.
        message: String,
    },
    /// A `when` expression did not evaluate to true or false.
    #[error("{origin}: `when: {expr}` must be true or false")]
    NotBool {
        /// Where the expression is.
        origin: String,
        /// The expression.
        expr: String,
    },
}

/// The program's tera environment: every template of the data directory plus
/// inline strings from playbooks, registered on first use.
pub struct Renderer {
    tera: RwLock<tera::Tera>,
    /// Template name → source, for finding the line of an error.
    sources: RwLock<HashMap<String, String>>,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer").finish_non_exhaustive()
    }
}

impl Renderer {
    /// Loads every file under templates/ of `data`, named by its path below templates/.
    pub fn new(data: &DataDir) -> Result<Renderer, RenderError> {
        let mut tera = tera::Tera::default();
        tera.autoescape_on(vec![]);
        tera.register_filter("quote", quote_filter);
        tera.register_filter("yaml", yaml_filter);
        let mut sources = HashMap::new();
        for rel in data.list("templates")? {
            let Some(name) = rel.strip_prefix("templates/") else {
                continue;
            };
            if name.ends_with(".keep") {
                continue;
            }
            let text = data.read_text(&rel)?;
            tera.add_raw_template(name, &text)
                .map_err(|e| phrase(name, &text, &e))?;
            sources.insert(name.to_string(), text);
        }
        Ok(Renderer {
            tera: RwLock::new(tera),
            sources: RwLock::new(sources),
        })
    }

    /// Renders the template `name` (a path below templates/).
    pub fn render(&self, name: &str, ctx: &Value) -> Result<String, RenderError> {
        let ctx = to_context(name, ctx)?;
        let tera = self.tera.read().unwrap_or_else(|p| p.into_inner());
        if tera.get_template(name).is_err() {
            return Err(RenderError::NoTemplate {
                name: name.to_string(),
                where_: "the data directory".into(),
            });
        }
        tera.render(name, &ctx).map_err(|e| {
            let sources = self.sources.read().unwrap_or_else(|p| p.into_inner());
            phrase(name, sources.get(name).map_or("", String::as_str), &e)
        })
    }

    /// Renders an inline string; `origin` names it in errors (playbook, step, field).
    /// Strings without `{{` or `{%` are returned as they are.
    pub fn render_str(&self, origin: &str, src: &str, ctx: &Value) -> Result<String, RenderError> {
        if !src.contains("{{") && !src.contains("{%") {
            return Ok(src.to_string());
        }
        let key = self.compile_str(origin, src)?;
        let ctx = to_context(origin, ctx)?;
        let tera = self.tera.read().unwrap_or_else(|p| p.into_inner());
        tera.render(&key, &ctx).map_err(|e| phrase(origin, src, &e))
    }

    /// Parses an inline string once (syntax errors surface here, before any host
    /// is touched) and returns its key in the environment.
    pub fn compile_str(&self, origin: &str, src: &str) -> Result<String, RenderError> {
        let key = format!("inline:{}", hex::encode(Sha256::digest(src.as_bytes())));
        let tera = self.tera.read().unwrap_or_else(|p| p.into_inner());
        if tera.get_template(&key).is_err() {
            drop(tera);
            let mut tera = self.tera.write().unwrap_or_else(|p| p.into_inner());
            tera.add_raw_template(&key, src)
                .map_err(|e| phrase(origin, src, &e))?;
        }
        Ok(key)
    }

    /// Whether the template `name` (a path below templates/) is loaded.
    pub fn has_template(&self, name: &str) -> bool {
        self.tera
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get_template(name)
            .is_ok()
    }

    /// Parses a `when` expression once, as [`Renderer::compile_str`] does for strings.
    pub fn compile_when(&self, origin: &str, expr: &str) -> Result<(), RenderError> {
        self.compile_str(origin, &when_source(expr)).map(|_| ())
    }

    /// Evaluates a `when` expression (tera syntax) to true or false.
    pub fn eval_when(&self, origin: &str, expr: &str, ctx: &Value) -> Result<bool, RenderError> {
        match self.render_str(origin, &when_source(expr), ctx)?.as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(RenderError::NotBool {
                origin: origin.to_string(),
                expr: expr.to_string(),
            }),
        }
    }

    /// Renders every string inside `value` (recursively) with [`Renderer::render_str`].
    pub fn render_value(
        &self,
        origin: &str,
        value: &Value,
        ctx: &Value,
    ) -> Result<Value, RenderError> {
        Ok(match value {
            Value::String(s) => Value::String(self.render_str(origin, s, ctx)?),
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| self.render_value(origin, v, ctx))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), self.render_value(origin, v, ctx)?)))
                    .collect::<Result<_, RenderError>>()?,
            ),
            other => other.clone(),
        })
    }
}

fn when_source(expr: &str) -> String {
    format!("{{% if {expr} %}}true{{% else %}}false{{% endif %}}")
}

fn to_context(template: &str, ctx: &Value) -> Result<tera::Context, RenderError> {
    tera::Context::from_value(ctx.clone()).map_err(|e| RenderError::Template {
        template: template.to_string(),
        message: format!("the context is not a map: {e}"),
    })
}

/// `{{ v | quote }}`: the value as one POSIX shell word.
fn quote_filter(value: &Value, _: &HashMap<String, Value>) -> tera::Result<Value> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Bool(_) | Value::Number(_) => value.to_string(),
        _ => {
            return Err(tera::Error::msg(
                "`quote` takes a string, number or boolean; join a list first (`| join(sep=\" \")`)",
            ));
        }
    };
    Ok(Value::String(crate::sh::quote(&text)))
}

/// `{{ v | yaml }}`: the value as a YAML value: JSON text, which YAML 1.2
/// reads as exactly this value whatever quotes, newlines or braces it holds.
fn yaml_filter(value: &Value, _: &HashMap<String, Value>) -> tera::Result<Value> {
    serde_json::to_string(value)
        .map(Value::String)
        .map_err(|e| tera::Error::msg(format!("`yaml` cannot encode the value: {e}")))
}

/// Turns tera's error chain into one sentence with the variable and line.
fn phrase(template: &str, source: &str, err: &tera::Error) -> RenderError {
    let mut messages = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        messages.push(e.to_string());
        cur = e.source();
    }
    for m in &messages {
        if let Some(rest) = m.split_once("Variable `").map(|(_, r)| r)
            && rest.contains("not found in context")
            && let Some((var, _)) = rest.split_once('`')
        {
            return RenderError::Undefined {
                variable: var.to_string(),
                template: template.to_string(),
                line: find_line(source, var),
            };
        }
    }
    // Drop tera's own "Failed to render 'inline:…'" wrappers that name our internal keys.
    let message = messages
        .iter()
        .filter(|m| !m.contains("'inline:"))
        .cloned()
        .collect::<Vec<_>>()
        .join(": ");
    RenderError::Template {
        template: template.to_string(),
        message: if message.is_empty() {
            messages.join(": ")
        } else {
            message
        },
    }
}

/// The first line of `source` whose tera blocks mention `var`.
fn find_line(source: &str, var: &str) -> Option<usize> {
    source
        .lines()
        .position(|l| (l.contains("{{") || l.contains("{%")) && l.contains(var))
        .or_else(|| source.lines().position(|l| l.contains(var)))
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::renderer_with;
    use serde_json::json;

    #[test]
    fn renders_a_template_from_the_data_dir() {
        let (_d, r) = renderer_with(&[("os/hostname.j2", "{{ node.name }}\n")]);
        let out = r
            .render("os/hostname.j2", &json!({"node": {"name": "edge-1"}}))
            .unwrap();
        assert_eq!(out, "edge-1\n");
    }

    #[test]
    fn undefined_variable_names_variable_template_and_line() {
        let (_d, r) = renderer_with(&[(
            "k3s/config.j2",
            "a: 1\nb: {{ node.name }}\nc: {{ node.nope }}\n",
        )]);
        let err = r
            .render("k3s/config.j2", &json!({"node": {"name": "x"}}))
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`node.nope`"), "{msg}");
        assert!(msg.contains("k3s/config.j2 line 3"), "{msg}");
    }

    #[test]
    fn inline_strings_render_and_report_their_origin() {
        let (_d, r) = renderer_with(&[]);
        let ctx = json!({"site": {"name": "s1"}});
        assert_eq!(
            r.render_str("pb step a", "{{ site.name }}-x", &ctx)
                .unwrap(),
            "s1-x"
        );
        assert_eq!(r.render_str("pb step a", "plain", &ctx).unwrap(), "plain");
        let err = r
            .render_str("os.yaml step 'x'", "{{ site.zone }}", &ctx)
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("os.yaml step 'x' line 1: variable `site.zone`"),
            "{err}"
        );
    }

    #[test]
    fn when_expressions_evaluate_to_bool() {
        let (_d, r) = renderer_with(&[]);
        let ctx = json!({"facts": {"os_family": "debian"}, "node": {"role": "server"}});
        assert!(
            r.eval_when(
                "t",
                r#"facts.os_family == "debian" and node.role == "server""#,
                &ctx
            )
            .unwrap()
        );
        assert!(
            !r.eval_when("t", r#"facts.os_family == "redhat""#, &ctx)
                .unwrap()
        );
    }

    #[test]
    fn syntax_errors_name_the_template() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("templates")).unwrap();
        std::fs::write(dir.path().join("templates/bad.j2"), "x {{ a ").unwrap();
        let err = Renderer::new(&DataDir::new(Some(dir.path()))).unwrap_err();
        assert!(err.to_string().starts_with("bad.j2: "), "{err}");
    }

    #[test]
    fn quote_and_yaml_filters_keep_hostile_values_intact_and_inert() {
        let (_d, r) = renderer_with(&[(
            "t.yaml.j2",
            "key: {{ v | yaml }}\nlist: {{ l | yaml }}\nmap:\n  n: {{ n | yaml }}\n",
        )]);
        let hostile = "a'b\"c $(touch /tmp/ef-x) `id` {{ node }} # no comment\n- line2: x";
        let ctx = json!({"v": hostile, "l": ["x", "y: z"], "n": 3});
        let out = r.render("t.yaml.j2", &ctx).unwrap();
        let doc: serde_json::Value = serde_saphyr::from_str(&out).unwrap();
        assert_eq!(doc["key"], hostile);
        assert_eq!(doc["list"], json!(["x", "y: z"]));
        assert_eq!(doc["map"]["n"], 3);
        let cmd = r
            .render_str("o", "printf %s {{ v | quote }}", &ctx)
            .unwrap();
        let printed = std::process::Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(printed.stdout).unwrap(), hostile);
        assert!(!std::path::Path::new("/tmp/ef-x").exists());
        let err = r.render_str("o", "{{ l | quote }}", &json!({"l": [1]}));
        assert!(err.unwrap_err().to_string().contains("join a list first"));
    }
}
