//! When each partition's records go to a commit: a pure state machine
//! (time is an argument, nothing is read or written), so that the rules are
//! tested here and the worker only carries them out.
//!
//! Per partition:
//! - records wait in arrival order; a record whose offset is not beyond the
//!   last one kept for the partition is dropped (a refetch after a seek
//!   must not put a record in twice);
//! - a batch goes when it holds `max_records` (the rest wait, their clock
//!   restarted) or its first record has waited `max_wait`; a clock tick can
//!   make one go at once, even empty;
//! - at most one batch per partition is in flight: records keep arriving
//!   meanwhile, and the next batch waits for [`Batcher::settled`];
//! - reading pauses while `max_held` records are held, waiting or in
//!   flight, over all partitions: what a replay holds is bounded whatever
//!   the number of partitions;
//! - a partition held back (a backoff after a transient failure) sends
//!   nothing until its time;
//! - [`Batcher::reset`] forgets what was read (a rebalance, a rewind to the
//!   stored offset), but not a batch in flight.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::projector::Decoded;

/// What the batcher needs to know of a record: where it is.
pub trait Positioned {
    fn partition(&self) -> i32;
    fn offset(&self) -> i64;
}

impl Positioned for Decoded {
    fn partition(&self) -> i32 {
        self.partition
    }
    fn offset(&self) -> i64 {
        self.offset
    }
}

/// Per-partition batching (see the module documentation).
#[derive(Debug)]
pub struct Batcher<T> {
    max_records: usize,
    max_wait: Duration,
    max_held: usize,
    lanes: BTreeMap<i32, Lane<T>>,
}

#[derive(Debug)]
struct Lane<T> {
    pending: Vec<T>,
    /// When the first pending record arrived.
    since: Option<Instant>,
    /// The offset of the last record kept (pending or handed out).
    last_offset: Option<i64>,
    /// The records of the batch in flight, if one is.
    in_flight: Option<usize>,
    held_until: Option<Instant>,
}

impl<T> Default for Lane<T> {
    fn default() -> Self {
        Lane {
            pending: Vec::new(),
            since: None,
            last_offset: None,
            in_flight: None,
            held_until: None,
        }
    }
}

impl<T> Lane<T> {
    fn free(&self, now: Instant) -> bool {
        self.in_flight.is_none() && self.held_until.is_none_or(|t| now >= t)
    }
}

impl<T: Positioned> Batcher<T> {
    /// Batches of at most `max_records`, sent once their first record has
    /// waited `max_wait`; reading pauses while `max_held` records are held
    /// (at least a batch's worth).
    pub fn new(max_records: usize, max_wait: Duration, max_held: usize) -> Self {
        let max_records = max_records.max(1);
        Batcher {
            max_records,
            max_wait,
            max_held: max_held.max(max_records),
            lanes: BTreeMap::new(),
        }
    }

    /// Whether a record of `partition` at `offset` would be kept: its
    /// offset is beyond the last one kept.
    pub fn accepts(&self, partition: i32, offset: i64) -> bool {
        self.lanes
            .get(&partition)
            .and_then(|l| l.last_offset)
            .is_none_or(|last| offset > last)
    }

    /// Keeps a record for its partition's next batch. Returns false (and
    /// drops it) when its offset is not beyond the last one kept.
    pub fn push(&mut self, record: T, now: Instant) -> bool {
        let lane = self.lanes.entry(record.partition()).or_default();
        if lane.last_offset.is_some_and(|last| record.offset() <= last) {
            return false;
        }
        lane.last_offset = Some(record.offset());
        lane.since.get_or_insert(now);
        if lane.pending.capacity() == 0 {
            // A batch's worth at once, rather than growing into it.
            lane.pending.reserve(self.max_records);
        }
        lane.pending.push(record);
        true
    }

    /// Forgets the records read for `partition` and not handed out; the
    /// next record accepted may have any offset. A batch in flight stays in
    /// flight.
    pub fn reset(&mut self, partition: i32) {
        if let Some(lane) = self.lanes.get_mut(&partition) {
            lane.pending.clear();
            lane.since = None;
            lane.last_offset = None;
        }
    }

    /// Records held, waiting or in flight, over all partitions.
    pub fn held(&self) -> usize {
        self.lanes
            .values()
            .map(|l| l.pending.len() + l.in_flight.unwrap_or(0))
            .sum()
    }

    /// Whether reading should pause until a commit completes: `max_held`
    /// records are held.
    pub fn is_full(&self) -> bool {
        self.held() >= self.max_held
    }

