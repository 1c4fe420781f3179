//! Property tests: `decode` + `Fold` against a deliberately simple reference
//! model of DOMAIN.md, written here without reusing any of the Fold's logic.
//!
//! The reference (tests/reference/mod.rs, shared with the end-to-end tests
//! of the pipeline) takes the whole arrival sequence and the final clock and
//! computes every (commune, local day) counter from scratch; its module doc
//! lists the rules and the choices it makes where DOMAIN.md could be read
//! two ways.
//!
//! Events are generated as model values, rendered to JSON text (with random
//! offsets, fractional seconds and unknown fields) and decoded by
//! `cchc_pipeline::domain::decode`, so decode and fold are tested together.
//! Small id spaces make corrections and collisions frequent; times cluster
//! around local midnight (17:00 UTC) and on a small pool of instants, so that
//! equal `occurred_at` values happen often (see
//! `the_generator_makes_the_interesting_cases_often`).
//!
//! No deviation of the Fold from DOMAIN.md was found. The batch property
//! writes down two things the store must do for batches to add up (the
//! Fold cannot check them itself): a batch's `Fold::new` gets the clock the
//! stored counters were made with (not "now"; `advance_clock(now)` then
//! moves it), and the working set includes every open case whose due date
//! is in `[old local today, new local today)`, since `advance_clock` only
//! sees loaded cases.

// A scenario reads best from top to bottom: the 100-line limit of
// clippy.toml is for src/.
#![allow(clippy::too_many_lines)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::OnceLock;

use chrono::{DateTime, Datelike, Days, FixedOffset, NaiveDate, Utc};
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use serde_json::json;

mod reference;
use reference::{
    counts_of, local_day, Counts, Fact, Table, DIGITAL, DIGITIZED, DUE, ELECTRONIC, ONLINE,
    ON_TIME, RATINGS, RECEIVED, SATISFIED, SIGNATURES,
};

use cchc_pipeline::domain::{
    decode, Applied, CaseEvent, CaseKey, CaseState, DayCounters, DocumentKey, DocumentState, Fold,
    Indicator, UnitKind, UnitSpec, Units, Window,
};

// ---------------------------------------------------------------------------
// The generated world
// ---------------------------------------------------------------------------

/// The communes events are spread over (a subset of Long Mỹ's nine).
const COMMUNES: [&str; 3] = ["31471", "31477", "31481"];
/// Cases per commune: few, so that corrections happen often.
const CASES: u8 = 4;
/// Documents per commune.
const DOCS: u8 = 3;

const NS_PER_SECOND: i64 = 1_000_000_000;
const NS_PER_DAY: i64 = 86_400 * NS_PER_SECOND;
const LOCAL_OFFSET_NS: i64 = 7 * 3_600 * NS_PER_SECOND;
/// 2023-03-27T00:00:00Z.
const BASE_NS: i64 = 1_679_875_200 * NS_PER_SECOND;

fn units() -> &'static Units {
    static UNITS: OnceLock<Units> = OnceLock::new();
    UNITS.get_or_init(|| {
        let mut specs = vec![UnitSpec::new("937", "Thị xã Long Mỹ", UnitKind::Town, None)];
        for (code, name, kind) in [
            ("31471", "Phường Thuận An", UnitKind::Ward),
            ("31472", "Phường Trà Lồng", UnitKind::Ward),
            ("31473", "Phường Bình Thạnh", UnitKind::Ward),
            ("31474", "Xã Long Bình", UnitKind::Commune),
            ("31475", "Phường Vĩnh Tường", UnitKind::Ward),
            ("31477", "Xã Long Trị", UnitKind::Commune),
            ("31478", "Xã Long Trị A", UnitKind::Commune),
            ("31480", "Xã Long Phú", UnitKind::Commune),
            ("31481", "Xã Tân Phú", UnitKind::Commune),
        ] {
            specs.push(UnitSpec::new(code, name, kind, Some("937")));
        }
        Units::parse(&specs).expect("the Long Mỹ units are valid")
    })
}

/// An instant (nanoseconds since the epoch) and the offset it is written
/// with (`None`: written with `Z`).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Instant {
    ns: i64,
    offset_min: Option<i32>,
}

/// One generated event, before it is rendered to JSON.
#[derive(Clone, Debug, PartialEq)]
struct Ev {
    id: String,
    commune: usize,
    at: Instant,
    kind: Kind,
    /// Adds unknown fields, which decode must ignore.
    extra: bool,
}

