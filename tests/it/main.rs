//! The one integration-test binary: every module here runs against a real
//! Apache Kafka broker and a real PostgreSQL, which `bash scripts/test.sh`
//! starts (or `bash scripts/kafka.sh start` and `bash scripts/postgres.sh start`
//! by hand). Tests never skip when a service is missing: they fail and say how
//! to start it. Shared helpers live in `support`.

// A scenario reads best from top to bottom: the 100-line limit of
// clippy.toml is for src/.
#![allow(clippy::too_many_lines)]

mod abuse;
mod alerts;
mod at_risk;
mod embedded;
mod ingest;
mod kit;
mod pipeline;
mod rebuild;
#[path = "../reference/mod.rs"]
mod reference;
mod secured;
mod support;
mod testbed;
mod units;
