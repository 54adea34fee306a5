//! A static origin server: files under one root, with validators, ranges and precompressed variants.
//!
//! It is the origin for local runs (`edgecache origin --root DIR`, `edgecache up`) and for
//! the edge's integration tests, which start it on port 0 with [`Origin`] or [`run`] and
//! count its hits with [`Origin::requests`].
//!
//! # Layout
//!
//! - `config` — [`OriginConfig`], its default cache rules and `validate()`
//! - `rules` — compiled cache and tag rules, fingerprint detection
//! - `server` — [`Origin`], the request handler and [`run`]
//! - `path` — safe resolution of a request path under the root
//! - `dot_paths` — dot-files and dot-directories, refused unless `allow_dot_paths` names them
//! - `respond` — one file's response: 200, 206, 304, 412 or 416
//! - `conditional` — `If-Match`, `If-None-Match`, `If-(Un)Modified-Since`, `If-Range`
//! - `range` — `Range` planning; `multipart` — `multipart/byteranges` framing
//! - `precompressed` — `file.br` / `file.gz` siblings and `Accept-Encoding`
//! - `headers` — validators, content type and caching headers
//! - `body` — file bodies streamed in bounded chunks
//! - `error` — [`OriginError`], mapped to a status and a short text body

mod body;
mod conditional;
mod config;
mod dot_paths;
mod error;
mod headers;
mod multipart;
mod path;
mod precompressed;
mod range;
mod respond;
mod rules;
mod server;

pub use config::{CacheRule, FINGERPRINTED, OriginConfig, TagRule, default_cache_rules};
pub use error::OriginError;
pub use server::{FALLBACK_JS, FALLBACK_JS_PATH, Origin, run};