impl Ev {
    /// The case or document the event is about, as a name.
    fn owner(&self) -> String {
        let commune = self.commune;
        match &self.kind {
            Kind::Received { case, .. }
            | Kind::Resolved { case, .. }
            | Kind::Withdrawn { case }
            | Kind::Rated { case, .. } => format!("{commune}-case-{case}"),
            Kind::Signed { doc, .. } => format!("{commune}-doc-{doc}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    Received {
        case: u8,
        channel: &'static str,
        level: &'static str,
        due: Instant,
        electronic: bool,
        digitized: Option<bool>,
    },
    Resolved {
        case: u8,
        due: Instant,
        completed: bool,
    },
    Withdrawn {
        case: u8,
    },
    Rated {
        case: u8,
        rating: &'static str,
        score: Option<u8>,
    },
    Signed {
        doc: u8,
        digital: bool,
        case: Option<u8>,
        doc_kind: Option<&'static str>,
    },
}

/// What an event competes for: the reference picks one winner per slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Slot {
    Received(usize, u8),
    Closing(usize, u8),
    Rating(usize, u8),
    Document(usize, u8),
}

fn slot(e: &Ev) -> Slot {
    match e.kind {
        Kind::Received { case, .. } => Slot::Received(e.commune, case),
        Kind::Resolved { case, .. } | Kind::Withdrawn { case } => Slot::Closing(e.commune, case),
        Kind::Rated { case, .. } => Slot::Rating(e.commune, case),
        Kind::Signed { doc, .. } => Slot::Document(e.commune, doc),
    }
}

fn case_id(case: u8) -> String {
    format!("000.00.31.H37-230330-{case:04}")
}

fn document_id(doc: u8) -> String {
    format!("{doc}/QĐ-UBND")
}

fn rfc3339(t: Instant) -> String {
    let utc = DateTime::<Utc>::from_timestamp_nanos(t.ns);
    let fraction = match t.ns % NS_PER_SECOND {
        0 => "",
        f if f % 1_000_000 == 0 => "%.3f",
        f if f % 1_000 == 0 => "%.6f",
        _ => "%.9f",
    };
    match t.offset_min {
        None => utc
            .format(&format!("%Y-%m-%dT%H:%M:%S{fraction}Z"))
            .to_string(),
        Some(min) => utc
            .with_timezone(&FixedOffset::east_opt(min * 60).expect("valid offset"))
            .format(&format!("%Y-%m-%dT%H:%M:%S{fraction}%:z"))
            .to_string(),
    }
}

/// The event as the one-stop software would send it.
fn to_json(e: &Ev) -> String {
    let (event_type, case, mut data) = match &e.kind {
        Kind::Received {
            case,
            channel,
            level,
            due,
            electronic,
            digitized,
        } => {
            let mut data = json!({
                "procedure_code": "1.001234", "channel": channel, "online_level": level,
                "due_at": rfc3339(*due), "registered_electronically": electronic,
            });
            if let Some(d) = digitized {
                data["digitized"] = json!(d);
            }
            ("case.received", Some(*case), data)
        }
        Kind::Resolved {
            case,
            due,
            completed,
        } => {
            let outcome = if *completed { "completed" } else { "rejected" };
            (
                "case.resolved",
                Some(*case),
                json!({"due_at": rfc3339(*due), "outcome": outcome}),
            )
        }
        Kind::Withdrawn { case } => ("case.withdrawn", Some(*case), json!({})),
        Kind::Rated {
            case,
            rating,
            score,
        } => {
            let mut data = json!({ "rating": rating });
            if let Some(s) = score {
                data["score"] = json!(s);
            }
            ("case.rated", Some(*case), data)
        }
        Kind::Signed {
            doc,
            digital,
            case,
            doc_kind,
        } => {
            let signature = if *digital { "digital" } else { "handwritten" };
            let mut data = json!({ "document_id": document_id(*doc), "signature": signature });
            if let Some(k) = doc_kind {
                data["document_kind"] = json!(k);
            }
            ("document.signed", *case, data)
        }
    };
    if e.extra {
        data["ghi_chu"] = json!({ "nested": [1, "hai", null] });
    }
    let mut v = json!({
        "event_id": e.id, "event_type": event_type, "schema_version": 1,
        "occurred_at": rfc3339(e.at), "commune_code": COMMUNES[e.commune], "data": data,
    });
    if let Some(case) = case {
        v["case_id"] = json!(case_id(case));
    }
    if e.extra {
        v["trace_id"] = json!("00-4bf92f3577b34da6-01");
    }
    v.to_string()
}

/// Renders and decodes an event, checking what decode says about its time.
fn decoded(e: &Ev) -> CaseEvent {
    let text = to_json(e);
    let event = decode(Some(text.as_bytes()), units())
        .unwrap_or_else(|r| panic!("a valid event was rejected ({r}): {text}"));
    assert_eq!(
        event.occurred_at.timestamp_nanos_opt(),
        Some(e.at.ns),
        "{text}"
    );
    assert_eq!(event.day, local_day(e.at.ns), "{text}");
    assert_eq!(event.commune.as_str(), COMMUNES[e.commune]);
    event
}

fn utc(ns: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_nanos(ns)
}

// ---------------------------------------------------------------------------
// The reference model
// ---------------------------------------------------------------------------

/// The shared reference model (tests/reference) over the JSON text of the
/// events, as the one-stop software sends them.
fn reference(arrivals: &[Ev], clock_ns: Option<i64>) -> Table {
    let facts: Vec<Fact> = arrivals
        .iter()
        .map(|e| Fact::from_json(to_json(e).as_bytes()))
        .collect();
    reference::reference(&facts, clock_ns)
}

// ---------------------------------------------------------------------------
// Driving the Fold
// ---------------------------------------------------------------------------

/// One item of the stream: an event or a clock tick.
#[derive(Clone, Debug)]
enum Item {
    Event(Ev),
    Tick(i64),
}

/// A Fold's counters in the reference's shape, zero entries dropped.
fn table_of<'a>(
    deltas: impl IntoIterator<
        Item = (
            &'a (cchc_pipeline::domain::UnitCode, NaiveDate),
            &'a DayCounters,
        ),
    >,
) -> Table {
    let mut sum: BTreeMap<(String, NaiveDate), DayCounters> = BTreeMap::new();
    for ((commune, day), c) in deltas {
        *sum.entry((commune.as_str().to_string(), *day)).or_default() += *c;
    }
    sum.into_iter()
        .filter(|(_, c)| !c.is_zero())
        .map(|(k, c)| (k, counts_of(&c)))
        .collect()
}

