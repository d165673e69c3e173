//! Kinds that steer the playbook rather than touch a target.
//!
//! `flush_handlers` runs, at its place in the playbook, every handler that
//! changed steps notified so far (the executor does it just before this
//! step), so later steps see their effect: k3s is restarted after its files
//! changed, then the next step waits for its Node. Handlers notified later
//! still run at the end of the playbook.

use serde::{Deserialize, Serialize};

use super::{Content, Params, StepEnv, StepError, StepReport, TargetKind};

/// Parameters of `flush_handlers` (none).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlushHandlersParams {}

impl Params for FlushHandlersParams {
    const KEY: &'static str = "flush_handlers";
    const TARGETS: &'static [TargetKind] = TargetKind::ALL;
    const JOURNALED: bool = false;

    async fn apply<'a>(
        &'a self,
        _: Option<&'a Content>,
        _env: &'a StepEnv<'a>,
    ) -> Result<StepReport, StepError> {
        // The executor has run the handlers by the time this step applies.
        Ok(StepReport::default())
    }
}
