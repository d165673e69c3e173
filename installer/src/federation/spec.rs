//! What one site's registration is made of, from the inventory alone (pure):
//! the cluster's name on the host, Karmada or KubeFed, push or pull, the
//! labels, provider, region and zones it carries, and for pull mode the
//! agent image (through the site's registry mirror when it has one).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::inventory::{FederationKind, FederationMode, Inventory, Site, Sp};

/// The default karmada-agent image repository.
pub const DEFAULT_AGENT_IMAGE: &str = "docker.io/karmada/karmada-agent";
/// The default karmada-agent version (image tag).
pub const DEFAULT_AGENT_VERSION: &str = "v1.18.2";
/// The default KubeFed system namespace.
pub const DEFAULT_KUBEFED_NAMESPACE: &str = "kube-federation-system";
/// The default host cluster name in KubeFed service-account names.
pub const DEFAULT_KUBEFED_HOST: &str = "host";
/// How long waits last by default.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(120);

/// One site's registration, as the inventory describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteSpec {
    /// The site.
    pub site: String,
    /// The cluster's name on the host.
    pub cluster: String,
    /// Karmada or KubeFed.
    pub kind: FederationKind,
    /// Push or pull (Karmada).
    pub mode: FederationMode,
    /// Labels of the cluster on the host (site labels and `edgeforge.io/*`).
    pub labels: BTreeMap<String, String>,
    /// Karmada `spec.provider`.
    pub provider: Option<String>,
    /// Karmada `spec.region`.
    pub region: Option<String>,
    /// Karmada `spec.zones`.
    pub zones: Vec<String>,
    /// The cluster's API URL for the host, when the inventory sets one.
    pub api_endpoint: Option<String>,
    /// The karmada-agent image with its tag (pull mode).
    pub agent_image: String,
    /// The host's API URL for agents, when the inventory sets one.
    pub agent_host_endpoint: Option<String>,
    /// KubeFed's name of the host cluster.
    pub kubefed_host: String,
    /// KubeFed's system namespace.
    pub kubefed_namespace: String,
    /// How long waits last.
    pub wait: Duration,
}

impl SiteSpec {
    /// The registration of `site` in `inv`.
    pub fn new(inv: &Inventory, site: &Site) -> SiteSpec {
        let fed = &inv.federation;
        let repo = fed
            .agent
            .image
            .as_ref()
            .map_or(DEFAULT_AGENT_IMAGE, |s| s.as_str());
        let tag = fed
            .agent
            .version
            .as_ref()
            .map_or(DEFAULT_AGENT_VERSION, |s| s.as_str());
        let mirrors = inv.site_k3s(site).registry_mirrors.unwrap_or_default();
        let agent_image = if fed.agent.use_registry_mirror.unwrap_or(true) {
            mirrored_image(repo, tag, &mirrors)
        } else {
            format!("{repo}:{tag}")
        };
        SiteSpec {
            site: site.name.value.clone(),
            cluster: Inventory::cluster_name(site).to_string(),
            kind: fed.kind,
            mode: inv.federation_mode(site),
            labels: inv.cluster_labels(site),
            provider: site
                .federation
                .provider
                .clone()
                .or_else(|| fed.provider.clone()),
            region: site.region.clone(),
            zones: site.zone.iter().cloned().collect(),
            api_endpoint: site
                .federation
                .api_endpoint
                .as_ref()
                .map(|s| s.value.clone()),
            agent_image,
            agent_host_endpoint: fed.agent.host_endpoint.as_ref().map(|s| s.value.clone()),
            kubefed_host: fed
                .kubefed
                .host_cluster_name
                .as_ref()
                .map_or(DEFAULT_KUBEFED_HOST.into(), |s| s.value.clone()),
            kubefed_namespace: fed
                .kubefed
                .namespace
                .as_ref()
                .map_or(DEFAULT_KUBEFED_NAMESPACE.into(), |s| s.value.clone()),
            wait: fed
                .wait_timeout
                .map_or(DEFAULT_WAIT, |s| Duration::from_secs(u64::from(s))),
        }
    }
}

/// `repo:tag`, pulled through the mirror of its registry (or of `*`) when
/// `mirrors` has one: the registry part is replaced by the first mirror
/// endpoint's host, port and path, the way containerd's mirrors map it.
pub fn mirrored_image(
    repo: &str,
    tag: &str,
    mirrors: &BTreeMap<String, Vec<Sp<String>>>,
) -> String {
    let (registry, path) = split_registry(repo);
    let endpoint = mirrors
        .get(&registry)
        .or_else(|| mirrors.get("*"))
        .and_then(|list| list.first());
    match endpoint.and_then(|e| url::Url::parse(e.as_str()).ok()) {
        Some(url) => {
            let host = match (url.host_str(), url.port()) {
                (Some(h), Some(p)) => format!("{h}:{p}"),
                (Some(h), None) => h.to_string(),
                (None, _) => registry.clone(),
            };
            let prefix = url.path().trim_matches('/');
            if prefix.is_empty() {
                format!("{host}/{path}:{tag}")
            } else {
                format!("{host}/{prefix}/{path}:{tag}")
            }
        }
        None => format!("{repo}:{tag}"),
    }
}

