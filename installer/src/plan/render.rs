//! The three printed forms of a plan: text for people, JSON for programs and
//! Graphviz dot for pictures.
//!
//! # JSON schema (`edgeforge.plan/v1`)
//!
//! ```text
//! {
//!   "schema": "edgeforge.plan/v1",
//!   "inventory": string | null,          // the inventory's `name`
//!   "selection": { "limit": string | null, "layers": [layer, ...] },  // [] = all
//!   "summary": { "sites": int, "nodes": int, "tasks": int, "waves": int },
//!   "tasks": [                           // topological order
//!     {
//!       "id": int,                       // index in this array
//!       "key": string,                   // stable: "<node>/<layer>" or "site/<site>/<kubeconfig|register>"
//!       "site": string, "cluster": string,
//!       "node": string | null,           // null for cluster-level tasks
//!       "layer": "machine" | "os" | "virt" | "k3s" | "federation",
//!       "action": string,                // e.g. "define-vm", "join-agent", "register"
//!       "description": string,           // one line for people
//!       "playbook": string,              // e.g. "k3s/server-join"
//!       "wave": int,                     // depth; 0 = no dependency in the plan
//!       "deps": [key, ...],              // tasks in this plan that run first
//!       "external_deps": [key, ...]      // outside the selection, assumed done
//!     }
//!   ]
//! }
//! ```
//!
//! Fields are only ever added within `v1`; a change of meaning bumps the version.

use std::io::{self, Write};

use serde::Serialize;

use super::{Layer, Plan, Task};
use crate::inventory::{Inventory, Machine, Node, Role};

/// The value of the JSON form's `schema` field.
pub const JSON_SCHEMA_VERSION: &str = "edgeforge.plan/v1";

/// Writes the plan for people: per site, per node, layer by layer.
pub fn render_text(plan: &Plan<'_>, out: &mut dyn Write, color: bool) -> io::Result<()> {
    let paint = Paint { on: color };
    let keys: Vec<String> = plan.tasks().iter().map(Task::key).collect();
    writeln!(
        out,
        "{} {} site(s), {} node(s), {} task(s) in {} wave(s)",
        paint.bold("plan:"),
        plan.site_count(),
        plan.node_count(),
        plan.tasks().len(),
        plan.wave_count()
    )?;
    if let Some(limit) = &plan.selection.limit {
        writeln!(out, "limit: {}", limit.as_str())?;
    }
    if !plan.selection.layers.is_empty() {
        let layers: Vec<&str> = plan.selection.layers.iter().map(|l| l.as_str()).collect();
        writeln!(out, "layers: {}", layers.join(", "))?;
    }
    let mut current_site = None;
    let mut current_node = None;
    for t in grouped(plan) {
        if current_site != Some(t.site_index) {
            current_site = Some(t.site_index);
            current_node = None;
            let mut where_ = Vec::new();
            if let Some(r) = &t.site.region {
                where_.push(format!("region {r}"));
            }
            if let Some(z) = &t.site.zone {
                where_.push(format!("zone {z}"));
            }
            let cluster = Inventory::cluster_name(t.site);
            if cluster != t.site.name.as_str() {
                where_.push(format!("cluster {cluster}"));
            }
            let extra = if where_.is_empty() {
                String::new()
            } else {
                format!(" ({})", where_.join(", "))
            };
            writeln!(
                out,
                "\n{} {}{extra}",
                paint.bold("site"),
                paint.bold(t.site.name.as_str())
            )?;
        }
        if current_node != Some(t.node_index) {
            current_node = Some(t.node_index);
            match t.node {
                Some(n) => writeln!(
                    out,
                    "  node {} ({})",
                    paint.cyan(n.name.as_str()),
                    describe_node(n)
                )?,
                None => writeln!(
                    out,
                    "  cluster {}",
                    paint.cyan(Inventory::cluster_name(t.site))
                )?,
            }
        }
        write!(out, "    {:<11}{}", t.layer.as_str(), t.action)?;
        let mut after: Vec<String> = t
            .deps
            .iter()
            .filter_map(|d| keys.get(d.index()).cloned())
            .collect();
        after.extend(
            t.external_deps
                .iter()
                .map(|k| format!("{k} (external, assumed done)")),
        );
        if !after.is_empty() {
            write!(
                out,
                "  {}",
                paint.dim(&format!("after {}", after.join(", ")))
            )?;
        }
        writeln!(out)?;
    }
    Ok(())
}

/// Writes the plan as JSON (schema in this module's documentation).
pub fn render_json(plan: &Plan<'_>, out: &mut dyn Write) -> io::Result<()> {
    let keys: Vec<String> = plan.tasks().iter().map(Task::key).collect();
    let tasks = plan
        .tasks()
        .iter()
        .zip(&keys)
        .map(|(t, key)| JsonTask {
            id: t.id.0,
            key,
            site: t.site.name.as_str(),
            cluster: Inventory::cluster_name(t.site),
            node: t.node.map(|n| n.name.as_str()),
            layer: t.layer,
            action: t.action.name(),
            description: t.action.to_string(),
            playbook: t.action.playbook(),
            wave: t.wave,
            deps: t
                .deps
                .iter()
                .filter_map(|d| keys.get(d.index()).map(String::as_str))
                .collect(),
            external_deps: &t.external_deps,
        })
        .collect();
    let doc = JsonPlan {
        schema: JSON_SCHEMA_VERSION,
        inventory: plan.inventory.name.as_ref().map(|n| n.as_str()),
        selection: JsonSelection {
            limit: plan.selection.limit.as_ref().map(|l| l.as_str()),
            layers: &plan.selection.layers,
        },
        summary: JsonSummary {
            sites: plan.site_count(),
            nodes: plan.node_count(),
            tasks: plan.tasks().len(),
            waves: plan.wave_count(),
        },
        tasks,
    };
    // `From` keeps the original I/O error (a closed pipe stays `BrokenPipe`).
    serde_json::to_writer_pretty(&mut *out, &doc).map_err(io::Error::from)?;
    writeln!(out)
}

