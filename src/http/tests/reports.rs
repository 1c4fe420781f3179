//! `GET /api/v1/units/{code}/report`: the JSON answer, and the CSV and XLSX
//! files read back, cell for cell equal to it.

use calamine::{Data, Reader, Xlsx};

use super::*;

async fn bytes_of(app: &Router, uri: &str) -> (StatusCode, HeaderMap, Vec<u8>) {
    let res = app
        .clone()
        .oneshot(request("GET", uri, Some(READ), vec![]))
        .await
        .unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    (
        status,
        headers,
        res.into_body().collect().await.unwrap().to_bytes().to_vec(),
    )
}

fn number(v: &Data) -> f64 {
    match v {
        Data::Float(f) => *f,
        Data::Int(i) => *i as f64,
        other => panic!("not a number: {other:?}"),
    }
}

fn text(v: &Data) -> String {
    match v {
        Data::String(s) => s.clone(),
        other => panic!("not text: {other:?}"),
    }
}

#[tokio::test]
async fn a_towns_report_as_json_csv_and_xlsx_holds_the_same_cells() {
    let h = Harness::new(4_000, "127.0.0.1:1").await;
    h.project(vec![]).await; // the clock tick evaluates breaches: alerts in the outbox
    let year = chrono::Datelike::year(&Utc::now());
    let base = format!("/api/v1/units/92/report?period={year}");
    let (status, json) = get(&h.app, &base).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let rows = json["rows"].as_array().unwrap();
    let per_unit = Indicator::ALL.len();
    assert_eq!(
        rows.len(),
        (3 + 1) * per_unit,
        "three wards and the roll-up"
    );
    assert_eq!(rows.last().unwrap()["level"], "rollup");
    // The roll-up sums the communes.
    let sum = |k: &str, id: &str, level: &str| -> i64 {
        rows.iter()
            .filter(|r| r["indicator"] == id && r["level"] == level)
            .map(|r| r[k].as_i64().unwrap())
            .sum()
    };
    for i in Indicator::ALL {
        for k in ["numerator", "denominator"] {
            assert_eq!(
                sum(k, i.id(), "commune"),
                sum(k, i.id(), "rollup"),
                "{k} {}",
                i.id()
            );
        }
    }
    // The commune rows are what the indicators route says over the same days.
    let (_, v) = get(
        &h.app,
        &format!(
            "/api/v1/communes/31471/indicators?window={year}-01-01..{}-01-01",
            year + 1
        ),
    )
    .await;
    for i in v["indicators"].as_array().unwrap() {
        let r = rows
            .iter()
            .find(|r| r["unit_code"] == "31471" && r["indicator"] == i["indicator"])
            .unwrap();
        assert_eq!(
            (&r["numerator"], &r["denominator"]),
            (&i["numerator"], &i["denominator"])
        );
        let outcome = match i["standing"].as_str().unwrap() {
            "breached" => "missed",
            other => other,
        };
        assert_eq!(r["outcome"], outcome);
    }
    let alerts = json["alerts"].as_array().unwrap();
    assert!(!alerts.is_empty(), "the evaluation made alerts");

    check_xlsx(&h, &base, year, rows, alerts).await;
    check_csv(&h, &base, rows, alerts).await;

    // A commune's report has its rows only; bad input is a 4xx.
    let (_, one) = get(
        &h.app,
        &format!("/api/v1/units/31471/report?period={year}-Q1"),
    )
    .await;
    assert_eq!(one["rows"].as_array().unwrap().len(), per_unit);
    assert_eq!(one["period"]["to"], format!("{year}-04-01"));
    for (uri, status) in [
        ("/api/v1/units/99999/report", StatusCode::NOT_FOUND),
        (
            "/api/v1/units/92/report?period=2026-Q5",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/units/92/report?format=pdf",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/units/92/report?format=csv&table=x",
            StatusCode::BAD_REQUEST,
        ),
    ] {
        assert_eq!(get(&h.app, uri).await.0, status, "{uri}");
    }
}

