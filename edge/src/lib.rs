//! edgecache edge node: a shared HTTP cache (RFC 9111) in front of an origin.
//!
//! # Layout
//! - [`server`]: `run` — the public and admin listeners.
//! - [`proxy`]: the request path (lookup → fresh / stale / miss → respond), pass-through.
//! - [`fetch`]: the origin fetch behind a miss or revalidation; stores responses.
//! - [`coalesce`]: one origin fetch per key, its body streamed to every waiter.
//! - [`policy`], [`cache_control`]: storability, freshness, age, directives.
//! - [`key`]: cache keys. [`entry`]: stored responses ([`stored_head`]: status and fields in
//!   one buffer). [`memory`]: the moka tier.
//! - [`respond`]: conditionals, ranges and full responses from stored entries.
//! - [`cache_status`]: RFC 9211 `Cache-Status`. [`metrics`], [`admin`]: observability.
//! - [`forward`]: request checks (host, target, framing) and the headers sent upstream.
//! - [`upstream`]: the origin client. [`config`], [`error`].
//! - [`reload`]: live reload of origins, freshness rules and certificates.

pub mod access_log;
pub mod admin;
pub mod cache_control;
pub mod cache_status;
pub mod coalesce;
pub mod config;
pub mod disk;
pub mod entry;
pub mod error;
pub mod fetch;
pub mod forward;
pub mod key;
pub mod memory;
pub mod metrics;
pub mod node;
pub mod policy;
pub mod proxy;
pub mod purge;
pub mod purge_sync;
pub mod reload;
pub mod respond;
pub mod server;
pub mod stored_head;
pub mod sweep;
pub mod upstream;

pub use config::EdgeConfig;
pub use error::EdgeError;
pub use node::Edge;
pub use reload::{ConfigSource, ReloadError, ReloadReport};
pub use server::{RunOptions, run, run_with};
