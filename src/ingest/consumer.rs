//! The consumer's context: partitions claimed in the store as the group
//! assigns them, and given up as it revokes them.
//!
//! rdkafka's own rebalance logic assigns and revokes (eagerly, or
//! incrementally under `cooperative-sticky`); its `pre_rebalance` hook is
//! where each newly assigned partition is claimed (its owner generation
//! bumped, which fences the previous owner) and given its stored offset as
//! the start of fetching, and where revoked partitions are let go, before
//! librdkafka acts on either. Only the partitions a rebalance names change:
//! under incremental assignment the others keep their claims and what was
//! read for them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, Offset, Statistics};
use tokio::runtime::Handle;
use tracing::{error, warn};

use super::Backoff;
use crate::internal_events::{InternalEvent, Rebalanced};
use crate::metrics::Metrics;
use crate::shutdown::CancellationToken;
use crate::store::{Claim, Store};

/// The partitions this member owns, as claimed in the store.
#[derive(Debug, Default)]
pub struct Ownership {
    pub claims: BTreeMap<i32, Claim>,
    /// The store schema the claims were made in (see `cchc rebuild`).
    pub schema: String,
    /// Partitions claimed anew or let go since the worker last looked: what
    /// was read for them is dropped, fetching restarts at the stored offset.
    pub reset: BTreeSet<i32>,
    /// Each partition's end offset on the broker, as librdkafka's last
    /// statistics had it.
    pub ends: BTreeMap<i32, i64>,
}

/// Shared between the consumer's callbacks and the worker.
pub type Owned = Arc<Mutex<Ownership>>;

pub fn lock(owned: &Owned) -> MutexGuard<'_, Ownership> {
    owned.lock().expect("ownership lock")
}

pub struct IngestContext {
    pub store: Store,
    pub runtime: Handle,
    pub owned: Owned,
    pub cancel: CancellationToken,
    pub metrics: Arc<Metrics>,
}

impl ClientContext for IngestContext {
    /// librdkafka's statistics carry each partition's end offset: kept for
    /// the catch-up rule, and the lag is how far the stored (committed)
    /// offsets are behind them.
    fn stats(&self, statistics: Statistics) {
        let Some(t) = statistics.topics.get(self.store.topic()) else {
            return;
        };
        let mut owned = lock(&self.owned);
        owned.ends = t
            .partitions
            .iter()
            .filter(|(_, p)| p.hi_offset >= 0)
            .map(|(n, p)| (*n, p.hi_offset))
            .collect();
        let lag: i64 = owned
            .claims
            .iter()
            .filter_map(|(p, claim)| {
                let end = *owned.ends.get(p)?;
                Some((end - claim.next_offset.unwrap_or(0)).max(0))
            })
            .sum();
        self.metrics.lag.set(lag);
        self.metrics.partitions.set(owned.claims.len() as i64);
    }
}

impl ConsumerContext for IngestContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let mut claims = BTreeMap::new();
                for mut elem in tpl.elements() {
                    let partition = elem.partition();
                    let Some(claim) = self.claim(partition) else {
                        return; // shutting down
                    };
                    if let Err(e) = elem.set_offset(resume_at(&claim)) {
                        error!(partition, error = %e, "cannot set the start offset");
                    }
                    claims.insert(partition, claim);
                }
                let assigned: Vec<i32> = claims.keys().copied().collect();
                let mut owned = lock(&self.owned);
                owned.schema = self.store.schema();
                owned.reset.extend(&assigned);
                owned.claims.extend(claims);
                drop(owned);
                Rebalanced {
                    assigned: &assigned,
                    revoked: &[],
                }
                .emit(&self.metrics);
            }
            Rebalance::Revoke(tpl) => {
                let revoked: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                self.let_go(&revoked);
                Rebalanced {
                    assigned: &[],
                    revoked: &revoked,
                }
                .emit(&self.metrics);
            }
            Rebalance::Error(e) => {
                warn!(error = %e, "rebalance error");
            }
        }
    }

    /// After a rebalance error rdkafka unassigns everything (eager) or the
    /// partitions librdkafka named (incremental): the claims follow what is
    /// still assigned.
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if !matches!(rebalance, Rebalance::Error(_)) {
            return;
        }
        let assigned: BTreeSet<i32> = match consumer.assignment() {
            Ok(tpl) => tpl.elements().iter().map(|e| e.partition()).collect(),
            Err(e) => {
                warn!(error = %e, "cannot read the assignment after a rebalance error");
                BTreeSet::new()
            }
        };
        let gone: Vec<i32> = lock(&self.owned)
            .claims
            .keys()
            .filter(|p| !assigned.contains(p))
            .copied()
            .collect();
        self.let_go(&gone);
        Rebalanced {
            assigned: &[],
            revoked: &gone,
        }
        .emit(&self.metrics);
    }
}

impl IngestContext {
    /// Claims a partition in the store schema served now, retrying while the
    /// database is unreachable; `None` once the pipeline is stopping.
    pub fn claim(&self, partition: i32) -> Option<Claim> {
        let mut backoff = Backoff::new();
        loop {
            // Claim where the projections are served now, should a rebuild
            // have switched them over since the store last looked.
            if let Err(e) = self.runtime.block_on(self.store.refresh_active()) {
                warn!(partition, error = %e, "cannot read which projection schema is active");
            }
            match self.runtime.block_on(self.store.claim(partition)) {
                Ok(claim) => return Some(claim),
                Err(e) => {
                    warn!(partition, error = %e, "cannot claim partition; retrying");
                    if self.cancel.is_cancelled() {
                        return None;
                    }
                    backoff.sleep();
                }
            }
        }
    }

    fn let_go(&self, partitions: &[i32]) {
        let mut owned = lock(&self.owned);
        for p in partitions {
            owned.claims.remove(p);
            owned.reset.insert(*p);
        }
    }
}

/// Where fetching resumes for a claimed partition: its stored next offset,
/// or the beginning for a partition never applied.
pub fn resume_at(claim: &Claim) -> Offset {
    claim
        .next_offset
        .map(Offset::Offset)
        .unwrap_or(Offset::Beginning)
}
