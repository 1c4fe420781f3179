//! Administrative units (đơn vị hành chính): the configured registry that
//! decides which commune codes an event may carry and how communes roll up,
//! with the units' history.
//!
//! Units are configuration, not code: a province has hundreds and they merge.
//! A unit is valid over a period (`valid_from`, `valid_to`, both inclusive,
//! either open); when it ends it names its successors. A code may be reused
//! by a later unit (on 1 July 2025 code 31480 passed from Xã Long Phú to
//! Phường Long Phú 1), so a unit is keyed by its code and its period.
//!
//! Counters stay keyed by the code an event named; [`Structure`] attributes
//! them, when a query is answered, to the units valid on the date asked for
//! (docs/UNITS.md).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

/// A unit's code as the one-stop software sends it (e.g. `"31471"`).
///
/// Cheap to clone: codes are interned by [`Units`], so decoding an event does
/// not allocate for its commune.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UnitCode(Arc<str>);

impl UnitCode {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for UnitCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl fmt::Display for UnitCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for UnitCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// What kind of unit: the lowest level (ward, commune, township) receives
/// cases; the others exist to roll communes up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitKind {
    /// Phường.
    Ward,
    /// Xã.
    Commune,
    /// Thị trấn.
    Township,
    /// Thị xã.
    Town,
    /// Huyện.
    District,
    /// Thành phố.
    City,
    /// Tỉnh.
    Province,
    /// The whole country (a roll-up of every province).
    Country,
}

impl UnitKind {
    /// Whether events may name a unit of this kind: only the lowest level
    /// runs a one-stop shop in this model.
    pub fn receives_cases(self) -> bool {
        matches!(
            self,
            UnitKind::Ward | UnitKind::Commune | UnitKind::Township
        )
    }

    /// The Vietnamese label (for dashboards and alerts).
    pub fn label_vi(self) -> &'static str {
        match self {
            UnitKind::Ward => "phường",
            UnitKind::Commune => "xã",
            UnitKind::Township => "thị trấn",
            UnitKind::Town => "thị xã",
            UnitKind::District => "huyện",
            UnitKind::City => "thành phố",
            UnitKind::Province => "tỉnh",
            UnitKind::Country => "cả nước",
        }
    }
}

/// The communes a producer may send events for (see [`Units::scope`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    communes: HashSet<UnitCode>,
}

impl Scope {
    /// Whether an event of `commune` may be sent.
    pub fn covers(&self, commune: &UnitCode) -> bool {
        self.communes.contains(commune)
    }

    /// How many communes it covers.
    pub fn len(&self) -> usize {
        self.communes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.communes.is_empty()
    }
}

/// One unit as configured (an inline `[[units]]` entry, a row of a unit
/// file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitSpec {
    pub code: String,
    pub name: String,
    pub kind: UnitKind,
    /// The parent's code; the parent must be valid over the whole of this
    /// unit's period.
    #[serde(default)]
    pub parent: Option<String>,
    /// The first day the unit exists (inclusive); none: always did.
    #[serde(default)]
    pub valid_from: Option<NaiveDate>,
    /// The last day the unit exists (inclusive); none: it still does.
    #[serde(default)]
    pub valid_to: Option<NaiveDate>,
    /// When it ends: the units that take its area over on the next day.
    /// One: a merge (or a renaming); several: a split.
    #[serde(default)]
    pub successors: Vec<String>,
    /// For a split: the successor credited with the unit's whole history.
    /// None: its history is "not attributable" to any one successor.
    #[serde(default)]
    pub history_to: Option<String>,
}

impl UnitSpec {
    /// A unit without history.
    pub fn new(code: &str, name: &str, kind: UnitKind, parent: Option<&str>) -> UnitSpec {
        UnitSpec {
            code: code.into(),
            name: name.into(),
            kind,
            parent: parent.map(Into::into),
            valid_from: None,
            valid_to: None,
            successors: Vec::new(),
            history_to: None,
        }
    }
}

/// A unit in the registry: one code over one period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unit {
    pub code: UnitCode,
    pub name: String,
    pub kind: UnitKind,
    pub parent: Option<UnitCode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<NaiveDate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_to: Option<NaiveDate>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub successors: Vec<UnitCode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_to: Option<UnitCode>,
}

impl Unit {
    /// Whether the unit exists on `day`.
    pub fn valid_on(&self, day: NaiveDate) -> bool {
        self.valid_from.is_none_or(|f| f <= day) && self.valid_to.is_none_or(|t| day <= t)
    }

    fn ended_before(&self, day: NaiveDate) -> bool {
        self.valid_to.is_some_and(|t| t < day)
    }

    /// Whether the unit has a history (a period, or successors).
    pub fn changes(&self) -> bool {
        self.valid_from.is_some() || self.valid_to.is_some()
    }
}

/// What is wrong with one entry of a unit list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("the code must be 1 to 16 ASCII digits or letters")]
    BadCode,
    #[error("its validity overlaps that of another unit with the same code")]
    Overlaps { other: usize },
    #[error("valid_to {to} is before valid_from {from}")]
    EndsBeforeStart { from: NaiveDate, to: NaiveDate },
    #[error("parent `{0}` is not in the list")]
    UnknownParent(String),
    #[error("parent `{0}` is not valid over the whole of this unit's validity")]
    ParentNotValid(String),
    #[error("names successors but has no valid_to")]
    SuccessorsWithoutEnd,
    #[error("successor `{successor}` is not valid on {day}, the day after this unit ends")]
    UnknownSuccessor { successor: String, day: NaiveDate },
    #[error("successor `{0}` is named twice")]
    DuplicateSuccessor(String),
    #[error("history_to `{0}` is not one of its successors")]
    HistoryToNotSuccessor(String),
    #[error("history_to is for a split (two or more successors)")]
    HistoryToWithoutSplit,
    #[error("it is its own ancestor")]
    Cycle,
}

/// Why a unit list cannot be used: the entry (0-based, in list order), its
/// code and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unit `{code}`: {problem}")]
pub struct UnitsError {
    pub entry: usize,
    pub code: String,
    pub problem: Problem,
}

