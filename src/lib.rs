//! cchc-pipeline: live one-stop-shop indicators per commune.
//!
//! Data flow:
//!
//! ```text
//! Kafka cchc.case-events.v1 ──► ingest (consumer group, offsets held in the store, fencing)
//!        ──► projector: domain::decode ──► dead letters
//!                       domain::Fold (pure) + breach evaluation
//!        ──► store: one transaction per partition batch, partitions concurrently
//!                   (counters, facts, offsets, outbox)
//!        ──► alerts: outbox relay ──► Kafka cchc.indicator-alerts.v1, SSE, webhooks
//!        ──► http: query API, dashboard, health, metrics
//! ```
//!
//! What each module may touch:
//! - [`domain`]: pure; imports nothing else of the crate, no I/O, no clock.
//! - [`store`]: the only module with SQL; uses `domain`.
//! - [`projector`], [`ingest`], [`alerts`], [`http`]: adapters over `store`,
//!   Kafka and HTTP; they use `domain` and `store`.
//! - [`startup`], [`operate`], [`rebuild`]: wiring and operator commands;
//!   see everything.
//! - [`config`], [`telemetry`], [`metrics`], [`simulator`]: shared services;
//!   [`fault`]: crash points for the fault tests.
pub mod alerts;
pub mod config;
pub mod domain;
pub mod fault;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod operate;
pub mod projector;
pub mod rebuild;
pub mod simulator;
pub mod startup;
pub mod store;
pub mod telemetry;
