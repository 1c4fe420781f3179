//! The fold: case events → per-case facts → per-commune, per-local-day
//! counters. Pure: no I/O, no clock (the time is passed in), no async.
//!
//! The projection is defined as a sum of contributions: every case and every
//! document contributes to a few (commune, day) counters, as a function of its
//! winning facts and of the clock's current local date. Applying an event
//! takes the case's old contribution back, updates its facts, and adds the new
//! contribution; so corrections, late events and arrival order all come out
//! right by construction, and a window is just a sum of days.
//!
//! A [`Fold`] holds a working set. In memory (tests, benchmarks) it holds every
//! case; in the pipeline the store loads only the cases a batch touches (and
//! the open cases the clock makes overdue), and persists what changed plus the
//! counter deltas.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::{BuildHasher, Hash, Hasher};

use indexmap::map::raw_entry_v1::{RawEntryApiV1, RawEntryMut};
use indexmap::Equivalent;
use rustc_hash::{FxBuildHasher, FxHashMap, FxHashSet};
use smallvec::SmallVec;

use chrono::{DateTime, Days, NaiveDate, Utc};

use super::counters::DayCounters;
use super::event::{CaseEvent, DocumentSigned, EventKind, Rated, Received, Resolved, Signature};
use super::time::local_date;
use super::units::UnitCode;

/// A case, identified within its commune (MaHoSo is unique per commune's
/// software, not nationally): the case's home ([`CaseEvent::home`]), the
/// commune itself but for a unit that merged into another.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CaseKey {
    pub commune: UnitCode,
    pub case_id: String,
}

/// A signed document, identified within its commune.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DocumentKey {
    pub commune: UnitCode,
    pub document_id: String,
}

/// A [`CaseKey`] or [`DocumentKey`] borrowed from an event: what the fold
/// looks its working set up by, so that a case or document already held is
/// found without allocating its key. Hashes as the owned keys do.
#[derive(Clone, Copy)]
struct KeyRef<'a> {
    commune: &'a str,
    id: &'a str,
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.commune.hash(state);
        self.id.hash(state);
    }
}

impl Hash for CaseKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        KeyRef::from(self).hash(state);
    }
}

impl Hash for DocumentKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        KeyRef::from(self).hash(state);
    }
}

impl<'a> From<&'a CaseKey> for KeyRef<'a> {
    fn from(key: &'a CaseKey) -> Self {
        KeyRef {
            commune: key.commune.as_str(),
            id: &key.case_id,
        }
    }
}

impl<'a> From<&'a DocumentKey> for KeyRef<'a> {
    fn from(key: &'a DocumentKey) -> Self {
        KeyRef {
            commune: key.commune.as_str(),
            id: &key.document_id,
        }
    }
}

impl Equivalent<CaseKey> for KeyRef<'_> {
    fn equivalent(&self, key: &CaseKey) -> bool {
        self.id == key.case_id && self.commune == key.commune.as_str()
    }
}

impl Equivalent<DocumentKey> for KeyRef<'_> {
    fn equivalent(&self, key: &DocumentKey) -> bool {
        self.id == key.document_id && self.commune == key.commune.as_str()
    }
}

/// The fold's maps: FxHash, looked up by [`KeyRef`].
type Map<K, V> = indexmap::IndexMap<K, V, FxBuildHasher>;

/// A fact with the time of the event that established it: a later
/// `occurred_at` replaces it; an equal one replaces it too, since it arrived
/// later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fact<T> {
    pub at: DateTime<Utc>,
    pub value: T,
}

impl<T> Fact<T> {
    pub fn day(&self) -> NaiveDate {
        local_date(self.at)
    }
}

/// How a case left processing; the latest of these wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    Resolved(Resolved),
    Withdrawn,
}

/// The winning facts of one case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaseState {
    pub received: Option<Fact<Received>>,
    pub closing: Option<Fact<Closing>>,
    pub rating: Option<Fact<Rated>>,
    /// Who reported each fact, where that is not the case's home.
    pub by: Reporters,
    /// Whether the case counts late while open (open past its due date on
    /// the clock of the batch that last folded it). Kept with the case, not
    /// derived from the clock of whoever folds it next: a case written from
    /// two partitions (a receipt under an old code, its resolution under the
    /// new one) takes back exactly what was counted, whatever the two
    /// partitions' clocks say.
    pub late: bool,
    /// The events applied to the case (whether they changed it or a newer
    /// fact superseded them), by [`id_digest`], sorted (a set: the same
    /// whatever order they came in): a repeat is recognised within its case
    /// (DOMAIN.md, event contract).
    pub applied: AppliedIds,
}