fn table(fold: &Fold) -> Table {
    table_of(fold.deltas())
}

/// Feeds items to a Fold whose clock starts at `clock0`; returns the Fold and
/// what each event's `apply` said.
fn run(clock0: Option<i64>, items: &[Item]) -> (Fold, Vec<Applied>) {
    let mut fold = Fold::new(clock0.map(utc));
    let mut applied = Vec::new();
    for item in items {
        match item {
            Item::Event(e) => applied.push(fold.apply(&decoded(e))),
            Item::Tick(ns) => fold.advance_clock(utc(*ns)),
        }
    }
    (fold, applied)
}

fn events(items: &[Item]) -> Vec<Ev> {
    items
        .iter()
        .filter_map(|i| match i {
            Item::Event(e) => Some(e.clone()),
            Item::Tick(_) => None,
        })
        .collect()
}

/// The clock's final time: the latest of its start and every tick (the Fold
/// ignores a tick that goes back).
fn final_clock(clock0: Option<i64>, items: &[Item]) -> Option<i64> {
    items
        .iter()
        .filter_map(|i| match i {
            Item::Tick(ns) => Some(*ns),
            Item::Event(_) => None,
        })
        .map(Some)
        .fold(clock0, Option::max)
}

fn case_states(fold: &Fold) -> BTreeMap<CaseKey, CaseState> {
    fold.cases().map(|(k, s)| (k.clone(), s.clone())).collect()
}

fn case_key(e: &CaseEvent) -> Option<CaseKey> {
    match (&e.kind, &e.case_id) {
        (cchc_pipeline::domain::EventKind::DocumentSigned(_), _) => None,
        (_, Some(id)) => Some(CaseKey {
            commune: e.commune.clone(),
            case_id: id.clone(),
        }),
        (_, None) => unreachable!("decode guarantees a case_id on case events"),
    }
}