/// Why an event may not name a unit on its day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No such code, or not a unit that receives cases.
    Unknown,
    /// The code names no unit yet on that day.
    NotYetValid { from: NaiveDate },
    /// The unit had ended and was split (or has no successor): its events
    /// cannot be placed.
    Ended {
        to: NaiveDate,
        successors: Vec<UnitCode>,
    },
}

/// The registry of configured units and their history.
#[derive(Debug, Clone, Default)]
pub struct Units {
    /// Every unit, in list order.
    units: Vec<Unit>,
    /// A code's units, oldest first (their periods do not overlap).
    by_code: HashMap<Arc<str>, Vec<usize>>,
    successors: Vec<Vec<usize>>,
    predecessors: Vec<Vec<usize>>,
    /// Every `valid_from`, sorted, distinct: between two of them, every
    /// code means one unit.
    boundaries: Vec<NaiveDate>,
    /// The homes ([`Units::home`]) of units with another code: their cases
    /// may be written from the partitions of several codes.
    shared_homes: HashSet<Arc<str>>,
}

fn day_after(d: NaiveDate) -> NaiveDate {
    d.succ_opt().unwrap_or(d)
}

/// Whether `versions` (sorted by `valid_from`, not overlapping) cover every
/// day of `[from, to]` (`None`: unbounded).
fn covers(
    units: &[Unit],
    versions: &[usize],
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> bool {
    let num = |d: NaiveDate| i64::from(d.num_days_from_ce());
    // The first day not yet known to be covered.
    let mut cursor = from.map_or(i64::MIN, num);
    let end = to.map_or(i64::MAX, num);
    for &v in versions {
        let (vf, vt) = (
            units[v].valid_from.map_or(i64::MIN, num),
            units[v].valid_to.map_or(i64::MAX, num),
        );
        if vt < cursor {
            continue;
        }
        if vf > cursor {
            return false;
        }
        if vt >= end {
            return true;
        }
        cursor = vt + 1;
    }
    false
}

impl Units {
    /// Validates a unit list: codes, periods that do not overlap for one
    /// code, parents valid over each child's period, successors valid the day
    /// after each end, no cycle.
    pub fn parse(specs: &[UnitSpec]) -> Result<Self, UnitsError> {
        let fail = |entry: usize, problem: Problem| UnitsError {
            entry,
            code: specs[entry].code.clone(),
            problem,
        };
        let mut interned: HashMap<Arc<str>, Vec<usize>> = HashMap::with_capacity(specs.len());
        let mut units = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            check_entry(spec).map_err(|p| fail(i, p))?;
            let code = match interned.get_key_value(spec.code.as_str()) {
                Some((k, _)) => k.clone(),
                None => Arc::from(spec.code.as_str()),
            };
            interned.entry(code.clone()).or_default().push(i);
            units.push(Unit {
                code: UnitCode(code),
                name: spec.name.clone(),
                kind: spec.kind,
                parent: None,
                valid_from: spec.valid_from,
                valid_to: spec.valid_to,
                successors: Vec::new(),
                history_to: None,
            });
        }
        for versions in interned.values_mut() {
            versions.sort_by_key(|&v| (units[v].valid_from, v));
            for pair in versions.windows(2) {
                let (a, b) = (&units[pair[0]], &units[pair[1]]);
                let apart = matches!((a.valid_to, b.valid_from), (Some(t), Some(f)) if t < f);
                if !apart {
                    let (first, later) = (pair[0].min(pair[1]), pair[0].max(pair[1]));
                    return Err(fail(later, Problem::Overlaps { other: first }));
                }
            }
        }
        let code_of = |s: &str| interned.get_key_value(s).map(|(k, _)| UnitCode(k.clone()));
        let mut successors = vec![Vec::new(); specs.len()];
        let mut predecessors = vec![Vec::new(); specs.len()];
        for (i, spec) in specs.iter().enumerate() {
            if let Some(parent) = &spec.parent {
                let versions = interned
                    .get(parent.as_str())
                    .ok_or_else(|| fail(i, Problem::UnknownParent(parent.clone())))?;
                if !covers(&units, versions, spec.valid_from, spec.valid_to) {
                    return Err(fail(i, Problem::ParentNotValid(parent.clone())));
                }
                units[i].parent = code_of(parent);
            }
            if let Some(end) = spec.valid_to {
                let day = day_after(end);
                for s in &spec.successors {
                    let next = interned
                        .get(s.as_str())
                        .and_then(|vs| vs.iter().copied().find(|&v| units[v].valid_on(day)))
                        .ok_or_else(|| {
                            fail(
                                i,
                                Problem::UnknownSuccessor {
                                    successor: s.clone(),
                                    day,
                                },
                            )
                        })?;
                    successors[i].push(next);
                    predecessors[next].push(i);
                    units[i].successors.push(code_of(s).expect("found above"));
                }
            }
            units[i].history_to = spec.history_to.as_deref().and_then(code_of);
        }
        let mut boundaries: Vec<NaiveDate> = units.iter().filter_map(|u| u.valid_from).collect();
        boundaries.sort_unstable();
        boundaries.dedup();
        let mut registry = Units {
            units,
            by_code: interned,
            successors,
            predecessors,
            boundaries,
            shared_homes: HashSet::new(),
        };
        let shared: HashSet<Arc<str>> = registry
            .units
            .iter()
            .filter_map(|u| {
                let home =
                    registry.home(u.code.as_str(), u.valid_from.unwrap_or(NaiveDate::MIN))?;
                (home != &u.code).then(|| home.0.clone())
            })
            .collect();
        registry.shared_homes = shared;
        if let Some(i) = registry.in_a_cycle() {
            return Err(fail(i, Problem::Cycle));
        }
        Ok(registry)
    }

    /// A unit that is its own ancestor, if there is one.
    fn in_a_cycle(&self) -> Option<usize> {
        (0..self.units.len()).find(|&i| {
            let mut steps = 0;
            let mut at = self.parent_of(i);
            while let Some(p) = at {
                steps += 1;
                if steps > self.units.len() {
                    return true;
                }
                at = self.parent_of(p);
            }
            false
        })
    }

    /// The parent of unit `i` in its own period (the parent's unit valid on
    /// its first day, or the parent's oldest).
    fn parent_of(&self, i: usize) -> Option<usize> {
        let u = &self.units[i];
        let versions = self.by_code.get(u.parent.as_ref()?.as_str())?;
        match u.valid_from {
            Some(day) => versions
                .iter()
                .copied()
                .find(|&v| self.units[v].valid_on(day)),
            None => versions.first().copied(),
        }
    }

    /// The unit with this code: its latest.
    pub fn get(&self, code: &str) -> Option<&Unit> {
        let versions = self.by_code.get(code)?;
        versions.last().map(|&v| &self.units[v])
    }

    /// The unit this code names on `day`.
    pub fn get_on(&self, code: &str, day: NaiveDate) -> Option<&Unit> {
        self.version_on(code, day).map(|v| &self.units[v])
    }

    fn version_on(&self, code: &str, day: NaiveDate) -> Option<usize> {
        let versions = self.by_code.get(code)?;
        versions
            .iter()
            .copied()
            .find(|&v| self.units[v].valid_on(day))
    }

    /// The unit a counter of `code` on `day` belongs to: the code's latest
    /// unit begun by then (after its end, until the code is reused, days
    /// still belong to it); the oldest for a day before all of them.
    fn segment(&self, code: &str, day: NaiveDate) -> Option<usize> {
        let versions = self.by_code.get(code)?;
        versions
            .iter()
            .rev()
            .copied()
            .find(|&v| self.units[v].valid_from.is_none_or(|f| f <= day))
            .or_else(|| versions.first().copied())
    }

    /// The interned code, if `code` names a unit that receives cases on any
    /// day.
    pub fn commune(&self, code: &str) -> Option<&UnitCode> {
        let versions = self.by_code.get(code)?;
        versions
            .iter()
            .map(|&v| &self.units[v])
            .find(|u| u.kind.receives_cases())
            .map(|u| &u.code)
    }

    /// Whether an event of `day` may name `code`: the interned code and the
    /// case's home ([`Units::home`]). It may when the code names a unit
    /// that receives cases and is valid that day, or one that had ended by
    /// then with a single successor (at each step) valid that day. Its
    /// counters stay keyed by `code`; queries attribute them.
    pub fn commune_on(
        &self,
        code: &str,
        day: NaiveDate,
    ) -> Result<(&UnitCode, &UnitCode), Refusal> {
        let named = self.segment(code, day).ok_or(Refusal::Unknown)?;
        let unit = &self.units[named];
        if !unit.kind.receives_cases() {
            return Err(Refusal::Unknown);
        }
        if let Some(from) = unit.valid_from.filter(|&f| day < f) {
            return Err(Refusal::NotYetValid { from });
        }
        if self.successors[named].is_empty() {
            // The common case: a unit that has not ended (or ended without
            // a successor and is still valid that day).
            if unit.valid_on(day) {
                return Ok((&unit.code, &unit.code));
            }
        }
        let mut at = named;
        while !self.units[at].valid_on(day) {
            match self.successors[at].as_slice() {
                [one] => at = *one,
                _ => {
                    let ended = &self.units[at];
                    return Err(Refusal::Ended {
                        to: ended.valid_to.unwrap_or(day),
                        successors: ended.successors.clone(),
                    });
                }
            }
        }
        if !self.units[at].kind.receives_cases() {
            return Err(Refusal::Unknown);
        }
        let home = self.home(code, day).unwrap_or(&unit.code);
        Ok((&unit.code, home))
    }

    /// The code of the unit that the unit `code` named on `named` has
    /// become by `day` (itself while it lasts; through single successors
    /// after): what a producer sends once it has switched codes. `None` if
    /// it was split or ended without a successor by then.
    pub fn code_on(&self, code: &str, named: NaiveDate, day: NaiveDate) -> Option<&UnitCode> {
        let mut at = self.segment(code, named)?;
        while self.units[at].ended_before(day) {
            match self.successors[at].as_slice() {
                [one] => at = *one,
                _ => return None,
            }
        }
        Some(&self.units[at].code)
    }

    /// The unit valid on `today` that counters of `code` on `day` count in
    /// when it is evaluated against its targets: the unit the code named
    /// that day, or what it had become by `today` through merges (and a
    /// split's `history_to`). `None` when they count in no unit valid
    /// today (a split's history, a unit ended without a successor, a unit
    /// not yet begun) or in one that receives no cases.
    pub fn evaluated_in(&self, code: &str, day: NaiveDate, today: NaiveDate) -> Option<&Unit> {
        let mut at = self.segment(code, day)?;
        loop {
            let unit = &self.units[at];
            if unit.valid_on(today) {
                return unit.kind.receives_cases().then_some(unit);
            }
            if !unit.ended_before(today) {
                return None;
            }
            at = match self.successors[at].as_slice() {
                [one] => *one,
                many => {
                    let to = unit.history_to.as_ref()?;
                    many.iter().copied().find(|&s| self.units[s].code == *to)?
                }
            };
        }
    }

    /// Every unit valid on `today` that some period of `code` counts in
    /// ([`Units::evaluated_in`]), in code order, without repeats.
    pub fn evaluated_as(&self, code: &str, today: NaiveDate) -> Vec<&UnitCode> {
        let Some(versions) = self.by_code.get(code) else {
            return Vec::new();
        };
        let mut found: Vec<&UnitCode> = versions
            .iter()
            .filter_map(|&v| {
                let day = self.units[v].valid_from.unwrap_or(NaiveDate::MIN);
                self.evaluated_in(code, day, today).map(|u| &u.code)
            })
            .collect();
        found.sort_unstable();
        found.dedup();
        found
    }

    /// The codes whose counters may count in the unit `code` names on
    /// `today`: its own and those of every unit it came from, at any
    /// remove, in code order. One code alone: nothing else feeds it.
    pub fn feeders(&self, code: &str, today: NaiveDate) -> Vec<&UnitCode> {
        let Some(start) = self.version_on(code, today) else {
            return Vec::new();
        };
        let mut seen = HashSet::new();
        let mut stack = vec![start];
        let mut codes = Vec::new();
        while let Some(v) = stack.pop() {
            if seen.insert(v) {
                codes.push(&self.units[v].code);
                stack.extend(&self.predecessors[v]);
            }
        }
        codes.sort_unstable();
        codes.dedup();
        codes
    }

    /// The code a case of the unit `code` (as named on `day`) is kept
    /// under: the unit's last successor, through merges (and through a
    /// split's `history_to`), so that a case received by a unit before a
    /// merge and resolved by its successor after it is one case. Without
    /// history, the code itself.
    pub fn home(&self, code: &str, day: NaiveDate) -> Option<&UnitCode> {
        let mut at = self.segment(code, day)?;
        loop {
            let next = match self.successors[at].as_slice() {
                [] => break,
                [one] => Some(*one),
                many => self.units[at]
                    .history_to
                    .as_ref()
                    .and_then(|h| many.iter().copied().find(|&s| self.units[s].code == *h)),
            };
            match next {
                Some(n) => at = n,
                None => break,
            }
        }
        Some(&self.units[at].code)
    }

    /// Whether cases kept under `home` may be written from the partitions
    /// of other codes (units that merged into it).
    pub fn is_shared_home(&self, home: &UnitCode) -> bool {
        !self.shared_homes.is_empty() && self.shared_homes.contains(home.as_str())
    }

    /// All units in list order (every period of every code).
    pub fn iter(&self) -> impl Iterator<Item = &Unit> {
        self.units.iter()
    }

    /// The units that receive cases, in list order (every period).
    pub fn communes(&self) -> impl Iterator<Item = &Unit> {
        self.iter().filter(|u| u.kind.receives_cases())
    }

    /// The case-receiving units below `ancestor` (at any depth, in any
    /// period), in list order.
    pub fn communes_under<'a>(&'a self, ancestor: &'a str) -> impl Iterator<Item = &'a Unit> + 'a {
        (0..self.units.len())
            .filter(move |&i| self.units[i].kind.receives_cases() && self.is_under(i, ancestor))
            .map(move |i| &self.units[i])
    }

    fn is_under(&self, i: usize, ancestor: &str) -> bool {
        let mut at = self.parent_of(i);
        while let Some(p) = at {
            if self.units[p].code.as_str() == ancestor {
                return true;
            }
            at = self.parent_of(p);
        }
        false
    }

    /// How many units (periods) the list holds.
    pub fn len(&self) -> usize {
        self.units.len()
    }

    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    /// Whether any unit has a period: without one, every structure is the
    /// same and counters need no attribution.
    pub fn has_history(&self) -> bool {
        !self.boundaries.is_empty() || self.units.iter().any(|u| u.valid_to.is_some())
    }

    /// `[from, to)` cut where the structure changes (at every `valid_from`
    /// inside it): within a piece, each code means one unit.
    pub fn pieces(&self, from: NaiveDate, to: NaiveDate) -> Vec<(NaiveDate, NaiveDate)> {
        let mut pieces = Vec::new();
        let mut lo = from;
        for &b in self.boundaries.iter().filter(|&&b| from < b && b < to) {
            pieces.push((lo, b));
            lo = b;
        }
        if lo < to {
            pieces.push((lo, to));
        }
        pieces
    }

    /// The communes `codes` cover: each a commune itself, or a parent whose
    /// communes (at any depth, in any period) it stands for. Unknown codes
    /// cover nothing (the configuration names them as errors before this is
    /// built).
    pub fn scope(&self, codes: &[String]) -> Scope {
        let mut communes = HashSet::new();
        for code in codes {
            if let Some(c) = self.commune(code) {
                communes.insert(c.clone());
            }
            communes.extend(self.communes_under(code).map(|u| u.code.clone()));
        }
        Scope { communes }
    }

    /// The structure valid on `as_of` (see [`Structure`]).
    pub fn structure(&self, as_of: NaiveDate) -> Structure {
        Structure::new(self, as_of)
    }
}

