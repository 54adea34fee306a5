//! edgecache: a CDN you run yourself. This crate is the `edgecache` binary's library side:
//! the command line, the config file, and the parts that compose the member crates.
//!
//! # Layout
//! - [`cli`]: commands and flags, and running each server until Ctrl-C / SIGTERM.
//! - [`client`]: the fallback client (`edgecache get`): nearest PoP, next PoP, origin.
//! - [`config`]: the `edgecache.toml` file (`[edge]`, `[origin]`, `[purge_api]` tables).
//! - [`router`]: the GeoIP router (`edgecache route`): routing API, redirector, GeoDNS.
//! - [`telemetry`]: logging setup.
//! - [`up`]: `edgecache up`, the whole CDN on one machine, supervised.
//! - [`warm`]: `edgecache warm`, prefetching a list of URL paths into PoPs.
//!
//! The servers themselves live in the member crates: `edgecache-edge`,
//! `edgecache-origin`, `edgecache-purge-api`.

pub mod cli;
pub mod client;
pub mod config;
pub mod router;
pub mod telemetry;
pub mod up;
pub mod warm;
