//! Playbooks: ordered, idempotent steps for one layer, read from YAML.
//!
//! A playbook is data: a name, the `target` its steps run against (`host`,
//! the default; `cluster`, `federation`, `bmc`, `hypervisor`), an optional
//! `hosts` filter, `vars`, ordered `steps` and `handlers`. Each step has a
//! name, exactly one step-kind key (`command`, `template`, `package`, ... see
//! [`kinds`]) with its parameters, and optional `when`, `notify`, `tags`,
//! `become`, `register` and `publish`. Step kinds are code ([`kinds`]); this
//! module reads the format and checks it before anything runs
//! ([`Playbook::check`]), reporting errors with file:line:col.

pub mod kinds;
pub mod shell;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::inventory::{NodeView, Role};
use crate::render::{RenderError, Renderer};
pub use kinds::{Kind, TargetKind};

/// A playbook as read from YAML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Playbook {
    /// What the playbook does, e.g. `os`.
    pub name: String,
    /// What its steps run against (default `host`).
    #[serde(default = "default_target")]
    pub target: TargetKind,
    /// Which nodes it applies to (all when absent).
    #[serde(default)]
    pub hosts: Option<HostFilter>,
    /// Variables visible to templates and `when` as `vars.*`.
    #[serde(default)]
    pub vars: serde_json::Map<String, serde_json::Value>,
    /// Whether steps run as root unless they say otherwise (`become:`, default true).
    #[serde(default = "default_become", rename = "become", alias = "privileged")]
    pub privileged: bool,
    /// The steps, run in order on each host.
    pub steps: Vec<Step>,
    /// Steps run once at the end, only when a changed step notified them.
    #[serde(default)]
    pub handlers: Vec<Step>,
    /// The file it was read from (set by [`Playbook::parse`]).
    #[serde(skip)]
    pub source: String,
}

fn default_become() -> bool {
    true
}

fn default_target() -> TargetKind {
    TargetKind::Host
}

/// Restricts a playbook to some nodes.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HostFilter {
    /// Only nodes with this role.
    #[serde(default)]
    pub role: Option<Role>,
    /// Only nodes carrying all these labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Only nodes that host VMs (`hypervisorHost: true`) when true.
    #[serde(default)]
    pub hypervisor_host: Option<bool>,
}

/// One step: a kind with its parameters plus the common keys.
#[derive(Debug, Clone)]
pub struct Step {
    /// What the step does, shown in progress and logs.
    pub name: String,
    /// The kind and its parameters.
    pub kind: Arc<dyn Kind>,
    /// A tera expression; the step runs only when it is true.
    pub when: Option<String>,
    /// Handlers to run at the end when this step changed something.
    pub notify: Vec<String>,
    /// Tags for `--tags` / `--skip-tags`.
    pub tags: Vec<String>,
    /// Run as root (the step's `become`, else the playbook's, else true).
    pub privileged: bool,
    /// The step's own `become`, when it has one.
    become_given: Option<bool>,
    /// Keep the step's output as `vars.<name>` (stdout, changed) for later steps.
    pub register: Option<String>,
    /// Publish the step's standard output (trimmed) as a run-wide output of its task.
    pub publish: Option<Publish>,
    /// 1-based line of the step in its file.
    pub line: u32,
}

/// Errors of reading a playbook.
#[derive(Debug, thiserror::Error)]
pub enum PlaybookError {
    /// The YAML does not match the playbook format.
    #[error("{file}:{line}:{col}: {message}")]
    Syntax {
        /// The playbook file.
        file: String,
        /// 1-based line (0 when unknown).
        line: u64,
        /// 1-based column (0 when unknown).
        col: u64,
        /// What is wrong.
        message: String,
    },
    /// The playbook reads, but its meaning is wrong (e.g. an unknown handler).
    #[error("{file}:{line}: {message}")]
    Invalid {
        /// The playbook file.
        file: String,
        /// 1-based line of the step.
        line: u32,
        /// What is wrong and what to do.
        message: String,
    },
}

/// A step's `publish:`: `publish: NAME`, or `publish: { name: NAME, secret: true }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum PublishSpec {
    /// Just the name: not secret.
    Name(String),
    /// Name and whether the value is a secret.
    Full {
        /// The output's name.
        name: String,
        /// Redact the value everywhere.
        #[serde(default)]
        secret: bool,
    },
}

