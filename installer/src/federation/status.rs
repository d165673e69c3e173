//! Each site's registration as the federation host sees it: one list of the
//! host's Clusters (or KubeFedClusters), matched to the inventory's sites.

use std::collections::BTreeMap;

use kube::api::{DynamicObject, ListParams};
use serde::Serialize;

use super::{FederationError, Kube, SiteSpec, karmada, kubefed};
use crate::inventory::{FederationKind, FederationMode, Inventory};

/// One site's registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SiteStatus {
    /// The site.
    pub site: String,
    /// The cluster's name on the host.
    pub cluster: String,
    /// What the inventory asks for: `push`, `pull` or `kubefed`.
    pub mode: String,
    /// Whether the host has the cluster.
    pub registered: bool,
    /// The host's `spec.syncMode` (Karmada).
    pub host_mode: Option<String>,
    /// The cluster id the host records.
    pub id: Option<String>,
    /// The Ready condition: `True`, `False`, `Unknown` (none reported yet).
    pub ready: Option<String>,
    /// Why, when not Ready.
    pub reason: Option<String>,
    /// The cluster's labels on the host.
    pub labels: BTreeMap<String, String>,
}

/// The registration of every site of `inv`, in file order.
pub async fn status(host: &Kube<'_>, inv: &Inventory) -> Result<Vec<SiteStatus>, FederationError> {
    let specs: Vec<SiteSpec> = inv.sites.iter().map(|s| SiteSpec::new(inv, s)).collect();
    let live: BTreeMap<String, DynamicObject> = match inv.federation.kind {
        FederationKind::None => BTreeMap::new(),
        FederationKind::Karmada => host
            .list(&karmada::clusters(host), &ListParams::default())
            .await?
            .into_iter()
            .filter_map(|c| Some((c.metadata.name.clone()?, c)))
            .collect(),
        FederationKind::Kubefed => {
            let mut all = BTreeMap::new();
            let namespaces: std::collections::BTreeSet<&str> =
                specs.iter().map(|s| s.kubefed_namespace.as_str()).collect();
            for ns in namespaces {
                let api: kube::Api<DynamicObject> = kube::Api::namespaced_with(
                    host.client(),
                    ns,
                    &kubefed::kubefed_cluster_resource(),
                );
                for c in host.list(&api, &ListParams::default()).await? {
                    if let Some(name) = c.metadata.name.clone() {
                        all.insert(name, c);
                    }
                }
            }
            all
        }
    };
    Ok(specs
        .into_iter()
        .map(|spec| {
            let mode = match (inv.federation.kind, spec.mode) {
                (FederationKind::Kubefed, _) => "kubefed",
                (_, FederationMode::Pull) => "pull",
                _ => "push",
            };
            let found = live.get(&spec.cluster);
            let (ready, reason) = match found.and_then(|c| karmada::ready_condition(&c.data)) {
                Some((s, r, m)) => {
                    let why = format!("{r} {m}").trim().to_string();
                    (
                        Some(s.clone()),
                        (s != "True" && !why.is_empty()).then_some(why),
                    )
                }
                None => (found.map(|_| "Unknown".to_string()), None),
            };
            SiteStatus {
                site: spec.site.clone(),
                cluster: spec.cluster.clone(),
                mode: mode.into(),
                registered: found.is_some(),
                host_mode: found
                    .and_then(|c| c.data["spec"]["syncMode"].as_str())
                    .map(str::to_string),
                id: found.and_then(|c| {
                    c.data["spec"]["id"]
                        .as_str()
                        .map(str::to_string)
                        .or_else(|| {
                            c.metadata
                                .annotations
                                .as_ref()
                                .and_then(|a| a.get(kubefed::ID_ANNOTATION))
                                .cloned()
                        })
                }),
                ready,
                reason,
                labels: found
                    .and_then(|c| c.metadata.labels.clone())
                    .unwrap_or_default(),
            }
        })
        .collect())
}

/// The statuses as a table: SITE CLUSTER MODE REGISTERED ID READY LABELS.
pub fn table(rows: &[SiteStatus]) -> String {
    let mut lines = vec![[
        "SITE".to_string(),
        "CLUSTER".into(),
        "MODE".into(),
        "REGISTERED".into(),
        "ID".into(),
        "READY".into(),
        "LABELS".into(),
    ]];
    for r in rows {
        let mode = match &r.host_mode {
            Some(h) if !h.eq_ignore_ascii_case(&r.mode) => {
                format!("{} (host: {})", r.mode, h.to_lowercase())
            }
            _ => r.mode.clone(),
        };
        let ready = match (&r.ready, &r.reason) {
            (Some(s), Some(why)) => format!("{s} ({why})"),
            (Some(s), None) => s.clone(),
            (None, _) => "-".into(),
        };
        lines.push([
            r.site.clone(),
            r.cluster.clone(),
            mode,
            if r.registered { "yes" } else { "no" }.into(),
            r.id.clone().unwrap_or_else(|| "-".into()),
            ready,
            r.labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|i| {
            lines
                .iter()
                .map(|l| l[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for l in &lines {
        let mut row = String::new();
        for (i, cell) in l.iter().enumerate() {
            if i + 1 == l.len() {
                row.push_str(cell);
            } else {
                row.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.push_str(row.trim_end());
        out.push('\n');
    }
    out
}
