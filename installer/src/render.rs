//! Rendering: the one tera environment of the program.
//!
//! Templates come from the data directory ([`DataDir`]: `--data-dir` when
//! given, else the copy embedded at build time). Strings inside playbooks
//! (`{{ node.name }}` in a parameter, `when:` expressions) go through the same
//! environment. Undefined variables are errors that name the variable, the
//! template and the line. The context a host sees is built here too
//! ([`inventory_context`]): `site`, `cluster` (with all its nodes), `node`,
//! `defaults`, plus `facts` and `vars` added by the executor.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::inventory::{Inventory, NodeView};

/// Where data files (playbooks/, templates/, images/) are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataDir {
    /// The copy embedded in the binary at build time.
    Embedded,
    /// A directory given with `--data-dir`.
    Dir(PathBuf),
}

/// Errors of reading data files and rendering templates.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A data file is not in the data directory.
    #[error(
        "data file {path} not found in {where_}; check the name or pass --data-dir with a directory that has it"
    )]
    NotFound {
        /// Path relative to the data directory, e.g. `templates/os/hosts.j2`.
        path: String,
        /// Which data directory was searched.
        where_: String,
    },
    /// A data file could not be read.
    #[error("reading data file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A data file is not UTF-8.
    #[error("data file {0} is not UTF-8 text")]
    NotUtf8(String),
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

impl DataDir {
    /// The override directory when given, else the embedded data.
    pub fn new(dir: Option<&Path>) -> DataDir {
        dir.map_or(DataDir::Embedded, |d| DataDir::Dir(d.to_path_buf()))
    }

    /// Reads `rel` (e.g. `playbooks/os.yaml`) as text.
    pub fn read_text(&self, rel: &str) -> Result<String, RenderError> {
        let bytes = self.read(rel)?;
        String::from_utf8(bytes).map_err(|_| RenderError::NotUtf8(rel.to_string()))
    }

    /// Reads `rel` (e.g. `templates/os/hosts.j2`) as bytes.
    pub fn read(&self, rel: &str) -> Result<Vec<u8>, RenderError> {
        match self {
            DataDir::Embedded => embedded_file(rel)
                .map(|f| f.contents().to_vec())
                .ok_or_else(|| self.not_found(rel)),
            DataDir::Dir(dir) => {
                let path = dir.join(rel);
                match std::fs::read(&path) {
                    Ok(b) => Ok(b),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(self.not_found(rel)),
                    Err(source) => Err(RenderError::Read { path, source }),
                }
            }
        }
    }

    /// The on-disk path of `rel` when the data is a directory (for streaming uploads).
    pub fn path_of(&self, rel: &str) -> Option<PathBuf> {
        match self {
            DataDir::Embedded => None,
            DataDir::Dir(dir) => Some(dir.join(rel)),
        }
    }

    /// Every file under `sub` (e.g. `templates`), as paths relative to the data directory.
    pub fn list(&self, sub: &str) -> Result<Vec<String>, RenderError> {
        let mut out = Vec::new();
        match self {
            DataDir::Embedded => {
                let root = match sub {
                    "playbooks" => &crate::data::PLAYBOOKS,
                    "templates" => &crate::data::TEMPLATES,
                    "images" => &crate::data::IMAGES,
                    _ => return Ok(out),
                };
                collect_embedded(root, sub, &mut out);
            }
            DataDir::Dir(dir) => collect_dir(dir, &dir.join(sub), &mut out)?,
        }
        out.sort();
        Ok(out)
    }

    fn not_found(&self, rel: &str) -> RenderError {
        let where_ = match self {
            DataDir::Embedded => "the data built into edgeforge".to_string(),
            DataDir::Dir(d) => d.display().to_string(),
        };
        RenderError::NotFound {
            path: rel.to_string(),
            where_,
        }
    }
}

fn embedded_file(rel: &str) -> Option<&'static include_dir::File<'static>> {
    let (top, rest) = rel.split_once('/')?;
    let root = match top {
        "playbooks" => &crate::data::PLAYBOOKS,
        "templates" => &crate::data::TEMPLATES,
        "images" => &crate::data::IMAGES,
        _ => return None,
    };
    root.get_file(rest)
}

fn collect_embedded(dir: &include_dir::Dir<'static>, prefix: &str, out: &mut Vec<String>) {
    for f in dir.files() {
        out.push(format!("{prefix}/{}", f.path().display()));
    }
    for d in dir.dirs() {
        collect_embedded(d, prefix, out);
    }
}

