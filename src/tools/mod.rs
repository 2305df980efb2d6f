//! The commands around the server: `tributary demo`, the sample provider, the benchmark, the
//! inbound-file importer and the consent-string helper. None of them is on the real-time path.
//!
//! - [`demo`]: the whole real-time path on one machine (sample providers, catalog, store).
//! - [`demo_site`]: the demo's web site on another origin: the tag and the ID service in a
//!   browser.
//! - [`mock_provider`]: a sample data provider speaking the provider protocol.
//! - [`bench`](mod@bench): `tributary bench`, scenarios measured against ceilings in the same run.
//! - [`onboard`]: `tributary onboard FILE…`, inbound files imported through a server's admin API.
//! - [`tc_string`]: prints or decodes TCF v2 consent strings, to try `gdpr=1` calls.

pub mod bench;
pub mod demo;
pub mod demo_site;
pub mod mock_provider;
pub mod onboard;
pub mod tc_string;
