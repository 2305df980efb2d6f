//! The pure core: everything Tributary decides, free of actix, awc, sled and Redis, so that it
//! is unit-tested and fuzzed on its own. Nothing here does I/O or waits; the runtime around it
//! (actors, routes, store) calls in with data and gets data back.
//!
//! - [`ids`]: visitor ids (38 digits) and transaction ids (`tid`).
//! - [`clock`]: Unix time as the rest of the core counts it.
//! - [`signals`]: an event's key/values, and which of them may leave the process.
//! - [`request`]: parsing `/event` parameters; visitor identification.
//! - [`idsync`]: declared ids and `/ibs` (parsing, AAM's limits, safe redirects).
//! - [`inbound`]: one profile update from the customer's own systems, however it arrived.
//! - [`priority`]: when an import yields the cores to events.
//! - [`customer_data`]: the Customer Data API's `/stream` bodies and `/event/s2s` parameters.
//! - [`event`]: an identified event as the session, the providers and the engine see it.
//! - [`forwarded`]: the client's address and scheme behind trusted proxies.
//! - [`error`]: AAM's `errors` entries (the codes the DCS answers with).
//! - [`id_service`]: the `/id` answer VisitorAPI reads, and ID sync partners.
//! - [`response`]: rendering AAM's JSON/JSONP answer, `X-Error`, the pixel.
//! - [`rules`]: the trait and segment rule languages (lexer, parser, compiled rules).
//! - [`catalog`]: providers, traits, segments, destinations (AAM field names) and their
//!   validation.
//! - [`engine`]: the compiled catalog and qualification (traits → segments).
//! - [`profile`]: what is remembered about a visitor.
//! - [`consent`]: TCF v2, US Privacy and GPP strings (bounded decoders) and the consent check.
//! - [`destinations`]: cookie (`stuff`) and URL (`dests`) destination output.
//! - [`s2s`]: server-to-server destinations: which membership changes to deliver, and the body.
//! - [`provider`]: the provider protocol (request body, answer parsing, outcomes, budget).
//! - [`signing`]: the HMAC signature of provider requests and S2S deliveries.
//! - [`circuit`]: a provider's circuit breaker (when to stop calling it, when to try again).
//! - [`inbound_file`]: AAM inbound data files: the name, the lines, a bounded line reader.

pub mod catalog;
pub mod circuit;
pub mod clock;
pub mod consent;
pub mod customer_data;
pub mod destinations;
pub mod engine;
pub mod error;
pub mod event;
pub mod forwarded;
pub mod id_service;
pub mod ids;
pub mod idsync;
pub mod inbound;
pub mod inbound_file;
pub mod priority;
pub mod profile;
pub mod provider;
pub mod request;
pub mod response;
pub mod rules;
pub mod s2s;
pub mod signals;
pub mod signing;
