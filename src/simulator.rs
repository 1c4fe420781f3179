//! A generator of realistic version-1 case events for the communes of a
//! unit list: a year of one-stop-shop work, each commune with its own
//! profile (some meet their targets, some do not). Deterministic for a seed.
//! Events come out in time order, with a case's later steps (resolution,
//! rating, signature) interleaved with other cases' as they happen.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::domain::time::{local_date, local_offset};
use crate::domain::Units;

/// How one commune works: probabilities of each good outcome.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    pub online: f64,
    pub on_time: f64,
    pub satisfied: f64,
    pub electronic: f64,
    /// Papers digitised at intake (Decision 766 scores full marks from 80%).
    pub digitized: f64,
    pub digital: f64,
    pub withdrawn: f64,
    pub rated: f64,
}

impl Profile {
    /// A spread of profiles: the first communes do well, later ones miss
    /// some targets, so alerts have something to say.
    pub fn nth(n: usize) -> Profile {
        const PROFILES: [Profile; 5] = [
            Profile {
                online: 0.85,
                on_time: 0.998,
                satisfied: 0.99,
                electronic: 1.0,
                digitized: 0.93,
                digital: 1.0,
                withdrawn: 0.01,
                rated: 0.6,
            },
            Profile {
                online: 0.75,
                on_time: 0.995,
                satisfied: 0.97,
                electronic: 1.0,
                digitized: 0.88,
                digital: 0.995,
                withdrawn: 0.01,
                rated: 0.5,
            },
            Profile {
                online: 0.62,
                on_time: 0.99,
                satisfied: 0.96,
                electronic: 0.998,
                digitized: 0.84,
                digital: 1.0,
                withdrawn: 0.02,
                rated: 0.4,
            },
            Profile {
                online: 0.72,
                on_time: 0.97,
                satisfied: 0.92,
                electronic: 1.0,
                digitized: 0.76,
                digital: 0.98,
                withdrawn: 0.02,
                rated: 0.5,
            },
            Profile {
                online: 0.45,
                on_time: 0.95,
                satisfied: 0.88,
                electronic: 0.97,
                digitized: 0.62,
                digital: 0.9,
                withdrawn: 0.03,
                rated: 0.3,
            },
        ];
        PROFILES[n % PROFILES.len()]
    }
}

/// One generated record: Kafka key (the commune code) and JSON value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimRecord {
    pub key: String,
    pub value: String,
    pub occurred_at: DateTime<Utc>,
}

struct Commune {
    code: String,
    profile: Profile,
    valid_from: Option<NaiveDate>,
    valid_to: Option<NaiveDate>,
}

impl Commune {
    fn valid_on(&self, day: NaiveDate) -> bool {
        self.valid_from.is_none_or(|f| f <= day) && self.valid_to.is_none_or(|t| day <= t)
    }
}

/// An endless, time-ordered stream of events for the configured communes:
/// each day's new cases are received by the communes valid that day, and a
/// case's later steps name the unit its commune has become by then (the
/// producer switches codes on the day the unit list changes).
pub struct Simulator {
    units: Units,
    rng: SmallRng,
    communes: Vec<Commune>,
    cases_per_day: f64,
    day: NaiveDate,
    seed: u64,
    seq: u64,
    case_seq: u64,
    /// Events scheduled for later, ordered by time then sequence, with
    /// their record key (the commune code they name).
    pending: BinaryHeap<Reverse<(i64, u64, String, String)>>,
}

impl Simulator {
    /// A simulator starting on local date `start`, with about
    /// `cases_per_day` new cases per commune per day.
    pub fn new(units: &Units, seed: u64, start: NaiveDate, cases_per_day: f64) -> Self {
        let communes = units
            .communes()
            .enumerate()
            .map(|(n, u)| Commune {
                code: u.code.to_string(),
                profile: Profile::nth(n),
                valid_from: u.valid_from,
                valid_to: u.valid_to,
            })
            .collect();
        Simulator {
            units: units.clone(),
            rng: SmallRng::seed_from_u64(seed),
            communes,
            cases_per_day,
            day: start,
            seed,
            seq: 0,
            case_seq: 0,
            pending: BinaryHeap::new(),
        }
    }

    fn at(day: NaiveDate, minutes: i64) -> DateTime<Utc> {
        let local = local_offset()
            .from_local_datetime(&day.and_hms_opt(7, 0, 0).expect("valid time"))
            .single()
            .expect("fixed offset");
        (local + Duration::minutes(minutes)).with_timezone(&Utc)
    }

