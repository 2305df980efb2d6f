//! Tributary: a real-time audience data collection server (an AAM-compatible DCS).
//!
//! # Layout
//!
//! Pure logic (no actix, no sled; unit-tested and fuzzable):
//! - [`ids`]: visitor ids (38 digits) and transaction ids (`tid`).
//! - [`signals`]: an event's key/values, and which of them may leave the process.
//! - [`request`]: parsing `/event` parameters; visitor identification.
//! - [`idsync`]: declared ids and `/ibs` (parsing, AAM's limits, safe redirects).
//! - [`response`]: rendering AAM's JSON/JSONP answer, `X-Error`, the pixel.
//! - [`rules`]: the trait and segment rule languages (lexer, parser, compiled rules).
//! - [`catalog`]: providers, traits, segments (AAM field names) and their validation.
//! - [`engine`]: the compiled catalog and qualification (traits → segments).
//! - [`destinations`]: cookie (`stuff`) and URL (`dests`) destination output.
//! - [`s2s`]: server-to-server destinations: which membership changes to deliver, and the body.
//! - [`consent`]: TCF v2, US Privacy and GPP strings (bounded decoders) and the consent check.
//! - [`profile`]: what is remembered about a visitor.
//! - [`provider`]: the provider protocol (request body, answer parsing, outcomes, budget).
//! - [`circuit`]: a provider's circuit breaker (when to stop calling it, when to try again).
//! - [`error`]: every error a client can see, mapped to the wire in one place.
//! - [`config`]: typed, validated configuration with environment overrides.
//!
//! Runtime:
//! - [`actors`]: `VisitorSession`, `ProviderClient`, `SegmentEngine` and the session directory.
//! - [`store`]: persistence on sled or a Redis Cluster; the only module that touches either.
//! - [`server`]: the HTTP listener and [`server::start`], which wires everything together.
//! - [`admin`]: the admin REST API (its own listener) and the catalog writer behind it.
//! - [`metrics`]: the Prometheus exporter; [`logging`]: text or JSON log lines.
//! - [`outbox`]: the S2S outbox task (store, batches, retries, signing), off the event path.
//! - [`overload`]: load shedding (`429`) from worker lag, events in flight and store backlog.
//! - [`mock_provider`] and [`demo`]: sample providers and the `tributary demo` command.
//! - [`bench`]: `tributary bench`, the benchmark tool (load generator, ceilings, scenarios).
//!
//! # Invariants
//! - Only `store` touches sled or Redis, and store calls run on blocking or store-writer
//!   threads, never on an actix-web worker.
//! - One visitor's events are applied one at a time by its `VisitorSession`.
//! - No provider failure fails an event; no answer waits past the event's deadline.
//! - `p_` signals are never stored, logged or sent to providers.

pub mod actors;
pub mod admin;
pub mod bench;
pub mod catalog;
pub mod circuit;
pub mod config;
pub mod consent;
pub mod demo;
pub mod destinations;
pub mod engine;
pub mod error;
pub mod ids;
pub mod idsync;
pub mod logging;
pub mod metrics;
pub mod mock_provider;
pub mod outbox;
pub mod overload;
pub mod profile;
pub mod provider;
pub mod request;
pub mod response;
pub mod rules;
pub mod s2s;
pub mod server;
pub mod signals;
pub mod store;
