//! The federation layer's step kinds: one per task of a site's join or
//! unjoin chain (see [`crate::plan::federation`]), each a thin call into
//! [`crate::federation`] with the task's connected API, the site's
//! registration ([`TaskData::Federation`]) and the outputs of the sibling
//! tasks it names (`identity: identify` reads `site/<site>/identify`'s).
//!
//! None is journaled: each reads the API and writes only what differs, so a
//! repeated run checks everything and changes nothing. Tokens and CA bundles
//! travel between tasks as secret outputs, never as parameters.

use serde::{Deserialize, Serialize};

use super::{Content, Params, Published, StepEnv, StepError, StepReport, TargetKind, TaskData};
use crate::federation::{self, FederationError, Identity, Kube, SiteSpec, karmada, kubefed};

/// The site's registration, from the task's data.
fn spec<'a>(env: &'a StepEnv<'a>) -> Result<&'a SiteSpec, StepError> {
    match env.task_data {
        TaskData::Federation(spec) => Ok(spec),
        _ => Err(StepError::Invalid(format!(
            "{}: this step belongs to a federation task (the plan's federation layer); task {} is not one",
            env.origin, env.task
        ))),
    }
}

/// The site's cluster (a `target: cluster` task's API) as the federation module uses it.
fn member_api<'a>(
    env: &'a StepEnv<'a>,
    progress: &'a (dyn Fn(&str) + Send + Sync),
) -> Result<Kube<'a>, StepError> {
    let role = format!("cluster of site {}", spec(env)?.site);
    Ok(Kube::new(env.kube()?, role, env.check).with_progress(progress))
}

/// The federation host (a `target: federation` task's API).
fn host_api<'a>(
    env: &'a StepEnv<'a>,
    progress: &'a (dyn Fn(&str) + Send + Sync),
) -> Result<Kube<'a>, StepError> {
    spec(env)?;
    Ok(Kube::new(env.kube()?, "federation host", env.check).with_progress(progress))
}

/// Output `name` of the sibling task `from` (`site/<site>/<from>`); `None`
/// in check mode when it has none (the sibling would create it).
fn output(env: &StepEnv<'_>, from: &str, name: &str) -> Result<Option<String>, StepError> {
    let prefix = env.task.rsplit_once('/').map_or(env.task, |(p, _)| p);
    let task = format!("{prefix}/{from}");
    match env.ctx["outputs"][&task][name].as_str() {
        Some(v) => Ok(Some(v.to_string())),
        None if env.check => Ok(None),
        None => Err(FederationError::MissingOutput {
            task,
            name: name.into(),
        }
        .into()),
    }
}

/// The cluster's identity, published by the `identify` task.
fn identity(env: &StepEnv<'_>, from: &str) -> Result<Option<Identity>, StepError> {
    let (Some(id), Some(api_endpoint)) = (
        output(env, from, "cluster_id")?,
        output(env, from, "api_endpoint")?,
    ) else {
        return Ok(None);
    };
    Ok(Some(Identity {
        id,
        api_endpoint,
        insecure: output(env, from, "insecure")?.as_deref() == Some("true"),
    }))
}

/// The step's report: changed when anything was (or would be) written, the
/// changes as its diff, a warning when TLS verification is off.
fn report(kube: &Kube<'_>, outputs: Vec<Published>) -> StepReport {
    let changes = kube.changes();
    StepReport {
        changed: !changes.is_empty(),
        diff: (!changes.is_empty()).then(|| {
            changes
                .iter()
                .map(|c| format!("{c}\n"))
                .collect::<String>()
        }),
        outputs,
        warning: kube.conn().insecure.then(|| {
            format!(
                "TLS verification of {} is off (insecureSkipTLSVerify): anyone on the path can read its tokens",
                kube.conn().source
            )
        }),
        ..StepReport::default()
    }
}

/// A check-mode step that cannot run yet because an earlier task would create its input.
fn would_run(what: &str) -> StepReport {
    StepReport {
        changed: true,
        diff: Some(format!(
            "would {what} (after the earlier tasks of this site ran)\n"
        )),
        ..StepReport::default()
    }
}

fn public(name: &str, value: &str) -> Published {
    Published {
        name: name.into(),
        value: value.into(),
        secret: false,
    }
}

