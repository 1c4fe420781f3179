//! Administrative units (đơn vị hành chính): the configured registry that
//! decides which commune codes an event may carry and how communes roll up.
//!
//! Units are configuration, not code: a province has hundreds and they merge.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

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
        }
    }
}

/// One unit as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitSpec {
    pub code: String,
    pub name: String,
    pub kind: UnitKind,
    #[serde(default)]
    pub parent: Option<String>,
}

/// A unit in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unit {
    pub code: UnitCode,
    pub name: String,
    pub kind: UnitKind,
    pub parent: Option<UnitCode>,
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

/// Why a unit list cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitsError {
    #[error("unit code `{0}` appears more than once")]
    DuplicateCode(String),
    #[error("unit `{code}` names parent `{parent}`, which is not in the list")]
    UnknownParent { code: String, parent: String },
    #[error("unit code must be 1 to 16 ASCII digits or letters, got `{0}`")]
    BadCode(String),
    #[error("unit `{0}` is its own ancestor")]
    Cycle(String),
}

/// The registry of configured units.
#[derive(Debug, Clone, Default)]
pub struct Units {
    by_code: HashMap<Arc<str>, Unit>,
    order: Vec<UnitCode>,
}

impl Units {
    /// Validates a configured list: unique codes, known parents, no cycles.
    pub fn parse(specs: &[UnitSpec]) -> Result<Self, UnitsError> {
        let mut by_code: HashMap<Arc<str>, Unit> = HashMap::with_capacity(specs.len());
        let mut order = Vec::with_capacity(specs.len());
        for spec in specs {
            let ok = !spec.code.is_empty()
                && spec.code.len() <= 16
                && spec.code.bytes().all(|b| b.is_ascii_alphanumeric());
            if !ok {
                return Err(UnitsError::BadCode(spec.code.clone()));
            }
            let code: Arc<str> = Arc::from(spec.code.as_str());
            if by_code.contains_key(&code) {
                return Err(UnitsError::DuplicateCode(spec.code.clone()));
            }
            let unit = Unit {
                code: UnitCode(code.clone()),
                name: spec.name.clone(),
                kind: spec.kind,
                parent: None,
            };
            order.push(unit.code.clone());
            by_code.insert(code, unit);
        }
        for spec in specs {
            if let Some(parent) = &spec.parent {
                let parent_code = by_code
                    .get(parent.as_str())
                    .map(|u| u.code.clone())
                    .ok_or_else(|| UnitsError::UnknownParent {
                        code: spec.code.clone(),
                        parent: parent.clone(),
                    })?;
                by_code
                    .get_mut(spec.code.as_str())
                    .expect("inserted above")
                    .parent = Some(parent_code);
            }
        }
        let units = Units { by_code, order };
        for code in &units.order {
            let mut steps = 0;
            let mut at = units.get(code.as_str()).and_then(|u| u.parent.clone());
            while let Some(p) = at {
                steps += 1;
                if steps > units.order.len() {
                    return Err(UnitsError::Cycle(code.to_string()));
                }
                at = units.get(p.as_str()).and_then(|u| u.parent.clone());
            }
        }
        Ok(units)
    }

    /// The unit with this code.
    pub fn get(&self, code: &str) -> Option<&Unit> {
        self.by_code.get(code)
    }

    /// The interned code of a unit that receives cases, if `code` names one.
    pub fn commune(&self, code: &str) -> Option<&UnitCode> {
        self.by_code
            .get(code)
            .filter(|u| u.kind.receives_cases())
            .map(|u| &u.code)
    }

    /// All units in configuration order.
    pub fn iter(&self) -> impl Iterator<Item = &Unit> {
        self.order.iter().map(|c| &self.by_code[c.as_str()])
    }

    /// The units that receive cases, in configuration order.
    pub fn communes(&self) -> impl Iterator<Item = &Unit> {
        self.iter().filter(|u| u.kind.receives_cases())
    }

    /// The case-receiving units below `ancestor` (at any depth), in
    /// configuration order.
    pub fn communes_under<'a>(&'a self, ancestor: &'a str) -> impl Iterator<Item = &'a Unit> + 'a {
        self.communes().filter(move |u| self.is_under(u, ancestor))
    }

    fn is_under(&self, unit: &Unit, ancestor: &str) -> bool {
        let mut at = unit.parent.as_ref();
        while let Some(p) = at {
            if p.as_str() == ancestor {
                return true;
            }
            at = self.by_code.get(p.as_str()).and_then(|u| u.parent.as_ref());
        }
        false
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// The communes `codes` cover: each a commune itself, or a parent whose
    /// communes (at any depth) it stands for. Unknown codes cover nothing
    /// (the configuration names them as errors before this is built).
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

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The nine Long Mỹ units and their parents, as in config/default.toml.
    pub(crate) fn long_my() -> Units {
        let mut specs = vec![
            UnitSpec {
                code: "93".into(),
                name: "Tỉnh Hậu Giang".into(),
                kind: UnitKind::Province,
                parent: None,
            },
            UnitSpec {
                code: "937".into(),
                name: "Thị xã Long Mỹ".into(),
                kind: UnitKind::Town,
                parent: Some("93".into()),
            },
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
            specs.push(UnitSpec {
                code: code.into(),
                name: name.into(),
                kind,
                parent: Some("937".into()),
            });
        }
        Units::parse(&specs).unwrap()
    }

    #[test]
    fn communes_roll_up_to_the_town_and_the_province() {
        let units = long_my();
        assert_eq!(units.communes_under("937").count(), 9);
        assert_eq!(units.communes_under("93").count(), 9);
        assert_eq!(units.communes_under("31471").count(), 0);
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

    #[test]
    fn a_parent_missing_from_the_list_is_refused() {
        let specs = vec![UnitSpec {
            code: "1".into(),
            name: "x".into(),
            kind: UnitKind::Ward,
            parent: Some("2".into()),
        }];
        assert_eq!(
            Units::parse(&specs).unwrap_err(),
            UnitsError::UnknownParent {
                code: "1".into(),
                parent: "2".into()
            }
        );
    }

    #[test]
    fn a_parent_cycle_is_refused() {
        let specs = vec![
            UnitSpec {
                code: "1".into(),
                name: "a".into(),
                kind: UnitKind::Town,
                parent: Some("2".into()),
            },
            UnitSpec {
                code: "2".into(),
                name: "b".into(),
                kind: UnitKind::Town,
                parent: Some("1".into()),
            },
        ];
        assert!(matches!(Units::parse(&specs), Err(UnitsError::Cycle(_))));
    }

    #[test]
    fn duplicate_codes_are_refused() {
        let spec = UnitSpec {
            code: "1".into(),
            name: "a".into(),
            kind: UnitKind::Ward,
            parent: None,
        };
        assert_eq!(
            Units::parse(&[spec.clone(), spec]).unwrap_err(),
            UnitsError::DuplicateCode("1".into())
        );
    }
}
