//! `cchc`: the command line of the pipeline.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing::{error, info};

use cchc_pipeline::app::Application;
use cchc_pipeline::config::{Settings, DEFAULT_FILE};
use cchc_pipeline::shutdown::{self, CancellationToken};
use cchc_pipeline::telemetry::{self, LogFormat};
use cchc_pipeline::{demo, operate, rebuild};

#[derive(Parser)]
#[command(
    version,
    about = "Live one-stop-shop indicators per commune, from Kafka into PostgreSQL"
)]
struct Cli {
    /// Log format on standard error.
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the projection consumer against the configured Kafka and PostgreSQL.
    Run {
        /// Configuration file (environment overrides: CCHC_<SECTION>__<KEY>).
        #[arg(long, short, default_value = DEFAULT_FILE)]
        config: PathBuf,
    },
    /// The whole pipeline with nothing installed: in-process Kafka (librdkafka's
    /// mock cluster), SQLite, and a simulated year of the configured communes.
    Demo {
        #[arg(long, short, default_value = DEFAULT_FILE)]
        config: PathBuf,
        /// How many events to simulate.
        #[arg(long, default_value_t = 200_000)]
        events: usize,
        /// The SQLite file (replaced on every run).
        #[arg(long, default_value = "var/demo.sqlite")]
        database: PathBuf,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Where the dashboard and API listen.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Stop once every event is projected and the report printed.
        #[arg(long)]
        exit_when_done: bool,
    },
    /// Produce a simulated year of one-stop-shop events into the configured topic.
    Simulate {
        #[arg(long, short, default_value = DEFAULT_FILE)]
        config: PathBuf,
        /// How many events.
        #[arg(long, default_value_t = 200_000)]
        events: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// First local day of the simulation (default: 1 January of this year).
        #[arg(long)]
        start: Option<chrono::NaiveDate>,
        /// New cases per commune per day.
        #[arg(long, default_value_t = 20.0)]
        cases_per_day: f64,
        /// Partitions of the topic, if it has to be created.
        #[arg(long, default_value_t = 3)]
        partitions: i32,
        /// Events per second, like a live feed (default: as fast as the broker takes them).
        #[arg(long)]
        rate: Option<f64>,
        /// Write the events to this file as NDJSON (an export, for `validate`
        /// and `import`) instead of producing them.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Print every commune's indicators from the projection store; or, with
    /// --format json|csv|xlsx, one unit's report over a period (the
    /// indicator table and the period's alerts), as the API's
    /// /api/v1/units/{code}/report gives it.
    Report {
        #[arg(long, short, default_value = DEFAULT_FILE)]
        config: PathBuf,
        /// ytd, qtd, mtd, rolling_30d or FROM..TO (dates, TO excluded): the terminal table's window.
        #[arg(long, default_value = "ytd")]
        window: cchc_pipeline::domain::Window,
        /// A file instead of the terminal table.
        #[arg(long, value_enum)]
        format: Option<operate::period_report::FileFormat>,
        /// With --format: 2026, 2026-Q3, 2026-07 or FROM..TO (default: this year).
        #[arg(long)]
        period: Option<operate::Period>,
        /// With --format: the unit, a commune or a parent with its communes.
        #[arg(long, required_if_eq_any([("format", "json"), ("format", "csv"), ("format", "xlsx")]))]
        unit: Option<String>,
        /// With --format: the file (default: standard output for json and
        /// csv, report-<unit>-<period>.xlsx for xlsx).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Import a newline-delimited JSON export of past events (backfill) into the events topic.
    Import {
        #[arg(long, short, default_value = DEFAULT_FILE)]
        config: PathBuf,
        /// One event per line.
        file: PathBuf,
    },
    /// Check an export (NDJSON, or a JSON array) against the event
    /// contract, exactly as the pipeline would judge each record; nothing is
    /// sent. Exit status 1 when any record is refused.
    Validate {
        #[arg(long, short, default_value = DEFAULT_FILE)]
        config: PathBuf,
        /// The export; `-` reads standard input.
        file: PathBuf,
        /// How many refused records to show (all are counted).
        #[arg(long, default_value_t = 20)]
        show: usize,
        /// Print the result as JSON (the answer of POST /api/v1/events/validate).
        #[arg(long)]
        json: bool,
    },
    /// Rebuild the projections from the topic's beginning into a fresh
    /// PostgreSQL schema, then switch the running pipeline and API over to it
    /// once caught up (they keep serving throughout). Interrupted, it
    /// continues where it stopped when run again.
    Rebuild {
        #[arg(long, short, default_value = DEFAULT_FILE)]
        config: PathBuf,
        /// Drop what an interrupted rebuild left and start again from offset 0.
        #[arg(long)]
        restart: bool,
        /// Switch over once at most this many records remain to project
        /// (the running pipeline applies them afterwards).
        #[arg(long, default_value_t = 1_000)]
        switch_lag: i64,
    },
    /// List dead letters, or send one through again after a fix.
    #[command(subcommand)]
    DeadLetters(DeadLetterCommand),
    /// Check a configuration file and explain what is wrong with it.
    CheckConfig {
        #[arg(default_value = DEFAULT_FILE)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum DeadLetterCommand {
    /// List dead letters, oldest first.
    List {
        #[arg(long, short, default_value = DEFAULT_FILE)]
        config: PathBuf,
        /// Only ids above this one.
        #[arg(long, default_value_t = 0)]
        after: i64,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Send a dead letter through the events topic again.
    Resend {
        #[arg(long, short, default_value = DEFAULT_FILE)]
        config: PathBuf,
        id: i64,
        /// A corrected event to send instead of the original bytes.
        #[arg(long)]
        corrected: Option<PathBuf>,
    },
}

impl Command {
    /// The configuration file the command reads.
    fn config(&self) -> &Path {
        match self {
            Command::Run { config }
            | Command::Demo { config, .. }
            | Command::Simulate { config, .. }
            | Command::Report { config, .. }
            | Command::Import { config, .. }
            | Command::Validate { config, .. }
            | Command::Rebuild { config, .. }
            | Command::CheckConfig { config }
            | Command::DeadLetters(DeadLetterCommand::List { config, .. })
            | Command::DeadLetters(DeadLetterCommand::Resend { config, .. }) => config,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let settings = match Settings::load(cli.command.config()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::CheckConfig { config } => check_config(&settings, &config),
        Command::Run { .. } => finish(until_signal(
            Some("stop requested; finishing the current batch"),
            |stop| run(settings, stop),
        )),
        Command::Demo {
            events,
            database,
            seed,
            listen,
            exit_when_done,
            ..
        } => {
            let options = demo_options(events, &database, seed, listen, exit_when_done);
            let result = until_signal(None, |stop| async move {
                demo::run(settings, &options, stop).await
            });
            finish(result.map(|_| ()))
        }
        Command::Simulate {
            events,
            seed,
            start,
            cases_per_day,
            partitions,
            rate,
            output,
            ..
        } => {
            let options = operate::SimulateOptions {
                events,
                seed,
                start: start.unwrap_or_else(first_of_this_year),
                cases_per_day,
                partitions,
                rate,
            };
            simulate(&settings, &options, output.as_deref())
        }
        Command::Report {
            format: Some(format),
            period,
            unit,
            output,
            ..
        } => report_file(&settings, format, period, unit, output),
        Command::Report { window, .. } => execute(operate::report(&settings, window), |table| {
            print!("{table}");
        }),
        Command::Import { file, .. } => execute(operate::import(&settings, &file), |r| {
            println!(
                "{} events sent to {}, {} without a commune code (they will be dead letters)",
                r.lines, settings.kafka.topic, r.unkeyed
            );
        }),
        Command::Validate {
            file, show, json, ..
        } => validate(&settings, &file, show, json),
        Command::Rebuild {
            restart,
            switch_lag,
            ..
        } => {
            let options = rebuild::RebuildOptions {
                restart,
                switch_lag,
            };
            let result = until_signal(
                Some("stop requested; the rebuild can be continued later"),
                |stop| async move { rebuild::rebuild(&settings, &options, stop).await },
            );
            finish(result.map(|summary| match summary {
                Some(s) => println!("{s}"),
                None => println!("rebuild interrupted; run `cchc rebuild` again to continue it"),
            }))
        }
        Command::DeadLetters(DeadLetterCommand::List { after, limit, .. }) => {
            execute(operate::list_dead_letters(&settings, after, limit), |t| {
                print!("{t}");
            })
        }
        Command::DeadLetters(DeadLetterCommand::Resend { id, corrected, .. }) => execute(
            operate::resend_dead_letter(&settings, id, corrected.as_deref()),
            |t| println!("{t}"),
        ),
    }
}

/// `cchc simulate`: into the topic, or into a file.
fn simulate(
    settings: &Settings,
    options: &operate::SimulateOptions,
    output: Option<&Path>,
) -> ExitCode {
    match output {
        Some(file) => finish(operate::simulate_to_file(settings, options, file).map(|n| {
            println!("{n} events written to {}", file.display());
        })),
        None => execute(operate::simulate(settings, options), |_| ()),
    }
}

/// `cchc check-config`: the file is valid; what it configures.
fn check_config(settings: &Settings, config: &Path) -> ExitCode {
    println!(
        "{}: OK ({} units, {} communes, topic {})",
        config.display(),
        settings.units.len(),
        settings.units.communes().count(),
        settings.kafka.topic
    );
    for p in &settings.http.producers {
        let n = settings.units.scope(&p.units).len();
        let s = if n == 1 { "" } else { "s" };
        println!(
            "  producer {}: may send for {n} commune{s} ({})",
            p.name,
            p.units.join(", ")
        );
    }
    ExitCode::SUCCESS
}

/// `cchc report --format`: a unit's report over a period (default: this
/// year on the pipeline's clock) to a file or the standard output.
fn report_file(
    settings: &Settings,
    format: operate::period_report::FileFormat,
    period: Option<operate::Period>,
    unit: Option<String>,
    output: Option<PathBuf>,
) -> ExitCode {
    let period = period.unwrap_or_else(|| {
        let year =
            chrono::Datelike::year(&cchc_pipeline::clock::Clock::new(&settings.clock).today());
        year.to_string().parse().expect("a year is a period")
    });
    let unit = unit.unwrap_or_default();
    execute(
        operate::period_report::write_report(settings, &unit, period, format, output.as_deref()),
        |out| print!("{out}"),
    )
}

/// `cchc validate`: the summary (or JSON) on standard output, the rate in
/// the log; 1 when a record is refused, 2 when the file cannot be read.
fn validate(settings: &Settings, file: &Path, show: usize, json: bool) -> ExitCode {
    let started = std::time::Instant::now();
    let result = if file == Path::new("-") {
        operate::validate(
            std::io::stdin().lock(),
            &settings.units,
            None,
            show,
            operate::Shape::Detect,
        )
    } else {
        std::fs::File::open(file)
            .map_err(operate::ValidateError::Io)
            .and_then(|f| {
                let input = std::io::BufReader::with_capacity(1 << 20, f);
                operate::validate(input, &settings.units, None, show, operate::Shape::Detect)
            })
    };
    let v = match result {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    info!(
        records = v.records,
        refused = v.refused,
        seconds,
        per_second = v.records as f64 / seconds.max(1e-9),
        "validated"
    );
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&v).expect("a validation serialises")
        );
    } else {
        print!("{}", v.text(&file.display().to_string()));
    }
    if v.refused == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The demo's options; its SQLite file is replaced.
fn demo_options(
    events: usize,
    database: &Path,
    seed: u64,
    listen: String,
    exit_when_done: bool,
) -> demo::DemoOptions {
    for suffix in ["", "-wal", "-shm"] {
        let mut path = database.as_os_str().to_owned();
        path.push(suffix);
        let _ = std::fs::remove_file(path);
    }
    if let Some(dir) = database.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    demo::DemoOptions {
        partitions: 9,
        database_url: format!("sqlite://{}", database.display()),
        simulate: operate::SimulateOptions {
            events,
            seed,
            start: first_of_this_year(),
            cases_per_day: 20.0,
            partitions: 9,
            rate: None,
        },
        listen,
        exit_when_done,
    }
}

/// Runs one command's future on a fresh runtime, shows its result, and
/// turns an error into a logged failure.
fn execute<T>(
    work: impl std::future::Future<Output = anyhow::Result<T>>,
    show: impl FnOnce(T),
) -> ExitCode {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    finish(runtime.block_on(work).map(show))
}

/// Runs `work` on a fresh runtime with a token that SIGTERM or Ctrl-C
/// cancels (logging `message`, if any).
fn until_signal<T, F>(
    message: Option<&'static str>,
    work: impl FnOnce(CancellationToken) -> F,
) -> anyhow::Result<T>
where
    F: std::future::Future<Output = anyhow::Result<T>>,
{
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async { work(shutdown::on_signal(message)).await })
}

/// `cchc run`: the application, built (stopped while waiting for the
/// database, if asked to) and run until stopped.
async fn run(settings: Settings, stop: CancellationToken) -> anyhow::Result<()> {
    let app = tokio::select! {
        app = Application::build(settings) => app?,
        _ = stop.cancelled() => {
            info!("stopped while waiting for the database");
            return Ok(());
        }
    };
    app.run_until_stopped(stop).await
}

fn first_of_this_year() -> chrono::NaiveDate {
    use chrono::Datelike;
    let today = chrono::Utc::now().date_naive();
    chrono::NaiveDate::from_ymd_opt(today.year(), 1, 1).expect("1 January")
}

fn finish(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %format!("{e:#}"), "stopped");
            ExitCode::FAILURE
        }
    }
}
