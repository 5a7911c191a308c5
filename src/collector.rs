//! A configured poller bound to the identity it posts under: one call polls
//! once and returns the body to deliver.

use std::path::Path;

use anyhow::Context;

use crate::config::{PollerSettings, Settings};
use crate::identity;
use crate::model::{AgentContext, Metadata, PollMemory, PostBody};
use crate::pollers::{Poller, PollerEnv};
use crate::time::now_ms;

pub struct Collector {
    pub name: String,
    pub agent_program: String,
    pub agent_id: String,
    hostname: String,
    polling_interval_ms: u64,
    metadata: Vec<Metadata>,
    poller: Poller,
    /// What the last poll worked out about each datapoint: a poller reads
    /// the same registers every time, and their checksums cannot change.
    memory: PollMemory,
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
            hostname: env.hostname.clone(),
            polling_interval_ms: settings.polling_interval.as_millis() as u64,
            metadata: settings.metadata.clone(),
            poller: Poller::new(settings, env)
                .with_context(|| format!("poller {}", settings.name))?,
            memory: PollMemory::default(),
        })
    }

    /// Polls once. `None` when the poll failed (logged) or read nothing
    /// valid; every dropped datapoint is logged.
    pub async fn collect(&mut self) -> Option<PostBody> {
        let started_ms = now_ms();
        let mut targets = match self.poller.poll().await {
            Ok(targets) => targets,
            Err(error) => {
                tracing::warn!(poller = %self.name, agent_program = %self.agent_program, "poll failed: {error}");
                return None;
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
        let outcome = self.memory.build(&agent, started_ms, &targets);
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
        outcome.body
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
