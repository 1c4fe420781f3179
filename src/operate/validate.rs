//! `cchc validate FILE` and `POST /api/v1/events/validate`: an export
//! checked against the event contract exactly as the pipeline would judge
//! it, with the pipeline's own decoder (`domain::event::decode`) and unit
//! list, so a vendor can check a file before going live. Nothing is sent.
//!
//! A producer's scope may be given (`POST /api/v1/events/validate` with a
//! producer token): an event for a commune outside it is refused as
//! [`OUT_OF_SCOPE`], as `POST /api/v1/events` would refuse it.
//!
//! Two shapes are read: newline-delimited JSON (one event per line, blank
//! lines skipped; streamed, so a year's export needs no more memory than a
//! line), and a JSON array of events (read whole; its elements are numbered
//! by the line they start on). A file that starts with `[` is an array.

use std::collections::BTreeMap;
use std::io::BufRead;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::domain::event::decode;
use crate::domain::{CaseEvent, Scope, Units};

/// The reason code of an event for a commune outside the producer's scope:
/// refused at the door, so never a dead letter.
pub const OUT_OF_SCOPE: &str = "out_of_scope";

/// Why one record is refused, and the field at fault if there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The dead-letter reason code the pipeline would keep it under (or
    /// [`OUT_OF_SCOPE`]).
    pub reason_code: &'static str,
    pub reason: String,
    pub field: Option<String>,
}

/// One record judged as the pipeline would judge it (the same decoder and
/// unit list), and against a producer's scope if one is given.
pub fn check(record: &[u8], units: &Units, scope: Option<&Scope>) -> Result<CaseEvent, Problem> {
    let event = decode(Some(record), units).map_err(|rejection| Problem {
        reason_code: rejection.code(),
        field: rejection.field().map(str::to_string),
        reason: rejection.to_string(),
    })?;
    match scope {
        Some(scope) if !scope.covers(&event.commune) => Err(Problem {
            reason_code: OUT_OF_SCOPE,
            reason: format!(
                "commune `{}` is not among the units this producer may send for",
                event.commune
            ),
            field: Some("commune_code".into()),
        }),
        _ => Ok(event),
    }
}

/// One record refused: where, why, and the field at fault if there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// 1-based line of the file (or body) the record is on (starts on).
    pub line: usize,
    #[serde(flatten)]
    pub problem: Problem,
}

/// What a validation found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Validation {
    /// Records read (blank lines are not records).
    pub records: usize,
    pub valid: usize,
    pub refused: usize,
    /// Refused records by reason code.
    pub by_reason: BTreeMap<&'static str, usize>,
    /// The first refused records, in file order (at most the `keep` asked for).
    pub first_refused: Vec<Refusal>,
}

impl Validation {
    fn judge(&mut self, line: usize, problem: Option<Problem>, keep: usize) {
        self.records += 1;
        match problem {
            None => self.valid += 1,
            Some(problem) => {
                self.refused += 1;
                *self.by_reason.entry(problem.reason_code).or_default() += 1;
                if self.first_refused.len() < keep {
                    self.first_refused.push(Refusal { line, problem });
                }
            }
        }
    }

    /// The summary an operator reads: counts, reasons, the first refusals.
    pub fn text(&self, name: &str) -> String {
        let mut out = format!(
            "{name}: {} records, {} valid, {} refused\n",
            self.records, self.valid, self.refused
        );
        if self.refused > 0 {
            out += "refused by reason:\n";
            for (code, n) in &self.by_reason {
                out += &format!("  {code:<26} {n}\n");
            }
            out += &format!("first {} refused:\n", self.first_refused.len());
            for Refusal { line, problem: r } in &self.first_refused {
                let field = r
                    .field
                    .as_deref()
                    .map(|f| format!(" ({f})"))
                    .unwrap_or_default();
                out += &format!("  line {line}: {}{field}: {}\n", r.reason_code, r.reason);
            }
        }
        out
    }
}

/// Why a file could not be read as records at all.
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    #[error("cannot read it: {0}")]
    Io(#[from] std::io::Error),
    /// An array that is not one (a file that starts with `[`, or a body
    /// sent as `application/json`): its records cannot be told apart.
    #[error("it is not a JSON array of events: {0}")]
    NotAnArray(serde_json::Error),
}

/// How the records are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A JSON array when the first non-blank byte is `[`, else NDJSON (a
    /// file).
    Detect,
    /// One record per line, whatever its first byte (`application/x-ndjson`).
    Ndjson,
    /// A JSON array (`application/json`).
    Array,
}

/// Judges every record read from `input` (against `scope` too, if given),
/// keeping the first `keep` refusals.
pub fn validate(
    input: impl BufRead,
    units: &Units,
    scope: Option<&Scope>,
    keep: usize,
    shape: Shape,
) -> Result<Validation, ValidateError> {
    let mut v = Validation::default();
    records(input, shape, |line, record| {
        v.judge(line, check(record, units, scope).err(), keep);
    })?;
    Ok(v)
}

/// Calls `each` with every record of `input` and the 1-based line it is
/// on (starts on), in order.
pub fn records(
    mut input: impl BufRead,
    shape: Shape,
    mut each: impl FnMut(usize, &[u8]),
) -> Result<(), ValidateError> {
    let mut line = Vec::with_capacity(4096);
    let mut number = 0usize;
    // Blank lines first: they say nothing of the shape.
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        number += 1;
        if !trimmed(&line).is_empty() {
            break;
        }
    }
    let is_array = match shape {
        Shape::Detect => trimmed(&line).starts_with(b"["),
        Shape::Ndjson => false,
        Shape::Array => true,
    };
    if is_array {
        let mut rest = Vec::new();
        input.read_to_end(&mut rest)?;
        line.extend_from_slice(&rest);
        return array(&line, number, each);
    }
    loop {
        let record = trimmed(&line);
        if !record.is_empty() {
            each(number, record);
        }
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        number += 1;
    }
}

