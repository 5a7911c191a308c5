//! A configured poller bound to the identity it posts under: one call polls
//! once and returns the bodies to deliver. Readings are normalised into
//! bodies by the model under the poller's identity; bodies a poller relays
//! (a hub's spokes' answers) are delivered whole, as they are, under the
//! poller's agent id.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use crate::config::{PollerSettings, Settings};
use crate::counters::PollerCounters;
use crate::identity;
use crate::model::{
    AgentContext, Building, LimitedOutcome, Metadata, PollMemory, PostBody, RelayedBody, TargetData,
};
use crate::pollers::{Polled, Poller, PollerEnv};
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
    max_body_bytes: usize,
    /// Parts the last poll was posted in, so a steady split is said once.
    last_parts: usize,
    poller: Poller,
    /// What the last poll worked out about each datapoint: a poller reads
    /// the same registers every time, and their checksums cannot change.
    /// `None` after [`Collector::poll_once`].
    memory: Option<PollMemory>,
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
            // Attached to every reading: shared, each copy costs nothing.
            metadata: settings.metadata.iter().map(Metadata::shared).collect(),
            max_body_bytes: crate::delivery::config::DEFAULT_MAX_BODY_BYTES,
            last_parts: 1,
            poller: Poller::new(settings, env)
                .with_context(|| format!("poller {}", settings.name))?,
            memory: Some(PollMemory::default()),
        })
    }

    /// Polls once: the bodies to post, more than one when the poll is
    /// larger than `delivery.max_body_bytes`, or why there is none. Either
    /// way the failure and every dropped datapoint are logged, and the poll
    /// is counted in [`Collector::counters`].
    pub async fn collect(&mut self) -> Result<Vec<PostBody>, NoBody> {
        let mut bodies = Vec::new();
        self.collect_each(&mut |body| bodies.push(body)).await?;
        Ok(bodies)
    }

    /// Polls once as [`Collector::collect`] does, handing each body to
    /// `each` as soon as it is finished: a poll posted in parts has its
    /// first parts on their way while the rest is still being read and
    /// written, so neither its readings nor its bodies are ever held
    /// whole. Returns how many bodies were handed over.
    pub async fn collect_each(
        &mut self,
        each: &mut (dyn FnMut(PostBody) + Send),
    ) -> Result<usize, NoBody> {
        let started = std::time::Instant::now();
        let started_ms = now_ms();
        let mut handed = (0, 0);
        let mut counted = |body: PostBody| {
            handed.0 += 1;
            handed.1 += body.datapoints;
            each(body);
        };
        let (result, dropped) = self.poll_and_build(started_ms, &mut counted).await;
        self.counters.record_poll(
            now_ms(),
            started.elapsed().as_millis() as u64,
            result.as_ref().ok().map(|()| handed.1),
            dropped,
        );
        result.map(|()| handed.0)
    }

    /// Polls once as [`Collector::collect`] does, with the bodies saying
    /// `polling_interval_ms` (a spoke's answer carries the interval its
    /// hub asked for).
    pub async fn collect_with_interval(
        &mut self,
        polling_interval_ms: u64,
    ) -> Result<Vec<PostBody>, NoBody> {
        self.polling_interval_ms = polling_interval_ms;
        self.collect().await
    }

    /// Prepares for a process that polls once and exits (`once`): the
    /// bodies are built without a poll memory (see [`Building::afresh`]),
    /// since nothing it would work out is used again, and each target's
    /// readings are let go of without being freed once written. Polling
    /// again still works, each poll worked out afresh.
    pub fn poll_once(&mut self) {
        self.memory = None;
    }

    /// Bodies are never split, whatever their size (a spoke answers with
    /// one body).
    pub fn never_split(&mut self) {
        self.max_body_bytes = usize::MAX;
    }

    /// Polls once, handing over the bodies, or why there are none, and how
    /// many datapoints were dropped.
    async fn poll_and_build(
        &mut self,
        started_ms: u64,
        each: &mut (dyn FnMut(PostBody) + Send),
    ) -> (Result<(), NoBody>, usize) {
        let agent = AgentContext {
            agent_id: &self.agent_id,
            agent_program: &self.agent_program,
            hostname: &self.hostname,
            polling_interval_ms: self.polling_interval_ms,
        };
        let metadata = &self.metadata;
        let one_poll = self.memory.is_none();
        let mut building = match &mut self.memory {
            Some(memory) => memory.start(&agent, started_ms, self.max_body_bytes),
            None => Building::afresh(&agent, started_ms, self.max_body_bytes),
        };
        let polled = {
            let mut add = |mut target: TargetData| {
                add_target(&mut building, metadata, &mut target);
                if one_poll {
                    // The process exits next: freeing each reading is work
                    // no one needs.
                    std::mem::forget(target);
                } else {
                    drop(target);
                }
                building.take_finished().into_iter().for_each(&mut *each);
            };
            self.poller.poll_each(&mut add).await
        };
        match polled {
            Ok(Polled::Readings(rest)) => {
                for mut target in rest {
                    add_target(&mut building, metadata, &mut target);
                }
                let taken = building.taken();
                let outcome = building.finish();
                let (name, max_body_bytes) = (&self.name, self.max_body_bytes);
                let (result, dropped) = finished(
                    name,
                    max_body_bytes,
                    &mut self.last_parts,
                    taken,
                    outcome,
                    each,
                );
                (result, dropped)
            }
            Ok(Polled::Relayed(bodies)) => {
                drop(building);
                (self.relay(started_ms, bodies, each), 0)
            }
            Err(error) => {
                drop(building);
                tracing::warn!(poller = %self.name, agent_program = %self.agent_program, "poll failed: {error}");
                (Err(NoBody::PollFailed(error.to_string())), 0)
            }
        }
    }

    /// Bodies other agents made, each delivered whole under this poller's
    /// agent id: nothing in them is changed, split or normalised.
    fn relay(
        &self,
        started_ms: u64,
        bodies: Vec<RelayedBody>,
        each: &mut (dyn FnMut(PostBody) + Send),
    ) -> Result<(), NoBody> {
        let bodies: Vec<PostBody> = bodies
            .into_iter()
            .filter(|body| body.datapoints > 0)
            .map(|body| {
                if body.json.len() > self.max_body_bytes {
                    tracing::warn!(
                        poller = %self.name,
                        bytes = body.json.len(),
                        max_body_bytes = self.max_body_bytes,
                        "a relayed body is larger than delivery.max_body_bytes; it is posted whole, as the agent that made it wrote it"
                    );
                }
                PostBody {
                    agent_id: self.agent_id.clone(),
                    timestamp_ms: started_ms,
                    datapoints: body.datapoints,
                    json: body.json,
                }
            })
            .collect();
        if bodies.is_empty() {
            tracing::info!(poller = %self.name, "no body to relay had a datapoint; nothing to post");
            return Err(NoBody::NothingValid {
                dropped: 0,
                first: None,
            });
        }
        bodies.into_iter().for_each(each);
        Ok(())
    }
}