/// The ids applied to one case or document: a handful (a receipt, a
/// closing, a rating, the odd correction or repeat), so kept inline, with
/// no allocation of their own, up to four.
pub type AppliedIds = SmallVec<[IdDigest; 4]>;

/// An event id as the case or document it was applied to keeps it: the
/// first 8 bytes of the SHA-256 of its UTF-8 bytes. Ids are compared only
/// within one case (or document), a handful of them, so 64 bits are ample.
pub type IdDigest = u64;

/// The [`IdDigest`] of `event_id`.
pub fn id_digest(event_id: &str) -> IdDigest {
    use sha2::{Digest, Sha256};
    let hash = Sha256::digest(event_id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash[..8]);
    u64::from_be_bytes(first)
}

/// The units that reported a case's facts, each `None` when it is the
/// case's home (always, but for a case across a merge: received by a unit
/// that then merged, resolved by its successor). Each fact counts for the
/// unit that reported it, so counters stay keyed by the unit each event
/// named.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reporters {
    pub received: Option<UnitCode>,
    pub closing: Option<UnitCode>,
    pub rating: Option<UnitCode>,
}

/// `by` unless it is `home`.
fn reporter(home: &UnitCode, by: &UnitCode) -> Option<UnitCode> {
    (by != home).then(|| by.clone())
}

impl CaseState {
    /// The due date of a case still open, if it is open and its due date is
    /// known.
    pub fn open_due_date(&self) -> Option<NaiveDate> {
        match self.closing {
            None => self.received.as_ref().map(|r| r.value.due_date),
            Some(_) => None,
        }
    }

    /// The procedure (MaTTHC) of the winning receipt, if received.
    pub fn procedure_code(&self) -> Option<&str> {
        self.received.as_ref().map(|r| &*r.value.procedure_code)
    }

    /// Whether the case is open and overdue on local date `today`.
    pub fn is_overdue(&self, today: Option<NaiveDate>) -> bool {
        matches!((self.open_due_date(), today), (Some(due), Some(t)) if t > due)
    }

    /// Calls `add(commune, day, counters)` for each commune and day this
    /// case (kept under `home`) contributes to.
    pub fn contributions<'a>(
        &'a self,
        home: &'a UnitCode,
        mut add: impl FnMut(&'a UnitCode, NaiveDate, DayCounters),
    ) {
        let received_by = self.by.received.as_ref().unwrap_or(home);
        if let Some(r) = &self.received {
            add(
                received_by,
                r.day(),
                DayCounters {
                    received: 1,
                    received_online: r.value.counts_online() as i64,
                    received_electronic: r.value.registered_electronically as i64,
                    received_digitized: r.value.digitized as i64,
                    ..DayCounters::default()
                },
            );
        }
        match &self.closing {
            Some(
                c @ Fact {
                    value: Closing::Resolved(res),
                    ..
                },
            ) => {
                let day = c.day();
                add(
                    self.by.closing.as_ref().unwrap_or(home),
                    day,
                    DayCounters {
                        due: 1,
                        on_time: (day <= res.due_date) as i64,
                        ..DayCounters::default()
                    },
                );
            }
            Some(Fact {
                value: Closing::Withdrawn,
                ..
            }) => {}
            None => {
                if self.late {
                    let due = self.open_due_date().expect("late implies a due date");
                    // An open case is late where it was received.
                    add(
                        received_by,
                        first_overdue_day(due),
                        DayCounters {
                            due: 1,
                            ..DayCounters::default()
                        },
                    );
                }
            }
        }
        if let Some(r) = &self.rating {
            let satisfied = r.value.rating.is_satisfied() as i64;
            add(
                self.by.rating.as_ref().unwrap_or(home),
                r.day(),
                DayCounters {
                    ratings: 1,
                    satisfied,
                    ..DayCounters::default()
                },
            );
        }
    }
}

/// The day an open case starts counting as late: the day after its due date.
pub fn first_overdue_day(due: NaiveDate) -> NaiveDate {
    due.checked_add_days(Days::new(1)).unwrap_or(due)
}

/// The winning signature of one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentState {
    pub signed: Fact<Signature>,
    /// The events applied to the document, as [`CaseState::applied`].
    pub applied: AppliedIds,
}

impl DocumentState {
    fn contribution(&self) -> (NaiveDate, DayCounters) {
        let digital = (self.signed.value == Signature::Digital) as i64;
        (
            self.signed.day(),
            DayCounters {
                signatures: 1,
                digital,
                ..DayCounters::default()
            },
        )
    }
}