    /// Schedules `value` at `at`, naming the unit that the commune `code`
    /// (which received the case on `day`) has become by then.
    fn schedule(
        &mut self,
        at: DateTime<Utc>,
        day: NaiveDate,
        code: &str,
        mut value: serde_json::Value,
    ) {
        self.seq += 1;
        let named = self
            .units
            .code_on(code, day, local_date(at))
            .map_or_else(|| code.to_string(), |c| c.to_string());
        value["commune_code"] = serde_json::Value::String(named.clone());
        self.pending.push(Reverse((
            at.timestamp_micros(),
            self.seq,
            named,
            value.to_string(),
        )));
    }

    fn next_id(&mut self) -> String {
        self.seq += 1;
        format!("sim-{:x}-{:x}", self.seed, self.seq)
    }

    /// Generates one day's new cases (and schedules their later steps).
    fn generate_day(&mut self) {
        let day = self.day;
        for c in 0..self.communes.len() {
            let commune = &self.communes[c];
            if !commune.valid_on(day) {
                continue;
            }
            let p = commune.profile;
            let code = commune.code.clone();
            let n = self.cases_per_day.floor() as usize
                + (self.rng.gen::<f64>() < self.cases_per_day.fract()) as usize;
            for _ in 0..n {
                self.case_seq += 1;
                let case_id = format!(
                    "000.00.{}.H37-{}-{:05}",
                    &code[code.len().saturating_sub(2)..],
                    day.format("%y%m%d"),
                    self.case_seq
                );
                let received_at = Self::at(day, self.rng.gen_range(0..600));
                let online = self.rng.gen::<f64>() < p.online;
                let due_days = *[3i64, 5, 7, 10, 15]
                    .get(self.rng.gen_range(0..5))
                    .expect("in range");
                let due_at = Self::at(day, due_days * 24 * 60 + 600);
                let id = self.next_id();
                let value = json!({
                    "event_id": id, "event_type": "case.received", "schema_version": 1,
                    "occurred_at": received_at.with_timezone(&local_offset()).to_rfc3339(),
                    "commune_code": code, "case_id": case_id,
                    "data": {
                        "procedure_code": format!("1.00{}", self.rng.gen_range(1000..9999)),
                        "channel": if online { "online" } else { "in_person" },
                        "online_level": if online { if self.rng.gen::<f64>() < 0.5 { "full" } else { "partial" } } else { "none" },
                        "due_at": due_at.with_timezone(&local_offset()).to_rfc3339(),
                        "registered_electronically": self.rng.gen::<f64>() < p.electronic,
                        "digitized": self.rng.gen::<f64>() < p.digitized,
                    }
                });
                self.schedule(received_at, day, &code, value);
                let roll: f64 = self.rng.gen();
                if roll < p.withdrawn {
                    let at = received_at + Duration::hours(self.rng.gen_range(2..48));
                    let id = self.next_id();
                    let value = json!({
                        "event_id": id, "event_type": "case.withdrawn", "schema_version": 1,
                        "occurred_at": at.with_timezone(&local_offset()).to_rfc3339(),
                        "commune_code": code, "case_id": case_id, "data": {}
                    });
                    self.schedule(at, day, &code, value);
                    continue;
                }
                let on_time = self.rng.gen::<f64>() < p.on_time;
                let resolved_at = if on_time {
                    received_at + Duration::minutes(self.rng.gen_range(60..(due_days * 24 * 60)))
                } else {
                    due_at + Duration::hours(self.rng.gen_range(16..96))
                };
                let id = self.next_id();
                let value = json!({
                    "event_id": id, "event_type": "case.resolved", "schema_version": 1,
                    "occurred_at": resolved_at.with_timezone(&local_offset()).to_rfc3339(),
                    "commune_code": code, "case_id": case_id,
                    "data": {"due_at": due_at.with_timezone(&local_offset()).to_rfc3339(), "outcome": if self.rng.gen::<f64>() < 0.97 { "completed" } else { "rejected" }}
                });
                self.schedule(resolved_at, day, &code, value);
                let signed_at = resolved_at - Duration::minutes(30);
                let id = self.next_id();
                let digital = self.rng.gen::<f64>() < p.digital;
                let value = json!({
                    "event_id": id, "event_type": "document.signed", "schema_version": 1,
                    "occurred_at": signed_at.with_timezone(&local_offset()).to_rfc3339(),
                    "commune_code": code, "case_id": case_id,
                    "data": {"document_id": format!("KQ-{case_id}"), "signature": if digital { "digital" } else { "handwritten" }, "document_kind": "case_result"}
                });
                self.schedule(signed_at, day, &code, value);
                if self.rng.gen::<f64>() < p.rated {
                    let at = resolved_at + Duration::hours(self.rng.gen_range(1..72));
                    let satisfied = self.rng.gen::<f64>() < p.satisfied;
                    let rating = if satisfied {
                        if self.rng.gen::<f64>() < 0.6 {
                            "very_satisfied"
                        } else {
                            "satisfied"
                        }
                    } else {
                        "dissatisfied"
                    };
                    let id = self.next_id();
                    let value = json!({
                        "event_id": id, "event_type": "case.rated", "schema_version": 1,
                        "occurred_at": at.with_timezone(&local_offset()).to_rfc3339(),
                        "commune_code": code, "case_id": case_id,
                        "data": {"rating": rating, "score": if satisfied { self.rng.gen_range(15..=18) } else { self.rng.gen_range(0..12) }}
                    });
                    self.schedule(at, day, &code, value);
                }
            }
        }
        self.day = self.day.succ_opt().expect("date in range");
    }
}

