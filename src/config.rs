//! Settings: a TOML file (default `config/default.toml`) with environment
//! overrides `CCHC_<SECTION>__<KEY>`, validated into typed settings. Every
//! error names the file (or variable) and the key.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::Deserialize;

use crate::domain::{
    CatchUp, Comparator, Evaluator, Indicator, Rule, Target, Targets, Transition, UnitSpec, Units,
    Window,
};
pub use crate::kafka::KafkaSettings;

/// The default configuration file, relative to the working directory.
pub const DEFAULT_FILE: &str = "config/default.toml";
/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "CCHC_";

/// A configuration that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Parse(String),
    /// A unit file's error, naming the file and the line.
    #[error("{0}")]
    UnitFile(String),
    #[error("{file}: key `{key}`: {reason}")]
    Invalid {
        file: String,
        key: String,
        reason: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: String,
    pub max_connections: u32,
    /// How many written cases a PostgreSQL store remembers, so that the
    /// next batches of their partitions need not read them back (0: none).
    #[serde(default = "default_cached_cases")]
    pub cached_cases: usize,
}

fn default_cached_cases() -> usize {
    crate::store::postgres::DEFAULT_CACHED_CASES
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSettings {
    pub max_records: usize,
    pub max_wait_ms: u64,
    /// Reading pauses while this many records are held, waiting for a
    /// batch or being committed, over all partitions.
    #[serde(default = "default_max_held_records")]
    pub max_held_records: usize,
}

fn default_max_held_records() -> usize {
    80_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockSettings {
    pub tick_seconds: u64,
    /// Shifts the pipeline's clock, for drills and tests of overdue cases.
    #[serde(default)]
    pub skew_seconds: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Address of the HTTP API and dashboard.
    pub listen: String,
    /// Bearer tokens that may read the API.
    pub read_tokens: Vec<String>,
    /// Bearer tokens that may also use the admin routes (dead letters).
    pub admin_tokens: Vec<String>,
    /// Largest page a list route returns.
    #[serde(default = "default_max_page")]
    pub max_page: i64,
    /// Largest request body accepted, in bytes.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Most events one `POST /api/v1/events` may carry.
    #[serde(default = "default_max_events")]
    pub max_events: usize,
    /// The systems that may send events over HTTP, each with its token and
    /// the units it may send for.
    #[serde(default)]
    pub producers: Vec<ProducerSettings>,
}

/// A system that sends events through `POST /api/v1/events`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProducerSettings {
    /// Its name in logs and metrics (never the token).
    pub name: String,
    /// Its bearer token.
    pub token: String,
    /// The units it may send for: commune codes, or parents whose communes
    /// (at any depth) it covers.
    pub units: Vec<String>,
}

impl std::fmt::Debug for ProducerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProducerSettings")
            .field("name", &self.name)
            .field("units", &self.units)
            .finish_non_exhaustive()
    }
}

fn default_max_events() -> usize {
    1000
}

fn default_max_page() -> i64 {
    1000
}

fn default_max_body() -> usize {
    1 << 20
}

/// Where breach alerts go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSettings {
    /// Kafka topic of alert events.
    pub topic: String,
    /// Windows evaluated for breaches (`ytd`, `qtd`, `mtd`, `rolling_30d`).
    pub windows: Vec<String>,
    /// Whether this process publishes the outbox. Several instances may run
    /// the relay; turning it off suits a consumer-only instance.
    #[serde(default = "yes")]
    pub relay: bool,
    #[serde(default)]
    pub webhooks: Vec<WebhookSettings>,
    /// Breaches wait while a backlog is read: records left unread after a
    /// batch whose newest record was written longer ago than this.
    #[serde(default = "default_catch_up_after")]
    pub catch_up_after_seconds: u32,
    /// ... and while history is read: batches whose events all occurred
    /// longer ago than this.
    #[serde(default = "default_history_after")]
    pub history_after_hours: u32,
    /// Whether `indicator.at_risk` / `indicator.at_risk_cleared` alerts are
    /// evaluated (the cases coming due within the horizon, all late, would
    /// take the on-time rate below its target).
    #[serde(default = "yes")]
    pub at_risk: bool,
    /// ... counting the open cases due from today to this many calendar
    /// days after it (0 to 31).
    #[serde(default = "default_at_risk_horizon")]
    pub at_risk_horizon_days: u32,
}

