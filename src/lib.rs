//! Tributary: a real-time audience data collection server (an AAM-compatible DCS).
//!
//! # Layout
//!
//! Layers, lowest first; each uses only those above it in this list:
//!
//! - [`core`]: the pure core — ids, signals, request parsing, the rule languages, the catalog
//!   and its compiled engine, profiles, consent, destinations, S2S bodies, the provider
//!   protocol, signing, the circuit breaker. No actix, no awc, no sled, no Redis; unit-tested
//!   and fuzzed.
//! - [`telemetry`]: the Prometheus exporter and log lines.
//! - [`config`]: typed configuration, each section validated next to its fields.
//! - [`store`]: persistence on sled or a Redis Cluster — the only module that touches either —
//!   and the store threads behind the profile service.
//! - [`outbox`]: the S2S delivery task (durable queue, batches, retries, signing).
//! - [`actors`]: the real-time path — one `VisitorSession` per active visitor (with its
//!   provider fan-out and late answers), a `ProviderClient` per provider per thread, a
//!   `SegmentEngine` per thread, and the session directory.
//! - [`inbound`]: the customer's own data applied — Customer Data API ops and inbound-file
//!   lines resolved to profiles and handed to their sessions; the file import jobs.
//! - [`routes`]: the public listener (`/event`, `/ibs`, opt-out, health, metrics), the one
//!   identification pipeline they share, cookies, CORS, body reading, and the one place
//!   answers are written.
//! - [`admin`]: the admin REST API on its own listener (with the Customer Data API and the
//!   inbound file uploads), and the catalog writer behind it.
//! - [`server`]: the composition — [`server::start`] wires everything together for
//!   `tributary serve`, the demo and the tests; background tasks; shutdown.
//! - [`tools`]: the demo, the sample provider, the benchmark, `tributary onboard` and the
//!   consent-string helper.
//!
//! `docs/architecture.md` says the same for a reader who never opens the code, with the
//! invariants below and why they hold.
//!
//! # Invariants
//! - Only `store` touches sled or Redis, and store calls run on blocking or store-writer
//!   threads, never on an actix-web worker.
//! - One visitor's events are applied one at a time by its `VisitorSession`.
//! - No provider failure fails an event; no answer waits past the event's deadline.
//! - `p_` signals are never stored, logged or sent to providers.
//! - Every visitor-facing route judges consent, COPPA and opt-out in one place
//!   ([`routes::pipeline`]).

pub mod actors;
pub mod admin;
pub mod config;
pub mod core;
pub mod inbound;
pub mod outbox;
pub mod routes;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tools;
