//! cchc-pipeline: live one-stop-shop indicators per commune.
//!
//! Data flow:
//!
//! ```text
//! Kafka cchc.case-events.v1 ──► ingest (consumer, batches, stored offsets)
//!        ──► domain::decode ──► dead letters
//!        ──► domain::Fold (pure) ──► store (one transaction per batch)
//! ```
//!
//! - [`domain`]: pure; imports nothing else of the crate.
pub mod alerts;
pub mod config;
pub mod domain;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod operate;
pub mod projector;
pub mod simulator;
pub mod startup;
pub mod store;
pub mod telemetry;