/// What an event is about: a case, or a document.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventKey {
    Case(CaseKey),
    Document(DocumentKey),
}

impl CaseEvent {
    /// The case (kept under its home, the unit its commune became) or the
    /// document the event is about.
    pub fn key(&self) -> EventKey {
        match &self.kind {
            EventKind::DocumentSigned(d) => EventKey::Document(DocumentKey {
                commune: self.commune.clone(),
                document_id: d.document_id.clone(),
            }),
            _ => EventKey::Case(CaseKey {
                commune: self.home.clone(),
                case_id: self.case_id.clone().unwrap_or_default(),
            }),
        }
    }
}

/// What applying one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The event's facts won and the case or document changed.
    Changed,
    /// A newer fact of the same kind was already known; the event is kept as
    /// seen but changes nothing.
    Superseded,
    /// The `event_id` was seen before: the first arrival wins.
    Duplicate,
}

/// A commune and a local day: the unit every counter is kept in.
pub type DayKey = (UnitCode, NaiveDate);

/// A working set of case and document facts (each with the ids applied to
/// it), and the counter changes made so far.
#[derive(Debug, Default, Clone)]
pub struct Fold {
    today: Option<NaiveDate>,
    cases: Map<CaseKey, CaseState>,
    documents: Map<DocumentKey, DocumentState>,
    /// Ids known applied that their case or document does not list (kept
    /// apart by an earlier version of the store).
    seen: FxHashSet<String>,
    deltas: FxHashMap<DayKey, DayCounters>,
    /// Cases the clock made late (their `late` changed without an event).
    clocked: FxHashSet<CaseKey>,
    /// Open cases not counted late, by the day they start counting late
    /// and their index in `cases`: the clock visits only the cases whose
    /// day has come, not every case held. An entry may be stale (the case
    /// closed since, or its receipt moved its due date, which pushed a new
    /// entry): the clock checks the case itself.
    pending: BinaryHeap<Reverse<(NaiveDate, usize)>>,
}

impl Fold {
    /// An empty working set whose clock stands at `now` (`None`: the clock
    /// has never ticked, so no open case is overdue yet).
    pub fn new(now: Option<DateTime<Utc>>) -> Self {
        Fold {
            today: now.map(local_date),
            ..Fold::default()
        }
    }

    /// As [`Fold::new`], with room for `cases` cases and `documents`
    /// documents: a batch knows how many it will hold, and a working set
    /// that grows as it goes copies every case it holds at each doubling.
    pub fn with_capacity(now: Option<DateTime<Utc>>, cases: usize, documents: usize) -> Self {
        let mut fold = Fold::new(now);
        fold.cases.reserve(cases);
        fold.documents.reserve(documents);
        fold
    }

    /// The clock's local date.
    pub fn today(&self) -> Option<NaiveDate> {
        self.today
    }

    /// Adds a case as stored, without counting it (its contribution is
    /// already in the stored counters).
    pub fn load_case(&mut self, key: CaseKey, state: CaseState) {
        let pending = pending_day(&state);
        let (index, _) = self.cases.insert_full(key, state);
        if let Some(day) = pending {
            self.pending.push(Reverse((day, index)));
        }
    }

    /// Adds a document as stored, without counting it.
    pub fn load_document(&mut self, key: DocumentKey, state: DocumentState) {
        self.documents.insert(key, state);
    }

    /// Records that an `event_id` was already applied, for a case or
    /// document stored before ids were kept with it.
    pub fn load_seen(&mut self, event_id: String) {
        self.seen.insert(event_id);
    }

    pub fn case(&self, key: &CaseKey) -> Option<&CaseState> {
        self.cases.get(key)
    }

    /// The cases the clock made late since this working set was created:
    /// changed without an event, to be written like the others.
    pub fn clocked(&self) -> &FxHashSet<CaseKey> {
        &self.clocked
    }

    pub fn cases(&self) -> impl Iterator<Item = (&CaseKey, &CaseState)> {
        self.cases.iter()
    }

    pub fn document(&self, key: &DocumentKey) -> Option<&DocumentState> {
        self.documents.get(key)
    }

    /// Counter changes since this working set was created (for an in-memory
    /// fold started empty: the counters themselves). Entries may be zero.
    pub fn deltas(&self) -> &FxHashMap<DayKey, DayCounters> {
        &self.deltas
    }

