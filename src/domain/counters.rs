//! The day counters: what the fold adds up per commune and local day, and
//! what every indicator is a ratio of. Declared once, below: the struct, its
//! arithmetic and the stored column names all come from the one list, so a
//! new counter is one line here (plus the fold rule that feeds it and the
//! migration that adds its column).

use std::ops::{AddAssign, SubAssign};

use serde::Serialize;

/// Declares [`DayCounters`] from a list of documented field names.
macro_rules! day_counters {
    ($( $(#[doc = $doc:literal])+ $field:ident, )+) => {
        /// Counters of one commune on one local day. Every indicator is a
        /// ratio of two of these, and any window is a sum of days.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
        pub struct DayCounters {
            $( $(#[doc = $doc])+ pub $field: i64, )+
        }

        impl DayCounters {
            /// How many counters there are.
            pub const COUNT: usize = [$(stringify!($field)),+].len();

            /// The counters' names in declaration order: also the names of
            /// their columns in the store and of their fields in the API.
            pub const NAMES: [&'static str; Self::COUNT] = [$(stringify!($field)),+];

            /// The values in the order of [`DayCounters::NAMES`].
            pub fn values(&self) -> [i64; Self::COUNT] {
                [$(self.$field),+]
            }

            /// Counters from values in the order of [`DayCounters::NAMES`].
            pub fn from_values(values: [i64; Self::COUNT]) -> Self {
                let [$($field),+] = values;
                DayCounters { $($field),+ }
            }

            /// Every counter times `sign` (+1 or -1).
            pub fn scaled(mut self, sign: i64) -> Self {
                $( self.$field *= sign; )+
                self
            }
        }

        impl AddAssign for DayCounters {
            fn add_assign(&mut self, o: Self) {
                $( self.$field += o.$field; )+
            }
        }
    };
}

day_counters! {
    /// Cases received (`case.received`) on this day.
    received,
    /// ... of which online at level partial or full.
    received_online,
    /// ... of which recorded in the electronic one-stop software at intake.
    received_electronic,
    /// Cases counted for the on-time rate on this day: resolved this day, or
    /// still open and this is the first day after their due date.
    due,
    /// ... of which resolved on or before their due date.
    on_time,
    /// Counting ratings given this day.
    ratings,
    /// ... of which satisfied or very satisfied.
    satisfied,
    /// Counting signatures made this day.
    signatures,
    /// ... of which digital.
    digital,
    /// Cases received this day whose papers were digitised at intake
    /// (`digitized = true` on `case.received`).
    received_digitized,
}

impl DayCounters {
    pub fn is_zero(&self) -> bool {
        *self == DayCounters::default()
    }
}

impl SubAssign for DayCounters {
    fn sub_assign(&mut self, o: Self) {
        *self += o.scaled(-1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_come_back_in_the_order_of_the_names() {
        let values: [i64; DayCounters::COUNT] = std::array::from_fn(|i| i as i64 + 1);
        let c = DayCounters::from_values(values);
        assert_eq!(c.values(), values);
        assert_eq!(c.received, 1);
        assert_eq!(c.received_digitized, DayCounters::COUNT as i64);
        assert_eq!(DayCounters::NAMES[0], "received");
        let json = serde_json::to_value(c).unwrap();
        for (name, value) in DayCounters::NAMES.iter().zip(values) {
            assert_eq!(json[name], value, "{name}");
        }
    }

    #[test]
    fn adding_and_taking_back_leaves_nothing() {
        let c = DayCounters::from_values(std::array::from_fn(|i| 3 * i as i64 - 7));
        let mut sum = c;
        sum += c;
        sum -= c;
        assert_eq!(sum, c);
        sum -= c;
        assert!(sum.is_zero());
    }
}
