//! A unit list an operator supplies (`units_file`): CSV or JSON, chosen by
//! the file's extension; the format is in docs/UNITS.md.
//!
//! CSV: a header row, then one unit per row; columns `code`, `name`, `kind`,
//! and optionally `parent`, `valid_from`, `valid_to` (YYYY-MM-DD, inclusive),
//! `successors` (codes separated by `;`), `history_to`. Empty cells are
//! absent values.
//!
//! JSON: an array of objects with the fields of an inline `[[units]]`
//! entry (`successors` an array).
//!
//! Every error names the file and the line.

use std::path::Path;

use chrono::NaiveDate;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::domain::{UnitKind, UnitSpec};

/// A unit read from a file, with the line it starts on.
#[derive(Debug, Clone)]
pub struct Located {
    pub spec: UnitSpec,
    pub line: u64,
}

/// Why a unit file cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {reason}")]
pub struct FileError {
    pub file: String,
    /// 0 when the problem is the whole file's.
    pub line: u64,
    pub reason: String,
}

/// Reads `path` (`.csv` or `.json`).
pub fn read(path: &Path) -> Result<Vec<Located>, FileError> {
    let file = path.display().to_string();
    let whole = |reason: String| FileError {
        file: file.clone(),
        line: 0,
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| whole(format!("cannot read: {e}")))?;
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let read = match extension.as_deref() {
        Some("csv") => parse_csv(&text),
        Some("json") => parse_json(&text),
        _ => Err((0, "a unit file is .csv or .json".to_string())),
    };
    read.map_err(|(line, reason)| FileError {
        file: file.clone(),
        line,
        reason,
    })
}

/// One CSV row as written.
#[derive(Deserialize)]
struct Row {
    code: String,
    name: String,
    kind: String,
    #[serde(default)]
    parent: String,
    #[serde(default)]
    valid_from: String,
    #[serde(default)]
    valid_to: String,
    #[serde(default)]
    successors: String,
    #[serde(default)]
    history_to: String,
}

const COLUMNS: [&str; 8] = [
    "code",
    "name",
    "kind",
    "parent",
    "valid_from",
    "valid_to",
    "successors",
    "history_to",
];

fn parse_csv(text: &str) -> Result<Vec<Located>, (u64, String)> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| (1, format!("header: {e}")))?
        .clone();
    for h in &headers {
        if !COLUMNS.contains(&h) {
            return Err((
                1,
                format!("unknown column `{h}` (columns: {})", COLUMNS.join(", ")),
            ));
        }
    }
    for required in ["code", "name", "kind"] {
        if !headers.iter().any(|h| h == required) {
            return Err((1, format!("column `{required}` is missing")));
        }
    }
    let mut units = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, csv::Position::line);
            (line, e.to_string())
        })?;
        let line = record.position().map_or(0, csv::Position::line);
        let row: Row = record
            .deserialize(Some(&headers))
            .map_err(|e| (line, e.to_string()))?;
        let spec = spec_of(row).map_err(|reason| (line, reason))?;
        units.push(Located { spec, line });
    }
    Ok(units)
}

fn spec_of(row: Row) -> Result<UnitSpec, String> {
    let optional = |s: String| (!s.is_empty()).then_some(s);
    let date = |column: &str, s: &str| -> Result<Option<NaiveDate>, String> {
        if s.is_empty() {
            return Ok(None);
        }
        NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .map(Some)
            .map_err(|_| format!("{column} `{s}` is not a date (YYYY-MM-DD)"))
    };
    let kind: UnitKind = serde_json::from_value(serde_json::Value::String(row.kind.clone()))
        .map_err(|_| {
            format!(
                "kind `{}` is not one of ward, commune, township, town, district, city, province, country",
                row.kind
            )
        })?;
    Ok(UnitSpec {
        valid_from: date("valid_from", &row.valid_from)?,
        valid_to: date("valid_to", &row.valid_to)?,
        successors: row
            .successors
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        history_to: optional(row.history_to),
        ..UnitSpec::new(&row.code, &row.name, kind, optional(row.parent).as_deref())
    })
}

fn parse_json(text: &str) -> Result<Vec<Located>, (u64, String)> {
    let entries: Vec<&RawValue> = serde_json::from_str(text)
        .map_err(|e| (e.line() as u64, format!("not a JSON array of units: {e}")))?;
    let base = text.as_ptr() as usize;
    let mut units = Vec::with_capacity(entries.len());
    for entry in entries {
        let offset = entry.get().as_ptr() as usize - base;
        let line = 1 + text.as_bytes()[..offset]
            .iter()
            .filter(|&&b| b == b'\n')
            .count() as u64;
        let spec: UnitSpec = serde_json::from_str(entry.get())
            .map_err(|e| (line + e.line() as u64 - 1, e.to_string()))?;
        units.push(Located { spec, line });
    }
    Ok(units)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("cchc-unit-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_csv_row_is_a_unit_and_its_line_is_kept() {
        let path = write(
            "a.csv",
            "code,name,kind,parent,valid_from,valid_to,successors\n\
             92,Thành phố Cần Thơ,city,,,,\n\
             31477,Xã Long Trị,commune,92,,2025-06-30,31471\n\
             31471,Phường Long Mỹ,ward,92,2025-07-01,,\n",
        );
        let units = read(&path).unwrap();
        assert_eq!(units.len(), 3);
        assert_eq!(units[1].line, 3);
        assert_eq!(units[1].spec.successors, ["31471"]);
        assert_eq!(units[1].spec.valid_to, Some("2025-06-30".parse().unwrap()));
        assert_eq!(
            units[2].spec.valid_from,
            Some("2025-07-01".parse().unwrap())
        );
        assert_eq!(units[0].spec.parent, None);
    }

    #[test]
    fn a_bad_csv_cell_names_its_line() {
        let path = write(
            "b.csv",
            "code,name,kind,valid_to\n1,a,ward,\n2,b,ward,30/06/2025\n",
        );
        let e = read(&path).unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.reason.contains("valid_to `30/06/2025`"), "{e}");
        let path = write("c.csv", "code,name,kind\n1,a,hamlet\n");
        assert!(read(&path).unwrap_err().to_string().ends_with(
            "c.csv:2: kind `hamlet` is not one of ward, commune, township, town, district, city, province, country"
        ));
        let path = write("d.csv", "code,name,type\n");
        assert!(read(&path)
            .unwrap_err()
            .reason
            .contains("unknown column `type`"));
    }

    #[test]
    fn a_json_entry_names_its_line() {
        let path = write(
            "a.json",
            "[\n  {\"code\": \"92\", \"name\": \"Cần Thơ\", \"kind\": \"city\"},\n  {\"code\": \"1\",\n   \"name\": \"x\", \"kind\": \"ward\", \"colour\": 1}\n]\n",
        );
        let e = read(&path).unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        assert!(e.reason.contains("colour"), "{e}");
        let path = write(
            "b.json",
            "[\n  {\"code\": \"92\", \"name\": \"Cần Thơ\", \"kind\": \"city\"},\n  {\"code\": \"1\", \"name\": \"x\", \"kind\": \"ward\", \"parent\": \"92\", \"valid_to\": \"2025-06-30\"}\n]\n",
        );
        let units = read(&path).unwrap();
        assert_eq!(units[1].line, 3);
        assert_eq!(units[1].spec.parent.as_deref(), Some("92"));
    }

    #[test]
    fn another_extension_is_refused() {
        let path = write("a.txt", "");
        assert_eq!(
            read(&path).unwrap_err().reason,
            "a unit file is .csv or .json"
        );
    }
}