/// What one entry alone can get wrong.
fn check_entry(spec: &UnitSpec) -> Result<(), Problem> {
    check_code(&spec.code)?;
    if let (Some(from), Some(to)) = (spec.valid_from, spec.valid_to) {
        if to < from {
            return Err(Problem::EndsBeforeStart { from, to });
        }
    }
    if !spec.successors.is_empty() && spec.valid_to.is_none() {
        return Err(Problem::SuccessorsWithoutEnd);
    }
    let mut named = HashSet::new();
    for s in &spec.successors {
        check_code(s)?;
        if !named.insert(s.as_str()) {
            return Err(Problem::DuplicateSuccessor(s.clone()));
        }
    }
    if let Some(h) = &spec.history_to {
        if spec.successors.len() < 2 {
            return Err(Problem::HistoryToWithoutSplit);
        }
        if !named.contains(h.as_str()) {
            return Err(Problem::HistoryToNotSuccessor(h.clone()));
        }
    }
    Ok(())
}

fn check_code(code: &str) -> Result<(), Problem> {
    let ok =
        !code.is_empty() && code.len() <= 16 && code.bytes().all(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(Problem::BadCode)
    }
}

/// Where a unit's counters count in a structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attribution {
    /// In this unit, valid on the structure's date.
    To(usize),
    /// Nowhere in it: a split's history (not attributable), a merge's
    /// results asked for in the structure before the merge, or a unit that
    /// ended without a successor. Shown apart.
    Apart,
}