fn secret(name: &str, value: &str) -> Published {
    Published {
        name: name.into(),
        value: value.into(),
        secret: true,
    }
}

/// Parameters of `federation_identify`: publishes the cluster's id
/// (`cluster_id`), `api_endpoint`, `insecure` and the kubeconfig's CA
/// (`ca_bundle`, secret).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentifyParams {}

impl Params for IdentifyParams {
    const KEY: &'static str = "federation_identify";
    const TARGETS: &'static [TargetKind] = &[TargetKind::Cluster];
    const JOURNALED: bool = false;

    async fn apply<'a>(
        &'a self,
        _: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        let progress = |m: &str| env.reach.progress(m);
        let member = member_api(env, &progress)?;
        let id = federation::identify(&member, spec(env)?).await?;
        let mut outputs = vec![
            public("cluster_id", &id.id),
            public("api_endpoint", &id.api_endpoint),
            public("insecure", if id.insecure { "true" } else { "false" }),
        ];
        if let Some(ca) = &member.conn().ca_pem {
            outputs.push(secret("ca_bundle", ca));
        }
        Ok(report(&member, outputs))
    }
}

/// Parameters of `karmada_check`: the host has the name free or holding this
/// cluster, and the id under no other name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KarmadaCheckParams {
    /// The sibling task that published the identity.
    pub identity: String,
}

impl Params for KarmadaCheckParams {
    const KEY: &'static str = "karmada_check";
    const TARGETS: &'static [TargetKind] = &[TargetKind::Federation];
    const JOURNALED: bool = false;

    async fn apply<'a>(
        &'a self,
        _: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        let progress = |m: &str| env.reach.progress(m);
        let host = host_api(env, &progress)?;
        let Some(id) = identity(env, &self.identity)? else {
            return Ok(would_run("check the host"));
        };
        let found = karmada::check(&host, spec(env)?, &id, env.reregister).await?;
        let mut r = report(&host, Vec::new());
        if let karmada::Registration::Replace { old_id } = found {
            r.warning = Some(format!(
                "the host's registration of this name (id {old_id}) will be replaced (--reregister)"
            ));
        }
        Ok(r)
    }
}

/// Parameters of `karmada_push_credentials`: the member's credentials;
/// publishes `token`, `impersonator_token` and `ca_bundle` (secrets).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KarmadaPushCredentialsParams {}

impl Params for KarmadaPushCredentialsParams {
    const KEY: &'static str = "karmada_push_credentials";
    const TARGETS: &'static [TargetKind] = &[TargetKind::Cluster];
    const JOURNALED: bool = false;

    async fn apply<'a>(
        &'a self,
        _: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        let progress = |m: &str| env.reach.progress(m);
        let member = member_api(env, &progress)?;
        let creds = karmada::push_member(&member, spec(env)?).await?;
        let outputs = match creds {
            Some(c) => vec![
                secret("token", &c.token),
                secret("impersonator_token", &c.impersonator_token),
                secret("ca_bundle", &c.ca_bundle),
            ],
            None => Vec::new(),
        };
        Ok(report(&member, outputs))
    }
}

/// Parameters of `karmada_push_register`: the host's Secrets and Cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KarmadaPushRegisterParams {
    /// The sibling task that published the identity.
    pub identity: String,
    /// The sibling task that published the credentials.
    pub credentials: String,
}

impl Params for KarmadaPushRegisterParams {
    const KEY: &'static str = "karmada_push_register";
    const TARGETS: &'static [TargetKind] = &[TargetKind::Federation];
    const JOURNALED: bool = false;

    async fn apply<'a>(
        &'a self,
        _: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        let progress = |m: &str| env.reach.progress(m);
        let host = host_api(env, &progress)?;
        let c = &self.credentials;
        let (Some(id), Some(token), Some(impersonator_token), Some(ca_bundle)) = (
            identity(env, &self.identity)?,
            output(env, c, "token")?,
            output(env, c, "impersonator_token")?,
            output(env, c, "ca_bundle")?,
        ) else {
            return Ok(would_run("register the cluster"));
        };
        let creds = karmada::MemberCredentials {
            token,
            ca_bundle,
            impersonator_token,
        };
        karmada::push_register(&host, spec(env)?, &id, &creds, env.reregister).await?;
        Ok(report(&host, Vec::new()))
    }
}

