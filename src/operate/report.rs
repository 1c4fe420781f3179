//! `cchc report`: every commune's indicators over a window, with the
//! roll-up of every parent unit, as a table for the terminal.

use std::collections::HashMap;
use std::fmt::Write;

use crate::clock::Clock;
use crate::config::Settings;
use crate::domain::{DayCounters, Indicator, Rule, Standing, UnitCode, Window};
use crate::store::Store;

/// The report of `window`, from the configured store.
pub async fn report(settings: &Settings, window: Window) -> anyhow::Result<String> {
    let store = Store::connect(&settings.database.url, 2, &settings.kafka.topic).await?;
    report_from(&store, settings, window).await
}

/// One line of the report: a commune (its own targets) or a parent unit
/// (its communes summed, against the default targets).
struct Line<'a> {
    name: &'a str,
    counters: DayCounters,
    commune: Option<&'a UnitCode>,
}

/// The report of `window`, from an open store.
pub async fn report_from(
    store: &Store,
    settings: &Settings,
    window: Window,
) -> anyhow::Result<String> {
    let today = Clock::new(&settings.clock).today();
    let range = window.days(today);
    let units = &settings.units;
    // In today's units: an old commune's counters count in its successor.
    let structure = units.structure(today);
    let mut totals: HashMap<String, DayCounters> = HashMap::new();
    for (lo, hi) in units.pieces(range.0, range.1) {
        for (code, c) in store.window_sums(lo, hi).await? {
            if let Some(unit) = structure.attribute(units, &code, lo) {
                *totals.entry(unit.to_string()).or_default() += c;
            }
        }
    }
    let sum = |code: &str| totals.get(code).copied().unwrap_or_default();
    let mut lines: Vec<Line<'_>> = structure
        .communes(units)
        .map(|u| Line {
            name: &u.name,
            counters: sum(u.code.as_str()),
            commune: Some(&u.code),
        })
        .collect();
    for parent in units
        .iter()
        .filter(|u| !u.kind.receives_cases() && u.valid_on(today))
    {
        let mut counters = DayCounters::default();
        for u in structure.communes_under(units, parent.code.as_str()) {
            counters += sum(u.code.as_str());
        }
        lines.push(Line {
            name: &parent.name,
            counters,
            commune: None,
        });
    }
    let mut out = String::new();
    writeln!(
        out,
        "window {window} ({} to {}, end excluded)",
        range.0, range.1
    )?;
    write!(out, "{:<24}", "unit")?;
    for i in Indicator::ALL {
        write!(out, " {:>22}", i.id())?;
    }
    writeln!(out)?;
    for line in lines {
        write!(out, "{:<24}", line.name)?;
        for &i in Indicator::ALL {
            let rule = match line.commune {
                Some(code) => settings.targets.rule(code, i),
                None => settings.targets.default_rule(i),
            };
            write!(out, " {:>22}", cell(i, rule, &line.counters))?;
        }
        writeln!(out)?;
    }
    Ok(out)
}

/// A rate with its standing: `97.5% ok`, `61.0% MISS`, `-` without data.
fn cell(indicator: Indicator, rule: Rule, counters: &DayCounters) -> String {
    let ratio = indicator.ratio(counters);
    let mark = match rule.standing(ratio) {
        Standing::Met => "ok",
        Standing::Breached => "MISS",
        Standing::TooFewCases => "few",
        Standing::NoData => "",
    };
    match ratio.rate() {
        Some(r) => format!("{:.1}% {mark}", r * 100.0),
        None => "-".to_string(),
    }
}