impl Iterator for Simulator {
    type Item = SimRecord;

    fn next(&mut self) -> Option<SimRecord> {
        // Events before the start of the next day to generate are final:
        // nothing generated later can come before them.
        loop {
            let horizon = Self::at(self.day, -7 * 60).timestamp_micros();
            match self.pending.peek() {
                Some(Reverse((t, ..))) if *t < horizon => {
                    let Reverse((t, _, key, value)) = self.pending.pop().expect("peeked");
                    return Some(SimRecord {
                        key,
                        value,
                        occurred_at: DateTime::from_timestamp_micros(t).expect("valid"),
                    });
                }
                _ => self.generate_day(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{decode, Fold, Indicator};

    fn units() -> Units {
        crate::config::Settings::load_file(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/default.toml"
        )))
        .unwrap()
        .units
    }

    #[test]
    fn every_generated_record_is_a_valid_event_in_time_order() {
        let units = units();
        let sim = Simulator::new(&units, 7, NaiveDate::from_ymd_opt(2023, 1, 1).unwrap(), 5.0);
        let mut last = None;
        for r in sim.take(20_000) {
            let e = decode(Some(r.value.as_bytes()), &units).unwrap();
            assert_eq!(e.commune.as_str(), r.key);
            assert!(last.is_none_or(|l| l <= e.occurred_at));
            last = Some(e.occurred_at);
        }
    }

    #[test]
    fn the_producer_switches_codes_on_the_day_the_units_change() {
        let units = units();
        let start = NaiveDate::from_ymd_opt(2025, 6, 20).unwrap();
        let change = NaiveDate::from_ymd_opt(2025, 7, 1).unwrap();
        let mut received_by = std::collections::HashMap::new();
        let mut across = 0;
        for r in Simulator::new(&units, 3, start, 5.0).take(5_000) {
            let e = decode(Some(r.value.as_bytes()), &units).unwrap();
            let named = units.get_on(e.commune.as_str(), e.day).unwrap();
            assert!(
                named.valid_on(e.day),
                "{} names {} on {}",
                e.event_id,
                named.name,
                e.day
            );
            let case = e.case_id.clone().unwrap();
            if let crate::domain::EventKind::Received(_) = e.kind {
                received_by.insert(case.clone(), (e.commune.clone(), e.day));
            } else if let Some((by, day)) = received_by.get(&case) {
                if *day < change && e.day >= change && *by != e.commune {
                    // Received by an old unit, continued by its successor:
                    // one case under one home.
                    assert_eq!(units.home(by.as_str(), *day), Some(&e.home));
                    across += 1;
                }
            }
        }
        assert!(across > 0, "some cases span the change under two codes");
    }

    #[test]
    fn the_same_seed_gives_the_same_stream() {
        let units = units();
        let start = NaiveDate::from_ymd_opt(2023, 1, 1).unwrap();
        let a: Vec<_> = Simulator::new(&units, 1, start, 3.0).take(500).collect();
        let b: Vec<_> = Simulator::new(&units, 1, start, 3.0).take(500).collect();
        assert_eq!(a, b);
    }

    #[test]
    fn profiles_make_some_communes_miss_the_online_target() {
        let units = units();
        let mut fold = Fold::new(None);
        for r in Simulator::new(
            &units,
            3,
            NaiveDate::from_ymd_opt(2023, 1, 1).unwrap(),
            10.0,
        )
        .take(50_000)
        {
            fold.apply(&decode(Some(r.value.as_bytes()), &units).unwrap());
        }
        let mut rates = std::collections::BTreeMap::<String, (i64, i64)>::new();
        for ((c, _), counters) in fold.deltas() {
            let r = Indicator::OnlineRate.ratio(counters);
            let e = rates.entry(c.to_string()).or_default();
            e.0 += r.numerator;
            e.1 += r.denominator;
        }
        let missing = rates
            .values()
            .filter(|(n, d)| (*n as f64) < 0.7 * *d as f64)
            .count();
        assert!(missing >= 2 && missing < rates.len(), "{rates:?}");
    }
}