/// A stretch of one code's counters: `[from, to)` (`None`: unbounded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub code: UnitCode,
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
}

impl Segment {
    /// The part of `[from, to)` this segment covers, if any.
    pub fn clip(&self, from: NaiveDate, to: NaiveDate) -> Option<(NaiveDate, NaiveDate)> {
        let lo = self.from.map_or(from, |f| f.max(from));
        let hi = self.to.map_or(to, |t| t.min(to));
        (lo < hi).then_some((lo, hi))
    }
}

/// The units valid on one date, and where every unit's counters count in
/// them: forward through successors (a merge counts in the unit it became;
/// a split in the successor named by `history_to`, else apart), backward
/// through a single predecessor (a unit that came out of one other counts
/// in it; one that came out of several is apart).
#[derive(Debug, Clone)]
pub struct Structure {
    as_of: NaiveDate,
    /// Per unit (by index).
    attribution: Vec<Attribution>,
    /// Per unit valid on `as_of`: the counters that count in it.
    sources: HashMap<usize, Vec<Segment>>,
}

impl Structure {
    fn new(units: &Units, as_of: NaiveDate) -> Structure {
        let attribution: Vec<Attribution> = (0..units.units.len())
            .map(|v| attribute(units, v, as_of))
            .collect();
        let mut sources: HashMap<usize, Vec<Segment>> = HashMap::new();
        for versions in units.by_code.values() {
            for (k, &v) in versions.iter().enumerate() {
                if let Attribution::To(t) = attribution[v] {
                    sources.entry(t).or_default().push(Segment {
                        code: units.units[v].code.clone(),
                        from: if k == 0 {
                            None
                        } else {
                            units.units[v].valid_from
                        },
                        to: versions.get(k + 1).and_then(|&n| units.units[n].valid_from),
                    });
                }
            }
        }
        for segments in sources.values_mut() {
            segments.sort_by(|a, b| (&a.code, a.from).cmp(&(&b.code, b.from)));
        }
        Structure {
            as_of,
            attribution,
            sources,
        }
    }