fn document_key(e: &CaseEvent) -> Option<DocumentKey> {
    match &e.kind {
        cchc_pipeline::domain::EventKind::DocumentSigned(s) => Some(DocumentKey {
            commune: e.commune.clone(),
            document_id: s.document_id.clone(),
        }),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------

/// An instant within `days` days of BASE: mostly within an hour of local
/// midnight (16:30–17:30 UTC), often exactly on it or a millisecond or a
/// microsecond before.
///
/// Times are whole microseconds, the precision PostgreSQL's `timestamptz`
/// keeps: `decode` may keep nanoseconds or truncate to microseconds, and
/// these properties hold either way. (A Fold that compares nanoseconds with
/// facts the store has cut to microseconds is not consistent: two events
/// 500 ns apart can swap winners after a round trip through the store.)
fn fresh_ns(days: i64) -> BoxedStrategy<i64> {
    let second_of_day = prop_oneof![
        3 => (16 * 3600 + 30 * 60)..=(17 * 3600 + 30 * 60i64),
        2 => select(vec![16 * 3600 + 59 * 60 + 59, 17 * 3600, 0, 3 * 3600, 10 * 3600 + 44 * 60]),
        1 => 0..86_400i64,
    ];
    let fraction = prop_oneof![
        6 => Just(0i64),
        2 => Just(999_000_000i64),
        2 => (0..1000i64).prop_map(|ms| ms * 1_000_000),
        1 => Just(NS_PER_SECOND - 1_000),
        1 => (0..1_000_000i64).prop_map(|us| us * 1_000),
    ];
    (0..days, second_of_day, fraction)
        .prop_map(|(d, s, f)| BASE_NS + d * NS_PER_DAY + s * NS_PER_SECOND + f)
        .boxed()
}

fn offset() -> impl Strategy<Value = Option<i32>> {
    prop_oneof![
        3 => Just(Some(420)),
        1 => Just(None),
        1 => Just(Some(0)),
        1 => Just(Some(-330)),
        1 => Just(Some(600)),
    ]
}

fn instant(ns: BoxedStrategy<i64>) -> BoxedStrategy<Instant> {
    (ns, offset())
        .prop_map(|(ns, offset_min)| Instant { ns, offset_min })
        .boxed()
}

fn kind(due: BoxedStrategy<i64>) -> BoxedStrategy<Kind> {
    let case = 0..CASES;
    prop_oneof![
        3 => (
            case.clone(),
            select(vec!["in_person", "online", "postal"]),
            select(vec!["none", "partial", "full"]),
            instant(due.clone()),
            any::<bool>(),
            proptest::option::of(any::<bool>()),
        )
            .prop_map(|(case, channel, level, due, electronic, digitized)| Kind::Received {
                case, channel, level, due, electronic, digitized,
            }),
        2 => (case.clone(), instant(due), any::<bool>())
            .prop_map(|(case, due, completed)| Kind::Resolved { case, due, completed }),
        1 => case.clone().prop_map(|case| Kind::Withdrawn { case }),
        2 => (
            case.clone(),
            select(vec!["very_satisfied", "satisfied", "dissatisfied"]),
            proptest::option::of(0..=18u8),
        )
            .prop_map(|(case, rating, score)| Kind::Rated { case, rating, score }),
        2 => (
            0..DOCS,
            any::<bool>(),
            proptest::option::of(case),
            proptest::option::of(select(vec!["case_result", "outgoing"])),
        )
            .prop_map(|(doc, digital, case, doc_kind)| Kind::Signed { doc, digital, case, doc_kind }),
    ]
    .boxed()
}

/// A set of events with distinct ids, and the clock's start and end.
#[derive(Clone, Debug)]
struct Scenario {
    events: Vec<Ev>,
    clock0: Option<i64>,
    clock_end: Option<i64>,
}

fn event_id(i: usize) -> String {
    if i % 3 == 0 {
        format!("sự-kiện-{i}")
    } else {
        format!("0b6f3c1e-2f4e-4f7e-9a51-{i:012x}")
    }
}

fn scenario(max_events: usize) -> BoxedStrategy<Scenario> {
    // Events mostly take their times from a small pool, so equal
    // occurred_at values in one slot are common; due dates likewise.
    (
        prop::collection::vec(fresh_ns(14), 1..5),
        prop::collection::vec(fresh_ns(16), 1..4),
    )
        .prop_flat_map(move |(times, dues)| {
            let at = prop_oneof![3 => select(times), 1 => fresh_ns(14)].boxed();
            let due = prop_oneof![3 => select(dues), 1 => fresh_ns(16)].boxed();
            let event = (
                0..COMMUNES.len(),
                instant(at),
                kind(due),
                prop::bool::weighted(0.1),
            )
                .prop_map(|(commune, at, kind, extra)| Ev {
                    id: String::new(),
                    commune,
                    at,
                    kind,
                    extra,
                });
            // The clock runs up to ~a week past the last event, so due dates
            // fall both before and after it.
            let clock = proptest::option::weighted(0.8, fresh_ns(22));
            (
                prop::collection::vec(event, 0..max_events),
                clock.clone(),
                clock,
            )
        })
        .prop_map(|(mut events, clock0, clock_end)| {
            for (i, e) in events.iter_mut().enumerate() {
                e.id = event_id(i);
            }
            Scenario {
                events,
                clock0,
                clock_end,
            }
        })
        .boxed()
}

/// Moves events apart so that no two share a slot and an instant.
fn untie(events: &mut [Ev]) {
    let mut used = HashSet::new();
    for e in events {
        while !used.insert((slot(e), e.at.ns)) {
            e.at.ns += 1_000;
        }
    }
}

/// Inserts `item` at a position chosen by `at` in `after..=len`.
fn insert_after(items: &mut Vec<Item>, after: usize, at: &Index, item: Item) {
    let pos = after + at.index(items.len() - after + 1);
    items.insert(pos, item);
}

/// A different event for the same slot at the same instant, written with
/// another offset: `bits` picks what differs.
fn twin_of(src: &Ev, id: String, bits: u8, offset_min: Option<i32>) -> Ev {
    let shift = |due: Instant| Instant {
        ns: due.ns + ((bits % 5) as i64 - 2) * NS_PER_DAY,
        offset_min: due.offset_min,
    };
    let kind = match src.kind.clone() {
        Kind::Received {
            case,
            channel,
            level,
            due,
            electronic,
            digitized,
        } => Kind::Received {
            case,
            channel: if bits & 1 == 0 {
                if channel == "online" {
                    "in_person"
                } else {
                    "online"
                }
            } else {
                channel
            },
            level: if bits & 2 == 0 {
                if level == "none" {
                    "full"
                } else {
                    "none"
                }
            } else {
                level
            },
            due: shift(due),
            electronic: if bits & 4 == 0 {
                !electronic
            } else {
                electronic
            },
            digitized: digitized.map(|d| !d),
        },
        Kind::Resolved {
            case,
            due,
            completed,
        } => {
            if bits & 1 == 0 {
                Kind::Withdrawn { case }
            } else {
                Kind::Resolved {
                    case,
                    due: shift(due),
                    completed: !completed,
                }
            }
        }
        Kind::Withdrawn { case } => Kind::Resolved {
            case,
            due: Instant {
                ns: src.at.ns + ((bits % 5) as i64 - 2) * NS_PER_DAY,
                offset_min: None,
            },
            completed: bits & 1 == 0,
        },
        Kind::Rated { case, rating, .. } => Kind::Rated {
            case,
            rating: match (rating, bits & 1) {
                ("dissatisfied", 0) => "satisfied",
                ("dissatisfied", _) => "very_satisfied",
                _ => "dissatisfied",
            },
            score: Some(bits % 19),
        },
        Kind::Signed {
            doc,
            digital,
            case,
            doc_kind,
        } => Kind::Signed {
            doc,
            digital: !digital,
            case,
            doc_kind,
        },
    };
    Ev {
        id,
        commune: src.commune,
        at: Instant {
            ns: src.at.ns,
            offset_min,
        },
        kind,
        extra: !src.extra,
    }
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        max_shrink_iters: 2_000,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(1000))]

    /// Any arrival order (ties included, which the reference resolves by
    /// arrival) gives the reference's counters.
    #[test]
    fn the_fold_agrees_with_the_reference_in_any_arrival_order(
        (s, order) in scenario(40).prop_flat_map(|s| {
            let events = s.events.clone();
            (Just(s), Just(events).prop_shuffle())
        })
    ) {
        let mut items: Vec<Item> = order.iter().cloned().map(Item::Event).collect();
        items.extend(s.clock_end.map(Item::Tick));
        let (fold, applied) = run(s.clock0, &items);
        prop_assert!(applied.iter().all(|a| *a != Applied::Duplicate), "ids are distinct");
        prop_assert_eq!(table(&fold), reference(&order, final_clock(s.clock0, &items)));
    }

    /// When no two events compete at the same instant, the arrival order
    /// does not matter at all: two orders give the same counters and the
    /// same case states.
    #[test]
    fn without_ties_any_two_arrival_orders_give_the_same_counters(
        (s, a, b) in scenario(40).prop_flat_map(|mut s| {
            untie(&mut s.events);
            let events = s.events.clone();
            (Just(s), Just(events.clone()).prop_shuffle(), Just(events).prop_shuffle())
        })
    ) {
        let tick: Vec<Item> = s.clock_end.map(Item::Tick).into_iter().collect();
        let items_a: Vec<Item> = a.iter().cloned().map(Item::Event).chain(tick.clone()).collect();
        let items_b: Vec<Item> = b.iter().cloned().map(Item::Event).chain(tick).collect();
        let (fold_a, _) = run(s.clock0, &items_a);
        let (fold_b, _) = run(s.clock0, &items_b);
        prop_assert_eq!(table(&fold_a), table(&fold_b));
        prop_assert_eq!(case_states(&fold_a), case_states(&fold_b));
        prop_assert_eq!(table(&fold_a), reference(&a, final_clock(s.clock0, &items_a)));
    }

    /// The same event JSON re-sent 1–3 times, anywhere after its first
    /// arrival, changes nothing, and each repeat is reported as a duplicate.
    #[test]
    fn re_sent_events_change_nothing(
        s in scenario(30),
        resends in prop::collection::vec(
            (any::<Index>(), prop::collection::vec(any::<Index>(), 1..=3)), 0..10),
    ) {
        let mut items: Vec<Item> = s.events.iter().cloned().map(Item::Event).collect();
        if !s.events.is_empty() {
            for (which, copies) in &resends {
                let e = which.get(&s.events).clone();
                for at in copies {
                    let first = items
                        .iter()
                        .position(|i| matches!(i, Item::Event(x) if x.id == e.id))
                        .unwrap();
                    insert_after(&mut items, first + 1, at, Item::Event(e.clone()));
                }
            }
        }
        items.extend(s.clock_end.map(Item::Tick));
        let plain: Vec<Item> = s.events.iter().cloned().map(Item::Event).chain(s.clock_end.map(Item::Tick)).collect();
        let (with_repeats, applied) = run(s.clock0, &items);
        let (without, _) = run(s.clock0, &plain);
        let mut ids = HashSet::new();
        for (e, a) in events(&items).iter().zip(&applied) {
            prop_assert_eq!(!ids.insert(e.id.clone()), *a == Applied::Duplicate, "{:?}", e);
        }
        prop_assert_eq!(table(&with_repeats), table(&without));
        prop_assert_eq!(case_states(&with_repeats), case_states(&without));
        prop_assert_eq!(table(&with_repeats), reference(&events(&items), final_clock(s.clock0, &items)));
    }

    /// Event ids drawn from a small space, so the same id comes back with
    /// other content (other facts, times, outcomes) within its case or
    /// document, where a repeat is recognised (DOMAIN.md: the same id on two
    /// cases is a producer's error the pipeline need not detect): the first
    /// arrival wins, the later ones change nothing.
    #[test]
    fn a_repeated_event_id_with_other_content_keeps_the_first_arrival(
        (s, ids) in scenario(30).prop_flat_map(|s| {
            let n = s.events.len();
            (Just(s), prop::collection::vec(0..(n / 2 + 1), n))
        })
    ) {
        let mut arrivals = s.events.clone();
        for (e, id) in arrivals.iter_mut().zip(&ids) {
            e.id = format!("{}/{}", e.owner(), event_id(*id));
        }
        let mut items: Vec<Item> = arrivals.iter().cloned().map(Item::Event).collect();
        items.extend(s.clock_end.map(Item::Tick));
        let (fold, applied) = run(s.clock0, &items);
        // The Fold fed only the first arrival of each id agrees.
        let mut seen = HashSet::new();
        let firsts: Vec<Item> = items
            .iter()
            .filter(|i| match i {
                Item::Event(e) => seen.insert(e.id.clone()),
                Item::Tick(_) => true,
            })
            .cloned()
            .collect();
        let (only_firsts, _) = run(s.clock0, &firsts);
        let mut ids = HashSet::new();
        for (e, a) in arrivals.iter().zip(&applied) {
            prop_assert_eq!(!ids.insert(e.id.clone()), *a == Applied::Duplicate);
        }
        prop_assert_eq!(table(&fold), table(&only_firsts));
        prop_assert_eq!(table(&fold), reference(&arrivals, final_clock(s.clock0, &items)));
    }

    /// Equal occurred_at in one slot, written with different offsets and
    /// arriving before or after: the last arrival wins.
    #[test]
    fn on_equal_times_the_last_arrival_wins(
        s in scenario(25),
        twins in prop::collection::vec((any::<Index>(), any::<Index>(), any::<u8>(), offset()), 1..8),
    ) {
        let mut arrivals = s.events.clone();
        if !arrivals.is_empty() {
            for (n, (which, at, bits, offset_min)) in twins.iter().enumerate() {
                let twin = twin_of(which.get(&arrivals), format!("twin-{n}"), *bits, *offset_min);
                let pos = at.index(arrivals.len() + 1);
                arrivals.insert(pos, twin);
            }
        }
        let mut items: Vec<Item> = arrivals.iter().cloned().map(Item::Event).collect();
        items.extend(s.clock_end.map(Item::Tick));
        let (fold, _) = run(s.clock0, &items);
        prop_assert_eq!(table(&fold), reference(&arrivals, final_clock(s.clock0, &items)));
    }
}