/// Parameters of `karmada_pull_agent_access`: the check, the agent's RBAC
/// and token on the host; publishes `token`, `host_ca` (secrets) and `host_url`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KarmadaPullAgentAccessParams {
    /// The sibling task that published the identity.
    pub identity: String,
}

impl Params for KarmadaPullAgentAccessParams {
    const KEY: &'static str = "karmada_pull_agent_access";
    const TARGETS: &'static [TargetKind] = &[TargetKind::Federation];
    const JOURNALED: bool = false;

    async fn apply<'a>(
        &'a self,
        _: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        let progress = |m: &str| env.reach.progress(m);
        let host = host_api(env, &progress)?;
        let Some(id) = identity(env, &self.identity)? else {
            return Ok(would_run("grant the agent access"));
        };
        let access = karmada::pull_access(&host, spec(env)?, &id, env.reregister).await?;
        let mut outputs = Vec::new();
        if let Some(a) = access {
            outputs.push(secret("token", &a.token));
            outputs.push(public("host_url", &a.host_url));
            if let Some(ca) = &a.host_ca {
                outputs.push(secret("host_ca", ca));
            }
        }
        Ok(report(&host, outputs))
    }
}

/// Parameters of `karmada_pull_agent`: the karmada-agent on the member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KarmadaPullAgentParams {
    /// The sibling task that published the identity.
    pub identity: String,
    /// The sibling task that published the agent's access.
    pub access: String,
}

impl Params for KarmadaPullAgentParams {
    const KEY: &'static str = "karmada_pull_agent";
    const TARGETS: &'static [TargetKind] = &[TargetKind::Cluster];
    const JOURNALED: bool = false;

    async fn apply<'a>(
        &'a self,
        _: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        let progress = |m: &str| env.reach.progress(m);
        let member = member_api(env, &progress)?;
        let (Some(id), Some(token), Some(host_url)) = (
            identity(env, &self.identity)?,
            output(env, &self.access, "token")?,
            output(env, &self.access, "host_url")?,
        ) else {
            return Ok(would_run("deploy the agent"));
        };
        let prefix = env.task.rsplit_once('/').map_or(env.task, |(p, _)| p);
        let host_ca = env.ctx["outputs"][format!("{prefix}/{}", self.access)]["host_ca"]
            .as_str()
            .map(str::to_string);
        let access = karmada::AgentAccess {
            token,
            host_ca,
            host_url,
        };
        karmada::pull_agent(&member, spec(env)?, &id, &access).await?;
        Ok(report(&member, Vec::new()))
    }
}

/// Parameters of `karmada_pull_register`: waits for the agent's Cluster to
/// be Ready and labels it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KarmadaPullRegisterParams {
    /// The sibling task that published the identity.
    pub identity: String,
}

impl Params for KarmadaPullRegisterParams {
    const KEY: &'static str = "karmada_pull_register";
    const TARGETS: &'static [TargetKind] = &[TargetKind::Federation];
    const JOURNALED: bool = false;

    async fn apply<'a>(
        &'a self,
        _: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        let progress = |m: &str| env.reach.progress(m);
        let host = host_api(env, &progress)?;
        let Some(id) = identity(env, &self.identity)? else {
            return Ok(would_run("wait for the agent"));
        };
        karmada::pull_registered(&host, spec(env)?, &id).await?;
        Ok(report(&host, Vec::new()))
    }
}

/// Parameters of `kubefed_check`: as `karmada_check`, for KubeFedClusters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubefedCheckParams {
    /// The sibling task that published the identity.
    pub identity: String,
}

impl Params for KubefedCheckParams {
    const KEY: &'static str = "kubefed_check";
    const TARGETS: &'static [TargetKind] = &[TargetKind::Federation];
    const JOURNALED: bool = false;

    async fn apply<'a>(
        &'a self,
        _: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        let progress = |m: &str| env.reach.progress(m);
        let host = host_api(env, &progress)?;
        let Some(id) = identity(env, &self.identity)? else {
            return Ok(would_run("check the host"));
        };
        let found = kubefed::check(&host, spec(env)?, &id, env.reregister).await?;
        let mut r = report(&host, Vec::new());
        if let karmada::Registration::Replace { old_id } = found {
            r.warning = Some(format!(
                "the host's KubeFedCluster of this name (id {old_id}) will be replaced (--reregister)"
            ));
        }
        Ok(r)
    }
}

