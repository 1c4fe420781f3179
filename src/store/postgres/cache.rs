//! The cases a PostgreSQL store's batches wrote, remembered so that the next
//! batch of the same partition need not read them back.
//!
//! A case usually has several events, in different batches, so most of a
//! batch's cases were written by an earlier batch of its partition; reading
//! them back was a quarter of the replay's database time. An entry is a
//! case's state as a committed transaction wrote it, with that
//! transaction's id; it is used only:
//!
//! - by the same partition, under the same claim generation (a new claim,
//!   by this member or another, leaves every older entry unused);
//! - on the same projection schema (a switch clears the cache);
//! - and never trusted: the batch's update of a remembered case names the
//!   writing transaction (`xmin`, the row version's creator), so a row
//!   written since by anyone (another partition sharing the case's unit, an
//!   operator, a restore) updates nothing, and the batch is refused with
//!   [`super::super::StoreError::StoredAlready`], the cache cleared, and the
//!   batch folded again from what is stored.
//!
//! Its size is bounded by a number of cases (`database.cached_cases`,
//! 100,000 by default; 0 turns it off), the least recently written evicted
//! first.

use std::sync::Mutex;

use hashlink::LruCache;

use crate::domain::{CaseKey, CaseState};

/// How far (in transactions) a remembered writer may lie behind the current
/// one. `xmin` keeps only the low 32 bits of a transaction id, so a row
/// rewritten 2³² transactions later could carry the same `xmin`; entries are
/// dropped long before that.
const MAX_AGE: i64 = 1 << 30;

/// The default number of cases remembered (about 350 bytes each: some 35
/// MB). Remembering cases takes 14–25% off the database's CPU in a replay,
/// and the live path's alert latency measured the same with it as without
/// (docs/BENCHMARKS.md, 2026-12-04).
pub const DEFAULT_CASES: usize = 100_000;

/// The partition a batch transaction writes, its stored generation, and the
/// transaction's own id (64-bit, `pg_current_xact_id()`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Writer {
    pub partition: i32,
    pub generation: i64,
    pub xid: i64,
}

/// Where a committed transaction's written cases go ([`super::super::Committed`]).
#[derive(Debug)]
pub(crate) struct Remember {
    pub(super) cache: std::sync::Arc<CaseCache>,
    pub(super) writer: Writer,
}

impl Remember {
    pub(crate) fn put(self, written: impl IntoIterator<Item = (CaseKey, CaseState)>) {
        let w = self.writer;
        self.cache.put(w.partition, w.generation, w.xid, written);
    }
}

#[derive(Debug)]
pub(super) struct CaseCache {
    inner: Mutex<LruCache<CaseKey, Entry>>,
}

#[derive(Debug)]
struct Entry {
    /// The writing partition (a case of a unit that several partitions
    /// feed is remembered for the last one that wrote it).
    partition: i32,
    generation: i64,
    /// The writing transaction's full (64-bit) id.
    xid: i64,
    state: CaseState,
}

/// A remembered case: its state, and the `xmin` its row must still carry.
pub(super) struct Hit {
    pub state: CaseState,
    pub xmin: i64,
}

