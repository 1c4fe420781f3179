//! The OpenAPI document (`docs/openapi.json`, served at `/openapi.json`),
//! whose list of indicator ids follows the declarations in
//! `domain::indicator`: the document served always lists them, and a test
//! rewrites the committed files (this one and the alert schema) when they
//! fall behind, so adding an indicator needs no hand edit of either.

use std::sync::LazyLock;

use serde_json::{json, Value};

use crate::domain::{Indicator, Units};

/// The committed document.
pub const COMMITTED: &str = include_str!("../../docs/openapi.json");

/// Where the indicator ids are listed in the OpenAPI document: the enum of
/// the `IndicatorId` schema.
pub const OPENAPI_ANCHOR: &str = "\"IndicatorId\": {";

/// Where they are listed in `docs/schemas/indicator-alert.v1.json`.
pub const ALERT_SCHEMA_ANCHOR: &str = "\"indicator\": {";

/// The document served: the committed one with the declared indicator ids.
pub fn document() -> &'static str {
    static DOCUMENT: LazyLock<String> =
        LazyLock::new(|| with_indicator_ids(COMMITTED, OPENAPI_ANCHOR));
    &DOCUMENT
}

/// The document as a server serves it: the committed one with the page
/// size it enforces (`http.max_page`) as the `limit` parameters' maximum,
/// the most events a request may carry (`http.max_events`) as the events
/// array's `maxItems`,
/// and its own units as the examples of the unit-code parameters (a
/// generator such as Schemathesis reaches real communes through them).
///
/// # Panics
/// When the committed document lacks those parameters: it is the
/// project's own, and a test serves it.
pub fn served(max_page: i64, max_events: usize, units: &Units) -> String {
    let mut doc: Value = serde_json::from_str(document()).expect("the document is JSON");
    doc["paths"]["/api/v1/events"]["post"]["requestBody"]["content"]["application/json"]
        ["schema"]["maxItems"] = json!(max_events);
    let params = &mut doc["components"]["parameters"];
    for name in ["Limit", "AlertsLimit", "RefusedLimit"] {
        params[name]["schema"]["maximum"] = json!(max_page);
    }
    if let Some(commune) = units.communes().next() {
        let example = |kind: &str, name: &str, code: &str| json!({ kind: { "summary": format!("a {kind} ({name})"), "value": code } });
        let mut unit = example("commune", &commune.name, commune.code.as_str());
        if let Some(parent) = commune.parent.as_ref().and_then(|p| units.get(p.as_str())) {
            unit["parent"] = example("parent", &parent.name, parent.code.as_str())["parent"].take();
        }
        params["CommuneCode"]["examples"] =
            example("commune", &commune.name, commune.code.as_str());
        params["UnitFilter"]["examples"] = unit.clone();
        params["UnitCode"]["examples"] = unit;
    }
    let mut text = serde_json::to_string_pretty(&doc).expect("a Value serialises");
    text.push('\n');
    text
}

/// `text` with the first `"enum": [...]` after `anchor` listing the
/// declared indicator ids, laid out as the list it replaces (one per line,
/// or all on one).
///
/// # Panics
/// When `text` has no such list: the documents are the project's own.
pub fn with_indicator_ids(text: &str, anchor: &str) -> String {
    let at = text
        .find(anchor)
        .unwrap_or_else(|| panic!("no `{anchor}` in the document"));
    let open = at
        + text[at..]
            .find("\"enum\": [")
            .unwrap_or_else(|| panic!("no enum after `{anchor}`"))
        + "\"enum\": [".len();
    let close = open + text[open..].find(']').expect("the enum list ends");
    let old = &text[open..close];
    let ids: Vec<String> = Indicator::ALL
        .iter()
        .map(|i| format!("\"{}\"", i.id()))
        .collect();
    let list = match old.find('\n') {
        // One per line: keep the items' indentation and the closing one's.
        Some(_) => {
            let item_indent: String = old
                .trim_start_matches('\n')
                .chars()
                .take_while(|c| *c == ' ')
                .collect();
            let close_indent: String = old
                .rsplit('\n')
                .next()
                .unwrap_or_default()
                .chars()
                .take_while(|c| *c == ' ')
                .collect();
            let items: Vec<String> = ids.iter().map(|id| format!("{item_indent}{id}")).collect();
            format!("\n{}\n{close_indent}", items.join(",\n"))
        }
        None => ids.join(", "),
    };
    format!("{}{}{}", &text[..open], list, &text[close..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ids_replace_the_list_in_its_layout() {
        let pretty =
            "{\n  \"IndicatorId\": {\n    \"enum\": [\n      \"a\",\n      \"b\"\n    ]\n  }\n}";
        let out = with_indicator_ids(pretty, OPENAPI_ANCHOR);
        assert!(
            out.contains("\"enum\": [\n      \"online_rate\",\n      \"on_time_rate\","),
            "{out}"
        );
        assert!(out.contains("\"digitization_rate\"\n    ]\n  }"), "{out}");
        let inline = r#"{"indicator": {"enum": ["a", "b"]}, "x": {"enum": ["c"]}}"#;
        let out = with_indicator_ids(inline, ALERT_SCHEMA_ANCHOR);
        assert!(out.starts_with(r#"{"indicator": {"enum": ["online_rate", "on_time_rate""#));
        assert!(
            out.ends_with(r#""digitization_rate"]}, "x": {"enum": ["c"]}}"#),
            "{out}"
        );
    }
}
