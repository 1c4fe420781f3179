//! Shared by the fuzz targets: the Long Mỹ units, and the checks made on
//! every decoded event.

use cchc_pipeline::domain::event::{EventKind, Rejection, MAX_EVENT_ID_CHARS};
use cchc_pipeline::domain::{CaseEvent, Fold, UnitKind, UnitSpec, Units};
use chrono::{DateTime, Duration, Utc};
use std::sync::OnceLock;

pub fn units() -> &'static Units {
    static UNITS: OnceLock<Units> = OnceLock::new();
    UNITS.get_or_init(|| {
        let mut specs = vec![UnitSpec {
            code: "937".into(),
            name: "Thị xã Long Mỹ".into(),
            kind: UnitKind::Town,
            parent: None,
        }];
        for code in [
            "31471", "31472", "31473", "31474", "31475", "31477", "31478", "31480", "31481",
        ] {
            specs.push(UnitSpec {
                code: code.into(),
                name: format!("unit {code}"),
                kind: UnitKind::Commune,
                parent: Some("937".into()),
            });
        }
        Units::parse(&specs).expect("valid units")
    })
}

/// Decodes `data` and checks what the contract promises about the result;
/// a valid event is also folded (with a clock at and after its time), so
/// that anything decode lets through cannot make the Fold panic.
pub fn check(data: &[u8]) {
    match cchc_pipeline::domain::decode(Some(data), units()) {
        Ok(event) => check_event(&event),
        Err(rejection) => check_rejection(&rejection),
    }
}

fn check_event(event: &CaseEvent) {
    let chars = event.event_id.chars().count();
    assert!(
        (1..=MAX_EVENT_ID_CHARS).contains(&chars),
        "event_id of {chars} characters accepted"
    );
    assert!(units().commune(event.commune.as_str()).is_some());
    let local = local_date(event.occurred_at);
    assert_eq!(event.day, local, "day is not the UTC+7 date of occurred_at");
    match &event.kind {
        EventKind::DocumentSigned(signed) => assert!(!signed.document_id.is_empty()),
        _ => assert!(event.case_id.as_deref().is_some_and(|c| !c.is_empty())),
    }
    let mut fold = Fold::new(None);
    fold.apply(event);
    fold.advance_clock(event.occurred_at);
    if let Some(later) = event.occurred_at.checked_add_signed(Duration::days(400)) {
        fold.advance_clock(later);
    }
    // A correction at the same time (replaces, taking the old contribution
    // back) and a repeat of the first id (a duplicate).
    let mut correction = event.clone();
    correction.event_id.push('\'');
    fold.apply(&correction);
    fold.apply(event);
    let mut again = Fold::new(Some(event.occurred_at));
    again.apply(event);
}

fn check_rejection(rejection: &Rejection) {
    assert!(Rejection::CODES.contains(&rejection.code()));
    let _ = rejection.to_string();
}

/// The UTC+7 date, computed independently of the crate.
fn local_date(at: DateTime<Utc>) -> chrono::NaiveDate {
    let secs = at.timestamp() + 7 * 3600;
    let days = secs.div_euclid(86_400);
    chrono::NaiveDate::from_num_days_from_ce_opt((days + 719_163) as i32).expect("in range")
}