    pub fn as_of(&self) -> NaiveDate {
        self.as_of
    }

    /// The unit `code` names in this structure.
    pub fn unit<'u>(&self, units: &'u Units, code: &str) -> Option<&'u Unit> {
        units.get_on(code, self.as_of)
    }

    /// The counters that count in the unit `code` names in this structure
    /// (none if it names none).
    pub fn sources(&self, units: &Units, code: &str) -> &[Segment] {
        units
            .version_on(code, self.as_of)
            .and_then(|v| self.sources.get(&v))
            .map_or(&[], Vec::as_slice)
    }

    /// Where counters of `code` on `day` count: the code of a unit valid on
    /// the structure's date, or `None` (apart).
    pub fn attribute<'u>(
        &self,
        units: &'u Units,
        code: &str,
        day: NaiveDate,
    ) -> Option<&'u UnitCode> {
        let v = units.segment(code, day)?;
        match self.attribution[v] {
            Attribution::To(t) => Some(&units.units[t].code),
            Attribution::Apart => None,
        }
    }

    /// The unit whose counters `code` on `day` are, and the unit valid on
    /// the structure's date they count in (`None`: apart).
    pub fn place<'u>(
        &self,
        units: &'u Units,
        code: &str,
        day: NaiveDate,
    ) -> Option<(&'u Unit, Option<&'u Unit>)> {
        let v = units.segment(code, day)?;
        let target = match self.attribution[v] {
            Attribution::To(t) => Some(&units.units[t]),
            Attribution::Apart => None,
        };
        Some((&units.units[v], target))
    }

    /// The case-receiving units valid on the structure's date, in list
    /// order.
    pub fn communes<'u>(&'u self, units: &'u Units) -> impl Iterator<Item = &'u Unit> + 'u {
        units.communes().filter(move |u| u.valid_on(self.as_of))
    }

    /// The case-receiving units valid on the structure's date below the
    /// unit `ancestor` names on it (at any depth), in list order.
    pub fn communes_under<'u>(
        &'u self,
        units: &'u Units,
        ancestor: &'u str,
    ) -> impl Iterator<Item = &'u Unit> + 'u {
        let day = self.as_of;
        let top = units.version_on(ancestor, day);
        (0..units.units.len())
            .filter(move |&i| {
                let u = &units.units[i];
                top.is_some() && u.kind.receives_cases() && u.valid_on(day) && {
                    let mut at = units.parent_of(i);
                    let mut found = false;
                    while let Some(p) = at {
                        if Some(p) == top {
                            found = true;
                            break;
                        }
                        at = units.parent_of(p);
                    }
                    found
                }
            })
            .map(move |i| &units.units[i])
    }

    /// The units valid on the structure's date that a unit shown apart is
    /// related to (what it became, or what it came from), to place it beside
    /// the right roll-ups.
    pub fn related<'u>(&self, units: &'u Units, unit: &Unit) -> Vec<&'u Unit> {
        let Some(start) = units
            .by_code
            .get(unit.code.as_str())
            .and_then(|vs| vs.iter().copied().find(|&v| units.units[v] == *unit))
        else {
            return Vec::new();
        };
        let mut found = Vec::new();
        let mut seen = HashSet::new();
        let mut stack = vec![start];
        while let Some(v) = stack.pop() {
            if !seen.insert(v) {
                continue;
            }
            let u = &units.units[v];
            if u.valid_on(self.as_of) {
                found.push(v);
            } else if u.ended_before(self.as_of) {
                stack.extend(&units.successors[v]);
            } else {
                stack.extend(&units.predecessors[v]);
            }
        }
        found.sort_unstable();
        found.into_iter().map(|v| &units.units[v]).collect()
    }
}

