//! Hand-worked examples: one per indicator and per correction rule.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::json;

use super::*;
use crate::domain::event::decode;
use crate::domain::indicator::Indicator;
use crate::domain::units::tests::long_my;

const C: &str = "31471";

fn event(id: &str, kind: &str, at: &str, case: Option<&str>, data: serde_json::Value) -> CaseEvent {
    let mut v = json!({
        "event_id": id, "event_type": kind, "schema_version": 1,
        "occurred_at": at, "commune_code": C, "data": data,
    });
    if let Some(case) = case {
        v["case_id"] = json!(case);
    }
    decode(Some(v.to_string().as_bytes()), &long_my()).unwrap()
}

fn received(
    id: &str,
    case: &str,
    at: &str,
    due: &str,
    online: bool,
    electronic: bool,
) -> CaseEvent {
    let (channel, level) = if online {
        ("online", "full")
    } else {
        ("in_person", "none")
    };
    event(
        id,
        "case.received",
        at,
        Some(case),
        json!({
            "procedure_code": "1.0001", "channel": channel, "online_level": level,
            "due_at": due, "registered_electronically": electronic,
        }),
    )
}

fn resolved(id: &str, case: &str, at: &str, due: &str) -> CaseEvent {
    event(
        id,
        "case.resolved",
        at,
        Some(case),
        json!({"due_at": due, "outcome": "completed"}),
    )
}

fn withdrawn(id: &str, case: &str, at: &str) -> CaseEvent {
    event(id, "case.withdrawn", at, Some(case), json!({}))
}

fn rated(id: &str, case: &str, at: &str, rating: &str) -> CaseEvent {
    event(id, "case.rated", at, Some(case), json!({"rating": rating}))
}

fn signed(id: &str, doc: &str, at: &str, signature: &str) -> CaseEvent {
    event(
        id,
        "document.signed",
        at,
        None,
        json!({"document_id": doc, "signature": signature, "document_kind": "case_result"}),
    )
}