    /// Consumes the fold, returning the states of `cases` and `documents`
    /// (in their order; each held, and named once), moved out rather than
    /// copied, and its counter changes: what a batch writes.
    ///
    /// # Panics
    ///
    /// If a key is not held (or named twice).
    pub fn into_written(
        mut self,
        cases: &[CaseKey],
        documents: &[DocumentKey],
    ) -> (
        Vec<CaseState>,
        Vec<DocumentState>,
        FxHashMap<DayKey, DayCounters>,
    ) {
        let cases = cases
            .iter()
            .map(|k| self.cases.swap_remove(k).expect("a written case is held"))
            .collect();
        let documents = documents
            .iter()
            .map(|k| {
                self.documents
                    .swap_remove(k)
                    .expect("a written document is held")
            })
            .collect();
        (cases, documents, self.deltas)
    }

    /// Applies one valid event. An id the event's case (or document)
    /// already lists is a repeat: the first arrival wins.
    pub fn apply(&mut self, event: &CaseEvent) -> Applied {
        if !self.seen.is_empty() && self.seen.contains(&event.event_id) {
            return Applied::Duplicate;
        }
        let digest = id_digest(&event.event_id);
        let at = event.occurred_at;
        match &event.kind {
            EventKind::DocumentSigned(signed) => {
                self.apply_document(&event.commune, signed, at, digest)
            }
            kind => {
                let case_id = event
                    .case_id
                    .as_deref()
                    .expect("decode guarantees a case_id on case events");
                let Fold {
                    today,
                    cases,
                    deltas,
                    pending,
                    ..
                } = self;
                let today = *today;
                let home = &event.home;
                let key = KeyRef {
                    commune: home.as_str(),
                    id: case_id,
                };
                // One hash and one probe, whether the case is held or new.
                let hash = cases.hasher().hash_one(key);
                let (index, case) =
                    match cases.raw_entry_mut_v1().from_key_hashed_nocheck(hash, &key) {
                        RawEntryMut::Occupied(held) => (held.index(), held.into_mut()),
                        RawEntryMut::Vacant(new) => {
                            let index = new.index();
                            let key = CaseKey {
                                commune: home.clone(),
                                case_id: case_id.to_string(),
                            };
                            let (_, case) =
                                new.insert_hashed_nocheck(hash, key, CaseState::default());
                            (index, case)
                        }
                    };
                if !note_applied(&mut case.applied, digest) {
                    return Applied::Duplicate;
                }
                let changed = match kind {
                    EventKind::Received(r) => would_replace(&case.received, at, r.clone()),
                    EventKind::Resolved(r) => {
                        would_replace(&case.closing, at, Closing::Resolved(*r))
                    }
                    EventKind::Withdrawn => would_replace(&case.closing, at, Closing::Withdrawn),
                    EventKind::Rated(r) => would_replace(&case.rating, at, *r),
                    EventKind::DocumentSigned(_) => unreachable!("handled above"),
                };
                let by = reporter(home, &event.commune);
                match changed {
                    Change::None => Applied::Superseded,
                    Change::Received(new) => {
                        let applied = update(deltas, today, home, case, |c| {
                            c.received = Some(new);
                            c.by.received = by;
                        });
                        if let Some(day) = pending_day(case) {
                            pending.push(Reverse((day, index)));
                        }
                        applied
                    }
                    Change::Closing(new) => update(deltas, today, home, case, |c| {
                        c.closing = Some(new);
                        c.by.closing = by;
                    }),
                    Change::Rating(new) => update(deltas, today, home, case, |c| {
                        c.rating = Some(new);
                        c.by.rating = by;
                    }),
                }
            }
        }
    }

    /// Applies a `document.signed` event: the latest signature of a
    /// document counts, on the day it was signed.
    fn apply_document(
        &mut self,
        commune: &UnitCode,
        signed: &DocumentSigned,
        at: DateTime<Utc>,
        digest: IdDigest,
    ) -> Applied {
        let key = KeyRef {
            commune: commune.as_str(),
            id: &signed.document_id,
        };
        let document_id = &signed.document_id;
        let signed = Fact {
            at,
            value: signed.signature,
        };
        let hash = self.documents.hasher().hash_one(key);
        match self
            .documents
            .raw_entry_mut_v1()
            .from_key_hashed_nocheck(hash, &key)
        {
            RawEntryMut::Occupied(held) => {
                let old = held.into_mut();
                if !note_applied(&mut old.applied, digest) {
                    return Applied::Duplicate;
                }
                if old.signed.at > at {
                    return Applied::Superseded;
                }
                let (day, c) = old.contribution();
                add(&mut self.deltas, commune, day, c.scaled(-1));
                old.signed = signed;
                let (day, c) = old.contribution();
                add(&mut self.deltas, commune, day, c);
                Applied::Changed
            }
            RawEntryMut::Vacant(vacant) => {
                let new = DocumentState {
                    signed,
                    applied: smallvec::smallvec![digest],
                };
                let (day, c) = new.contribution();
                add(&mut self.deltas, commune, day, c);
                let key = DocumentKey {
                    commune: commune.clone(),
                    document_id: document_id.clone(),
                };
                vacant.insert_hashed_nocheck(hash, key, new);
                Applied::Changed
            }
        }
    }