fn attribute(units: &Units, v: usize, as_of: NaiveDate) -> Attribution {
    let mut at = v;
    loop {
        let u = &units.units[at];
        if u.valid_on(as_of) {
            return Attribution::To(at);
        }
        if u.ended_before(as_of) {
            // Forward: each step ends later, so this ends.
            let next = match units.successors[at].as_slice() {
                [one] => Some(*one),
                many => u
                    .history_to
                    .as_ref()
                    .and_then(|h| many.iter().copied().find(|&s| units.units[s].code == *h)),
            };
            match next {
                Some(n) => at = n,
                None => return Attribution::Apart,
            }
        } else {
            // Backward: a unit that came out of exactly one other is part
            // of it; out of several, it is no part of any one.
            match units.predecessors[at].as_slice() {
                [one] => at = *one,
                _ => return Attribution::Apart,
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    /// The nine Long Mỹ units and their parents, without their history.
    pub(crate) fn long_my() -> Units {
        let mut specs = vec![
            UnitSpec::new("93", "Tỉnh Hậu Giang", UnitKind::Province, None),
            UnitSpec::new("937", "Thị xã Long Mỹ", UnitKind::Town, Some("93")),
        ];
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
        Units::parse(&specs).unwrap()
    }

    /// The Long Mỹ units with their history: the nine until 30 June 2025,
    /// the three Cần Thơ wards they became (Res. 1668/NQ-UBTVQH15, Điều 1
    /// khoản 18–20) from 1 July 2025.
    pub(crate) fn long_my_history() -> Vec<UnitSpec> {
        let end = Some(day("2025-06-30"));
        let start = Some(day("2025-07-01"));
        let ended = |code: &str, name: &str, kind, parent: &str, successor: &str| UnitSpec {
            valid_to: end,
            successors: vec![successor.into()],
            ..UnitSpec::new(code, name, kind, Some(parent))
        };
        let mut specs = vec![
            UnitSpec::new("92", "Thành phố Cần Thơ", UnitKind::City, None),
            ended("93", "Tỉnh Hậu Giang", UnitKind::Province, "92", "92"),
            UnitSpec {
                valid_to: end,
                ..UnitSpec::new("937", "Thị xã Long Mỹ", UnitKind::Town, Some("93"))
            },
        ];
        specs[1].parent = None;
        for (code, name, kind, to) in [
            ("31471", "Phường Thuận An", UnitKind::Ward, "31471"),
            ("31472", "Phường Trà Lồng", UnitKind::Ward, "31480"),
            ("31473", "Phường Bình Thạnh", UnitKind::Ward, "31473"),
            ("31474", "Xã Long Bình", UnitKind::Commune, "31473"),
            ("31475", "Phường Vĩnh Tường", UnitKind::Ward, "31473"),
            ("31477", "Xã Long Trị", UnitKind::Commune, "31471"),
            ("31478", "Xã Long Trị A", UnitKind::Commune, "31471"),
            ("31480", "Xã Long Phú", UnitKind::Commune, "31480"),
            ("31481", "Xã Tân Phú", UnitKind::Commune, "31480"),
        ] {
            specs.push(ended(code, name, kind, "937", to));
        }
        for (code, name) in [
            ("31471", "Phường Long Mỹ"),
            ("31473", "Phường Long Bình"),
            ("31480", "Phường Long Phú 1"),
        ] {
            specs.push(UnitSpec {
                valid_from: start,
                ..UnitSpec::new(code, name, UnitKind::Ward, Some("92"))
            });
        }
        specs
    }

    #[test]
    fn communes_roll_up_to_the_town_and_the_province() {
        let units = long_my();
        assert_eq!(units.communes_under("937").count(), 9);
        assert_eq!(units.communes_under("93").count(), 9);
        assert_eq!(units.communes_under("31471").count(), 0);
        assert!(!units.has_history());
    }

    #[test]
    fn a_scope_covers_its_communes_and_those_below_its_parents_only() {
        let units = long_my();
        let code = |c: &str| units.commune(c).unwrap().clone();
        let one = units.scope(&["31471".into()]);
        assert!(one.covers(&code("31471")));
        assert!(!one.covers(&code("31472")));
        assert_eq!(one.len(), 1);
        let town = units.scope(&["937".into()]);
        assert_eq!(town.len(), 9);
        assert!(units.communes().all(|u| town.covers(&u.code)));
        assert_eq!(units.scope(&["93".into(), "31471".into()]).len(), 9);
        assert!(units.scope(&["99999".into()]).is_empty());
    }

    #[test]
    fn only_case_receiving_units_are_communes() {
        let units = long_my();
        assert!(units.commune("31471").is_some());
        assert!(units.commune("937").is_none());
        assert!(units.commune("99999").is_none());
    }

    fn problem(specs: &[UnitSpec]) -> (usize, Problem) {
        let e = Units::parse(specs).unwrap_err();
        (e.entry, e.problem)
    }

    #[test]
    fn a_parent_missing_from_the_list_is_refused() {
        let specs = [UnitSpec::new("1", "x", UnitKind::Ward, Some("2"))];
        assert_eq!(problem(&specs), (0, Problem::UnknownParent("2".into())));
    }

    #[test]
    fn a_parent_cycle_is_refused() {
        let specs = [
            UnitSpec::new("1", "a", UnitKind::Town, Some("2")),
            UnitSpec::new("2", "b", UnitKind::Town, Some("1")),
        ];
        assert_eq!(problem(&specs).1, Problem::Cycle);
    }

    #[test]
    fn duplicate_codes_are_refused_unless_their_periods_are_apart() {
        let spec = UnitSpec::new("1", "a", UnitKind::Ward, None);
        assert_eq!(
            problem(&[spec.clone(), spec.clone()]),
            (1, Problem::Overlaps { other: 0 })
        );
        let old = UnitSpec {
            valid_to: Some(day("2025-06-30")),
            ..spec.clone()
        };
        let new = UnitSpec {
            valid_from: Some(day("2025-06-30")),
            ..spec.clone()
        };
        assert_eq!(
            problem(&[new.clone(), old.clone()]),
            (1, Problem::Overlaps { other: 0 })
        );
        let new = UnitSpec {
            valid_from: Some(day("2025-07-01")),
            ..spec
        };
        assert_eq!(Units::parse(&[new, old]).unwrap().len(), 2);
    }

    #[test]
    fn the_checker_names_each_problem_of_a_history() {
        let specs = long_my_history();
        let at = |code: &str, from: Option<&str>| {
            specs
                .iter()
                .position(|s| s.code == code && s.valid_from == from.map(day))
                .unwrap()
        };
        // A parent that ends before its child.
        let mut bad = specs.clone();
        bad[at("31480", Some("2025-07-01"))].parent = Some("93".into());
        assert_eq!(
            problem(&bad),
            (
                at("31480", Some("2025-07-01")),
                Problem::ParentNotValid("93".into())
            )
        );
        // A successor that does not exist the next day.
        let mut bad = specs.clone();
        bad[at("31472", None)].successors = vec!["31472".into()];
        assert_eq!(
            problem(&bad).1,
            Problem::UnknownSuccessor {
                successor: "31472".into(),
                day: day("2025-07-01")
            }
        );
        let mut bad = specs.clone();
        bad[at("31472", None)].successors = vec!["99999".into()];
        assert!(matches!(problem(&bad).1, Problem::UnknownSuccessor { .. }));
        // Successors without an end, an end before the start.
        let mut bad = specs.clone();
        bad[at("31480", Some("2025-07-01"))].successors = vec!["31471".into()];
        assert_eq!(problem(&bad).1, Problem::SuccessorsWithoutEnd);
        let mut bad = specs.clone();
        bad[at("31480", Some("2025-07-01"))].valid_to = Some(day("2025-01-01"));
        assert!(matches!(problem(&bad).1, Problem::EndsBeforeStart { .. }));
        // history_to outside a split, or not a successor.
        let mut bad = specs.clone();
        bad[at("31472", None)].history_to = Some("31480".into());
        assert_eq!(problem(&bad).1, Problem::HistoryToWithoutSplit);
        let mut bad = specs.clone();
        bad[at("31472", None)].successors = vec!["31480".into(), "31471".into()];
        bad[at("31472", None)].history_to = Some("31473".into());
        assert_eq!(
            problem(&bad).1,
            Problem::HistoryToNotSuccessor("31473".into())
        );
        assert_eq!(Units::parse(&specs).unwrap().len(), 15);
    }

    #[test]
    fn a_code_names_the_unit_of_its_day() {
        let units = Units::parse(&long_my_history()).unwrap();
        assert!(units.has_history());
        let name = |code: &str, d: &str| units.get_on(code, day(d)).map(|u| u.name.as_str());
        assert_eq!(name("31480", "2025-06-30"), Some("Xã Long Phú"));
        assert_eq!(name("31480", "2025-07-01"), Some("Phường Long Phú 1"));
        assert_eq!(name("31477", "2025-07-01"), None);
        assert_eq!(units.get("31480").unwrap().name, "Phường Long Phú 1");
    }

    #[test]
    fn an_event_may_name_an_ended_unit_with_one_successor_and_not_a_split_one() {
        let mut specs = long_my_history();
        let u = |units: &Units, code: &str, d: &str| {
            units.commune_on(code, day(d)).map(|c| c.0.to_string())
        };
        let units = Units::parse(&specs).unwrap();
        assert_eq!(u(&units, "31477", "2025-06-28"), Ok("31477".into()));
        // After its end, still counted under the code it names.
        assert_eq!(u(&units, "31477", "2025-07-03"), Ok("31477".into()));
        assert_eq!(u(&units, "31471", "2025-07-03"), Ok("31471".into()));
        assert_eq!(u(&units, "937", "2024-01-01"), Err(Refusal::Unknown));
        assert_eq!(u(&units, "99999", "2024-01-01"), Err(Refusal::Unknown));
        // A unit that begins later: events before it are refused.
        specs.push(UnitSpec {
            valid_from: Some(day("2026-01-01")),
            ..UnitSpec::new("40000", "Xã Mới", UnitKind::Commune, Some("92"))
        });
        // A split: Tân Phú's area shared between two wards.
        let tan_phu = specs.iter().position(|s| s.code == "31481").unwrap();
        specs[tan_phu].successors = vec!["31480".into(), "31471".into()];
        let units = Units::parse(&specs).unwrap();
        assert_eq!(
            u(&units, "40000", "2025-12-31"),
            Err(Refusal::NotYetValid {
                from: day("2026-01-01")
            })
        );
        assert_eq!(u(&units, "31481", "2025-06-30"), Ok("31481".into()));
        assert!(matches!(
            u(&units, "31481", "2025-07-01"),
            Err(Refusal::Ended { successors, .. }) if successors.len() == 2
        ));
    }

    #[test]
    fn todays_structure_counts_an_old_communes_history_in_its_successor() {
        let units = Units::parse(&long_my_history()).unwrap();
        let today = units.structure(day("2026-12-01"));
        let names: Vec<_> = today.communes(&units).map(|u| u.name.as_str()).collect();
        assert_eq!(
            names,
            ["Phường Long Mỹ", "Phường Long Bình", "Phường Long Phú 1"]
        );
        assert_eq!(today.communes_under(&units, "92").count(), 3);
        assert_eq!(today.communes_under(&units, "937").count(), 0);
        let long_my: Vec<_> = today
            .sources(&units, "31471")
            .iter()
            .map(|s| (s.code.to_string(), s.from, s.to))
            .collect();
        let cut = Some(day("2025-07-01"));
        assert_eq!(
            long_my,
            [
                ("31471".to_string(), None, cut),
                ("31471".to_string(), cut, None),
                ("31477".to_string(), None, None),
                ("31478".to_string(), None, None),
            ]
        );
        let to = |code: &str, d: &str| today.attribute(&units, code, day(d)).map(|c| c.to_string());
        assert_eq!(to("31472", "2023-03-30"), Some("31480".into()));
        assert_eq!(to("31480", "2023-03-30"), Some("31480".into()));
        assert_eq!(to("31474", "2026-01-01"), Some("31473".into()));
    }

    #[test]
    fn the_campaigns_structure_shows_the_merged_wards_results_apart() {
        let units = Units::parse(&long_my_history()).unwrap();
        let campaign = units.structure(day("2023-06-30"));
        assert_eq!(campaign.communes_under(&units, "937").count(), 9);
        assert_eq!(campaign.communes_under(&units, "92").count(), 0);
        let to = |code: &str, d: &str| {
            campaign
                .attribute(&units, code, day(d))
                .map(|c| c.to_string())
        };
        assert_eq!(to("31477", "2025-03-01"), Some("31477".into()));
        // What the producer still sends under an old code after the change
        // names the old territory.
        assert_eq!(to("31477", "2025-08-01"), Some("31477".into()));
        // The merged ward's own results belong to no one old unit.
        assert_eq!(to("31471", "2025-08-01"), None);
        assert_eq!(to("31471", "2025-06-30"), Some("31471".into()));
        let (ward, to) = campaign.place(&units, "31480", day("2025-08-01")).unwrap();
        assert_eq!((ward.name.as_str(), to), ("Phường Long Phú 1", None));
        let related: Vec<_> = campaign
            .related(&units, ward)
            .iter()
            .map(|u| u.name.as_str())
            .collect();
        assert_eq!(related, ["Phường Trà Lồng", "Xã Long Phú", "Xã Tân Phú"]);
        assert_eq!(
            campaign.sources(&units, "31471"),
            [Segment {
                code: units.commune("31471").unwrap().clone(),
                from: None,
                to: Some(day("2025-07-01"))
            }]
        );
    }

    #[test]
    fn a_split_counts_apart_unless_its_history_goes_to_one_successor() {
        let mut specs = long_my_history();
        let tan_phu = specs.iter().position(|s| s.code == "31481").unwrap();
        specs[tan_phu].successors = vec!["31480".into(), "31471".into()];
        let units = Units::parse(&specs).unwrap();
        let today = units.structure(day("2026-12-01"));
        assert_eq!(today.attribute(&units, "31481", day("2024-01-01")), None);
        specs[tan_phu].history_to = Some("31471".into());
        let units = Units::parse(&specs).unwrap();
        let today = units.structure(day("2026-12-01"));
        assert_eq!(
            today
                .attribute(&units, "31481", day("2024-01-01"))
                .map(|c| c.to_string()),
            Some("31471".into())
        );
    }

    #[test]
    fn a_case_is_kept_under_the_unit_its_commune_became() {
        let units = Units::parse(&long_my_history()).unwrap();
        let home = |code: &str, d: &str| units.home(code, day(d)).map(|c| c.to_string());
        assert_eq!(home("31477", "2025-06-28"), Some("31471".into()));
        assert_eq!(home("31471", "2025-06-28"), Some("31471".into()));
        assert_eq!(home("31471", "2025-07-03"), Some("31471".into()));
        assert_eq!(home("31481", "2023-03-30"), Some("31480".into()));
        assert_eq!(home("99999", "2023-03-30"), None);
        let static_units = long_my();
        assert_eq!(
            static_units
                .home("31477", day("2025-07-03"))
                .map(|c| c.to_string()),
            Some("31477".into())
        );
    }

    #[test]
    fn breaches_are_evaluated_in_the_unit_valid_on_the_day_of_evaluation() {
        let units = Units::parse(&long_my_history()).unwrap();
        let in_unit = |code: &str, d: &str, today: &str| {
            units
                .evaluated_in(code, day(d), day(today))
                .map(|u| u.code.to_string())
        };
        // Before the merger each unit stands for itself; after it, Long
        // Trị's counters (of any day) count in Phường Long Mỹ.
        assert_eq!(
            in_unit("31477", "2025-06-28", "2025-06-30"),
            Some("31477".into())
        );
        assert_eq!(
            in_unit("31477", "2025-06-28", "2025-07-01"),
            Some("31471".into())
        );
        assert_eq!(
            in_unit("31477", "2025-08-01", "2026-12-01"),
            Some("31471".into())
        );
        // A reused code: Xã Long Phú's days count in Long Phú 1, Thuận An's
        // in Long Mỹ, whatever the code.
        assert_eq!(
            in_unit("31480", "2024-01-01", "2026-12-01"),
            Some("31480".into())
        );
        assert_eq!(
            in_unit("31471", "2024-01-01", "2026-12-01"),
            Some("31471".into())
        );
        // A unit not begun on the day of evaluation, a town: none.
        assert_eq!(in_unit("31473", "2025-07-02", "2025-06-01"), None);
        assert_eq!(in_unit("937", "2024-01-01", "2024-01-01"), None);
        let codes = |v: Vec<&UnitCode>| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(
            codes(units.evaluated_as("31478", day("2026-12-01"))),
            ["31471"]
        );
        assert_eq!(
            codes(units.evaluated_as("31478", day("2025-01-01"))),
            ["31478"]
        );
        assert_eq!(
            codes(units.feeders("31471", day("2026-12-01"))),
            ["31471", "31477", "31478"]
        );
        assert_eq!(
            codes(units.feeders("31480", day("2026-12-01"))),
            ["31472", "31480", "31481"]
        );
        assert_eq!(codes(units.feeders("31477", day("2025-01-01"))), ["31477"]);
        assert!(units.feeders("31477", day("2026-01-01")).is_empty());
        // A split without `history_to` is evaluated in neither successor.
        let mut specs = long_my_history();
        let tan_phu = specs.iter().position(|s| s.code == "31481").unwrap();
        specs[tan_phu].successors = vec!["31480".into(), "31471".into()];
        let split = Units::parse(&specs).unwrap();
        assert!(split.evaluated_as("31481", day("2026-12-01")).is_empty());
        specs[tan_phu].history_to = Some("31471".into());
        let split = Units::parse(&specs).unwrap();
        assert_eq!(
            codes(split.evaluated_as("31481", day("2026-12-01"))),
            ["31471"]
        );
    }

    #[test]
    fn pieces_cut_a_range_where_the_structure_changes() {
        let units = Units::parse(&long_my_history()).unwrap();
        assert_eq!(
            units.pieces(day("2025-01-01"), day("2026-01-01")),
            [
                (day("2025-01-01"), day("2025-07-01")),
                (day("2025-07-01"), day("2026-01-01"))
            ]
        );
        assert_eq!(
            units.pieces(day("2026-01-01"), day("2026-02-01")),
            [(day("2026-01-01"), day("2026-02-01"))]
        );
        assert!(units
            .pieces(day("2026-01-01"), day("2026-01-01"))
            .is_empty());
    }
}
