//! Case and document facts to and from table columns.

use chrono::{DateTime, NaiveDate, Utc};

use crate::domain::event::{
    Channel, OnlineLevel, Outcome, Rated, Rating, Received, Resolved, Signature,
};
use crate::domain::fold::{Closing, Fact};
use crate::domain::{CaseState, DocumentState};

/// One row of `cases`, without its key.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct CaseRow {
    pub received_at: Option<DateTime<Utc>>,
    pub received_channel: Option<i16>,
    pub received_level: Option<i16>,
    pub received_electronic: Option<bool>,
    pub received_digitized: Option<bool>,
    pub received_due: Option<NaiveDate>,
    pub closing_at: Option<DateTime<Utc>>,
    pub closing_kind: Option<i16>,
    pub closing_due: Option<NaiveDate>,
    pub closing_outcome: Option<i16>,
    pub rating_at: Option<DateTime<Utc>>,
    pub rating: Option<i16>,
    pub rating_score: Option<i16>,
}

const RESOLVED: i16 = 1;
const WITHDRAWN: i16 = 2;

impl CaseRow {
    pub fn encode(s: &CaseState) -> CaseRow {
        let mut row = CaseRow::default();
        if let Some(r) = &s.received {
            row.received_at = Some(r.at);
            row.received_channel = Some(match r.value.channel {
                Channel::InPerson => 0,
                Channel::Online => 1,
                Channel::Postal => 2,
            });
            row.received_level = Some(match r.value.online_level {
                OnlineLevel::None => 0,
                OnlineLevel::Partial => 1,
                OnlineLevel::Full => 2,
            });
            row.received_electronic = Some(r.value.registered_electronically);
            row.received_digitized = Some(r.value.digitized);
            row.received_due = Some(r.value.due_date);
        }
        if let Some(c) = &s.closing {
            row.closing_at = Some(c.at);
            match c.value {
                Closing::Resolved(res) => {
                    row.closing_kind = Some(RESOLVED);
                    row.closing_due = Some(res.due_date);
                    row.closing_outcome = Some(match res.outcome {
                        Outcome::Completed => 0,
                        Outcome::Rejected => 1,
                    });
                }
                Closing::Withdrawn => row.closing_kind = Some(WITHDRAWN),
            }
        }
        if let Some(r) = &s.rating {
            row.rating_at = Some(r.at);
            row.rating = Some(match r.value.rating {
                Rating::VerySatisfied => 0,
                Rating::Satisfied => 1,
                Rating::Dissatisfied => 2,
            });
            row.rating_score = r.value.score.map(i16::from);
        }
        row
    }

    pub fn decode(&self) -> Result<CaseState, String> {
        let bad = |what: &str, v: Option<i16>| format!("stored case has an invalid {what}: {v:?}");
        let received = match self.received_at {
            None => None,
            Some(at) => Some(Fact {
                at,
                value: Received {
                    channel: match self.received_channel {
                        Some(0) => Channel::InPerson,
                        Some(1) => Channel::Online,
                        Some(2) => Channel::Postal,
                        v => return Err(bad("channel", v)),
                    },
                    online_level: match self.received_level {
                        Some(0) => OnlineLevel::None,
                        Some(1) => OnlineLevel::Partial,
                        Some(2) => OnlineLevel::Full,
                        v => return Err(bad("online level", v)),
                    },
                    due_date: self
                        .received_due
                        .ok_or("stored received case has no due date")?,
                    registered_electronically: self.received_electronic.unwrap_or(false),
                    digitized: self.received_digitized.unwrap_or(false),
                },
            }),
        };
        let closing = match self.closing_at {
            None => None,
            Some(at) => Some(Fact {
                at,
                value: match self.closing_kind {
                    Some(RESOLVED) => Closing::Resolved(Resolved {
                        due_date: self
                            .closing_due
                            .ok_or("stored resolution has no due date")?,
                        outcome: match self.closing_outcome {
                            Some(0) => Outcome::Completed,
                            Some(1) => Outcome::Rejected,
                            v => return Err(bad("outcome", v)),
                        },
                    }),
                    Some(WITHDRAWN) => Closing::Withdrawn,
                    v => return Err(bad("closing kind", v)),
                },
            }),
        };
        let rating = match self.rating_at {
            None => None,
            Some(at) => Some(Fact {
                at,
                value: Rated {
                    rating: match self.rating {
                        Some(0) => Rating::VerySatisfied,
                        Some(1) => Rating::Satisfied,
                        Some(2) => Rating::Dissatisfied,
                        v => return Err(bad("rating", v)),
                    },
                    score: self.rating_score.map(|s| s as u8),
                },
            }),
        };
        Ok(CaseState {
            received,
            closing,
            rating,
        })
    }
}

pub fn encode_document(d: &DocumentState) -> (DateTime<Utc>, bool) {
    (d.signed.at, d.signed.value == Signature::Digital)
}

pub fn decode_document(at: DateTime<Utc>, digital: bool) -> DocumentState {
    let value = if digital {
        Signature::Digital
    } else {
        Signature::Handwritten
    };
    DocumentState {
        signed: Fact { at, value },
    }
}