    /// How long to wait for more records before a batch can go: until the
    /// first waiting batch of a free partition is due, at most `idle`.
    pub fn wait(&self, now: Instant, idle: Duration) -> Duration {
        self.lanes
            .values()
            .filter(|l| l.in_flight.is_none())
            .filter_map(|l| {
                let due = l.since? + self.max_wait;
                let at = l.held_until.map_or(due, |held| held.max(due));
                Some(at.saturating_duration_since(now))
            })
            .min()
            .unwrap_or(idle)
            .min(idle)
    }

    /// The next batch of `partition`, if one can go now: its waiting
    /// records once it holds `max_records` or its first has waited
    /// `max_wait`, or whatever is waiting (possibly nothing) when `force`
    /// (a clock tick that re-evaluates the partition). It is then in flight
    /// until [`Batcher::settled`].
    pub fn take(&mut self, partition: i32, now: Instant, force: bool) -> Option<Vec<T>> {
        let (max_records, max_wait) = (self.max_records, self.max_wait);
        let lane = self.lanes.entry(partition).or_default();
        if !lane.free(now) {
            return None;
        }
        let ready = lane.pending.len() >= max_records
            || lane
                .since
                .is_some_and(|t| now.duration_since(t) >= max_wait);
        if !(ready || force) {
            return None;
        }
        let records = if lane.pending.len() > max_records {
            let rest = lane.pending.split_off(max_records);
            lane.since = Some(now);
            std::mem::replace(&mut lane.pending, rest)
        } else {
            lane.since = None;
            std::mem::take(&mut lane.pending)
        };
        lane.in_flight = Some(records.len());
        lane.held_until = None;
        Some(records)
    }

    /// The partition's batch in flight is done with (committed or refused);
    /// `hold_until` keeps its next one back until then.
    pub fn settled(&mut self, partition: i32, hold_until: Option<Instant>) {
        let lane = self.lanes.entry(partition).or_default();
        lane.in_flight = None;
        lane.held_until = hold_until;
    }