/// The reference's own reading of a window, `[from, to)` in local days, for
/// the local date `today`: ytd from 1 January, qtd from the first day of the
/// quarter's first month (January, April, July, October), mtd from the 1st,
/// rolling_30d the 30 days ending today; a range as given. Written with
/// plain calendar arithmetic, not `Window::days`.
fn reference_window(
    window: &str,
    today: NaiveDate,
    range: (NaiveDate, NaiveDate),
) -> (NaiveDate, NaiveDate) {
    let ymd = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
    let tomorrow = today + Days::new(1);
    match window {
        "ytd" => (ymd(today.year(), 1, 1), tomorrow),
        "qtd" => {
            let first_month = [1, 1, 1, 4, 4, 4, 7, 7, 7, 10, 10, 10][today.month0() as usize];
            (ymd(today.year(), first_month, 1), tomorrow)
        }
        "mtd" => (ymd(today.year(), today.month(), 1), tomorrow),
        "rolling_30d" => (today - Days::new(29), tomorrow),
        _ => range,
    }
}

/// One commune's counters summed over the local days `[from, to)`.
fn window_sum(table: &Table, commune: &str, (from, to): (NaiveDate, NaiveDate)) -> Counts {
    let mut sum = [0; 10];
    for ((c, day), counts) in table {
        if c == commune && *day >= from && *day < to {
            for (s, n) in sum.iter_mut().zip(counts) {
                *s += n;
            }
        }
    }
    sum
}

