//! The actors of the real-time path (`docs/architecture.md`), one per file with its messages
//! beside it:
//!
//! - [`visitor_session::VisitorSession`]: one per active visitor; serialises that visitor's
//!   events, fans out to providers within the deadline, hands the result to the engine, keeps
//!   the profile warm and stops when idle.
//! - [`directory::SessionDirectory`]: finds or starts a visitor's session; sharded, and it
//!   never keeps an idle session alive.
//! - [`provider_client::ProviderClient`]: one per provider per arbiter thread; owns the HTTP
//!   client and turns every provider failure into an outcome, never an event failure.
//! - [`segment_engine::SegmentEngine`]: one per arbiter thread; evaluates rules against the
//!   compiled catalog and queues profile saves on the store threads, so disk work never runs
//!   on an actix-web worker.

pub mod directory;
pub mod provider_client;
pub mod segment_engine;
pub mod visitor_session;
