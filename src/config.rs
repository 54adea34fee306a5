//! The `edgecache.toml` file: one table per server (`[edge]`, `[origin]`).

use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

use edgecache_edge::EdgeConfig;
use edgecache_origin::OriginConfig;
use edgecache_purge_api::PurgeApiConfig;

/// The whole config file. Each command reads its own table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub edge: Option<EdgeConfig>,
    pub origin: Option<OriginConfig>,
    pub purge_api: Option<PurgeApiConfig>,
    pub router: Option<crate::router::RouterConfig>,
}

impl FileConfig {
    /// Reads and parses `path`; errors name the file and the bad key.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("config {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        Ok(toml::from_str(text)?)
    }
}

/// Loads `path` if given, else an empty config.
pub fn load_optional(path: Option<&Path>) -> anyhow::Result<FileConfig> {
    path.map_or_else(|| Ok(FileConfig::default()), FileConfig::load)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_edge_table() {
        let c = FileConfig::parse(
            r#"
            [edge]
            listen = "127.0.0.1:0"
            pop = "us-east"
            [[edge.origins]]
            url = "http://127.0.0.1:8000"
            [edge.memory]
            size = "64MiB"
            "#,
        )
        .unwrap();
        let edge = c.edge.unwrap();
        assert_eq!(edge.pop, "us-east");
        assert_eq!(edge.memory.size.0, 64 << 20);
        edge.validate().unwrap();
    }

    #[test]
    fn unknown_key_is_named() {
        let err = FileConfig::parse("[edge]\nmemroy = 1\n").unwrap_err();
        assert!(format!("{err:#}").contains("memroy"), "{err:#}");
    }
}
