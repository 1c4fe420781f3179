//! `cchc dead-letters`: list the records kept aside, and send one through
//! the events topic again (its original bytes, or a corrected event).

use std::fmt::Write;
use std::time::Duration;

use anyhow::Context;
use rdkafka::producer::FutureRecord;

use crate::config::Settings;
use crate::domain::event::record_key;
use crate::store::Store;

/// Dead letters with an id above `after`, one entry each.
pub async fn list_dead_letters(
    settings: &Settings,
    after: i64,
    limit: i64,
) -> anyhow::Result<String> {
    let store = Store::connect(&settings.database.url, 2, &settings.kafka.topic).await?;
    let mut out = String::new();
    for r in store.dead_letters(after, limit).await? {
        let value = r
            .value
            .as_deref()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        let value: String = value.chars().take(120).collect();
        let resent = r
            .resent_at
            .map(|t| format!(" (resent {t})"))
            .unwrap_or_default();
        writeln!(
            out,
            "{}\t{}/{}@{}\t{}\t{}{resent}\n\t{value}",
            r.id, r.topic, r.partition, r.offset, r.reason_code, r.reason
        )?;
    }
    Ok(out)
}

/// Sends dead letter `id` through the events topic again: its original
/// bytes, or the corrected event read from `corrected`.
pub async fn resend_dead_letter(
    settings: &Settings,
    id: i64,
    corrected: Option<&std::path::Path>,
) -> anyhow::Result<String> {
    let store = Store::connect(&settings.database.url, 2, &settings.kafka.topic).await?;
    let row = store
        .dead_letter(id)
        .await?
        .with_context(|| format!("no dead letter {id}"))?;
    let value = match corrected {
        Some(path) => {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?
        }
        None => row.value.clone().unwrap_or_default(),
    };
    crate::kafka::check_connection(&settings.kafka, &settings.file).await?;
    let key = record_key(&value)
        .map(String::into_bytes)
        .or(row.record_key.clone())
        .unwrap_or_default();
    let delivery = crate::kafka::producer(&settings.kafka)?
        .send(
            FutureRecord::to(&settings.kafka.topic)
                .key(&key)
                .payload(&value),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)?;
    store.mark_resent(id).await?;
    Ok(format!(
        "dead letter {id} sent to {} partition {} offset {}",
        settings.kafka.topic, delivery.partition, delivery.offset
    ))
}
