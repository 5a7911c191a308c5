//! The agent's own figures ([`figures`]) and the outputs that show them:
//! the self-monitoring body, the optional [`metrics_page`] and the
//! [`state`] file that `pattoo-agentd status` reads.

pub mod figures;
pub mod metrics_page;
pub mod state;