fn collect_dir(base: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), RenderError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(RenderError::Read {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    for entry in entries {
        let entry = entry.map_err(|source| RenderError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        if path.is_dir() {
            collect_dir(base, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(base) {
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
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
            return Err(RenderError::NotFound {
                path: format!("templates/{name}"),
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

    /// Checks a playbook before it runs: every string and `when` parses and
    /// every template a `template` step names (literally) exists.
    pub fn check_playbook(&self, pb: &crate::playbook::Playbook) -> Result<(), RenderError> {
        for step in pb.steps.iter().chain(&pb.handlers) {
            let origin = format!("{} step '{}'", pb.source, step.name);
            if let Some(w) = &step.when {
                self.compile_str(&origin, &when_source(w))?;
            }
            let params = serde_json::to_value(&step.kind).unwrap_or_default();
            let mut strings = Vec::new();
            collect_strings(&params, &mut strings);
            for s in strings
                .into_iter()
                .filter(|s| s.contains("{{") || s.contains("{%"))
            {
                self.compile_str(&origin, s)?;
            }
            if let crate::playbook::StepKind::Template(t) = &step.kind
                && !t.src.contains("{{")
                && self
                    .tera
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_template(&t.src)
                    .is_err()
            {
                return Err(RenderError::NotFound {
                    path: format!("templates/{}", t.src),
                    where_: format!("the data directory ({origin} uses it)"),
                });
            }
        }
        Ok(())
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

/// The inventory part of a host's context: `inventory` (name), `site`,
/// `cluster` (name and all its nodes), `node` (effective settings) and `defaults`.
pub fn inventory_context(inv: &Inventory, view: &NodeView<'_>) -> Value {
    let node_json = |v: &NodeView<'_>| {
        json!({
            "name": v.node.name.value,
            "role": v.node.role,
            "address": v.node.address.value,
            "labels": v.labels,
            "hypervisor_host": v.node.hypervisor_host,
            "ssh_user": v.ssh.user.as_ref().map_or("root", |u| u.as_str()),
            "k3s": {
                "cluster_cidr": v.k3s.cluster_cidr.as_ref().map(|s| s.value.clone()),
                "service_cidr": v.k3s.service_cidr.as_ref().map(|s| s.value.clone()),
                "tls_san": v.k3s.tls_san.as_ref().map(|l| l.iter().map(|s| s.value.clone()).collect::<Vec<_>>()),
            },
            "vm": v.vm,
        })
    };
    let site = view.site;
    let cluster_nodes: Vec<Value> = inv
        .nodes()
        .filter(|v| std::ptr::eq(v.site, site))
        .map(|v| node_json(&v))
        .collect();
    json!({
        "inventory": { "name": inv.name.as_ref().map(|n| n.value.clone()) },
        "site": {
            "name": site.name.value,
            "region": site.region,
            "zone": site.zone,
            "labels": site.labels,
        },
        "cluster": {
            "name": Inventory::cluster_name(site),
            "nodes": cluster_nodes,
        },
        "node": node_json(view),
        "defaults": { "labels": inv.defaults.labels, "vm": inv.defaults.vm },
        "versions": {
            "k3s": inv.versions.k3s.as_ref().map(|s| s.value.clone()),
            "os_image": inv.versions.os_image.as_ref().map(|s| s.value.clone()),
        },
    })
}

fn when_source(expr: &str) -> String {
    format!("{{% if {expr} %}}true{{% else %}}false{{% endif %}}")
}

fn collect_strings<'v>(v: &'v Value, out: &mut Vec<&'v str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(items) => items.iter().for_each(|i| collect_strings(i, out)),
        Value::Object(map) => map.values().for_each(|i| collect_strings(i, out)),
        _ => {}
    }
}

fn to_context(template: &str, ctx: &Value) -> Result<tera::Context, RenderError> {
    tera::Context::from_value(ctx.clone()).map_err(|e| RenderError::Template {
        template: template.to_string(),
        message: format!("the context is not a map: {e}"),
    })
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

    fn renderer_with(files: &[(&str, &str)]) -> (tempfile::TempDir, Renderer) {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let path = dir.path().join("templates").join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let r = Renderer::new(&DataDir::new(Some(dir.path()))).unwrap();
        (dir, r)
    }

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
    fn playbooks_are_checked_before_they_run() {
        let (_d, r) = renderer_with(&[("ok.j2", "x")]);
        let pb = |step: &str| {
            crate::playbook::Playbook::parse(
                "p.yaml",
                &format!("name: p\nsteps:\n  - name: s\n    {step}\n"),
            )
            .unwrap()
        };
        r.check_playbook(&pb("template: { src: ok.j2, dest: /x }"))
            .unwrap();
        let err = r
            .check_playbook(&pb("template: { src: missing.j2, dest: /x }"))
            .unwrap_err();
        assert!(
            err.to_string().contains("templates/missing.j2 not found"),
            "{err}"
        );
        let err = r
            .check_playbook(&pb("file: { path: '/{{ node.name' }"))
            .unwrap_err();
        assert!(err.to_string().starts_with("p.yaml step 's': "), "{err}");
        let err = r
            .check_playbook(&pb("file: { path: /x }\n    when: facts.a =="))
            .unwrap_err();
        assert!(err.to_string().starts_with("p.yaml step 's': "), "{err}");
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
    fn missing_data_file_says_where_it_looked() {
        let dir = tempfile::tempdir().unwrap();
        let err = DataDir::new(Some(dir.path()))
            .read("playbooks/nope.yaml")
            .unwrap_err();
        assert!(
            err.to_string().contains("playbooks/nope.yaml not found in"),
            "{err}"
        );
    }
}