fn default_at_risk_horizon() -> u32 {
    3
}

/// The alert kinds a webhook gets when its `kinds` are not given: those of
/// the first version, so that a receiver configured before the at-risk
/// kinds existed gets what it got then.
pub const DEFAULT_WEBHOOK_KINDS: [Transition; 2] = Transition::BREACH_KINDS;

fn yes() -> bool {
    true
}

fn default_catch_up_after() -> u32 {
    60
}

fn default_history_after() -> u32 {
    24
}

/// A URL that receives every alert as an HTTP POST, signed with `secret`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    pub url: String,
    pub secret: String,
    /// The alert kinds (`event_type`s) this URL receives; by default
    /// [`DEFAULT_WEBHOOK_KINDS`].
    #[serde(default)]
    pub kinds: Option<Vec<String>>,
}

impl WebhookSettings {
    /// Whether this URL receives alerts of kind `t`.
    pub fn receives(&self, t: Transition) -> bool {
        match &self.kinds {
            None => DEFAULT_WEBHOOK_KINDS.contains(&t),
            Some(kinds) => kinds.iter().any(|k| k == t.event_type()),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct IndicatorSettings {
    comparator: Comparator,
    target_percent: f64,
    min_sample: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct OverrideSettings {
    commune: String,
    indicator: String,
    #[serde(default)]
    comparator: Option<Comparator>,
    #[serde(default)]
    target_percent: Option<f64>,
    #[serde(default)]
    min_sample: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    kafka: KafkaSettings,
    database: DatabaseSettings,
    batch: BatchSettings,
    clock: ClockSettings,
    alerts: AlertSettings,
    http: HttpSettings,
    /// Targets by indicator id; an indicator left out keeps its declared
    /// target (see `domain::indicator`).
    #[serde(default)]
    indicators: BTreeMap<String, IndicatorSettings>,
    #[serde(default)]
    overrides: Vec<OverrideSettings>,
    /// A unit list in a file of its own (CSV or JSON, docs/UNITS.md), read
    /// before the inline `units`; relative to the configuration file's
    /// directory.
    #[serde(default)]
    units_file: Option<String>,
    #[serde(default)]
    units: Vec<UnitSpec>,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub file: PathBuf,
    pub kafka: KafkaSettings,
    pub database: DatabaseSettings,
    pub batch: BatchSettings,
    pub clock: ClockSettings,
    pub alerts: AlertSettings,
    pub http: HttpSettings,
    /// Parsed `alerts.windows`.
    pub alert_windows: Vec<Window>,
    pub units: Units,
    pub targets: Targets,
}

impl Settings {
    /// The breach evaluator these settings describe.
    pub fn evaluator(&self) -> Evaluator {
        Evaluator {
            units: self.units.clone(),
            targets: self.targets.clone(),
            windows: self.alert_windows.clone(),
            catch_up: CatchUp {
                backlog_after: chrono::Duration::seconds(self.alerts.catch_up_after_seconds.into()),
                history_after: chrono::Duration::hours(self.alerts.history_after_hours.into()),
            },
            at_risk_horizon_days: self
                .alerts
                .at_risk
                .then_some(self.alerts.at_risk_horizon_days),
        }
    }
}

impl Settings {
    /// Reads `file` and the `CCHC_` environment.
    pub fn load(file: &Path) -> Result<Settings, ConfigError> {
        Self::load_with(file, Env::prefixed(ENV_PREFIX).split("__"))
    }

    /// Reads `file` only, ignoring the environment (for checks and tests).
    pub fn load_file(file: &Path) -> Result<Settings, ConfigError> {
        Self::load_with(file, Figment::new())
    }

    fn load_with(file: &Path, overrides: impl figment::Provider) -> Result<Settings, ConfigError> {
        let name = file.display().to_string();
        std::fs::metadata(file).map_err(|source| ConfigError::Read {
            file: name.clone(),
            source,
        })?;
        let raw: RawSettings = Figment::new()
            .merge(Toml::file(file))
            .merge(overrides)
            .extract()
            .map_err(|e| ConfigError::Parse(describe(&name, e)))?;
        raw.validate(file)
    }
}

fn describe(file: &str, err: figment::Error) -> String {
    err.into_iter()
        .map(|e| {
            let key = if e.path.is_empty() {
                "(top level)".to_string()
            } else {
                e.path.join(".")
            };
            let source = e
                .metadata
                .as_ref()
                .map(|m| match &m.source {
                    Some(figment::Source::File(p)) => p.display().to_string(),
                    Some(other) => format!("{} ({other})", m.name),
                    None => m.name.to_string(),
                })
                .unwrap_or_else(|| file.to_string());
            format!("{source}: key `{key}`: {}", e.kind)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `kafka.properties` with `_` in a name read as `.`: librdkafka's names
/// have none, and an environment variable cannot spell a dot
/// (`CCHC_KAFKA__PROPERTIES__SASL_PASSWORD` sets `sasl.password`). Such a
/// name wins over the same one spelt with dots in the file.
fn property_names(properties: BTreeMap<String, String>) -> BTreeMap<String, String> {
    let (spelt, dotted): (Vec<_>, Vec<_>) =
        properties.into_iter().partition(|(k, _)| k.contains('_'));
    dotted
        .into_iter()
        .chain(spelt.into_iter().map(|(k, v)| (k.replace('_', "."), v)))
        .collect()
}

/// Makes the errors of one file.
struct Invalid<'a>(&'a str);

impl Invalid<'_> {
    fn at(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.0.to_string(),
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Where a unit of the list was written.
enum Origin {
    File { file: String, line: u64 },
    Inline(usize),
}

impl RawSettings {
    /// The units of `units_file` then those of `units`, checked together;
    /// an error names the file and line, or the key, of the unit.
    fn unit_list(&self, file: &Path, invalid: &Invalid<'_>) -> Result<Units, ConfigError> {
        let mut specs = Vec::new();
        let mut origins = Vec::new();
        if let Some(name) = &self.units_file {
            if name.is_empty() {
                return Err(invalid.at("units_file", "must not be empty"));
            }
            let path = file.parent().unwrap_or(Path::new("")).join(name);
            let located =
                crate::unit_file::read(&path).map_err(|e| ConfigError::UnitFile(e.to_string()))?;
            let shown = path.display().to_string();
            for l in located {
                specs.push(l.spec);
                origins.push(Origin::File {
                    file: shown.clone(),
                    line: l.line,
                });
            }
        }
        for (n, spec) in self.units.iter().enumerate() {
            specs.push(spec.clone());
            origins.push(Origin::Inline(n));
        }
        Units::parse(&specs).map_err(|e| {
            let mut reason = e.to_string();
            if let crate::domain::Problem::Overlaps { other } = e.problem {
                let place = match &origins[other] {
                    Origin::File { file, line } => format!("{file}:{line}"),
                    Origin::Inline(n) => format!("units[{n}] in {}", invalid.0),
                };
                reason.push_str(&format!(" (at {place})"));
            }
            match &origins[e.entry] {
                Origin::File { file, line } => {
                    ConfigError::UnitFile(format!("{file}:{line}: {reason}"))
                }
                Origin::Inline(n) => invalid.at(&format!("units[{n}]"), reason),
            }
        })
    }

    fn validate(mut self, file: &Path) -> Result<Settings, ConfigError> {
        self.kafka.properties = property_names(std::mem::take(&mut self.kafka.properties));
        let name = file.display().to_string();
        let invalid = Invalid(&name);
        if self.batch.max_records == 0 {
            return Err(invalid.at("batch.max_records", "must be at least 1"));
        }
        if self.batch.max_held_records < self.batch.max_records {
            return Err(invalid.at(
                "batch.max_held_records",
                "must be at least batch.max_records (a whole batch is held while it is read)",
            ));
        }
        if self.clock.tick_seconds == 0 {
            return Err(invalid.at("clock.tick_seconds", "must be at least 1"));
        }
        if self.kafka.topic.is_empty() {
            return Err(invalid.at("kafka.topic", "must not be empty"));
        }
        for (key, value) in &self.kafka.properties {
            crate::kafka::check_property(key, value)
                .map_err(|why| invalid.at(&format!("kafka.properties.\"{key}\""), why))?;
        }
        let units = self.unit_list(file, &invalid)?;
        if units.communes().next().is_none() {
            return Err(invalid.at("units", "no unit of kind ward, commune or township"));
        }
        let targets = self.targets(&invalid, &units)?;
        let alert_windows = self.alert_windows(&invalid)?;
        self.alert_kinds(&invalid)?;
        self.producers(&invalid, &units)?;
        Ok(Settings {
            file: file.to_path_buf(),
            kafka: self.kafka,
            database: self.database,
            batch: self.batch,
            clock: self.clock,
            alerts: self.alerts,
            http: self.http,
            alert_windows,
            units,
            targets,
        })
    }

    /// The at-risk horizon and each webhook's `kinds`.
    fn alert_kinds(&self, invalid: &Invalid<'_>) -> Result<(), ConfigError> {
        if self.alerts.at_risk_horizon_days > 31 {
            return Err(invalid.at(
                "alerts.at_risk_horizon_days",
                "must be 0 to 31 (calendar days after today)",
            ));
        }
        let mut urls = HashSet::new();
        for (n, hook) in self.alerts.webhooks.iter().enumerate() {
            if !urls.insert(hook.url.as_str()) {
                return Err(invalid.at(
                    &format!("alerts.webhooks[{n}].url"),
                    "is the URL of another webhook: give it one entry, with every kind it takes",
                ));
            }
            for kind in hook.kinds.iter().flatten() {
                if Transition::from_event_type(kind).is_none() {
                    let known: Vec<&str> = Transition::ALL.iter().map(|t| t.event_type()).collect();
                    return Err(invalid.at(
                        &format!("alerts.webhooks[{n}].kinds"),
                        format!("unknown alert kind `{kind}`; known: {}", known.join(", ")),
                    ));
                }
            }
        }
        Ok(())
    }

    /// `[[http.producers]]`: named once each, with a token of their own and
    /// units that exist.
    fn producers(&self, invalid: &Invalid<'_>, units: &Units) -> Result<(), ConfigError> {
        let http = &self.http;
        if http.max_events == 0 {
            return Err(invalid.at("http.max_events", "must be at least 1"));
        }
        let mut names = HashSet::new();
        let mut tokens: HashSet<&str> = http
            .read_tokens
            .iter()
            .chain(&http.admin_tokens)
            .map(String::as_str)
            .collect();
        for (n, p) in http.producers.iter().enumerate() {
            let key = |field: &str| format!("http.producers[{n}].{field}");
            if p.name.is_empty() || !names.insert(p.name.as_str()) {
                return Err(invalid.at(
                    &key("name"),
                    "must be given, and differ from the other producers' names",
                ));
            }
            if p.token.len() < 16 {
                return Err(invalid.at(&key("token"), "must be at least 16 characters"));
            }
            if !tokens.insert(p.token.as_str()) {
                return Err(invalid.at(
                    &key("token"),
                    "is already the token of a reader, an admin or another producer",
                ));
            }
            if p.units.is_empty() {
                return Err(invalid.at(&key("units"), "must name at least one unit"));
            }
            for code in &p.units {
                match units.get(code) {
                    None => return Err(invalid.at(&key("units"), format!("unknown unit `{code}`"))),
                    Some(u)
                        if !u.kind.receives_cases()
                            && units.communes_under(code).next().is_none() =>
                    {
                        return Err(invalid.at(
                            &key("units"),
                            format!("unit `{code}` has no communes below it"),
                        ))
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }

    /// `[indicators.*]` (the declared target where left out) and
    /// `[[overrides]]`.
    fn targets(&self, invalid: &Invalid<'_>, units: &Units) -> Result<Targets, ConfigError> {
        let mut defaults = HashMap::new();
        for (id, s) in &self.indicators {
            let key = format!("indicators.{id}");
            let indicator: Indicator = id.parse().map_err(|e: String| invalid.at(&key, e))?;
            let target = Target::from_percent(s.comparator, s.target_percent)
                .map_err(|e| invalid.at(&format!("{key}.target_percent"), e))?;
            if s.min_sample < 0 {
                return Err(invalid.at(&format!("{key}.min_sample"), "must not be negative"));
            }
            let min_sample = s.min_sample;
            defaults.insert(indicator, Rule { target, min_sample });
        }
        let mut overrides = HashMap::new();
        for (n, o) in self.overrides.iter().enumerate() {
            let key = format!("overrides[{n}]");
            let commune = units.commune(&o.commune).cloned().ok_or_else(|| {
                invalid.at(
                    &format!("{key}.commune"),
                    format!("`{}` is not a configured commune", o.commune),
                )
            })?;
            let indicator: Indicator = o
                .indicator
                .parse()
                .map_err(|e: String| invalid.at(&format!("{key}.indicator"), e))?;
            let base: Rule = defaults
                .get(&indicator)
                .copied()
                .unwrap_or_else(|| indicator.default_rule());
            let comparator = o.comparator.unwrap_or(base.target.comparator);
            let target = match o.target_percent {
                Some(p) => Target::from_percent(comparator, p)
                    .map_err(|e| invalid.at(&format!("{key}.target_percent"), e))?,
                None => Target {
                    comparator,
                    ..base.target
                },
            };
            let min_sample = o.min_sample.unwrap_or(base.min_sample);
            overrides.insert((commune, indicator), Rule { target, min_sample });
        }
        Ok(Targets::new(defaults, overrides))
    }

    /// `alerts.windows`, parsed, once the webhooks are checked.
    fn alert_windows(&self, invalid: &Invalid<'_>) -> Result<Vec<Window>, ConfigError> {
        for (n, hook) in self.alerts.webhooks.iter().enumerate() {
            if !(hook.url.starts_with("http://") || hook.url.starts_with("https://")) {
                return Err(invalid.at(
                    &format!("alerts.webhooks[{n}].url"),
                    format!("`{}` is not an http(s) URL", hook.url),
                ));
            }
            if hook.secret.len() < 16 {
                return Err(invalid.at(
                    &format!("alerts.webhooks[{n}].secret"),
                    "must be at least 16 characters",
                ));
            }
        }
        self.alerts
            .windows
            .iter()
            .enumerate()
            .map(|(n, w)| {
                w.parse::<Window>()
                    .map_err(|e| invalid.at(&format!("alerts.windows[{n}]"), e))
            })
            .collect()
    }
}

/// A connection URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..s + 3], user, &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_file() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_FILE)
    }

    fn with_text(text: &str) -> Result<Settings, ConfigError> {
        let dir = std::env::temp_dir().join(format!("cchc-config-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bad.toml");
        std::fs::write(&file, text).unwrap();
        // The default file's unit list, where the default file names it.
        let units = repo_file().parent().unwrap().join("units");
        std::fs::create_dir_all(dir.join("units")).unwrap();
        for entry in std::fs::read_dir(units).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.join("units").join(entry.file_name())).unwrap();
        }
        Settings::load_file(&file)
    }

    #[test]
    fn the_default_file_holds_the_long_my_targets_and_units() {
        let s = Settings::load_file(&repo_file()).unwrap();
        // The nine of the 2023 campaign and the three wards they became.
        assert_eq!(s.units.communes().count(), 12);
        assert_eq!(s.units.communes_under("937").count(), 9);
        let day = |d: &str| d.parse::<chrono::NaiveDate>().unwrap();
        let campaign = s.units.structure(day("2023-12-31"));
        assert_eq!(campaign.communes_under(&s.units, "937").count(), 9);
        let today = s.units.structure(day("2026-12-01"));
        assert_eq!(today.communes_under(&s.units, "92").count(), 3);
        assert_eq!(s.targets, Targets::declared());
    }

    #[test]
    fn a_unit_list_error_names_its_file_and_line_or_its_key() {
        let text = std::fs::read_to_string(repo_file()).unwrap();
        let dir = std::env::temp_dir().join(format!("cchc-config-{}", rand::random::<u64>()));
        std::fs::create_dir_all(dir.join("units")).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, &text).unwrap();
        let csv = std::fs::read_to_string(repo_file().parent().unwrap().join("units/long-my.csv"))
            .unwrap()
            .replace(
                "31481,Xã Tân Phú,commune,937,,2025-06-30,31480,",
                "31481,Xã Tân Phú,commune,937,,2025-06-30,31499,",
            );
        std::fs::write(dir.join("units/long-my.csv"), csv).unwrap();
        let err = Settings::load_file(&file).unwrap_err().to_string();
        assert!(
            err.ends_with("long-my.csv:13: unit `31481`: successor `31499` is not valid on 2025-07-01, the day after this unit ends"),
            "{err}"
        );
        // An inline unit that overlaps a unit of the file.
        std::fs::copy(
            repo_file().parent().unwrap().join("units/long-my.csv"),
            dir.join("units/long-my.csv"),
        )
        .unwrap();
        let inline =
            format!("{text}\n[[units]]\ncode = \"31471\"\nname = \"x\"\nkind = \"ward\"\n");
        std::fs::write(&file, inline).unwrap();
        let err = Settings::load_file(&file).unwrap_err().to_string();
        assert!(
            err.contains("key `units[0]`") && err.contains("long-my.csv:5)"),
            "{err}"
        );
        let missing = text.replace("units/long-my.csv", "units/none.csv");
        std::fs::write(&file, missing).unwrap();
        let err = Settings::load_file(&file).unwrap_err().to_string();
        assert!(err.contains("none.csv:0: cannot read"), "{err}");
    }

    #[test]
    fn a_producer_needs_a_name_a_token_of_its_own_and_units_that_exist() {
        let text = std::fs::read_to_string(repo_file()).unwrap();
        for (from, to, key, why) in [
            (
                r#"units = ["937"]"#,
                r#"units = ["938"]"#,
                "http.producers[0].units",
                "unknown unit `938`",
            ),
            (
                r#"units = ["937"]"#,
                r#"units = []"#,
                "http.producers[0].units",
                "at least one",
            ),
            (
                r#"token = "demo-producer-token""#,
                r#"token = "demo-admin-token-long""#,
                "http.producers[0].token",
                "",
            ),
            (
                r#"token = "demo-producer-token""#,
                r#"token = "short""#,
                "http.producers[0].token",
                "16 characters",
            ),
            (
                r#"name = "demo-long-my""#,
                r#"name = """#,
                "http.producers[0].name",
                "must be given",
            ),
            (
                "max_events = 1000",
                "max_events = 0",
                "http.max_events",
                "at least 1",
            ),
        ] {
            let mut changed = text.replace(from, to);
            if to.contains("demo-admin-token-long") {
                changed = changed.replace(
                    r#"admin_tokens = ["demo-admin-token"]"#,
                    r#"admin_tokens = ["demo-admin-token-long"]"#,
                );
            }
            let err = with_text(&changed).unwrap_err().to_string();
            assert!(
                err.contains(key) && err.contains(why) && err.contains("bad.toml"),
                "{to}: {err}"
            );
        }
        let s = Settings::load_file(&repo_file()).unwrap();
        assert_eq!(s.units.scope(&s.http.producers[0].units).len(), 9);
        assert!(
            !format!("{:?}", s.http.producers[0]).contains("demo-producer-token"),
            "the token is not logged"
        );
    }

    #[test]
    fn the_at_risk_horizon_and_webhook_kinds_are_checked_with_their_keys() {
        let text = std::fs::read_to_string(repo_file()).unwrap();
        let err = with_text(&text.replace("at_risk_horizon_days = 3", "at_risk_horizon_days = 32"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("alerts.at_risk_horizon_days") && err.contains("bad.toml"),
            "{err}"
        );
        let hooks = |kinds: &str| {
            format!("{text}\n[[alerts.webhooks]]\nurl = \"http://127.0.0.1:9/a\"\nsecret = \"a long shared secret\"\n\n[[alerts.webhooks]]\nurl = \"http://127.0.0.1:9/b\"\nsecret = \"a long shared secret\"\n{kinds}\n")
        };
        let err = with_text(&hooks(r#"kinds = ["indicator.at_risk", "indicator.late"]"#))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("alerts.webhooks[1].kinds") && err.contains("indicator.late"),
            "{err}"
        );
        let s = with_text(&hooks(r#"kinds = ["indicator.at_risk"]"#)).unwrap();
        let [old, new] = [&s.alerts.webhooks[0], &s.alerts.webhooks[1]];
        assert!(old.receives(Transition::Breached) && old.receives(Transition::Recovered));
        assert!(!old.receives(Transition::AtRisk) && !old.receives(Transition::AtRiskCleared));
        assert!(new.receives(Transition::AtRisk) && !new.receives(Transition::Breached));
        assert_eq!(s.evaluator().at_risk_horizon_days, Some(3));
        let twice = with_text(&hooks("").replace("127.0.0.1:9/b", "127.0.0.1:9/a"))
            .unwrap_err()
            .to_string();
        assert!(twice.contains("alerts.webhooks[1].url"), "{twice}");
        let off = with_text(&text.replace("at_risk = true", "at_risk = false")).unwrap();
        assert_eq!(off.evaluator().at_risk_horizon_days, None);
    }

    /// The error of the default file with `from` replaced by `to`, which
    /// must name the file.
    fn refused(from: &str, to: &str) -> String {
        let text = std::fs::read_to_string(repo_file()).unwrap();
        assert!(text.contains(from), "the default file has no `{from}`");
        let err = with_text(&text.replace(from, to)).unwrap_err().to_string();
        assert!(err.contains("bad.toml"), "{err}");
        err
    }

    #[test]
    fn a_bad_value_names_the_key_and_the_file() {
        let err = refused("max_records = 30000", "max_records = \"many\"");
        assert!(err.contains("batch.max_records"), "{err}");
    }

    #[test]
    fn fewer_records_held_than_a_batch_is_refused_with_its_key() {
        let err = refused("max_held_records = 80000", "max_held_records = 29999");
        assert!(err.contains("batch.max_held_records"), "{err}");
        assert!(err.contains("batch.max_records"), "{err}");
    }

    #[test]
    fn an_unknown_indicator_is_refused_with_its_key() {
        let err = refused("[indicators.online_rate]", "[indicators.online_ratio]");
        assert!(err.contains("indicators.online_ratio"), "{err}");
    }

    #[test]
    fn an_override_for_an_unknown_commune_is_refused() {
        let text = std::fs::read_to_string(repo_file()).unwrap()
            + "\n[[overrides]]\ncommune = \"99999\"\nindicator = \"online_rate\"\ntarget_percent = 60.0\n";
        let err = with_text(&text).unwrap_err().to_string();
        assert!(err.contains("overrides[0].commune"), "{err}");
    }

    #[test]
    fn an_override_changes_only_its_commune() {
        let text = std::fs::read_to_string(repo_file()).unwrap()
            + "\n[[overrides]]\ncommune = \"31474\"\nindicator = \"online_rate\"\ntarget_percent = 60.0\n";
        let s = with_text(&text).unwrap();
        let c = |code| s.units.commune(code).unwrap().clone();
        assert_eq!(
            s.targets
                .rule(&c("31474"), Indicator::OnlineRate)
                .target
                .percent(),
            60.0
        );
        assert_eq!(
            s.targets
                .rule(&c("31471"), Indicator::OnlineRate)
                .target
                .percent(),
            70.0
        );
    }

    #[test]
    fn a_kafka_property_the_pipeline_sets_itself_is_refused_with_its_key() {
        let text = std::fs::read_to_string(repo_file()).unwrap().replace(
            "max_poll_interval_ms = 60000",
            "max_poll_interval_ms = 60000\nproperties = { \"enable.auto.commit\" = \"true\" }",
        );
        let err = with_text(&text).unwrap_err().to_string();
        assert!(
            err.contains("bad.toml: key `kafka.properties.\"enable.auto.commit\"`"),
            "{err}"
        );
        assert!(
            err.contains("offsets live in the projection database"),
            "{err}"
        );
    }

    #[test]
    fn a_kafka_property_can_be_spelt_with_underscores_for_the_environment() {
        let text = std::fs::read_to_string(repo_file()).unwrap()
            + "\n[kafka.properties]\n\"sasl.password\" = \"in-the-file\"\nsasl_password = \"from-env\"\nsecurity_protocol = \"SASL_SSL\"\n";
        let s = with_text(&text).unwrap();
        assert_eq!(s.kafka.properties["sasl.password"], "from-env");
        assert_eq!(s.kafka.properties["security.protocol"], "SASL_SSL");
        assert_eq!(s.kafka.properties.len(), 2);
    }

    #[test]
    fn an_indicator_left_out_keeps_its_declared_target() {
        let text = std::fs::read_to_string(repo_file()).unwrap();
        let start = text.find("[indicators.digitization_rate]").unwrap();
        let end = start + text[start..].find("min_sample = 20").unwrap() + 15;
        let s = with_text(&format!("{}{}", &text[..start], &text[end..])).unwrap();
        assert_eq!(
            s.targets.default_rule(Indicator::DigitizationRate),
            Indicator::DigitizationRate.default_rule()
        );
    }

    #[test]
    fn a_password_is_left_out_of_messages() {
        assert_eq!(
            redact("postgres://cchc:secret@db:5432/cchc"),
            "postgres://cchc:***@db:5432/cchc"
        );
        assert_eq!(redact("postgres://cchc@db/cchc"), "postgres://cchc@db/cchc");
        assert_eq!(
            redact("sqlite://var/demo.sqlite"),
            "sqlite://var/demo.sqlite"
        );
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = Settings::load_file(Path::new("no/such.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no/such.toml"), "{err}");
    }
}
