//! `cchc`: the command line of the pipeline.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing::{error, info};

use cchc_pipeline::config::{Settings, DEFAULT_FILE};
use cchc_pipeline::ingest::Shutdown;
use cchc_pipeline::startup;
use cchc_pipeline::telemetry::{self, LogFormat};

#[derive(Parser)]
#[command(version, about = "Live one-stop-shop indicators per commune, from Kafka into PostgreSQL")]
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
    /// Check a configuration file and explain what is wrong with it.
    CheckConfig {
        #[arg(default_value = DEFAULT_FILE)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    match cli.command {
        Command::CheckConfig { config } => match Settings::load(&config) {
            Ok(s) => {
                println!(
                    "{}: OK ({} units, {} communes, topic {})",
                    config.display(),
                    s.units.len(),
                    s.units.communes().count(),
                    s.kafka.topic
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config } => {
            let settings = match Settings::load(&config) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            let result = runtime.block_on(async {
                let shutdown = Shutdown::default();
                let on_signal = shutdown.clone();
                tokio::spawn(async move {
                    wait_for_signal().await;
                    info!("stop requested; finishing the current batch");
                    on_signal.trigger();
                });
                startup::run_until_stopped(settings, shutdown).await
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    error!(error = format!("{e:#}"), "pipeline stopped");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