/// The elements of a JSON array that starts on line `first_line`.
fn array(
    text: &[u8],
    first_line: usize,
    mut each: impl FnMut(usize, &[u8]),
) -> Result<(), ValidateError> {
    let elements: Vec<&RawValue> =
        serde_json::from_slice(text).map_err(ValidateError::NotAnArray)?;
    let base = text.as_ptr() as usize;
    let (mut at, mut line) = (0usize, first_line);
    for element in elements {
        let bytes = element.get().as_bytes();
        let offset = bytes.as_ptr() as usize - base;
        line += text[at..offset].iter().filter(|b| **b == b'\n').count();
        at = offset;
        each(line, bytes);
    }
    Ok(())
}

/// `bytes` without surrounding ASCII whitespace (and so without a `\r\n`).
fn trimmed(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &bytes[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::simulator::Simulator;

    fn units() -> Units {
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
        Settings::load_file(&file).unwrap().units
    }

    fn events(n: usize) -> Vec<String> {
        let start = chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        Simulator::new(&units(), 3, start, 20.0)
            .take(n)
            .map(|r| r.value)
            .collect()
    }

    #[test]
    fn ndjson_lines_are_judged_as_the_pipeline_would_with_their_line_numbers() {
        let good = events(3);
        let unknown = good[1].replace("\"commune_code\":\"", "\"commune_code\":\"9");
        let text = format!(
            "{}\r\n\n{}\nnot json\n{unknown}\n  \n{}\n[1]\n",
            good[0], good[1], good[2]
        );
        let v = validate(text.as_bytes(), &units(), None, 10, Shape::Detect).unwrap();
        assert_eq!((v.records, v.valid, v.refused), (6, 3, 3), "{v:?}");
        let lines: Vec<_> = v
            .first_refused
            .iter()
            .map(|r| (r.line, r.problem.reason_code, r.problem.field.as_deref()))
            .collect();
        assert_eq!(
            lines,
            [
                (4, "not_json", None),
                (5, "unknown_commune", Some("commune_code")),
                (8, "not_an_object", None)
            ]
        );
        assert_eq!(v.by_reason["unknown_commune"], 1);
        // Only the first `keep` are kept; all are counted.
        let v = validate(text.as_bytes(), &units(), None, 1, Shape::Detect).unwrap();
        assert_eq!((v.refused, v.first_refused.len()), (3, 1));
        let summary = v.text("export.ndjson");
        assert!(
            summary.starts_with("export.ndjson: 6 records, 3 valid, 3 refused\n"),
            "{summary}"
        );
        assert!(
            summary.contains("line 4: not_json: the value is not JSON"),
            "{summary}"
        );
    }

    #[test]
    fn invalid_utf8_is_a_refused_line_not_a_failed_file() {
        let good = events(1).remove(0);
        let mut bytes = b"\xff\xfe\n".to_vec();
        bytes.extend_from_slice(good.as_bytes());
        let v = validate(&bytes[..], &units(), None, 10, Shape::Detect).unwrap();
        assert_eq!((v.records, v.valid), (2, 1));
        assert_eq!(v.first_refused[0].problem.reason_code, "not_utf8");
    }

    #[test]
    fn an_array_numbers_its_elements_by_the_line_they_start_on() {
        let good = events(2);
        let text = format!(
            "\n[\n  {},\n  {{\"event_id\": \"x\"}},\n  {}\n]\n",
            good[0], good[1]
        );
        let v = validate(text.as_bytes(), &units(), None, 10, Shape::Detect).unwrap();
        assert_eq!((v.records, v.valid, v.refused), (3, 2, 1), "{v:?}");
        assert_eq!(v.first_refused[0].line, 4);
        assert_eq!(v.first_refused[0].problem.reason_code, "missing_field");
        assert!(matches!(
            validate(&b"[{\"a\": 1}, oops"[..], &units(), None, 10, Shape::Detect),
            Err(ValidateError::NotAnArray(_))
        ));
        assert_eq!(
            validate(&b"\n\n"[..], &units(), None, 10, Shape::Detect)
                .unwrap()
                .records,
            0
        );
        // Declared shapes are not guessed: an NDJSON line that is an array
        // is a refused record; an "array" that is an object is no array.
        let v = validate(&b"[1]\n"[..], &units(), None, 10, Shape::Ndjson).unwrap();
        assert_eq!(v.first_refused[0].problem.reason_code, "not_an_object");
        assert!(validate(&b"{}"[..], &units(), None, 10, Shape::Array).is_err());
    }

    /// Every record the fold's tests send through the pipeline: the
    /// validator agrees with the decoder, record by record.
    #[test]
    fn the_verdict_is_the_decoders() {
        let units = units();
        let mut text = String::new();
        let mut want = 0;
        for (n, e) in events(500).into_iter().enumerate() {
            let e = if n % 7 == 0 {
                e.replace("+07:00", "")
            } else {
                e
            };
            if decode(Some(e.as_bytes()), &units).is_ok() {
                want += 1;
            }
            text += &e;
            text.push('\n');
        }
        let v = validate(text.as_bytes(), &units, None, 0, Shape::Detect).unwrap();
        assert_eq!((v.records, v.valid), (500, want));
        assert!(v.refused > 0 && v.first_refused.is_empty());
    }
}
