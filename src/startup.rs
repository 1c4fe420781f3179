//! Builds the pipeline from settings and runs it until stopped.

use anyhow::Context;
use tracing::info;

use crate::config::Settings;
use crate::ingest::{self, Shutdown};
use crate::projector::Projector;
use crate::store::PgStore;

/// Runs the projection consumer against the configured Kafka and PostgreSQL
/// until `shutdown` is triggered.
pub async fn run_until_stopped(settings: Settings, shutdown: Shutdown) -> anyhow::Result<()> {
    let store = PgStore::connect(&settings.database.url, settings.database.max_connections, &settings.kafka.topic)
        .await
        .with_context(|| format!("cannot open the projection store at {}", redact(&settings.database.url)))?;
    info!(topic = %settings.kafka.topic, group = %settings.kafka.group_id, "projection store ready");
    let projector = Projector::new(store, settings.units.clone());
    let handle = ingest::spawn(&settings, projector, tokio::runtime::Handle::current(), shutdown)?;
    tokio::task::spawn_blocking(move || handle.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the ingest thread panicked"))??;
    Ok(())
}

/// A connection URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..s + 3], user, &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