/// Writes the plan as a Graphviz digraph, one cluster per site.
pub fn render_dot(plan: &Plan<'_>, out: &mut dyn Write) -> io::Result<()> {
    let keys: Vec<String> = plan.tasks().iter().map(Task::key).collect();
    writeln!(out, "digraph edgeforge_plan {{")?;
    writeln!(
        out,
        "  graph [rankdir=LR, fontname=\"Helvetica\", fontsize=11];"
    )?;
    writeln!(
        out,
        "  node [shape=box, style=rounded, fontname=\"Helvetica\", fontsize=10];"
    )?;
    writeln!(out, "  edge [color=\"#555555\"];")?;
    let mut current_site = None;
    for t in grouped(plan) {
        if current_site != Some(t.site_index) {
            if current_site.is_some() {
                writeln!(out, "  }}")?;
            }
            current_site = Some(t.site_index);
            writeln!(out, "  subgraph cluster_site_{} {{", t.site_index)?;
            writeln!(
                out,
                "    label={};",
                quote(&format!("site {}", t.site.name.as_str()))
            )?;
        }
        let who = t.node.map_or_else(
            || format!("cluster {}", Inventory::cluster_name(t.site)),
            |n| n.name.value.clone(),
        );
        let key = keys.get(t.id.index()).map_or("", String::as_str);
        writeln!(
            out,
            "    {} [label={}];",
            quote(key),
            quote(&format!("{who} · {}\n{}", t.layer, t.action))
        )?;
    }
    if current_site.is_some() {
        writeln!(out, "  }}")?;
    }
    let mut externals: Vec<&str> = plan
        .tasks()
        .iter()
        .flat_map(|t| t.external_deps.iter().map(String::as_str))
        .collect();
    externals.sort_unstable();
    externals.dedup();
    for e in &externals {
        writeln!(
            out,
            "  {} [label={}, style=\"rounded,dashed\", color=\"#999999\"];",
            quote(&format!("external:{e}")),
            quote(&format!("{e}\n(external, assumed done)"))
        )?;
    }
    for t in plan.tasks() {
        let to = keys.get(t.id.index()).map_or("", String::as_str);
        for d in &t.deps {
            let from = keys.get(d.index()).map_or("", String::as_str);
            writeln!(out, "  {} -> {};", quote(from), quote(to))?;
        }
        for e in &t.external_deps {
            writeln!(
                out,
                "  {} -> {} [style=dashed];",
                quote(&format!("external:{e}")),
                quote(to)
            )?;
        }
    }
    writeln!(out, "}}")
}

/// Tasks in reading order: site in file order, its nodes in file order, each
/// node's layers in order, then the site's cluster tasks.
fn grouped<'p, 'a>(plan: &'p Plan<'a>) -> Vec<&'p Task<'a>> {
    let mut tasks: Vec<&Task<'a>> = plan.tasks().iter().collect();
    tasks.sort_by_key(|t| {
        (
            t.site_index,
            t.node_index.is_none(),
            t.node_index,
            t.layer,
            t.id,
        )
    });
    tasks
}

fn describe_node(n: &Node) -> String {
    let role = match n.role {
        Role::Server => "server",
        Role::Agent => "agent",
    };
    let machine = match &n.machine {
        Machine::Existing => "existing".to_string(),
        Machine::Libvirt { hypervisor, .. } => format!("VM on {hypervisor}"),
        Machine::Redfish { endpoint, .. } => format!("Redfish {endpoint}"),
    };
    let host = if n.hypervisor_host {
        ", hypervisor host"
    } else {
        ""
    };
    format!("{role}, {machine}{host}")
}

/// A dot double-quoted string, with `"` and `\` escaped and newlines as `\n`.
fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

/// ANSI styling that is a no-op when colour is off.
struct Paint {
    on: bool,
}

impl Paint {
    fn wrap(&self, code: &str, s: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    fn bold(&self, s: &str) -> String {
        self.wrap("1", s)
    }
    fn cyan(&self, s: &str) -> String {
        self.wrap("36", s)
    }
    fn dim(&self, s: &str) -> String {
        self.wrap("2", s)
    }
}

#[derive(Serialize)]
struct JsonPlan<'p> {
    schema: &'static str,
    inventory: Option<&'p str>,
    selection: JsonSelection<'p>,
    summary: JsonSummary,
    tasks: Vec<JsonTask<'p>>,
}

#[derive(Serialize)]
struct JsonSelection<'p> {
    limit: Option<&'p str>,
    layers: &'p [Layer],
}

#[derive(Serialize)]
struct JsonSummary {
    sites: usize,
    nodes: usize,
    tasks: usize,
    waves: u32,
}

#[derive(Serialize)]
struct JsonTask<'p> {
    id: u32,
    key: &'p str,
    site: &'p str,
    cluster: &'p str,
    node: Option<&'p str>,
    layer: Layer,
    action: &'static str,
    description: String,
    playbook: &'static str,
    wave: u32,
    deps: Vec<&'p str>,
    external_deps: &'p [String],
}
