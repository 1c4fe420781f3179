//! Shared by the fuzz targets: the Long Mỹ units, the checks made on every
//! decoded event, and the structured target's input builder. The main
//! crate's `tests/fuzz_corpus.rs` includes this file to replay the seed
//! corpora in CI (stable Rust), so the checks cannot rot.

use cchc_pipeline::domain::event::{EventKind, Rejection, MAX_EVENT_ID_CHARS};
use cchc_pipeline::domain::{CaseEvent, Fold, UnitKind, UnitSpec, Units};
use chrono::{DateTime, Duration, Utc};
use std::sync::OnceLock;

pub fn units() -> &'static Units {
    static UNITS: OnceLock<Units> = OnceLock::new();
    UNITS.get_or_init(|| {
        let mut specs = vec![UnitSpec::new("937", "Thị xã Long Mỹ", UnitKind::Town, None)];
        for code in [
            "31471", "31472", "31473", "31474", "31475", "31477", "31478", "31480", "31481",
        ] {
            specs.push(UnitSpec::new(
                code,
                &format!("unit {code}"),
                UnitKind::Commune,
                Some("937"),
            ));
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

// ---------------------------------------------------------------------------
// decode_structured: fuzz bytes spliced into a valid envelope
// ---------------------------------------------------------------------------

const TYPES: [&str; 5] = [
    "case.received",
    "case.resolved",
    "case.withdrawn",
    "case.rated",
    "document.signed",
];

/// A record's fields in order: key and raw JSON value (`None`: removed).
type Fields = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// The envelope's fields and the data object's fields of a valid event.
fn template(kind: usize) -> (Fields, Fields) {
    let f = |k: &str, v: &str| (k.as_bytes().to_vec(), Some(v.as_bytes().to_vec()));
    let envelope = vec![
        f("event_id", r#""0b6f3c1e-2f4e-4f7e-9a51-6f1d2b8e7c11""#),
        f("event_type", &format!("\"{}\"", TYPES[kind])),
        f("schema_version", "1"),
        f("occurred_at", r#""2023-03-30T10:44:00+07:00""#),
        f("commune_code", r#""31471""#),
        f("case_id", r#""000.00.31.H37-230330-0001""#),
    ];
    let data = match kind {
        0 => vec![
            f("procedure_code", r#""1.001234""#),
            f("channel", r#""online""#),
            f("online_level", r#""full""#),
            f("due_at", r#""2023-04-04T17:00:00+07:00""#),
            f("registered_electronically", "true"),
            f("digitized", "false"),
        ],
        1 => vec![
            f("due_at", r#""2023-04-04T17:00:00Z""#),
            f("outcome", r#""completed""#),
        ],
        2 => vec![],
        3 => vec![f("rating", r#""very_satisfied""#), f("score", "17")],
        _ => vec![
            f("document_id", r#""12/QĐ-UBND""#),
            f("signature", r#""digital""#),
            f("document_kind", r#""case_result""#),
        ],
    };
    (envelope, data)
}

fn render(fields: &[(Vec<u8>, Option<Vec<u8>>)], data: Option<Vec<u8>>) -> Vec<u8> {
    let mut out = b"{".to_vec();
    let mut first = true;
    let mut push = |out: &mut Vec<u8>, k: &[u8], v: &[u8]| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(k);
        out.extend_from_slice(b"\":");
        out.extend_from_slice(v);
    };
    for (k, v) in fields {
        if let Some(v) = v {
            push(&mut out, k, v);
        }
    }
    if let Some(d) = data {
        push(&mut out, b"data", &d);
    }
    out.push(b'}');
    out
}

fn quoted(bytes: &[u8]) -> Vec<u8> {
    let mut v = vec![b'"'];
    v.extend_from_slice(bytes);
    v.push(b'"');
    v
}

fn escaped(bytes: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(bytes);
    let mut v = vec![b'"'];
    for c in text.chars() {
        match c {
            '"' => v.extend_from_slice(b"\\\""),
            '\\' => v.extend_from_slice(b"\\\\"),
            c if (c as u32) < 0x20 => {
                v.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes());
            }
            c => v.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    v.push(b'"');
    v
}

/// The record a `decode_structured` fuzz input stands for: byte 0 picks the
/// event type; the rest is split on 0xFE into edits of a valid envelope (see
/// fuzz/README.md). `None` for an empty input.
pub fn structured(input: &[u8]) -> Option<Vec<u8>> {
    let (&kind, rest) = input.split_first()?;
    let (mut envelope, mut data) = template(kind as usize % TYPES.len());
    // The `data` object itself, replaced whole when an edit says so.
    let mut data_raw: Option<Option<Vec<u8>>> = None;
    for edit in rest.split(|b| *b == 0xFE) {
        let Some((&op, material)) = edit.split_first() else {
            continue;
        };
        let n_env = envelope.len();
        let n_data = data.len();
        // One index past the fields: the `data` object; two past: a new field.
        let which = (op & 0x1F) as usize % (n_env + n_data + 2);
        let mode = op >> 5;
        if which == n_env + n_data {
            data_raw = Some(match mode {
                0 => Some(material.to_vec()),
                1 => None,
                2 => Some(b"null".to_vec()),
                _ => Some(quoted(material)),
            });
            continue;
        }
        if which == n_env + n_data + 1 {
            // A new field, in the envelope or in data: key and raw value
            // split on the first ':'.
            let (k, v) = match material.iter().position(|b| *b == b':') {
                Some(i) => (material[..i].to_vec(), material[i + 1..].to_vec()),
                None => (material.to_vec(), b"1".to_vec()),
            };
            let target = if mode & 1 == 0 {
                &mut envelope
            } else {
                &mut data
            };
            target.push((k, Some(v)));
            continue;
        }
        let field = if which < n_env {
            &mut envelope[which]
        } else {
            &mut data[which - n_env]
        };
        match mode {
            // Raw bytes between the quotes.
            0 => field.1 = Some(quoted(material)),
            // Raw bytes as the JSON value.
            1 => field.1 = Some(material.to_vec()),
            // A properly escaped string.
            2 => field.1 = Some(escaped(material)),
            // Removed.
            3 => field.1 = None,
            // Appended inside the string (e.g. after a timestamp).
            4 => {
                if let Some(v) = &mut field.1 {
                    if v.last() == Some(&b'"') {
                        v.pop();
                        v.extend_from_slice(material);
                        v.push(b'"');
                    } else {
                        v.extend_from_slice(material);
                    }
                }
            }
            // Overwrites a prefix of the value's characters (inside quotes).
            5 => {
                if let Some(v) = &mut field.1 {
                    let start = usize::from(v.first() == Some(&b'"'));
                    for (i, b) in material.iter().enumerate() {
                        let at = start + i;
                        if at + start >= v.len() {
                            break;
                        }
                        v[at] = *b;
                    }
                }
            }
            // A number made from the material.
            6 => {
                let mut n = [0u8; 8];
                for (i, b) in material.iter().take(8).enumerate() {
                    n[i] = *b;
                }
                let n = i64::from_le_bytes(n);
                let text = match material.len() % 3 {
                    0 => n.to_string(),
                    1 => (n % 40).to_string(),
                    _ => format!("{}.5e{}", n % 100, n % 400),
                };
                field.1 = Some(text.into_bytes());
            }
            // The key itself replaced.
            _ => field.0 = material.to_vec(),
        }
    }
    let data_value = match data_raw {
        Some(raw) => raw,
        None => Some(render(&data, None)),
    };
    Some(render(&envelope, data_value))
}
