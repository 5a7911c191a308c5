//! The agent's own figures ([`figures`]) and the outputs that show them:
//! the self-monitoring body, the optional [`metrics_page`] and the
//! [`state`] file that `pattoo-agentd status` reads.

pub mod figures;
pub mod metrics_page;
pub mod state;

use std::time::Duration;

use crate::config::Settings;
use crate::identity::IdentityError;
use crate::model::{self, AgentContext, PostBody};

use self::figures::Figures;

/// Who the self-monitoring body is posted as, and how the body is built:
/// the daemon's self-monitoring job and `once --print` both use it.
#[derive(Debug, Clone)]
pub struct SelfMonitoring {
    agent_id: String,
    agent_program: String,
    hostname: String,
    /// The polling interval the body reports.
    pub interval: Duration,
}

impl SelfMonitoring {
    /// Reads (creating it on first use) the agent id of the configured
    /// `self_monitoring:` agent program; the body posts as `hostname`.
    pub fn new(settings: &Settings, hostname: &str) -> Result<Self, IdentityError> {
        let config = &settings.agent.self_monitoring;
        Ok(SelfMonitoring {
            agent_id: crate::identity::agent_id(
                &settings.pattoo.daemon_directory,
                &config.agent_program,
            )?,
            agent_program: config.agent_program.clone(),
            hostname: hostname.to_owned(),
            interval: config.polling_interval,
        })
    }

    /// `figures` as one body timestamped `now_ms`; `None` if no figure was
    /// valid (a dropped figure is logged).
    pub fn body(&self, figures: &Figures, now_ms: u64) -> Option<PostBody> {
        let agent = AgentContext {
            agent_id: &self.agent_id,
            agent_program: &self.agent_program,
            hostname: &self.hostname,
            polling_interval_ms: self.interval.as_millis() as u64,
        };
        let outcome = model::build(&agent, now_ms, &figures.targets(now_ms));
        for dropped in &outcome.dropped {
            tracing::warn!(target = %dropped.target, key = %dropped.key, "self-monitoring: {}", dropped.reason);
        }
        outcome.body
    }
}