/// Where a step's standard output goes as an output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// The output's name.
    pub name: String,
    /// Redact the value everywhere.
    pub secret: bool,
}

impl Playbook {
    /// Parses a playbook; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Playbook, PlaybookError> {
        let mut pb: Playbook = serde_saphyr::from_str(text).map_err(|e| {
            let (line, col) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
            PlaybookError::Syntax {
                file: file.to_string(),
                line,
                col,
                message: strip_location(&e.to_string()),
            }
        })?;
        pb.source = file.to_string();
        let default = pb.privileged;
        for step in pb.steps.iter_mut().chain(pb.handlers.iter_mut()) {
            step.privileged = step.become_given.unwrap_or(default);
        }
        pb.validate()?;
        Ok(pb)
    }

    /// Whether the playbook applies to `node`.
    pub fn applies_to(&self, node: &NodeView<'_>) -> bool {
        let Some(f) = &self.hosts else { return true };
        f.role.is_none_or(|r| r == node.node.role)
            && f.hypervisor_host
                .is_none_or(|h| h == node.node.hypervisor_host)
            && f.labels.iter().all(|(k, v)| node.labels.get(k) == Some(v))
    }

    fn validate(&self) -> Result<(), PlaybookError> {
        let invalid = |line, message: String| PlaybookError::Invalid {
            file: self.source.clone(),
            line,
            message,
        };
        let mut seen = std::collections::HashSet::new();
        for s in self.steps.iter().chain(&self.handlers) {
            if !s.kind.targets().contains(&self.target) {
                return Err(invalid(
                    s.line,
                    format!(
                        "step `{}` is a `{}` step, which cannot run against a {} target (this playbook's `target`); it runs against: {}",
                        s.name,
                        s.kind.key(),
                        self.target,
                        s.kind
                            .targets()
                            .iter()
                            .map(|t| t.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            if s.name.trim().is_empty() {
                return Err(invalid(s.line, "a step needs a non-empty `name`".into()));
            }
            if !seen.insert(&s.name) {
                return Err(invalid(
                    s.line,
                    format!(
                        "step name `{}` is used twice; names identify steps in the journal, make them unique",
                        s.name
                    ),
                ));
            }
            for n in &s.notify {
                if !self.handlers.iter().any(|h| &h.name == n) {
                    return Err(invalid(
                        s.line,
                        format!(
                            "step `{}` notifies `{n}`, but no handler has that name",
                            s.name
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Playbook {
    /// Checks a playbook before it runs: every string and `when` parses, and
    /// every template a `template` step names (literally) exists.
    pub fn check(&self, renderer: &Renderer) -> Result<(), RenderError> {
        for step in self.steps.iter().chain(&self.handlers) {
            let origin = format!("{} step '{}'", self.source, step.name);
            if let Some(w) = &step.when {
                renderer.compile_when(&origin, w)?;
            }
            let params = step.kind.params();
            let mut strings = Vec::new();
            collect_strings(&params, &mut strings);
            for s in strings
                .into_iter()
                .filter(|s| s.contains("{{") || s.contains("{%"))
            {
                renderer.compile_str(&origin, s)?;
            }
            if let Some(t) = step
                .kind
                .as_any()
                .downcast_ref::<kinds::place::TemplateParams>()
                && !t.src.contains("{{")
                && !renderer.has_template(&t.src)
            {
                return Err(RenderError::NoTemplate {
                    name: t.src.clone(),
                    where_: format!("the data directory ({origin} uses it)"),
                });
            }
        }
        Ok(())
    }
}

fn collect_strings<'v>(v: &'v Value, out: &mut Vec<&'v str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(items) => items.iter().for_each(|i| collect_strings(i, out)),
        Value::Object(map) => map.values().for_each(|i| collect_strings(i, out)),
        _ => {}
    }
}

impl Step {
    /// Whether `--tags` / `--skip-tags` select this step (tag `always` always runs).
    pub fn selected(&self, tags: &[String], skip_tags: &[String]) -> bool {
        if self.tags.iter().any(|t| skip_tags.contains(t)) {
            return false;
        }
        tags.is_empty() || self.tags.iter().any(|t| t == "always" || tags.contains(t))
    }
}

/// serde-saphyr puts its own location around the message; ours is in front.
fn strip_location(msg: &str) -> String {
    let mut m = msg.trim().strip_prefix("error: ").unwrap_or(msg.trim());
    if let Some(rest) = m.strip_prefix("line ")
        && let Some((pos, tail)) = rest.split_once(": ")
        && pos
            .chars()
            .all(|c| c.is_ascii_digit() || c == ' ' || c.is_ascii_alphabetic())
    {
        m = tail;
    }
    let cut = m
        .find(" at line ")
        .or_else(|| m.find("\n --> "))
        .unwrap_or(m.len());
    m[..cut].trim().to_string()
}

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Step, D::Error> {
        let spanned = serde_saphyr::Spanned::<StepFields>::deserialize(d)?;
        let f = spanned.value;
        let line = u32::try_from(spanned.referenced.line()).unwrap_or(u32::MAX);
        let name = f.name.ok_or_else(|| de::Error::missing_field("name"))?;
        let kind = f.kind.ok_or_else(|| {
            de::Error::custom(format!(
                "step `{name}` has no step kind; add one of: {}",
                kinds::KIND_NAMES.join(", ")
            ))
        })?;
        Ok(Step {
            name,
            kind,
            when: f.when,
            notify: f.notify,
            tags: f.tags,
            privileged: f.privileged.unwrap_or(true),
            become_given: f.privileged,
            register: f.register,
            publish: f.publish.map(|p| match p {
                PublishSpec::Name(name) => Publish {
                    name,
                    secret: false,
                },
                PublishSpec::Full { name, secret } => Publish { name, secret },
            }),
            line,
        })
    }
}

/// The keys of a step as read, before checks.
#[derive(Default)]
struct StepFields {
    name: Option<String>,
    kind: Option<Arc<dyn Kind>>,
    when: Option<String>,
    notify: Vec<String>,
    tags: Vec<String>,
    privileged: Option<bool>,
    register: Option<String>,
    publish: Option<PublishSpec>,
}

impl<'de> Deserialize<'de> for StepFields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<StepFields, D::Error> {
        d.deserialize_map(StepVisitor)
    }
}

struct StepVisitor;

impl<'de> Visitor<'de> for StepVisitor {
    type Value = StepFields;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a step: a map with `name` and one step kind")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StepFields, A::Error> {
        let mut s = StepFields::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "name" => s.name = Some(map.next_value()?),
                "when" => s.when = Some(map.next_value()?),
                "notify" => s.notify = map.next_value::<OneOrMany>()?.0,
                "tags" => s.tags = map.next_value::<OneOrMany>()?.0,
                "become" | "privileged" => s.privileged = Some(map.next_value()?),
                "register" => s.register = Some(map.next_value()?),
                "publish" => s.publish = Some(map.next_value()?),
                other => {
                    if s.kind.is_some() {
                        return Err(de::Error::custom(format!(
                            "`{other}`: a step has exactly one step kind, and this one already has one"
                        )));
                    }
                    s.kind = Some(kinds::kind_from_map(other, &mut map)?);
                }
            }
        }
        Ok(s)
    }
}

/// A string or a list of strings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OneOrMany(pub Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<OneOrMany, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_string()]))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(OneOrMany(out))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name: demo
vars:
  greeting: hi
steps:
  - name: make dir
    file: { path: /tmp/x, state: directory, mode: "0755" }
    tags: [fs]
  - name: config
    template: { src: a.j2, dest: /etc/a.conf }
    notify: restart a
    when: facts.os_family == "debian"
handlers:
  - name: restart a
    service: { name: a, state: restarted }
"#;

    #[test]
    fn parses_steps_kinds_and_common_keys() {
        let pb = Playbook::parse("demo.yaml", GOOD).unwrap();
        assert_eq!(pb.name, "demo");
        assert_eq!(pb.steps.len(), 2);
        assert_eq!(pb.steps[0].tags, vec!["fs"]);
        assert_eq!(pb.steps[0].line, 6);
        assert_eq!(pb.steps[1].kind.key(), "template");
        assert_eq!(pb.steps[1].notify, vec!["restart a"]);
        assert!(pb.steps[1].privileged);
        assert_eq!(pb.handlers.len(), 1);
    }

    #[test]
    fn become_is_inherited_from_the_playbook_unless_a_step_says_otherwise() {
        let pb = Playbook::parse(
            "user.yaml",
            "name: user\nbecome: false\nsteps:\n  - name: a\n    command: { cmd: id }\n  \
             - name: b\n    command: { cmd: id }\n    become: true\nhandlers:\n  \
             - name: h\n    command: { cmd: id }\n",
        )
        .unwrap();
        assert!(!pb.steps[0].privileged);
        assert!(pb.steps[1].privileged);
        assert!(!pb.handlers[0].privileged);
        let pb = Playbook::parse(
            "root.yaml",
            "name: r\nsteps:\n  - name: a\n    command: { cmd: id }\n    become: false\n",
        )
        .unwrap();
        assert!(!pb.steps[0].privileged);
    }

    #[test]
    fn unknown_param_is_reported_with_line_and_column() {
        let text = "name: x\nsteps:\n  - name: a\n    file: { path: /x, stat: absent }\n";
        let err = Playbook::parse("x.yaml", text).unwrap_err().to_string();
        assert!(err.starts_with("x.yaml:4:"), "{err}");
        assert!(err.contains("stat"), "{err}");
    }

    #[test]
    fn unknown_step_kind_lists_the_kinds() {
        let text = "name: x\nsteps:\n  - name: a\n    frobnicate: {}\n";
        let err = Playbook::parse("x.yaml", text).unwrap_err().to_string();
        // Errors raised while reading a step point at the step.
        assert!(
            err.starts_with("x.yaml:3:5: unknown step kind `frobnicate`"),
            "{err}"
        );
        assert!(err.contains("lineinfile"), "{err}");
    }

    #[test]
    fn a_step_without_kind_or_with_two_kinds_is_refused() {
        let none = "name: x\nsteps:\n  - name: a\n    tags: [t]\n";
        let err = Playbook::parse("x.yaml", none).unwrap_err().to_string();
        assert!(err.contains("has no step kind"), "{err}");
        let two =
            "name: x\nsteps:\n  - name: a\n    command: { cmd: 'true' }\n    file: { path: /x }\n";
        let err = Playbook::parse("x.yaml", two).unwrap_err().to_string();
        assert!(
            err.starts_with("x.yaml:3:5: `file`: a step has exactly one step kind"),
            "{err}"
        );
    }

    #[test]
    fn notify_of_an_unknown_handler_is_refused() {
        let text = "name: x\nsteps:\n  - name: a\n    command: { cmd: 'true' }\n    notify: nope\n";
        let err = Playbook::parse("x.yaml", text).unwrap_err().to_string();
        assert_eq!(
            err,
            "x.yaml:3: step `a` notifies `nope`, but no handler has that name"
        );
    }

    #[test]
    fn unknown_top_level_key_is_refused() {
        let err = Playbook::parse("x.yaml", "name: x\nstep: []\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("x.yaml:2:1"), "{err}");
    }

    #[test]
    fn tags_select_steps() {
        let pb = Playbook::parse("demo.yaml", GOOD).unwrap();
        let fs = vec!["fs".to_string()];
        assert!(pb.steps[0].selected(&fs, &[]));
        assert!(!pb.steps[1].selected(&fs, &[]));
        assert!(!pb.steps[0].selected(&[], &fs));
        assert!(pb.steps[1].selected(&[], &fs));
    }

    #[test]
    fn hosts_filter_by_role_labels_and_hypervisor() {
        let inv: crate::inventory::Inventory = serde_saphyr::from_str(
            "apiVersion: edgeforge/v1\nsites:\n  - name: s\n    labels: { tier: edge }\n    nodes:\n\
             \x20     - { name: a, role: server, address: 10.0.0.1, hypervisorHost: true }\n\
             \x20     - { name: b, role: agent, address: 10.0.0.2, labels: { gpu: 'yes' } }\n",
        )
        .unwrap();
        let pick = |filter: &str| {
            let pb = Playbook::parse("f.yaml", &format!("name: f\nhosts: {filter}\nsteps: []\n"))
                .unwrap();
            inv.nodes()
                .filter(|v| pb.applies_to(v))
                .map(|v| v.node.name.value.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(pick("{ role: server }"), vec!["a"]);
        assert_eq!(pick("{ labels: { gpu: 'yes' } }"), vec!["b"]);
        assert_eq!(pick("{ labels: { tier: edge } }"), vec!["a", "b"]);
        assert_eq!(pick("{ hypervisor_host: true }"), vec!["a"]);
        assert_eq!(pick("{}"), vec!["a", "b"]);
    }
}

#[cfg(test)]
mod check_tests {
    use super::*;
    use crate::testutil::renderer_with;

    fn pb(step: &str) -> Playbook {
        Playbook::parse(
            "p.yaml",
            &format!("name: p\nsteps:\n  - name: s\n    {step}\n"),
        )
        .unwrap()
    }

    #[test]
    fn playbooks_are_checked_before_they_run() {
        let (_d, r) = renderer_with(&[("ok.j2", "x")]);
        pb("template: { src: ok.j2, dest: /x }").check(&r).unwrap();
        let err = pb("template: { src: missing.j2, dest: /x }")
            .check(&r)
            .unwrap_err();
        assert!(
            err.to_string().contains("template missing.j2 not found"),
            "{err}"
        );
        let err = pb("file: { path: '/{{ node.name' }").check(&r).unwrap_err();
        assert!(err.to_string().starts_with("p.yaml step 's': "), "{err}");
        let err = pb("file: { path: /x }\n    when: facts.a ==")
            .check(&r)
            .unwrap_err();
        assert!(err.to_string().starts_with("p.yaml step 's': "), "{err}");
    }

    #[test]
    fn a_step_must_be_able_to_run_against_the_playbooks_target() {
        let err = Playbook::parse(
            "c.yaml",
            "name: c\ntarget: cluster\nsteps:\n  - name: s\n    command: { cmd: id }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with(
                "c.yaml:4: step `s` is a `command` step, which cannot run against a cluster target"
            ),
            "{err}"
        );
        assert!(err.contains("it runs against: host"), "{err}");
        let ok = Playbook::parse(
            "c.yaml",
            "name: c\ntarget: cluster\nsteps:\n  - name: s\n    secret: { name: t }\n",
        )
        .unwrap();
        assert_eq!(ok.target, TargetKind::Cluster);
        let err = Playbook::parse("c.yaml", "name: c\ntarget: moon\nsteps: []\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("c.yaml:2:"), "{err}");
    }

    #[test]
    fn publish_takes_a_name_or_a_name_and_secret() {
        let p = Playbook::parse(
            "o.yaml",
            "name: o\nsteps:\n  - name: a\n    command: { cmd: hostname }\n    publish: host\n  \
             - name: b\n    command: { cmd: cat /t }\n    publish: { name: token, secret: true }\n",
        )
        .unwrap();
        assert_eq!(
            p.steps[0].publish,
            Some(Publish {
                name: "host".into(),
                secret: false
            })
        );
        assert_eq!(
            p.steps[1].publish,
            Some(Publish {
                name: "token".into(),
                secret: true
            })
        );
    }
}

#[cfg(test)]
mod builtin_playbooks {
    use crate::data::DataDir;
    use crate::render::Renderer;

    /// Every playbook shipped in playbooks/ parses and its templates and
    /// expressions compile, so a broken data file fails here, not on a host.
    #[test]
    fn every_builtin_playbook_parses_and_checks() {
        let data = DataDir::new(None);
        let renderer = Renderer::new(&data).expect("templates compile");
        let mut seen = 0;
        for path in data.list("playbooks").expect("playbooks") {
            if !path.ends_with(".yaml") {
                continue;
            }
            let text = data.read_text(&path).expect("utf-8");
            let pb = super::Playbook::parse(&path, &text).unwrap_or_else(|e| panic!("{e}"));
            pb.check(&renderer)
                .unwrap_or_else(|e| panic!("{path}: {e}"));
            seen += 1;
        }
        assert!(seen >= 2, "expected os.yaml and virt.yaml, saw {seen}");
    }
}
