//! Delivery: posting bodies to the pattoo agent API, and the on-disk cache
//! that keeps what could not be posted until it can be.

pub mod config;
#[derive(Clone)]
pub struct Delivery;
impl Delivery {
    pub fn new(_s: &crate::config::Settings) -> anyhow::Result<Self> {
        Ok(Delivery)
    }
    pub async fn submit(&self, _b: crate::model::PostBody) {}
    pub async fn store(&self, _b: crate::model::PostBody) {}
    pub async fn run_replay(&self, _s: tokio::sync::watch::Receiver<bool>) {}
    pub fn status_line(&self) -> String {
        String::new()
    }
}