proptest! {
    #![proptest_config(config(500))]

    /// Every window, as the API and the breach evaluation compute it (the
    /// days of `Window::days`, their counters summed), equals the reference's
    /// sum over its own reading of the window; and a window with a zero
    /// denominator has an undefined rate, never 0 or 1.
    #[test]
    fn window_sums_agree_with_the_reference(
        s in scenario(40),
        // Local dates from 2023-01-05 to 2023-08-14: quarter, month and year
        // starts on both sides of the generated events (2023-03-27 + 21 days).
        today_offset in -81i64..140,
        window in select(vec!["ytd", "qtd", "mtd", "rolling_30d", "range"]),
        range_start in -10i64..30,
        range_len in 1i64..40,
    ) {
        let mut items: Vec<Item> = s.events.iter().cloned().map(Item::Event).collect();
        items.extend(s.clock_end.map(Item::Tick));
        let (fold, _) = run(s.clock0, &items);
        let fold_table = table(&fold);
        let expected = reference(&s.events, final_clock(s.clock0, &items));

        let base = local_day(BASE_NS);
        let shift = |d: i64| if d >= 0 { base + Days::new(d as u64) } else { base - Days::new((-d) as u64) };
        let today = shift(today_offset);
        let range = (shift(range_start), shift(range_start + range_len));
        let parsed: Window = if window == "range" {
            format!("{}..{}", range.0, range.1).parse().unwrap()
        } else {
            window.parse().unwrap()
        };
        let days = parsed.days(today);
        prop_assert_eq!(days, reference_window(window, today, range), "bounds of {}", window);

        for commune in COMMUNES {
            let got = window_sum(&fold_table, commune, days);
            prop_assert_eq!(got, window_sum(&expected, commune, reference_window(window, today, range)));
            let c = DayCounters {
                received: got[RECEIVED],
                received_online: got[ONLINE],
                received_electronic: got[ELECTRONIC],
                due: got[DUE],
                on_time: got[ON_TIME],
                ratings: got[RATINGS],
                satisfied: got[SATISFIED],
                signatures: got[SIGNATURES],
                digital: got[DIGITAL],
                received_digitized: got[DIGITIZED],
            };
            for &indicator in Indicator::ALL {
                let ratio = indicator.ratio(&c);
                match ratio.rate() {
                    None => prop_assert_eq!(ratio.denominator, 0, "{:?}", indicator),
                    Some(rate) => {
                        prop_assert!(ratio.denominator > 0);
                        prop_assert!((0.0..=1.0).contains(&rate), "{:?} rate {}", indicator, rate);
                        prop_assert_eq!(rate, ratio.numerator as f64 / ratio.denominator as f64);
                    }
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(config(500))]

    /// Clock ticks interleaved anywhere, in any order (the Fold ignores a
    /// tick that goes back), give the same counters as one tick at the end
    /// with the latest time.
    #[test]
    fn clock_ticks_anywhere_give_the_same_counters_as_one_tick_at_the_end(
        s in scenario(30),
        ticks in prop::collection::vec((any::<Index>(), fresh_ns(22)), 0..8),
    ) {
        let mut interleaved: Vec<Item> = s.events.iter().cloned().map(Item::Event).collect();
        for (at, ns) in &ticks {
            insert_after(&mut interleaved, 0, at, Item::Tick(*ns));
        }
        let latest = final_clock(None, &interleaved);
        let at_end: Vec<Item> = s.events.iter().cloned().map(Item::Event).chain(latest.map(Item::Tick)).collect();
        let (a, _) = run(s.clock0, &interleaved);
        let (b, _) = run(s.clock0, &at_end);
        prop_assert_eq!(a.today(), b.today());
        prop_assert_eq!(a.today(), final_clock(s.clock0, &interleaved).map(local_day));
        prop_assert_eq!(table(&a), table(&b));
        prop_assert_eq!(case_states(&a), case_states(&b));
        prop_assert_eq!(table(&a), reference(&s.events, final_clock(s.clock0, &interleaved)));
    }

    /// The store's way: the stream cut into batches, each folded by a fresh
    /// `Fold::new(stored clock)` loaded with only what it needs (the cases
    /// and documents the batch touches, the ids of the batch already seen,
    /// and the open cases the batch's ticks make overdue); the per-batch
    /// deltas summed give the counters of one Fold over the whole stream.
    #[test]
    fn batches_with_loaded_state_sum_to_the_same_counters_as_one_fold(
        s in scenario(40),
        resends in prop::collection::vec((any::<Index>(), any::<Index>()), 0..6),
        ticks in prop::collection::vec((any::<Index>(), fresh_ns(22)), 0..6),
        cuts in prop::collection::vec(any::<Index>(), 0..8),
    ) {
        let mut items: Vec<Item> = s.events.iter().cloned().map(Item::Event).collect();
        if !s.events.is_empty() {
            for (which, at) in &resends {
                let e = which.get(&s.events).clone();
                let first = items.iter().position(|i| matches!(i, Item::Event(x) if x.id == e.id)).unwrap();
                insert_after(&mut items, first + 1, at, Item::Event(e));
            }
        }
        for (at, ns) in &ticks {
            insert_after(&mut items, 0, at, Item::Tick(*ns));
        }
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c.index(items.len() + 1)).collect();
        bounds.push(0);
        bounds.push(items.len());
        bounds.sort_unstable();
        bounds.dedup();

        let (whole, _) = run(s.clock0, &items);
        let store = run_batches(s.clock0, &items, &bounds);

        prop_assert_eq!(&table_of(&store.totals), &table(&whole));
        let stored: BTreeMap<CaseKey, CaseState> = store.cases.into_iter().collect();
        prop_assert_eq!(stored, case_states(&whole));
        prop_assert_eq!(table_of(&store.totals), reference(&events(&items), final_clock(s.clock0, &items)));
    }
}

/// What the store would keep between batches.
struct Store {
    clock: Option<i64>,
    cases: HashMap<CaseKey, CaseState>,
    documents: HashMap<DocumentKey, DocumentState>,
    totals: HashMap<(cchc_pipeline::domain::UnitCode, NaiveDate), DayCounters>,
}

fn run_batches(clock0: Option<i64>, items: &[Item], bounds: &[usize]) -> Store {
    let mut store = Store {
        clock: clock0,
        cases: HashMap::new(),
        documents: HashMap::new(),
        totals: HashMap::new(),
    };
    for w in bounds.windows(2) {
        let batch = &items[w[0]..w[1]];
        let batch_events: Vec<CaseEvent> = events(batch).iter().map(decoded).collect();
        // The Fold starts at the clock the stored counters were made with.
        let mut part = Fold::new(store.clock.map(utc));
        let old_today = store.clock.map(local_day);
        let new_clock = final_clock(store.clock, batch);
        // A store keeps each case's and document's ids with it.
        for e in &batch_events {
            if let Some(k) = case_key(e) {
                if let Some(state) = store.cases.get(&k) {
                    part.load_case(k, state.clone());
                }
            }
            if let Some(k) = document_key(e) {
                if let Some(state) = store.documents.get(&k) {
                    part.load_document(k, state.clone());
                }
            }
        }
        // Open cases that become overdue during this batch: due date in
        // [old today, new today).
        if let Some(new_today) = new_clock.map(local_day) {
            for (k, state) in &store.cases {
                if let Some(due) = state.open_due_date() {
                    if due < new_today && old_today.is_none_or(|t| due >= t) {
                        part.load_case(k.clone(), state.clone());
                    }
                }
            }
        }
        let mut next = batch_events.iter();
        for item in batch {
            match item {
                Item::Event(_) => {
                    part.apply(next.next().unwrap());
                }
                Item::Tick(ns) => part.advance_clock(utc(*ns)),
            }
        }
        // Write back what the batch changed.
        for (k, state) in part.cases() {
            store.cases.insert(k.clone(), state.clone());
        }
        for e in &batch_events {
            if let Some(k) = document_key(e) {
                if let Some(state) = part.document(&k) {
                    store.documents.insert(k, state.clone());
                }
            }
        }
        for (k, c) in part.deltas() {
            *store.totals.entry(k.clone()).or_default() += *c;
        }
        store.clock = new_clock;
        assert_eq!(part.today(), new_clock.map(local_day));
    }
    store
}

// ---------------------------------------------------------------------------
// Checks of the test itself
// ---------------------------------------------------------------------------

/// The reference on a hand-worked example, so that it is not just trusted.
#[test]
fn the_reference_agrees_with_a_hand_worked_example() {
    let t = |s: &str| {
        DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_nanos_opt()
            .unwrap()
    };
    let at = |s: &str| Instant {
        ns: t(s),
        offset_min: Some(420),
    };
    let ev = |id: &str, when: &str, kind: Kind| Ev {
        id: id.into(),
        commune: 0,
        at: at(when),
        kind,
        extra: false,
    };
    let due = at("2023-04-04T17:00:00+07:00");
    let received = |case, digitized| Kind::Received {
        case,
        channel: "online",
        level: "partial",
        due,
        electronic: true,
        digitized,
    };
    let arrivals = vec![
        // Case 0: received, resolved 5 April 00:30 local (late), rated twice
        // at the same time: the last arrival (satisfied) wins.
        // (Digitised at intake: case 1 says so, case 2 says not, case 0
        // leaves the field out, which is not.)
        ev("a", "2023-04-01T09:00:00+07:00", received(0, None)),
        ev(
            "b",
            "2023-04-05T00:30:00+07:00",
            Kind::Resolved {
                case: 0,
                due,
                completed: true,
            },
        ),
        ev(
            "c",
            "2023-04-06T10:00:00+07:00",
            Kind::Rated {
                case: 0,
                rating: "dissatisfied",
                score: None,
            },
        ),
        ev(
            "d",
            "2023-04-06T10:00:00+07:00",
            Kind::Rated {
                case: 0,
                rating: "satisfied",
                score: None,
            },
        ),
        // ... and a repeat of "d" with other content changes nothing.
        ev(
            "d",
            "2023-04-07T10:00:00+07:00",
            Kind::Rated {
                case: 0,
                rating: "dissatisfied",
                score: None,
            },
        ),
        // Case 1: received, still open: late on 5 April once the clock says so.
        ev("e", "2023-04-01T23:59:59+07:00", received(1, Some(true))),
        // Case 2: received, withdrawn after its due date: not counted.
        ev("f", "2023-04-02T08:00:00+07:00", received(2, Some(false))),
        ev(
            "g",
            "2023-04-10T08:00:00+07:00",
            Kind::Withdrawn { case: 2 },
        ),
        // Document 0 signed by hand, then digitally later: the later counts.
        ev(
            "h",
            "2023-04-03T08:00:00+07:00",
            Kind::Signed {
                doc: 0,
                digital: false,
                case: None,
                doc_kind: None,
            },
        ),
        ev(
            "i",
            "2023-04-04T08:00:00+07:00",
            Kind::Signed {
                doc: 0,
                digital: true,
                case: Some(0),
                doc_kind: None,
            },
        ),
    ];
    let day = |s: &str| {
        (
            "31471".to_string(),
            NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap(),
        )
    };
    let mut expected = Table::new();
    expected.insert(day("2023-04-01"), [2, 2, 2, 0, 0, 0, 0, 0, 0, 1]);
    expected.insert(day("2023-04-02"), [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]);
    expected.insert(day("2023-04-04"), [0, 0, 0, 0, 0, 0, 0, 1, 1, 0]);
    expected.insert(day("2023-04-05"), [0, 0, 0, 2, 0, 0, 0, 0, 0, 0]);
    expected.insert(day("2023-04-06"), [0, 0, 0, 0, 0, 1, 1, 0, 0, 0]);
    let clock = Some(t("2023-04-05T00:00:00+07:00"));
    assert_eq!(reference(&arrivals, clock), expected);
    let items: Vec<Item> = arrivals.iter().cloned().map(Item::Event).collect();
    assert_eq!(table(&run(clock, &items).0), expected);
    // One microsecond earlier, case 1 is not overdue yet.
    expected.get_mut(&day("2023-04-05")).unwrap()[DUE] = 1;
    assert_eq!(reference(&arrivals, clock.map(|c| c - 1_000)), expected);
}

/// The generator makes the cases the properties are about, and often: equal
/// times in one slot, events around local midnight, open cases overdue at
/// the final clock, resolutions on time and late, corrections.
#[test]
fn the_generator_makes_the_interesting_cases_often() {
    let mut runner = TestRunner::new(Config::default());
    let strategy = scenario(40);
    let samples = 400;
    let (mut ties, mut midnight, mut overdue, mut on_time, mut late, mut corrections) =
        (0, 0, 0, 0, 0, 0);
    for _ in 0..samples {
        let s = strategy.new_tree(&mut runner).unwrap().current();
        let mut at_in_slot: HashMap<(Slot, i64), usize> = HashMap::new();
        let mut per_slot: HashMap<Slot, usize> = HashMap::new();
        for e in &s.events {
            *at_in_slot.entry((slot(e), e.at.ns)).or_default() += 1;
            *per_slot.entry(slot(e)).or_default() += 1;
        }
        ties += at_in_slot.values().any(|n| *n > 1) as usize;
        corrections += per_slot.values().any(|n| *n > 1) as usize;
        midnight += s.events.iter().any(|e| {
            (e.at.ns + LOCAL_OFFSET_NS).rem_euclid(NS_PER_DAY) >= NS_PER_DAY - NS_PER_SECOND
        }) as usize;
        let table = reference(&s.events, s.clock0.max(s.clock_end));
        let without_clock = reference(&s.events, None);
        let due = |t: &Table| t.values().map(|c| c[DUE]).sum::<i64>();
        overdue += (due(&table) > due(&without_clock)) as usize;
        on_time += table.values().any(|c| c[ON_TIME] > 0) as usize;
        late += table.values().any(|c| c[DUE] > c[ON_TIME]) as usize;
    }
    eprintln!(
        "of {samples} scenarios: {ties} with a tie in a slot, {corrections} with a correction, \
         {midnight} with an event in a day's last second, {overdue} with an open case overdue, \
         {on_time} with a resolution on time, {late} with a late case"
    );
    let at_least = |n: usize, what: &str, share: f64| {
        assert!(
            n as f64 >= share * samples as f64,
            "{what}: only {n} of {samples} scenarios"
        );
    };
    at_least(ties, "a tie in a slot", 0.5);
    at_least(corrections, "a correction", 0.6);
    at_least(midnight, "an event in the last second of a local day", 0.3);
    at_least(overdue, "an open case overdue at the final clock", 0.3);
    at_least(on_time, "a resolution on time", 0.5);
    at_least(late, "a late case", 0.5);
}