/// Adds a target's readings, with the poller's own metadata, to the
/// bodies being built.
fn add_target(building: &mut Building<'_, '_, '_>, metadata: &[Metadata], target: &mut TargetData) {
    if !metadata.is_empty() {
        for datapoint in &mut target.datapoints {
            datapoint.metadata.extend(metadata.iter().cloned());
        }
    }
    building.add(target);
}

/// Hands over the last bodies of a poll, `taken` having gone before, and
/// logs what was dropped and how the poll was split.
fn finished(
    name: &str,
    max_body_bytes: usize,
    last_parts: &mut usize,
    taken: usize,
    outcome: LimitedOutcome,
    each: &mut (dyn FnMut(PostBody) + Send),
) -> (Result<(), NoBody>, usize) {
    for dropped in &outcome.dropped {
        tracing::warn!(
            poller = %name,
            target = %dropped.target,
            key = %dropped.key,
            "{}",
            dropped.reason
        );
    }
    let dropped = outcome
        .dropped
        .iter()
        .filter(|dropped| dropped.reason.drops_datapoint())
        .count();
    let parts = taken + outcome.bodies.len();
    let split_changed = parts != *last_parts;
    if parts > 0 {
        *last_parts = parts;
    }
    match parts {
        0 => {
            tracing::info!(poller = %name, "poll read no valid datapoint; nothing to post");
            let first = outcome
                .dropped
                .into_iter()
                .next()
                .map(|d| format!("target {}, key {:?}: {}", d.target, d.key, d.reason));
            return (Err(NoBody::NothingValid { dropped, first }), dropped);
        }
        1 => {}
        // Said when the split changes, not every poll: a poller that
        // is always this large would fill the journal with it.
        parts if split_changed => tracing::info!(
            poller = %name,
            parts,
            max_body_bytes,
            "poll larger than delivery.max_body_bytes; posting it in parts"
        ),
        parts => tracing::debug!(
            poller = %name,
            parts,
            "poll posted in parts, as the last one was"
        ),
    }
    outcome.bodies.into_iter().for_each(each);
    (Ok(()), dropped)
}

/// Why a poll gave nothing to post.
#[derive(Debug, thiserror::Error)]
pub enum NoBody {
    /// The poll failed; the message names the poller.
    #[error("{0}")]
    PollFailed(String),
    #[error("read no valid datapoint{}", match (dropped, first) {
        (0, _) | (_, None) => String::new(),
        (1, Some(first)) => format!(" (1 dropped: {first})"),
        (n, Some(first)) => format!(" ({n} dropped, the first: {first})"),
    })]
    NothingValid {
        dropped: usize,
        first: Option<String>,
    },
}

/// Builds a collector for every configured poller (or only the one named),
/// creating agent ids on first use. `env` holds the host name the caller
/// looked up once for this start or reload.
pub fn collectors(
    settings: &Settings,
    env: &PollerEnv,
    only: Option<&str>,
) -> anyhow::Result<Vec<Collector>> {
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
            let mut collector = Collector::new(poller, agent_id, env)?;
            collector.max_body_bytes = settings.agent.delivery.max_body_bytes;
            Ok(collector)
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