    /// Whether a batch of `partition` is in flight.
    pub fn is_in_flight(&self, partition: i32) -> bool {
        self.lanes
            .get(&partition)
            .is_some_and(|l| l.in_flight.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projector::Record;

    impl Positioned for Record {
        fn partition(&self) -> i32 {
            self.partition
        }
        fn offset(&self) -> i64 {
            self.offset
        }
    }

    const WAIT: Duration = Duration::from_millis(100);

    fn record(partition: i32, offset: i64) -> Record {
        Record {
            partition,
            offset,
            key: None,
            value: None,
            written_ms: None,
        }
    }

    fn offsets(records: &[Record]) -> Vec<i64> {
        records.iter().map(|r| r.offset).collect()
    }

    #[test]
    fn a_batch_goes_when_full_or_when_its_first_record_has_waited() {
        let t0 = Instant::now();
        let mut b = Batcher::new(3, WAIT, 6);
        b.push(record(0, 0), t0);
        b.push(record(0, 1), t0 + Duration::from_millis(50));
        assert_eq!(b.take(0, t0 + Duration::from_millis(99), false), None);
        let batch = b.take(0, t0 + WAIT, false).unwrap();
        assert_eq!(offsets(&batch), [0, 1]);
        b.settled(0, None);
        for o in 2..5 {
            b.push(record(0, o), t0 + WAIT);
        }
        assert_eq!(offsets(&b.take(0, t0 + WAIT, false).unwrap()), [2, 3, 4]);
    }

    #[test]
    fn a_batch_over_the_limit_is_split_and_the_rest_waits_afresh() {
        let t0 = Instant::now();
        let mut b = Batcher::new(2, WAIT, 4);
        for o in 0..5 {
            b.push(record(0, o), t0);
        }
        let later = t0 + 2 * WAIT;
        assert_eq!(offsets(&b.take(0, later, false).unwrap()), [0, 1]);
        b.settled(0, None);
        // Two more make a full batch at once; the fifth waits its own time.
        assert_eq!(offsets(&b.take(0, later, false).unwrap()), [2, 3]);
        b.settled(0, None);
        assert_eq!(b.take(0, later + WAIT / 2, false), None);
        assert_eq!(offsets(&b.take(0, later + WAIT, false).unwrap()), [4]);
    }

    #[test]
    fn one_batch_per_partition_is_in_flight_while_records_keep_arriving() {
        let t0 = Instant::now();
        let mut b = Batcher::new(2, WAIT, 4);
        b.push(record(0, 0), t0);
        b.push(record(0, 1), t0);
        assert!(b.take(0, t0, false).is_some());
        assert!(b.is_in_flight(0));
        b.push(record(0, 2), t0);
        b.push(record(0, 3), t0);
        assert_eq!(b.take(0, t0 + WAIT, false), None, "still in flight");
        // Other partitions are not held up.
        b.push(record(1, 0), t0);
        b.push(record(1, 1), t0);
        assert!(b.take(1, t0, false).is_some());
        b.settled(0, None);
        assert_eq!(offsets(&b.take(0, t0, false).unwrap()), [2, 3]);
    }

    #[test]
    fn a_held_partition_sends_nothing_until_its_time() {
        let t0 = Instant::now();
        let mut b = Batcher::new(1, WAIT, 2);
        b.push(record(0, 0), t0);
        assert!(b.take(0, t0, false).is_some());
        let until = t0 + Duration::from_secs(1);
        b.settled(0, Some(until));
        b.push(record(0, 1), t0);
        assert_eq!(b.take(0, t0 + WAIT, true), None, "not even a tick");
        assert_eq!(b.wait(t0, Duration::from_secs(5)), Duration::from_secs(1));
        assert_eq!(offsets(&b.take(0, until, false).unwrap()), [1]);
    }

    #[test]
    fn a_tick_sends_a_batch_at_once_even_an_empty_one() {
        let t0 = Instant::now();
        let mut b = Batcher::new(10, WAIT, 20);
        assert_eq!(b.take(3, t0, false), None);
        assert_eq!(b.take(3, t0, true), Some(vec![]));
        b.settled(3, None);
        b.push(record(3, 7), t0);
        assert_eq!(offsets(&b.take(3, t0, true).unwrap()), [7]);
    }

    #[test]
    fn a_record_not_beyond_the_last_one_kept_is_dropped_until_a_reset() {
        let t0 = Instant::now();
        let mut b = Batcher::new(10, WAIT, 20);
        assert!(b.accepts(0, 5));
        assert!(b.push(record(0, 5), t0));
        assert!(!b.accepts(0, 5) && !b.accepts(0, 4) && b.accepts(0, 6));
        assert!(b.accepts(1, 0), "per partition");
        assert!(!b.push(record(0, 5), t0));
        assert!(!b.push(record(0, 4), t0));
        assert!(
            b.push(record(0, 9), t0),
            "gaps are fine (compaction, markers)"
        );
        assert_eq!(b.held(), 2);
        b.reset(0);
        assert_eq!(b.held(), 0);
        assert!(
            b.push(record(0, 5), t0),
            "read again from the stored offset"
        );
    }

    #[test]
    fn a_reset_keeps_the_batch_in_flight_in_flight() {
        let t0 = Instant::now();
        let mut b = Batcher::new(1, WAIT, 2);
        b.push(record(0, 0), t0);
        assert!(b.take(0, t0, false).is_some());
        b.push(record(0, 1), t0);
        b.reset(0);
        assert!(b.is_in_flight(0));
        assert_eq!(b.take(0, t0 + WAIT, true), None);
    }

    #[test]
    fn the_wait_is_until_the_first_batch_that_can_go_is_due() {
        let t0 = Instant::now();
        let idle = Duration::from_millis(50);
        let mut b = Batcher::new(10, WAIT, 20);
        assert_eq!(b.wait(t0, idle), idle);
        b.push(record(0, 0), t0);
        b.push(record(1, 0), t0 + Duration::from_millis(30));
        assert_eq!(
            b.wait(t0 + Duration::from_millis(80), idle),
            Duration::from_millis(20)
        );
        assert_eq!(
            b.wait(t0 + Duration::from_millis(200), idle),
            Duration::ZERO
        );
        // A partition in flight does not count.
        let mut b = Batcher::new(1, WAIT, 2);
        b.push(record(0, 0), t0);
        b.take(0, t0, false).unwrap();
        b.push(record(0, 1), t0);
        assert_eq!(b.wait(t0, idle), idle);
    }

    #[test]
    fn reading_pauses_while_the_most_held_are_waiting_or_in_flight() {
        let t0 = Instant::now();
        let mut b = Batcher::new(2, WAIT, 4);
        for o in 0..3 {
            b.push(record(0, o), t0);
        }
        assert!(!b.is_full());
        assert_eq!(offsets(&b.take(0, t0, false).unwrap()), [0, 1]);
        // Two in flight, one waiting: a fourth record fills it.
        assert_eq!(b.held(), 3);
        b.push(record(1, 0), t0);
        assert!(b.is_full(), "records in flight count");
        b.settled(0, None);
        assert!(!b.is_full(), "a commit done makes room");
        // At least a batch's worth is always held.
        let mut b = Batcher::new(3, WAIT, 1);
        b.push(record(0, 0), t0);
        b.push(record(0, 1), t0);
        assert!(!b.is_full());
        b.push(record(0, 2), t0);
        assert!(b.is_full());
    }
}
