//! cchc-pipeline: live one-stop-shop indicators per commune.
//!
//! The path of one event (docs/ARCHITECTURE.md follows it function by
//! function):
//!
//! ```text
//! Kafka cchc.case-events.v1
//!   ──► ingest: consumer (claims partitions in the store as the group assigns
//!               them), batcher (pure: when a partition's batch goes),
//!               worker (one batch in flight per partition, outcomes booked)
//!   ──► projector: domain::decode ──► dead letters
//!                  ONE transaction through store::BatchTx:
//!                    guard → load (shared cases locked) ──► domain::Fold
//!                    (pure) ──► PartitionWrite → counters → cases →
//!                    documents → dead letters → breaches
//!                    (domain::Evaluator) → position
//!                  after the commit: internal_events, relay woken, ChangeNote
//!   ──► alerts: outbox relay ──► Kafka cchc.indicator-alerts.v1, SSE, webhooks
//!   ──► http: query API (read cache fed by ChangeNotes), dashboard, probes
//! ```
//!
//! What each module may touch (dependencies point inward):
//! - [`domain`]: pure; imports nothing else of the crate, no I/O, no clock.
//!   The counters and indicators are declared once there.
//! - [`store`]: the only module with SQL; uses `domain`.
//! - [`kafka`]: the only place Kafka clients are configured.
//! - [`projector`], [`ingest`], [`alerts`], [`http`]: adapters over `store`,
//!   `kafka` and HTTP; they use `domain` and `store`, never [`app`].
//! - [`app`]: the application put together once (`cchc run`, the demo, the
//!   tests); [`demo`] builds on it; [`operate`] and [`rebuild`] are the
//!   operator commands. `operate` does not import `app` or `demo`.
//! - shared services: [`config`] (with [`unit_file`], the unit lists an
//!   operator supplies), [`clock`], [`shutdown`], [`telemetry`],
//!   [`metrics`] with [`internal_events`] (one type per outcome: its log line
//!   and its counter), [`simulator`]; [`fault`]: crash points for the fault
//!   tests.
pub mod alerts;
pub mod app;
pub mod clock;
pub mod config;
pub mod demo;
pub mod domain;
pub mod fault;
pub mod http;
pub mod ingest;
pub mod internal_events;
pub mod kafka;
pub mod metrics;
pub mod operate;
pub mod projector;
pub mod rebuild;
pub mod shutdown;
pub mod simulator;
pub mod store;
pub mod telemetry;
pub mod unit_file;