    /// Moves the clock to `now`: open cases whose due date has passed start
    /// counting as late. The clock never goes back; an earlier `now` is
    /// ignored.
    pub fn advance_clock(&mut self, now: DateTime<Utc>) {
        let new_today = local_date(now);
        let old_today = self.today;
        if old_today.is_some_and(|t| t >= new_today) {
            return;
        }
        self.today = Some(new_today);
        let Fold {
            cases,
            deltas,
            clocked,
            pending,
            ..
        } = self;
        while let Some(&Reverse((day, index))) = pending.peek() {
            if day > new_today {
                break;
            }
            pending.pop();
            let (key, case) = cases.get_index_mut(index).expect("a pending case is held");
            if !case.late && case.is_overdue(Some(new_today)) {
                case.late = true;
                let due = case.open_due_date().expect("overdue implies a due date");
                let received_by = case.by.received.as_ref().unwrap_or(&key.commune);
                let late = DayCounters {
                    due: 1,
                    ..DayCounters::default()
                };
                add(deltas, received_by, first_overdue_day(due), late);
                clocked.insert(key.clone());
            }
        }
    }
}

/// The day an open case not yet counted late starts counting late.
fn pending_day(case: &CaseState) -> Option<NaiveDate> {
    match case.open_due_date() {
        Some(due) if !case.late => Some(first_overdue_day(due)),
        _ => None,
    }
}

/// Adds `digest` to the sorted `applied`; false if it was there (a repeat).
fn note_applied(applied: &mut AppliedIds, digest: IdDigest) -> bool {
    match applied.binary_search(&digest) {
        Ok(_) => false,
        Err(at) => {
            applied.insert(at, digest);
            true
        }
    }
}

/// Takes a case's contribution back, changes its facts, adds the new one.
/// The two are netted first, so that only the counters the change moves
/// reach `deltas` (a rating leaves its receipt's day alone).
fn update(
    deltas: &mut FxHashMap<DayKey, DayCounters>,
    today: Option<NaiveDate>,
    home: &UnitCode,
    case: &mut CaseState,
    change: impl FnOnce(&mut CaseState),
) -> Applied {
    // At most three parts before (receipt, closing or lateness, rating)
    // and three after.
    let mut net: SmallVec<[(UnitCode, NaiveDate, DayCounters); 6]> = SmallVec::new();
    case.contributions(home, |commune, day, c| {
        net.push((commune.clone(), day, c.scaled(-1)));
    });
    change(case);
    case.late = case.is_overdue(today);
    case.contributions(home, |commune, day, c| {
        match net.iter_mut().find(|(u, d, _)| *d == day && u == commune) {
            Some((_, _, sum)) => *sum += c,
            None => net.push((commune.clone(), day, c)),
        }
    });
    for (commune, day, c) in net {
        if !c.is_zero() {
            *deltas.entry((commune, day)).or_default() += c;
        }
    }
    Applied::Changed
}

fn add(
    deltas: &mut FxHashMap<DayKey, DayCounters>,
    commune: &UnitCode,
    day: NaiveDate,
    c: DayCounters,
) {
    *deltas.entry((commune.clone(), day)).or_default() += c;
}

enum Change {
    None,
    Received(Fact<Received>),
    Closing(Fact<Closing>),
    Rating(Fact<Rated>),
}

trait IntoChange: Sized {
    fn into_change(fact: Fact<Self>) -> Change;
}

impl IntoChange for Received {
    fn into_change(fact: Fact<Self>) -> Change {
        Change::Received(fact)
    }
}

impl IntoChange for Rated {
    fn into_change(fact: Fact<Self>) -> Change {
        Change::Rating(fact)
    }
}

impl IntoChange for Closing {
    fn into_change(fact: Fact<Self>) -> Change {
        Change::Closing(fact)
    }
}

/// The change a new fact makes to a slot: it wins unless the slot holds a
/// strictly later one.
fn would_replace<T: IntoChange>(slot: &Option<Fact<T>>, at: DateTime<Utc>, value: T) -> Change {
    match slot {
        Some(old) if old.at > at => Change::None,
        _ => T::into_change(Fact { at, value }),
    }
}

#[cfg(test)]
#[path = "fold_tests.rs"]
mod tests;
