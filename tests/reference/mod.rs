//! The reference model of DOMAIN.md's counters, shared by the property tests
//! of the fold (tests/fold_model.rs) and the end-to-end tests of the
//! pipeline (tests/it): deliberately simple, written without reusing any of
//! the crate's decode or fold logic.
//!
//! It takes the whole arrival sequence of valid events (as the JSON text the
//! one-stop software sends) and the clock's final time, and computes every
//! (commune, local day) counter from scratch:
//!
//! 1. an `event_id` seen before is dropped whole (first arrival wins);
//! 2. per case and slot (received; closing = resolved | withdrawn; rating) and
//!    per document, the winner is the event with the greatest `occurred_at`,
//!    ties going to the one that arrived last;
//! 3. the winners' contributions are added up as DOMAIN.md defines them
//!    (the digitisation counter: receipts with `digitized = true`), plus
//!    one late `due` on `due_date + 1` for each case still open whose due date
//!    is before the clock's local date.
//!
//! Choices the reference makes where DOMAIN.md could be read two ways (the
//! Fold makes the same ones):
//! - a case is identified by (commune, case_id), a document by
//!   (commune, document_id);
//! - a resolved case is on time against the `due_at` carried by the winning
//!   `case.resolved` (the contract repeats it there "so the event stands
//!   alone"); an open case is overdue against the `due_at` of the winning
//!   `case.received`;
//! - the closing slot is shared by resolutions and withdrawals: a withdrawal
//!   later than a resolution takes the resolution back, and vice versa;
//! - receipt, closing and rating are independent slots: a resolution dated
//!   before the receipt still counts, a rating counts whatever the closing.

// Each test crate that includes this module uses only part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Days, NaiveDate};
use serde_json::Value;

/// received, received_online, received_electronic, due, on_time, ratings,
/// satisfied, signatures, digital, received_digitized.
pub type Counts = [i64; 10];
pub const RECEIVED: usize = 0;
pub const ONLINE: usize = 1;
pub const ELECTRONIC: usize = 2;
pub const DUE: usize = 3;
pub const ON_TIME: usize = 4;
pub const RATINGS: usize = 5;
pub const SATISFIED: usize = 6;
pub const SIGNATURES: usize = 7;
pub const DIGITAL: usize = 8;
pub const DIGITIZED: usize = 9;

/// Counters per (commune code, local day); days whose counters are all zero
/// are absent.
pub type Table = BTreeMap<(String, NaiveDate), Counts>;

/// The crate's day counters in the reference's shape, to compare them.
pub fn counts_of(c: &cchc_pipeline::domain::DayCounters) -> Counts {
    [
        c.received,
        c.received_online,
        c.received_electronic,
        c.due,
        c.on_time,
        c.ratings,
        c.satisfied,
        c.signatures,
        c.digital,
        c.received_digitized,
    ]
}

const NS_PER_DAY: i64 = 86_400 * 1_000_000_000;
/// Asia/Ho_Chi_Minh has been UTC+7, without daylight saving, since 1975.
const LOCAL_OFFSET_NS: i64 = 7 * 3_600 * 1_000_000_000;

/// The local (UTC+7) calendar date of an instant, by plain arithmetic.
pub fn local_day(ns: i64) -> NaiveDate {
    let days = (ns + LOCAL_OFFSET_NS).div_euclid(NS_PER_DAY);
    NaiveDate::from_ymd_opt(1970, 1, 1).unwrap() + Days::new(days as u64)
}

/// What the reference needs of one valid event.
#[derive(Clone, Debug)]
pub struct Fact {
    id: String,
    commune: String,
    at_ns: i64,
    what: What,
}

#[derive(Clone, Debug)]
enum What {
    Received {
        case: String,
        channel: String,
        level: String,
        due_ns: i64,
        electronic: bool,
        digitized: bool,
    },
    Resolved {
        case: String,
        due_ns: i64,
    },
    Withdrawn {
        case: String,
    },
    Rated {
        case: String,
        rating: String,
    },
    Signed {
        doc: String,
        digital: bool,
    },
}

/// What an event competes for: one winner per slot.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Slot {
    Received(String, String),
    Closing(String, String),
    Rating(String, String),
    Document(String, String),
}

fn ns(text: &str) -> i64 {
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("reference: `{text}` is not RFC 3339 ({e})"))
        .timestamp_nanos_opt()
        .expect("in range")
}

