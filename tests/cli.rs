//! The operator commands that need neither Kafka nor PostgreSQL, run as a
//! newcomer runs them: `cchc simulate --output` writes an export and
//! `cchc validate` judges it; `cchc report --format` writes a unit's report
//! from the embedded demo's store.

use std::path::PathBuf;
use std::process::Command;

fn cchc(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cchc"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .expect("running cchc")
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("var/test-cli");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{}-{name}", std::process::id()))
}

#[test]
fn an_export_is_validated_as_the_pipeline_would_judge_it() {
    let file = scratch("export.ndjson");
    let path = file.to_str().unwrap();
    let out = cchc(&["simulate", "--events", "5000", "--output", path]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("5000 events written"));

    // Every simulated event is valid: exit status 0.
    let out = cchc(&["validate", path]);
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{summary}");
    assert!(
        summary.contains("5000 records, 5000 valid, 0 refused"),
        "{summary}"
    );

    // Three bad lines: exit status 1, each named by line, reason and field.
    let mut text = std::fs::read_to_string(&file).unwrap();
    text += "not json\n";
    text += r#"{"event_id":"x","event_type":"case.received","schema_version":1,"occurred_at":"2026-01-02T08:00:00","commune_code":"31471","case_id":"c","data":{"channel":"online","procedure_code":"1","due_at":"2026-01-05T17:00:00+07:00"}}"#;
    text += "\n";
    text += r#"{"event_id":"y","event_type":"case.sent","schema_version":1,"occurred_at":"2026-01-02T08:00:00+07:00","commune_code":"31471","case_id":"c","data":{}}"#;
    text += "\n";
    std::fs::write(&file, text).unwrap();
    let out = cchc(&["validate", "--show", "2", path]);
    let summary = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{summary}");
    assert!(
        summary.contains("5003 records, 5000 valid, 3 refused"),
        "{summary}"
    );
    assert!(summary.contains("line 5001: not_json"), "{summary}");
    assert!(
        summary.contains("line 5002: timestamp_without_offset (occurred_at)"),
        "{summary}"
    );
    assert!(
        !summary.contains("line 5003"),
        "--show 2 lists two: {summary}"
    );
    assert!(
        summary.contains("unknown_event_type"),
        "but counts all: {summary}"
    );

    // As JSON, from standard input.
    let out = Command::new(env!("CARGO_BIN_EXE_cchc"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["validate", "--json", "-"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["refused"], 3);
    assert_eq!(v["by_reason"]["unknown_event_type"], 1);
    assert_eq!(v["first_refused"][2]["field"], "event_type");
    let _ = std::fs::remove_file(&file);
}

#[test]
fn a_file_that_cannot_be_read_is_named_with_exit_status_2() {
    let out = cchc(&["validate", "var/no-such-export.ndjson"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("var/no-such-export.ndjson: cannot read it"),
        "{err}"
    );
    let broken = scratch("broken.json");
    std::fs::write(&broken, "[{\"event_id\": 1}, oops").unwrap();
    let out = cchc(&["validate", broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a JSON array of events"));
    let _ = std::fs::remove_file(&broken);
}

#[test]
fn the_report_file_of_a_town_holds_what_its_json_says() {
    use calamine::{Data, Reader, Xlsx};
    let store = scratch("report.sqlite");
    let db = store.to_str().unwrap();
    let out = cchc(&[
        "demo",
        "--events",
        "3000",
        "--exit-when-done",
        "--database",
        db,
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = format!("sqlite://{db}");
    let report = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_cchc"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("CCHC_DATABASE__URL", &url)
            .arg("report")
            .args(args)
            .output()
            .expect("running cchc report")
    };
    let year = chrono::Datelike::year(&chrono::Utc::now()).to_string();
    let out = report(&["--format", "json", "--unit", "937", "--period", &year]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(
        rows.len(),
        60,
        "nine communes and the town, six indicators each"
    );

    let file = scratch("report.xlsx");
    let out = report(&[
        "--format",
        "xlsx",
        "--unit",
        "937",
        "--period",
        &year,
        "--output",
        file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("60 rows"));
    let mut book: Xlsx<_> = calamine::open_workbook(&file).unwrap();
    let sheet = book.worksheet_range("Chỉ số").unwrap();
    for (n, r) in rows.iter().enumerate() {
        let y = 6 + n as u32;
        let number = |c: u32| match sheet.get_value((y, c)) {
            Some(Data::Float(f)) => Some(*f),
            _ => None,
        };
        assert_eq!(
            sheet.get_value((y, 4)),
            Some(&Data::String(r["indicator"].as_str().unwrap().into()))
        );
        assert_eq!(number(5), r["numerator"].as_f64());
        assert_eq!(number(6), r["denominator"].as_f64());
        assert_eq!(number(7), r["rate"].as_f64());
    }
    // Without --unit, the file formats say what is missing.
    let out = report(&["--format", "xlsx"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--unit"));
}
