//! Queries across changes of the unit list: every query takes the structure
//! "as of" a date (`as_of`, default today on the pipeline clock), and the
//! counters, which stay keyed by the code each event named, are attributed
//! to the units valid on that date ([`Structure`]). Without any history in
//! the unit list this is the identity and costs nothing.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::extract::ApiQuery;
use super::views::{answer, UnitView};
use super::{ApiError, AppState, Shared};
use crate::domain::{DayCounters, Structure, Unit};

/// Structures kept for the dates last asked for (today's, and a few).
const KEPT: usize = 4;

/// The structures of the dates last asked for.
#[derive(Debug, Default)]
pub struct Structures(std::sync::Mutex<Vec<Arc<Structure>>>);

impl AppState {
    /// The structure valid on `as_of` (default: today).
    pub(super) fn structure(&self, as_of: Option<NaiveDate>) -> Arc<Structure> {
        let day = as_of.unwrap_or_else(|| self.today());
        let mut kept = self.structures.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = kept.iter().find(|s| s.as_of() == day) {
            return s.clone();
        }
        let s = Arc::new(self.units.structure(day));
        kept.insert(0, s.clone());
        kept.truncate(KEPT);
        s
    }

    /// The commune `code` names in `st`, or a 404 that says what the code
    /// named and when.
    pub(super) fn commune_in(&self, code: &str, st: &Structure) -> Result<&Unit, ApiError> {
        match st.unit(&self.units, code) {
            Some(u) if u.kind.receives_cases() => Ok(u),
            Some(u) => Err(ApiError::NotFound(format!(
                "unknown commune `{code}` (a {}, not a commune)",
                u.kind.label_vi()
            ))),
            None => Err(self.absent("commune", code, st)),
        }
    }

    /// The unit `code` names in `st`, or a 404.
    pub(super) fn unit_in(&self, code: &str, st: &Structure) -> Result<&Unit, ApiError> {
        st.unit(&self.units, code)
            .ok_or_else(|| self.absent("unit", code, st))
    }

    fn absent(&self, what: &str, code: &str, st: &Structure) -> ApiError {
        let day = st.as_of();
        let Some(latest) = self.units.get(code) else {
            return ApiError::NotFound(format!("unknown {what} `{code}`"));
        };
        let mut when = String::new();
        if let Some(to) = latest.valid_to.filter(|&t| t < day) {
            when = format!("{} ended on {to}", latest.name);
            if !latest.successors.is_empty() {
                let s: Vec<_> = latest.successors.iter().map(|c| format!("`{c}`")).collect();
                when.push_str(&format!(" (successors: {})", s.join(", ")));
            }
        } else if let Some(first) = self.units.iter().find(|u| u.code.as_str() == code) {
            if let Some(from) = first.valid_from.filter(|&f| f > day) {
                when = format!("{} exists from {from}", first.name);
            }
        }
        ApiError::NotFound(format!(
            "{what} `{code}` is not a unit on {day}: {when}; ask with as_of= a date it was valid"
        ))
    }

    /// One commune's counters over `[from, to)` in `st`: its own and those
    /// its history brings (the units it came from).
    pub(super) async fn sums_in(
        &self,
        st: &Structure,
        code: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<DayCounters, ApiError> {
        if !self.units.has_history() {
            return Ok(self.cache.commune_sums(&self.store, code, from, to).await?);
        }
        let mut total = DayCounters::default();
        for seg in st.sources(&self.units, code) {
            if let Some((lo, hi)) = seg.clip(from, to) {
                total += self
                    .cache
                    .commune_sums(&self.store, seg.code.as_str(), lo, hi)
                    .await?;
            }
        }
        Ok(total)
    }

    /// The codes whose counters count in the commune `code` names in `st`.
    pub(super) fn source_codes(&self, st: &Structure, code: &str) -> Vec<String> {
        if !self.units.has_history() {
            return vec![code.to_string()];
        }
        let mut codes: Vec<String> = st
            .sources(&self.units, code)
            .iter()
            .map(|s| s.code.to_string())
            .collect();
        codes.dedup();
        codes
    }

    /// Every commune's counters over `[from, to)` attributed in `st`, and
    /// those shown apart.
    pub(super) async fn attributed_sums(
        &self,
        st: &Structure,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Attributed, ApiError> {
        let mut out = Attributed::default();
        if !self.units.has_history() {
            out.by_unit = self
                .store
                .window_sums(from, to)
                .await?
                .into_iter()
                .collect();
            return Ok(out);
        }
        for (lo, hi) in self.units.pieces(from, to) {
            for (code, c) in self.store.window_sums(lo, hi).await? {
                match st.place(&self.units, &code, lo) {
                    Some((_, Some(target))) => {
                        *out.by_unit.entry(target.code.to_string()).or_default() += c;
                    }
                    Some((source, None)) => {
                        let key = (source.code.to_string(), source.valid_from);
                        *out.apart.entry(key).or_default() += c;
                    }
                    // A code no longer in the list: nothing to show it as.
                    None => {}
                }
            }
        }
        Ok(out)
    }
}

/// Counters attributed to the units of one structure.
#[derive(Debug, Default)]
pub(super) struct Attributed {
    /// By the code of a unit valid on the structure's date.
    pub by_unit: HashMap<String, DayCounters>,
    /// By (code, valid_from) of a unit whose counters are apart.
    pub apart: HashMap<(String, Option<NaiveDate>), DayCounters>,
}

impl Attributed {
    /// The units shown apart, with their counters, in list order.
    pub fn apart<'u>(&self, s: &'u AppState) -> Vec<(&'u Unit, DayCounters)> {
        s.units
            .iter()
            .filter_map(|u| {
                self.apart
                    .get(&(u.code.to_string(), u.valid_from))
                    .map(|c| (u, *c))
            })
            .collect()
    }
}

#[derive(Deserialize)]
pub(super) struct UnitsQuery {
    as_of: Option<NaiveDate>,
}

#[derive(Serialize)]
struct UnitsAnswer<'a> {
    as_of: NaiveDate,
    /// Every date the structure changes on (a unit begins).
    changes: Vec<NaiveDate>,
    units: Vec<UnitView<'a>>,
}

/// `GET /api/v1/units`: the units valid on `as_of` (default today), and
/// the dates the structure changes on.
pub(super) async fn units(
    State(s): State<Shared>,
    ApiQuery(q): ApiQuery<UnitsQuery>,
) -> Result<Response, ApiError> {
    let st = s.structure(q.as_of);
    let day = st.as_of();
    let mut changes: Vec<NaiveDate> = s.units.iter().filter_map(|u| u.valid_from).collect();
    changes.sort_unstable();
    changes.dedup();
    answer(&UnitsAnswer {
        as_of: day,
        changes,
        units: s
            .units
            .iter()
            .filter(|u| u.valid_on(day))
            .map(UnitView::from)
            .collect(),
    })
}
