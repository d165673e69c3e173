//! Controller-side kinds that publish outputs for later tasks.
//!
//! `secret` publishes a secret value as `outputs["<task>"].<name>`: the value
//! given (e.g. a token read from the inventory's secret reference), else the
//! one this task published on an earlier run (outputs are persisted in the
//! state directory), else a new random one. It runs on any target and touches
//! none.

use serde::{Deserialize, Serialize};

use super::{Content, Params, Published, StepEnv, StepError, StepReport, TargetKind};

/// Parameters of `secret`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretParams {
    /// The output's name.
    pub name: String,
    /// Random bytes of a generated value (hex-encoded; default 32, at least 16).
    #[serde(default = "default_bytes")]
    pub bytes: usize,
    /// Use this value when it is not empty (e.g. `{{ secrets.k3s_token }}`).
    #[serde(default)]
    pub value: Option<String>,
}

impl Params for SecretParams {
    const KEY: &'static str = "secret";
    const TARGETS: &'static [TargetKind] = TargetKind::ALL;
    const JOURNALED: bool = false;

    async fn apply<'a>(
        &'a self,
        _: Option<&'a Content>,
        env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        if self.bytes < 16 {
            return Err(StepError::Invalid(format!(
                "secret {}: `bytes: {}` is too short to be a secret; use at least 16",
                self.name, self.bytes
            )));
        }
        let given = self.value.as_deref().filter(|v| !v.is_empty());
        let earlier = env.ctx["outputs"][env.task][&self.name]
            .as_str()
            .filter(|v| !v.is_empty());
        let (value, changed) = match (given, earlier) {
            (Some(v), _) => (v.to_string(), earlier != Some(v)),
            (None, Some(v)) => (v.to_string(), false),
            (None, None) => {
                let mut buf = vec![0u8; self.bytes];
                getrandom::fill(&mut buf).map_err(|e| {
                    StepError::Invalid(format!(
                        "secret {}: the system's random source failed: {e}",
                        self.name
                    ))
                })?;
                (hex::encode(buf), true)
            }
        };
        Ok(StepReport {
            changed,
            outputs: vec![Published {
                name: self.name.clone(),
                value,
                secret: true,
            }],
            ..StepReport::default()
        })
    }
}

fn default_bytes() -> usize {
    32
}