/// Parameters of `kubefed_credentials`: the member's objects; publishes
/// `token` and `ca_bundle` (secrets).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubefedCredentialsParams {}

impl Params for KubefedCredentialsParams {
    const KEY: &'static str = "kubefed_credentials";
    const TARGETS: &'static [TargetKind] = &[TargetKind::Cluster];
    const JOURNALED: bool = false;

    async fn apply<'a>(
        &'a self,
        _: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        let progress = |m: &str| env.reach.progress(m);
        let member = member_api(env, &progress)?;
        let token = kubefed::member(&member, spec(env)?).await?;
        let mut outputs = Vec::new();
        if let Some(t) = token {
            // kubefedctl prefers the kubeconfig's CA to the token Secret's.
            let ca = member.conn().ca_pem.clone().or(t.ca).unwrap_or_default();
            outputs.push(secret("token", &t.token));
            outputs.push(secret("ca_bundle", &ca));
        }
        Ok(report(&member, outputs))
    }
}

/// Parameters of `kubefed_register`: the host's Secret and KubeFedCluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubefedRegisterParams {
    /// The sibling task that published the identity.
    pub identity: String,
    /// The sibling task that published the credentials.
    pub credentials: String,
}

impl Params for KubefedRegisterParams {
    const KEY: &'static str = "kubefed_register";
    const TARGETS: &'static [TargetKind] = &[TargetKind::Federation];
    const JOURNALED: bool = false;

    async fn apply<'a>(
        &'a self,
        _: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        let progress = |m: &str| env.reach.progress(m);
        let host = host_api(env, &progress)?;
        let (Some(id), Some(token), Some(ca)) = (
            identity(env, &self.identity)?,
            output(env, &self.credentials, "token")?,
            output(env, &self.credentials, "ca_bundle")?,
        ) else {
            return Ok(would_run("register the cluster"));
        };
        kubefed::register(&host, spec(env)?, &id, &token, &ca, env.reregister).await?;
        Ok(report(&host, Vec::new()))
    }
}

/// What an unjoin task removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Flavour {
    /// Karmada push mode.
    KarmadaPush,
    /// Karmada pull mode.
    KarmadaPull,
    /// KubeFed.
    Kubefed,
}

/// Parameters of `federation_unregister`: the registration on the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnregisterParams {
    /// Which kind of registration.
    pub flavour: Flavour,
}

impl Params for UnregisterParams {
    const KEY: &'static str = "federation_unregister";
    const TARGETS: &'static [TargetKind] = &[TargetKind::Federation];
    const JOURNALED: bool = false;

    async fn apply<'a>(
        &'a self,
        _: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        let progress = |m: &str| env.reach.progress(m);
        let host = host_api(env, &progress)?;
        let spec = spec(env)?;
        match self.flavour {
            Flavour::KarmadaPush => karmada::push_unregister(&host, spec).await?,
            Flavour::KarmadaPull => karmada::pull_unregister(&host, spec).await?,
            Flavour::Kubefed => kubefed::unregister(&host, spec).await?,
        }
        Ok(report(&host, Vec::new()))
    }
}

/// Parameters of `federation_cleanup`: what the join created on the member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CleanupParams {
    /// Which kind of registration.
    pub flavour: Flavour,
}

impl Params for CleanupParams {
    const KEY: &'static str = "federation_cleanup";
    const TARGETS: &'static [TargetKind] = &[TargetKind::Cluster];
    const JOURNALED: bool = false;

    async fn apply<'a>(
        &'a self,
        _: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        let progress = |m: &str| env.reach.progress(m);
        let member = member_api(env, &progress)?;
        let spec = spec(env)?;
        match self.flavour {
            Flavour::KarmadaPush => karmada::push_cleanup(&member, spec).await?,
            Flavour::KarmadaPull => karmada::pull_cleanup(&member, spec).await?,
            Flavour::Kubefed => kubefed::cleanup(&member, spec).await?,
        }
        Ok(report(&member, Vec::new()))
    }
}