fn day(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn now(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// The counters of commune C on a day, zero when absent.
fn on(fold: &Fold, d: &str) -> DayCounters {
    fold.deltas()
        .iter()
        .find(|((c, dd), _)| c.as_str() == C && *dd == day(d))
        .map(|(_, v)| *v)
        .unwrap_or_default()
}

fn ratio(fold: &Fold, d: &str, i: Indicator) -> (i64, i64) {
    let r = i.ratio(&on(fold, d));
    (r.numerator, r.denominator)
}

#[test]
fn online_rate_counts_online_partial_or_full_on_the_day_received() {
    let mut f = Fold::new(None);
    f.apply(&received(
        "a",
        "1",
        "2023-03-30T10:00:00+07:00",
        "2023-04-04T17:00:00+07:00",
        true,
        true,
    ));
    f.apply(&received(
        "b",
        "2",
        "2023-03-30T11:00:00+07:00",
        "2023-04-04T17:00:00+07:00",
        false,
        true,
    ));
    let partial = event(
        "c",
        "case.received",
        "2023-03-30T12:00:00+07:00",
        Some("3"),
        json!({
        "procedure_code": "x", "channel": "online", "online_level": "partial",
        "due_at": "2023-04-04T17:00:00+07:00", "registered_electronically": true}),
    );
    f.apply(&partial);
    let online_but_none = event(
        "d",
        "case.received",
        "2023-03-30T12:00:00+07:00",
        Some("4"),
        json!({
        "procedure_code": "x", "channel": "online", "online_level": "none",
        "due_at": "2023-04-04T17:00:00+07:00", "registered_electronically": true}),
    );
    f.apply(&online_but_none);
    assert_eq!(ratio(&f, "2023-03-30", Indicator::OnlineRate), (2, 4));
}

#[test]
fn a_case_received_late_at_night_utc_counts_on_the_local_day() {
    let mut f = Fold::new(None);
    f.apply(&received(
        "a",
        "1",
        "2023-03-30T18:00:00Z",
        "2023-04-04T17:00:00+07:00",
        true,
        true,
    ));
    assert_eq!(on(&f, "2023-03-31").received, 1);
    assert_eq!(on(&f, "2023-03-30").received, 0);
}

#[test]
fn electronic_registration_counts_cases_recorded_in_the_software_at_intake() {
    let mut f = Fold::new(None);
    f.apply(&received(
        "a",
        "1",
        "2023-03-30T10:00:00+07:00",
        "2023-04-04T17:00:00+07:00",
        false,
        true,
    ));
    f.apply(&received(
        "b",
        "2",
        "2023-03-30T10:00:00+07:00",
        "2023-04-04T17:00:00+07:00",
        false,
        false,
    ));
    assert_eq!(
        ratio(&f, "2023-03-30", Indicator::ElectronicRegistrationRate),
        (1, 2)
    );
}

#[test]
fn on_time_compares_local_dates_and_counts_on_the_resolution_day() {
    let mut f = Fold::new(None);
    // Due 4 April 17:00; resolved 4 April 23:00 local: same local date, on time.
    f.apply(&resolved(
        "a",
        "1",
        "2023-04-04T16:00:00Z",
        "2023-04-04T17:00:00+07:00",
    ));
    // Resolved 5 April 00:30 local, which is still 4 April in UTC: late.
    f.apply(&resolved(
        "b",
        "2",
        "2023-04-04T17:30:00Z",
        "2023-04-04T17:00:00+07:00",
    ));
    assert_eq!(ratio(&f, "2023-04-04", Indicator::OnTimeRate), (1, 1));
    assert_eq!(ratio(&f, "2023-04-05", Indicator::OnTimeRate), (0, 1));
}

#[test]
fn an_open_case_counts_late_from_the_day_after_its_due_date_once_the_clock_says_so() {
    let mut f = Fold::new(Some(now("2023-04-04T12:00:00+07:00")));
    f.apply(&received(
        "a",
        "1",
        "2023-04-01T09:00:00+07:00",
        "2023-04-04T17:00:00+07:00",
        false,
        true,
    ));
    assert_eq!(
        ratio(&f, "2023-04-05", Indicator::OnTimeRate),
        (0, 0),
        "not overdue on its due date"
    );
    f.advance_clock(now("2023-04-04T23:59:59+07:00"));
    assert_eq!(ratio(&f, "2023-04-05", Indicator::OnTimeRate), (0, 0));
    f.advance_clock(now("2023-04-05T00:00:00+07:00"));
    assert_eq!(
        ratio(&f, "2023-04-05", Indicator::OnTimeRate),
        (0, 1),
        "late from the first day after"
    );
    f.advance_clock(now("2023-04-20T00:00:00+07:00"));
    assert_eq!(
        ratio(&f, "2023-04-05", Indicator::OnTimeRate),
        (0, 1),
        "counted once, not once a day"
    );
    // Resolved late: the late count moves to the resolution day.
    f.apply(&resolved(
        "b",
        "1",
        "2023-04-21T10:00:00+07:00",
        "2023-04-04T17:00:00+07:00",
    ));
    assert_eq!(ratio(&f, "2023-04-05", Indicator::OnTimeRate), (0, 0));
    assert_eq!(ratio(&f, "2023-04-21", Indicator::OnTimeRate), (0, 1));
}

#[test]
fn an_overdue_case_withdrawn_leaves_the_on_time_count() {
    let mut f = Fold::new(Some(now("2023-05-01T00:00:00+07:00")));
    f.apply(&received(
        "a",
        "1",
        "2023-04-01T09:00:00+07:00",
        "2023-04-04T17:00:00+07:00",
        false,
        true,
    ));
    assert_eq!(
        ratio(&f, "2023-04-05", Indicator::OnTimeRate),
        (0, 1),
        "already overdue when it arrives"
    );
    f.apply(&withdrawn("b", "1", "2023-05-02T09:00:00+07:00"));
    assert_eq!(ratio(&f, "2023-04-05", Indicator::OnTimeRate), (0, 0));
    assert_eq!(
        on(&f, "2023-04-01").received,
        1,
        "withdrawal does not undo the receipt"
    );
}

#[test]
fn the_clock_never_goes_back() {
    let mut f = Fold::new(Some(now("2023-05-01T00:00:00+07:00")));
    f.apply(&received(
        "a",
        "1",
        "2023-04-01T09:00:00+07:00",
        "2023-04-04T17:00:00+07:00",
        false,
        true,
    ));
    f.advance_clock(now("2023-04-02T00:00:00+07:00"));
    assert_eq!(f.today(), Some(day("2023-05-01")));
    assert_eq!(ratio(&f, "2023-04-05", Indicator::OnTimeRate), (0, 1));
}

#[test]
fn a_later_resolution_replaces_an_earlier_one_on_its_own_day() {
    let mut f = Fold::new(None);
    f.apply(&resolved(
        "a",
        "1",
        "2023-04-03T10:00:00+07:00",
        "2023-04-04T17:00:00+07:00",
    ));
    f.apply(&resolved(
        "b",
        "1",
        "2023-04-06T10:00:00+07:00",
        "2023-04-04T17:00:00+07:00",
    ));
    assert_eq!(ratio(&f, "2023-04-03", Indicator::OnTimeRate), (0, 0));
    assert_eq!(ratio(&f, "2023-04-06", Indicator::OnTimeRate), (0, 1));
}

#[test]
fn an_earlier_event_arriving_after_a_later_one_changes_nothing() {
    let mut f = Fold::new(None);
    f.apply(&rated(
        "b",
        "1",
        "2023-04-06T10:00:00+07:00",
        "dissatisfied",
    ));
    assert_eq!(
        f.apply(&rated(
            "a",
            "1",
            "2023-04-05T10:00:00+07:00",
            "very_satisfied"
        )),
        Applied::Superseded
    );
    assert_eq!(ratio(&f, "2023-04-06", Indicator::SatisfactionRate), (0, 1));
    assert_eq!(ratio(&f, "2023-04-05", Indicator::SatisfactionRate), (0, 0));
}

#[test]
fn a_new_rating_replaces_the_old_one_on_the_days_each_belongs_to() {
    let mut f = Fold::new(None);
    f.apply(&rated(
        "a",
        "1",
        "2023-04-05T10:00:00+07:00",
        "dissatisfied",
    ));
    f.apply(&rated("b", "1", "2023-04-07T10:00:00+07:00", "satisfied"));
    assert_eq!(ratio(&f, "2023-04-05", Indicator::SatisfactionRate), (0, 0));
    assert_eq!(ratio(&f, "2023-04-07", Indicator::SatisfactionRate), (1, 1));
}

#[test]
fn on_equal_times_the_last_arrival_wins() {
    let mut f = Fold::new(None);
    f.apply(&rated(
        "a",
        "1",
        "2023-04-05T10:00:00+07:00",
        "dissatisfied",
    ));
    f.apply(&rated(
        "b",
        "1",
        "2023-04-05T10:00:00+07:00",
        "very_satisfied",
    ));
    assert_eq!(ratio(&f, "2023-04-05", Indicator::SatisfactionRate), (1, 1));
}

#[test]
fn a_repeated_event_id_changes_nothing_even_with_other_content() {
    let mut f = Fold::new(None);
    f.apply(&rated(
        "a",
        "1",
        "2023-04-05T10:00:00+07:00",
        "dissatisfied",
    ));
    f.apply(&rated("b", "1", "2023-04-05T10:00:00+07:00", "satisfied"));
    assert_eq!(
        f.apply(&rated(
            "a",
            "1",
            "2023-04-05T10:00:00+07:00",
            "dissatisfied"
        )),
        Applied::Duplicate
    );
    assert_eq!(
        f.apply(&rated(
            "b",
            "1",
            "2023-04-09T10:00:00+07:00",
            "dissatisfied"
        )),
        Applied::Duplicate
    );
    assert_eq!(ratio(&f, "2023-04-05", Indicator::SatisfactionRate), (1, 1));
}

#[test]
fn a_rating_before_the_resolution_still_counts() {
    let mut f = Fold::new(None);
    f.apply(&rated("r", "1", "2023-04-05T10:00:00+07:00", "satisfied"));
    f.apply(&resolved(
        "s",
        "1",
        "2023-04-04T10:00:00+07:00",
        "2023-04-04T17:00:00+07:00",
    ));
    f.apply(&received(
        "t",
        "1",
        "2023-04-01T10:00:00+07:00",
        "2023-04-04T17:00:00+07:00",
        true,
        true,
    ));
    assert_eq!(ratio(&f, "2023-04-05", Indicator::SatisfactionRate), (1, 1));
    assert_eq!(ratio(&f, "2023-04-04", Indicator::OnTimeRate), (1, 1));
    assert_eq!(ratio(&f, "2023-04-01", Indicator::OnlineRate), (1, 1));
}

#[test]
fn a_repeated_signature_of_a_document_replaces_the_earlier_one() {
    let mut f = Fold::new(None);
    f.apply(&signed(
        "a",
        "doc-1",
        "2023-04-05T10:00:00+07:00",
        "handwritten",
    ));
    f.apply(&signed(
        "b",
        "doc-2",
        "2023-04-05T10:00:00+07:00",
        "digital",
    ));
    assert_eq!(
        ratio(&f, "2023-04-05", Indicator::DigitalSignatureRate),
        (1, 2)
    );
    f.apply(&signed(
        "c",
        "doc-1",
        "2023-04-06T10:00:00+07:00",
        "digital",
    ));
    assert_eq!(
        ratio(&f, "2023-04-05", Indicator::DigitalSignatureRate),
        (1, 1)
    );
    assert_eq!(
        ratio(&f, "2023-04-06", Indicator::DigitalSignatureRate),
        (1, 1)
    );
}

#[test]
fn a_withdrawal_later_replaced_by_a_resolution_counts_the_resolution() {
    let mut f = Fold::new(None);
    f.apply(&withdrawn("a", "1", "2023-04-03T10:00:00+07:00"));
    f.apply(&resolved(
        "b",
        "1",
        "2023-04-04T10:00:00+07:00",
        "2023-04-04T17:00:00+07:00",
    ));
    assert_eq!(ratio(&f, "2023-04-04", Indicator::OnTimeRate), (1, 1));
    // ... and a withdrawal dated before the resolution changes nothing.
    assert_eq!(
        f.apply(&withdrawn("c", "1", "2023-04-03T11:00:00+07:00")),
        Applied::Superseded
    );
    assert_eq!(ratio(&f, "2023-04-04", Indicator::OnTimeRate), (1, 1));
}

#[test]
fn a_fold_of_loaded_state_produces_only_the_difference() {
    let mut whole = Fold::new(None);
    whole.apply(&rated(
        "a",
        "1",
        "2023-04-05T10:00:00+07:00",
        "dissatisfied",
    ));
    let key = CaseKey {
        commune: long_my().commune(C).unwrap().clone(),
        case_id: "1".into(),
    };
    let mut part = Fold::new(None);
    part.load_case(key.clone(), whole.case(&key).unwrap().clone());
    part.load_seen("a".into());
    part.apply(&rated("b", "1", "2023-04-07T10:00:00+07:00", "satisfied"));
    assert_eq!(
        ratio(&part, "2023-04-05", Indicator::SatisfactionRate),
        (0, -1)
    );
    assert_eq!(
        ratio(&part, "2023-04-07", Indicator::SatisfactionRate),
        (1, 1)
    );
}

/// A case received by a unit that merged (31477, until 30 June 2025), due
/// on its last day, so late from 1 July where it was received; resolved on
/// 1 July by its successor (31471). The late count leaves 31477's 1 July
/// and the resolution counts for 31471 on the same day: two communes, one
/// day, which the fold's netting of a change must keep apart.
#[test]
fn a_late_case_resolved_by_the_successor_on_the_day_it_went_late_moves_between_communes() {
    use crate::domain::units::tests::long_my_history;
    let units = crate::domain::Units::parse(&long_my_history()).unwrap();
    let ev = |id: &str, kind: &str, code: &str, at: &str, data: serde_json::Value| {
        let v = json!({
            "event_id": id, "event_type": kind, "schema_version": 1,
            "occurred_at": at, "commune_code": code, "case_id": "M-1", "data": data,
        });
        decode(Some(v.to_string().as_bytes()), &units).unwrap()
    };
    let counted = |f: &Fold, code: &str, d: &str| {
        f.deltas()
            .iter()
            .find(|((c, dd), _)| c.as_str() == code && *dd == day(d))
            .map(|(_, v)| (v.on_time, v.due))
            .unwrap_or_default()
    };
    let due = "2025-06-30T17:00:00+07:00";
    let mut f = Fold::new(Some(now("2025-06-28T12:00:00+07:00")));
    f.apply(&ev(
        "r",
        "case.received",
        "31477",
        "2025-06-28T09:00:00+07:00",
        json!({
            "procedure_code": "1.0001", "channel": "in_person", "online_level": "none",
            "due_at": due, "registered_electronically": true,
        }),
    ));
    f.advance_clock(now("2025-07-01T08:00:00+07:00"));
    assert_eq!(
        counted(&f, "31477", "2025-07-01"),
        (0, 1),
        "late where received"
    );
    f.apply(&ev(
        "s",
        "case.resolved",
        "31471",
        "2025-07-01T10:00:00+07:00",
        json!({"due_at": due, "outcome": "completed"}),
    ));
    assert_eq!(
        counted(&f, "31477", "2025-07-01"),
        (0, 0),
        "the late count leaves"
    );
    assert_eq!(
        counted(&f, "31471", "2025-07-01"),
        (0, 1),
        "resolved late, by the successor"
    );
}

#[test]
fn the_written_states_are_moved_out_in_the_order_asked_with_the_deltas() {
    let mut f = Fold::new(None);
    let events = [
        received(
            "r1",
            "case-1",
            "2023-04-03T09:00:00+07:00",
            "2023-04-10T17:00:00+07:00",
            true,
            true,
        ),
        received(
            "r2",
            "case-2",
            "2023-04-03T10:00:00+07:00",
            "2023-04-10T17:00:00+07:00",
            false,
            false,
        ),
        resolved(
            "s1",
            "case-1",
            "2023-04-04T09:00:00+07:00",
            "2023-04-10T17:00:00+07:00",
        ),
        received(
            "r3",
            "case-3",
            "2023-04-03T11:00:00+07:00",
            "2023-04-10T17:00:00+07:00",
            true,
            false,
        ),
        signed("d1", "doc-1", "2023-04-05T10:00:00+07:00", "digital"),
        signed("d2", "doc-2", "2023-04-05T10:00:00+07:00", "handwritten"),
    ];
    let (mut cases, mut documents) = (Vec::new(), Vec::new());
    for e in &events {
        f.apply(e);
        match e.key() {
            EventKey::Case(k) if !cases.contains(&k) => cases.push(k),
            EventKey::Document(k) if !documents.contains(&k) => documents.push(k),
            _ => {}
        }
    }
    // Not every case held is written, and not in the order held.
    let cases = vec![cases[2].clone(), cases[0].clone()];
    let documents = vec![documents[1].clone(), documents[0].clone()];
    let want_cases: Vec<CaseState> = cases.iter().map(|k| f.case(k).unwrap().clone()).collect();
    let want_documents: Vec<DocumentState> = documents
        .iter()
        .map(|k| f.document(k).unwrap().clone())
        .collect();
    let want_deltas = f.deltas().clone();
    let (got_cases, got_documents, got_deltas) = f.into_written(&cases, &documents);
    assert_eq!(got_cases, want_cases);
    assert_eq!(got_documents, want_documents);
    assert_eq!(got_deltas, want_deltas);
}
