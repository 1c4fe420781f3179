//! The Kafka consumer: a consumer-group member whose offsets live in the
//! projection database, not in Kafka.
//!
//! Why this shape: the exactly-once effect comes from writing each batch's
//! projections and its next offsets in one database transaction. On
//! assignment, the member *claims* each partition in the database (bumping
//! its owner generation) and starts fetching at the stored offset; every
//! commit checks the generation, so a member that lost a partition (expelled
//! while stuck, or a zombie after a rebalance) cannot write for it again.
//! Kafka's own committed offsets are never used.
//!
//! - [`consumer`]: the rebalance hooks that claim and let go of partitions;
//! - [`batcher`]: when each partition's records go to a commit (pure);
//! - [`worker`]: the loop that reads, hands batches to the projector on the
//!   tokio runtime (one in flight per partition, partitions concurrently)
//!   and books their outcomes.
//!
//! The consumer runs on its own thread with a blocking `BaseConsumer`, so the
//! rebalance hooks can claim partitions synchronously before fetching
//! starts; database calls are driven on the tokio runtime through a handle.

mod batcher;
mod consumer;
mod worker;

use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::Handle;

use crate::clock::Clock;
use crate::config::Settings;
use crate::projector::Projector;
use crate::shutdown::CancellationToken;

pub use batcher::Batcher;

/// Starts the consumer thread. It runs until `cancel` is cancelled or a
/// non-recoverable error occurs.
pub fn spawn(
    settings: &Settings,
    projector: Projector,
    runtime: Handle,
    cancel: CancellationToken,
) -> anyhow::Result<JoinHandle<anyhow::Result<()>>> {
    let owned = consumer::Owned::default();
    let context = consumer::IngestContext {
        store: projector.store().clone(),
        runtime: runtime.clone(),
        owned: owned.clone(),
        cancel: cancel.clone(),
        metrics: projector.metrics().clone(),
    };
    let kafka = crate::kafka::consumer(&settings.kafka, context)?;
    rdkafka::consumer::Consumer::subscribe(&kafka, &[settings.kafka.topic.as_str()])?;
    let worker = worker::Worker::new(
        kafka,
        projector,
        runtime,
        owned,
        cancel,
        worker::Pace {
            max_records: settings.batch.max_records,
            max_held: settings.batch.max_held_records,
            max_wait: Duration::from_millis(settings.batch.max_wait_ms),
            tick: Duration::from_secs(settings.clock.tick_seconds),
            clock: Clock::new(&settings.clock),
        },
    );
    Ok(std::thread::Builder::new()
        .name("ingest".into())
        .spawn(move || worker.run())?)
}

/// Waits between attempts: each twice the last, from 50 ms up to 2 s.
#[derive(Debug)]
pub(crate) struct Backoff(Duration);

impl Backoff {
    pub(crate) fn new() -> Self {
        Backoff(Duration::from_millis(50))
    }

    pub(crate) fn sleep(&mut self) {
        std::thread::sleep(self.next());
    }

    /// The wait before the next attempt.
    pub(crate) fn next(&mut self) -> Duration {
        let wait = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(2));
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_two_seconds() {
        let mut b = Backoff::new();
        let waits: Vec<u128> = (0..8).map(|_| b.next().as_millis()).collect();
        assert_eq!(waits, [50, 100, 200, 400, 800, 1600, 2000, 2000]);
    }
}