impl Fact {
    /// Reads a valid event of contract v1 from its JSON text. Panics on
    /// anything else: the caller knows which records are valid.
    pub fn from_json(text: &[u8]) -> Fact {
        let v: Value = serde_json::from_slice(text).expect("reference: valid JSON");
        let s = |v: &Value, k: &str| -> String {
            v[k].as_str()
                .unwrap_or_else(|| panic!("reference: no string `{k}` in {v}"))
                .to_string()
        };
        let data = &v["data"];
        let case = || s(&v, "case_id");
        let what = match v["event_type"].as_str().unwrap() {
            "case.received" => What::Received {
                case: case(),
                channel: s(data, "channel"),
                level: data["online_level"].as_str().unwrap_or("none").to_string(),
                due_ns: ns(&s(data, "due_at")),
                electronic: data["registered_electronically"].as_bool().unwrap_or(false),
                // Optional in the contract, false when left out.
                digitized: data["digitized"].as_bool().unwrap_or(false),
            },
            "case.resolved" => What::Resolved {
                case: case(),
                due_ns: ns(&s(data, "due_at")),
            },
            "case.withdrawn" => What::Withdrawn { case: case() },
            "case.rated" => What::Rated {
                case: case(),
                rating: s(data, "rating"),
            },
            "document.signed" => What::Signed {
                doc: s(data, "document_id"),
                digital: s(data, "signature") == "digital",
            },
            other => panic!("reference: unknown event type {other}"),
        };
        Fact {
            id: s(&v, "event_id"),
            commune: s(&v, "commune_code"),
            at_ns: ns(&s(&v, "occurred_at")),
            what,
        }
    }

    fn slot(&self) -> Slot {
        let c = self.commune.clone();
        match &self.what {
            What::Received { case, .. } => Slot::Received(c, case.clone()),
            What::Resolved { case, .. } | What::Withdrawn { case } => {
                Slot::Closing(c, case.clone())
            }
            What::Rated { case, .. } => Slot::Rating(c, case.clone()),
            What::Signed { doc, .. } => Slot::Document(c, doc.clone()),
        }
    }
}

/// The counters DOMAIN.md defines, from the whole arrival sequence of valid
/// events and the clock's final time (`None`: the clock never ticked).
pub fn reference(arrivals: &[Fact], clock_ns: Option<i64>) -> Table {
    // 1. For a repeated event_id the first arrival wins: drop the rest whole.
    let mut seen = HashSet::new();
    let kept: Vec<&Fact> = arrivals
        .iter()
        .filter(|e| seen.insert(e.id.clone()))
        .collect();

    // 2. One winner per slot: the latest occurred_at; on equal times, the
    //    last to arrive.
    let mut winners: BTreeMap<Slot, (i64, usize, &Fact)> = BTreeMap::new();
    for (arrival, e) in kept.iter().enumerate() {
        let candidate = (e.at_ns, arrival, *e);
        winners
            .entry(e.slot())
            .and_modify(|w| {
                if (candidate.0, candidate.1) > (w.0, w.1) {
                    *w = candidate;
                }
            })
            .or_insert(candidate);
    }

    // 3. Counters per commune and local day.
    let mut table = Table::new();
    let mut add = |commune: &str, day: NaiveDate, counter: usize| {
        table.entry((commune.to_string(), day)).or_insert([0; 10])[counter] += 1;
    };
    for (_, _, e) in winners.values() {
        let day = local_day(e.at_ns);
        let commune = e.commune.as_str();
        match &e.what {
            What::Received {
                case,
                channel,
                level,
                due_ns,
                electronic,
                digitized,
            } => {
                add(commune, day, RECEIVED);
                if channel == "online" && (level == "partial" || level == "full") {
                    add(commune, day, ONLINE);
                }
                if *electronic {
                    add(commune, day, ELECTRONIC);
                }
                if *digitized {
                    add(commune, day, DIGITIZED);
                }
                // Still open and overdue: late on the first day after the due date.
                let open = !winners.contains_key(&Slot::Closing(commune.into(), case.clone()));
                let due_day = local_day(*due_ns);
                if let Some(today) = clock_ns.map(local_day) {
                    if open && today > due_day {
                        add(commune, due_day + Days::new(1), DUE);
                    }
                }
            }
            What::Resolved { due_ns, .. } => {
                add(commune, day, DUE);
                if day <= local_day(*due_ns) {
                    add(commune, day, ON_TIME);
                }
            }
            What::Withdrawn { .. } => {}
            What::Rated { rating, .. } => {
                add(commune, day, RATINGS);
                if rating != "dissatisfied" {
                    add(commune, day, SATISFIED);
                }
            }
            What::Signed { digital, .. } => {
                add(commune, day, SIGNATURES);
                if *digital {
                    add(commune, day, DIGITAL);
                }
            }
        }
    }
    table
}
