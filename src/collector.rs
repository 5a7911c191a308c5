//! A configured poller bound to the identity it posts under: one call polls
//! once and returns the body to deliver.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use crate::config::{PollerSettings, Settings};
use crate::counters::PollerCounters;
use crate::identity;
use crate::model::{self, AgentContext, Metadata, PostBody};
use crate::pollers::{Poller, PollerEnv};
use crate::time::now_ms;

pub struct Collector {
    pub name: String,
    pub agent_program: String,
    pub agent_id: String,
    /// `type:` as configured, for self-monitoring.
    pub kind: &'static str,
    /// What this poller has done; the daemon keeps them across reloads.
    pub counters: Arc<PollerCounters>,
    hostname: String,
    polling_interval_ms: u64,
    metadata: Vec<Metadata>,
    poller: Poller,
}

impl Collector {
    pub fn new(
        settings: &PollerSettings,
        agent_id: String,
        env: &PollerEnv,
    ) -> anyhow::Result<Self> {
        Ok(Collector {
            name: settings.name.clone(),
            agent_program: settings.agent_program.clone(),
            agent_id,
            kind: settings.kind.type_name(),
            counters: Arc::default(),
            hostname: env.hostname.clone(),
            polling_interval_ms: settings.polling_interval.as_millis() as u64,
            metadata: settings.metadata.clone(),
            poller: Poller::new(settings, env)
                .with_context(|| format!("poller {}", settings.name))?,
        })
    }

    /// Polls once. `None` when the poll failed (logged) or read nothing
    /// valid; every dropped datapoint is logged.
    /// Counts the poll in [`Collector::counters`].
    pub async fn collect(&mut self) -> Option<PostBody> {
        let started = std::time::Instant::now();
        let started_ms = now_ms();
        let (body, dropped) = self.poll_and_build(started_ms).await;
        self.counters.record_poll(
            now_ms(),
            started.elapsed().as_millis() as u64,
            body.as_ref().map(|body| body.datapoints),
            dropped,
        );
        body
    }

    /// The body of one poll, if any, and how many datapoints were dropped.
    async fn poll_and_build(&mut self, started_ms: u64) -> (Option<PostBody>, usize) {
        let mut targets = match self.poller.poll().await {
            Ok(targets) => targets,
            Err(error) => {
                tracing::warn!(poller = %self.name, agent_program = %self.agent_program, "poll failed: {error}");
                return (None, 0);
            }
        };
        if !self.metadata.is_empty() {
            for datapoint in targets.iter_mut().flat_map(|t| t.datapoints.iter_mut()) {
                datapoint.metadata.extend(self.metadata.iter().cloned());
            }
        }
        let agent = AgentContext {
            agent_id: &self.agent_id,
            agent_program: &self.agent_program,
            hostname: &self.hostname,
            polling_interval_ms: self.polling_interval_ms,
        };
        let outcome = model::build(&agent, started_ms, &targets);
        for dropped in &outcome.dropped {
            tracing::warn!(
                poller = %self.name,
                target = %dropped.target,
                key = %dropped.key,
                "{}",
                dropped.reason
            );
        }
        if outcome.body.is_none() {
            tracing::info!(poller = %self.name, "poll read no valid datapoint; nothing to post");
        }
        let dropped = outcome
            .dropped
            .iter()
            .filter(|dropped| dropped.reason.drops_datapoint())
            .count();
        (outcome.body, dropped)
    }
}

/// Builds a collector for every configured poller (or only the one named),
/// creating agent ids on first use.
pub fn collectors(settings: &Settings, only: Option<&str>) -> anyhow::Result<Vec<Collector>> {
    let env = PollerEnv {
        hostname: identity::hostname(settings.agent.hostname.as_deref()),
    };
    let selected: Vec<&PollerSettings> = settings
        .pollers
        .iter()
        .filter(|p| only.is_none_or(|name| p.name == name))
        .collect();
    if let Some(name) = only {
        anyhow::ensure!(
            !selected.is_empty(),
            "no poller is named {name:?}; configured: {}",
            poller_names(settings)
        );
    }
    selected
        .into_iter()
        .map(|poller| {
            let agent_id = agent_id(&settings.pattoo.daemon_directory, &poller.agent_program)?;
            Collector::new(poller, agent_id, &env)
        })
        .collect()
}

fn agent_id(daemon_directory: &Path, agent_program: &str) -> anyhow::Result<String> {
    Ok(identity::agent_id(daemon_directory, agent_program)?)
}

fn poller_names(settings: &Settings) -> String {
    let names: Vec<&str> = settings.pollers.iter().map(|p| p.name.as_str()).collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}