/// The workbook holds the JSON answer's cells: numbers as numbers, rates
/// as percentages.
async fn check_xlsx(h: &Harness, base: &str, year: i32, rows: &[Value], alerts: &[Value]) {
    let (status, headers, bytes) = bytes_of(&h.app, &format!("{base}&format=xlsx")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers[header::CONTENT_TYPE],
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    );
    assert!(headers[header::CONTENT_DISPOSITION]
        .to_str()
        .unwrap()
        .contains(&format!("report-92-{year}.xlsx")));
    let mut book: Xlsx<_> = Xlsx::new(std::io::Cursor::new(bytes)).unwrap();
    assert_eq!(book.sheet_names(), ["Chỉ số", "Cảnh báo"]);
    let sheet = book.worksheet_range("Chỉ số").unwrap();
    let head = crate::operate::period_report::ROW_ONE_BASED_HEADER_ROW - 1;
    for (c, h) in crate::operate::period_report::ROW_HEADERS
        .iter()
        .enumerate()
    {
        assert_eq!(text(sheet.get_value((head, c as u32)).unwrap()), *h);
    }
    assert!(text(sheet.get_value((1, 1)).unwrap()).contains("92"));
    for (n, r) in rows.iter().enumerate() {
        let y = head + 1 + n as u32;
        let cell = |c: u32| sheet.get_value((y, c)).unwrap();
        assert_eq!(text(cell(0)), r["unit_code"].as_str().unwrap());
        assert_eq!(text(cell(4)), r["indicator"].as_str().unwrap());
        assert_eq!(number(cell(5)), r["numerator"].as_f64().unwrap());
        assert_eq!(number(cell(6)), r["denominator"].as_f64().unwrap());
        match r["rate"].as_f64() {
            Some(rate) => assert!((number(cell(7)) - rate).abs() < 1e-12),
            None => assert_eq!(cell(7), &Data::Empty),
        }
        assert_eq!(text(cell(8)), r["comparator"].as_str().unwrap());
        assert!((number(cell(9)) * 100.0 - r["target_percent"].as_f64().unwrap()).abs() < 1e-9);
        assert_eq!(number(cell(10)), r["min_sample"].as_f64().unwrap());
        assert!(text(cell(11)).contains(&format!(
            "({})",
            r["outcome"].as_str().unwrap().replace('_', " ")
        )));
    }
    assert_eq!(
        sheet.get_value((head + 1 + rows.len() as u32, 0)),
        None,
        "no more rows"
    );
    let sheet = book.worksheet_range("Cảnh báo").unwrap();
    assert_eq!(sheet.height(), alerts.len() + 1);
    for (n, a) in alerts.iter().enumerate() {
        let y = 1 + n as u32;
        assert_eq!(
            text(sheet.get_value((y, 9)).unwrap()),
            a["alert_id"].as_str().unwrap()
        );
        assert_eq!(
            number(sheet.get_value((y, 8)).unwrap()),
            a["denominator"].as_f64().unwrap()
        );
    }
}

/// The CSV holds the same rows, rates in percent.
async fn check_csv(h: &Harness, base: &str, rows: &[Value], alerts: &[Value]) {
    let (status, headers, bytes) = bytes_of(&h.app, &format!("{base}&format=csv")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/csv; charset=utf-8");
    assert!(
        bytes.starts_with(b"\xEF\xBB\xBF"),
        "a byte-order mark for spreadsheets"
    );
    let mut csv = csv::Reader::from_reader(&bytes[3..]);
    assert_eq!(csv.headers().unwrap().get(5), Some("Tử số (numerator)"));
    let lines: Vec<csv::StringRecord> = csv.records().map(Result::unwrap).collect();
    assert_eq!(lines.len(), rows.len());
    for (line, r) in lines.iter().zip(rows) {
        assert_eq!(&line[4], r["indicator"].as_str().unwrap());
        assert_eq!(
            line[6].parse::<i64>().unwrap(),
            r["denominator"].as_i64().unwrap()
        );
        if let Some(rate) = r["rate"].as_f64() {
            assert!((line[7].parse::<f64>().unwrap() - rate * 100.0).abs() < 0.005 + 1e-9);
        }
    }
    let (_, _, bytes) = bytes_of(&h.app, &format!("{base}&format=csv&table=alerts")).await;
    assert_eq!(
        csv::Reader::from_reader(&bytes[3..]).records().count(),
        alerts.len()
    );
}