impl CaseCache {
    pub fn new(capacity: usize) -> Self {
        CaseCache {
            inner: Mutex::new(LruCache::new(capacity)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<CaseKey, Entry>> {
        // The cache only ever holds whole entries: a panic elsewhere while
        // it was held leaves nothing half-written.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether any case is remembered at all (a capacity above 0).
    pub fn enabled(&self) -> bool {
        self.lock().capacity() > 0
    }

    /// Changes how many cases are remembered (evicting the oldest).
    pub fn set_capacity(&self, capacity: usize) {
        self.lock().set_capacity(capacity);
    }

    /// The remembered state of each of `keys` that `partition` wrote under
    /// `generation`, before `xid` (the current transaction's id) and no more
    /// than `MAX_AGE` transactions before it (a writer from the future, as
    /// after a database restored from a backup, is not trusted either), by
    /// the keys' positions.
    pub fn get(
        &self,
        partition: i32,
        generation: i64,
        xid: i64,
        keys: &[CaseKey],
    ) -> Vec<(usize, Hit)> {
        let mut cache = self.lock();
        if cache.capacity() == 0 || cache.is_empty() {
            return Vec::new();
        }
        let mut hits = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            if let Some(e) = cache.get(key) {
                if e.partition == partition
                    && e.generation == generation
                    && (1..MAX_AGE).contains(&(xid - e.xid))
                {
                    hits.push((
                        i,
                        Hit {
                            state: e.state.clone(),
                            xmin: e.xid & 0xffff_ffff,
                        },
                    ));
                }
            }
        }
        hits
    }

    /// Remembers the cases a committed transaction (`xid`) of `partition`
    /// wrote under `generation`.
    pub fn put(
        &self,
        partition: i32,
        generation: i64,
        xid: i64,
        written: impl IntoIterator<Item = (CaseKey, CaseState)>,
    ) {
        let mut cache = self.lock();
        if cache.capacity() == 0 {
            return;
        }
        for (key, state) in written {
            cache.insert(
                key,
                Entry {
                    partition,
                    generation,
                    xid,
                    state,
                },
            );
        }
    }

    /// Forgets every case.
    pub fn clear(&self) {
        self.lock().clear();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::units::{UnitKind, UnitSpec};
    use crate::domain::Units;

    fn key(units: &Units, id: &str) -> CaseKey {
        CaseKey {
            commune: units.commune("31471").unwrap().clone(),
            case_id: id.to_string(),
        }
    }

    fn state(late: bool) -> CaseState {
        CaseState {
            late,
            ..CaseState::default()
        }
    }

    fn units() -> Units {
        Units::parse(&[UnitSpec::new(
            "31471",
            "Xã Vĩnh Viễn",
            UnitKind::Commune,
            None,
        )])
        .unwrap()
    }

    #[test]
    fn a_case_is_found_only_by_its_writer_under_the_same_claim_and_not_too_old() {
        let units = units();
        let cache = CaseCache::new(10);
        let (a, b) = (key(&units, "a"), key(&units, "b"));
        cache.put(3, 7, 1_000, [(a.clone(), state(true))]);
        let found = cache.get(3, 7, 1_005, &[b, a.clone()]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, 1, "by the key's position");
        assert_eq!(found[0].1.state, state(true));
        assert_eq!(found[0].1.xmin, 1_000);
        assert!(
            cache.get(4, 7, 1_005, std::slice::from_ref(&a)).is_empty(),
            "another partition"
        );
        assert!(
            cache.get(3, 8, 1_005, std::slice::from_ref(&a)).is_empty(),
            "a later claim"
        );
        assert!(
            cache
                .get(3, 7, 1_000 + MAX_AGE, std::slice::from_ref(&a))
                .is_empty(),
            "written too many transactions ago"
        );
        assert!(
            cache.get(3, 7, 999, std::slice::from_ref(&a)).is_empty(),
            "written by a transaction after this one"
        );
        // The last writer's entry replaces the other's.
        cache.put(4, 2, (1 << 32) + 9, [(a.clone(), state(false))]);
        assert!(cache.get(3, 7, 1_005, std::slice::from_ref(&a)).is_empty());
        let found = cache.get(4, 2, (1 << 32) + 10, std::slice::from_ref(&a));
        assert_eq!(found[0].1.xmin, 9, "xmin keeps the low 32 bits");
        cache.clear();
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn the_least_recently_written_cases_go_first_and_none_are_kept_at_zero() {
        let units = units();
        let cache = CaseCache::new(2);
        let keys: Vec<CaseKey> = (0..3).map(|i| key(&units, &i.to_string())).collect();
        cache.put(0, 1, 5, keys.iter().map(|k| (k.clone(), state(false))));
        assert_eq!(cache.len(), 2);
        let found: Vec<usize> = cache
            .get(0, 1, 6, &keys)
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        assert_eq!(found, [1, 2]);
        cache.set_capacity(0);
        cache.put(0, 1, 6, [(keys[0].clone(), state(false))]);
        assert!(cache.get(0, 1, 7, &keys).is_empty());
    }
}