/// The registry and path of an image repository, Docker's way:
/// `karmada/agent` is `docker.io`, `karmada/agent`; `busybox` is
/// `docker.io`, `library/busybox`.
fn split_registry(repo: &str) -> (String, String) {
    match repo.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            let path = if first == "docker.io" && !rest.contains('/') {
                format!("library/{rest}")
            } else {
                rest.to_string()
            };
            (first.to_string(), path)
        }
        Some(_) => ("docker.io".into(), repo.to_string()),
        None => ("docker.io".into(), format!("library/{repo}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mirrors(registry: &str, url: &str) -> BTreeMap<String, Vec<Sp<String>>> {
        BTreeMap::from([(registry.to_string(), vec![Sp::new(url.to_string())])])
    }

    #[test]
    fn the_agent_image_goes_through_the_site_mirror_of_its_registry() {
        assert_eq!(
            mirrored_image(DEFAULT_AGENT_IMAGE, "v1.18.2", &BTreeMap::new()),
            "docker.io/karmada/karmada-agent:v1.18.2"
        );
        assert_eq!(
            mirrored_image(
                DEFAULT_AGENT_IMAGE,
                "v1.18.2",
                &mirrors("docker.io", "https://registry.eu.example.com:5000")
            ),
            "registry.eu.example.com:5000/karmada/karmada-agent:v1.18.2"
        );
        assert_eq!(
            mirrored_image(
                "karmada/karmada-agent",
                "v1",
                &mirrors("*", "https://harbor.example.com/proxy-docker/")
            ),
            "harbor.example.com/proxy-docker/karmada/karmada-agent:v1"
        );
        assert_eq!(
            mirrored_image(
                "quay.io/x/agent",
                "v1",
                &mirrors("docker.io", "https://m:5000")
            ),
            "quay.io/x/agent:v1",
            "a mirror of another registry does not apply"
        );
        assert_eq!(
            mirrored_image("busybox", "1", &mirrors("docker.io", "https://m:5000")),
            "m:5000/library/busybox:1"
        );
    }

    #[test]
    fn a_site_spec_layers_site_over_inventory() {
        let text = "apiVersion: edgeforge/v1\ndefaults: {labels: {tier: edge}}\n\
            federation: {type: karmada, kubeconfig: k, mode: pull, provider: acme, waitTimeout: 7,\n  \
            agent: {version: v9.9.9}}\n\
            sites:\n  - name: s1\n    region: eu\n    zone: eu-1\n    labels: {rack: r1}\n    \
            federation: {mode: push, apiEndpoint: 'https://10.0.0.1:6443'}\n    \
            defaults: {k3s: {registryMirrors: {docker.io: ['https://mirror.local:5000']}}}\n    \
            nodes: [{name: a, role: server, address: 10.0.0.1}]\n  \
            - name: s2\n    cluster: {name: c2}\n    nodes: [{name: b, role: server, address: 10.0.0.2}]\n";
        let inv = crate::inventory::load_str("t.yaml", text)
            .unwrap()
            .inventory;
        let s1 = SiteSpec::new(&inv, &inv.sites[0]);
        assert_eq!(s1.mode, FederationMode::Push);
        assert_eq!(s1.provider.as_deref(), Some("acme"));
        assert_eq!(s1.region.as_deref(), Some("eu"));
        assert_eq!(s1.zones, ["eu-1"]);
        assert_eq!(s1.api_endpoint.as_deref(), Some("https://10.0.0.1:6443"));
        assert_eq!(
            s1.agent_image,
            "mirror.local:5000/karmada/karmada-agent:v9.9.9"
        );
        assert_eq!(s1.wait, Duration::from_secs(7));
        assert_eq!(
            s1.labels,
            BTreeMap::from([
                ("edgeforge.io/region".to_string(), "eu".to_string()),
                ("edgeforge.io/site".into(), "s1".into()),
                ("edgeforge.io/zone".into(), "eu-1".into()),
                ("rack".into(), "r1".into()),
                ("tier".into(), "edge".into()),
            ])
        );
        let s2 = SiteSpec::new(&inv, &inv.sites[1]);
        assert_eq!((s2.cluster.as_str(), s2.mode), ("c2", FederationMode::Pull));
        assert_eq!(s2.agent_image, "docker.io/karmada/karmada-agent:v9.9.9");
        assert!(s2.zones.is_empty());
    }
}
