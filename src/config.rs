//! The `edgecache.toml` file: one table per server (`[edge]`, `[origin]`, `[purge_api]`,
//! `[router]`), parsed strictly, with errors that name the bad key.

use std::fmt;
use std::path::{Path, PathBuf};

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

/// Why a config file was refused. The message starts with the key when one is to blame,
/// e.g. `edge.memory.size: "12XB": unknown unit "XB" (use KiB, MiB, GiB)`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}{key}: {message}", file_prefix(.path))]
    Key {
        path: Option<PathBuf>,
        /// The dotted key, e.g. `edge.origins[1].url`.
        key: String,
        message: String,
    },
    #[error("{}{message}", file_prefix(.path))]
    Syntax {
        path: Option<PathBuf>,
        message: String,
    },
}

fn file_prefix(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map_or_else(String::new, |p| format!("config {}: ", p.display()))
}

impl ConfigError {
    /// The key to blame, if the error is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Key { key, .. } => Some(key),
            _ => None,
        }
    }

    fn in_file(mut self, file: &Path) -> Self {
        match &mut self {
            Self::Key { path, .. } | Self::Syntax { path, .. } => *path = Some(file.to_owned()),
            Self::Read { .. } => {}
        }
        self
    }

    /// `key: reason` without the file name: how a reload reports it.
    pub fn keyed_message(&self) -> String {
        match self {
            Self::Key { key, message, .. } => format!("{key}: {message}"),
            other => other.to_string(),
        }
    }

    /// A validation message of the form `key: reason` (as every `validate()` writes them).
    pub(crate) fn from_validation(message: &str) -> Self {
        let message = message
            .strip_prefix("invalid configuration: ")
            .unwrap_or(message);
        match message.split_once(": ") {
            Some((key, why)) if !key.contains(' ') => Self::Key {
                path: None,
                key: key.to_owned(),
                message: why.to_owned(),
            },
            _ => Self::Syntax {
                path: None,
                message: message.to_owned(),
            },
        }
    }
}

impl FileConfig {
    /// Reads and parses `path`; errors name the file and the bad key.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|e| e.in_file(path))
    }

    /// Parses a whole file. Unknown keys, wrong types and bad values are refused, naming
    /// the key.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let de = toml::Deserializer::parse(text).map_err(|e| ConfigError::Syntax {
            path: None,
            message: one_line(&e),
        })?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let mut key = e.path().to_string();
            let message = e.inner().message().to_owned();
            // serde names the table holding an unknown key; the key itself is more use.
            let message = if let Some(field) = quoted_after(&message, "unknown field `") {
                key = join_key(&key, field);
                format!(
                    "unknown key ({})",
                    message.trim_start_matches("unknown field ")
                )
            } else if let Some(field) = quoted_after(&message, "missing field `") {
                key = join_key(&key, field);
                "required".to_owned()
            } else {
                message
            };
            let message = match line_of(text, e.inner().span()) {
                Some(line) => format!("{message} (line {line})"),
                None => message,
            };
            if key == "." || key.is_empty() {
                ConfigError::Syntax {
                    path: None,
                    message,
                }
            } else {
                ConfigError::Key {
                    path: None,
                    key,
                    message,
                }
            }
        })
    }

    /// Validates every table present, as each command would at start.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let check = |r: Result<(), String>| r.map_err(|m| ConfigError::from_validation(&m));
        if let Some(edge) = &self.edge {
            check(edge.validate().map_err(|e| e.to_string()))?;
        }
        if let Some(origin) = &self.origin {
            check(origin.validate().map_err(|e| e.to_string()))?;
        }
        if let Some(purge_api) = &self.purge_api {
            check(purge_api.validate().map_err(|e| e.to_string()))?;
        }
        if let Some(router) = &self.router {
            check(router.validate().map_err(|e| e.to_string()))?;
        }
        Ok(())
    }

    /// What the file configures, one line per table, for `edgecache check-config`.
    pub fn summary(&self) -> Summary<'_> {
        Summary(self)
    }
}

/// The tables a config file sets, as `check-config` prints them.
pub struct Summary<'a>(&'a FileConfig);

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.0;
        if let Some(e) = &c.edge {
            let scheme = if e.tls.is_some() { "https" } else { "http" };
            writeln!(
                f,
                "  edge: pop {}, {scheme}://{}, {} origin(s){}",
                e.pop,
                e.listen,
                e.origins.len(),
                if e.disk.dir.is_some() {
                    ", disk tier"
                } else {
                    ""
                }
            )?;
        }
        if let Some(o) = &c.origin {
            writeln!(f, "  origin: root {}", o.root.display())?;
        }
        if let Some(p) = &c.purge_api {
            let scheme = if p.tls.is_some() { "https" } else { "http" };
            writeln!(f, "  purge_api: {scheme}://{}", p.listen)?;
        }
        if let Some(r) = &c.router {
            writeln!(f, "  router: http://{}, {} PoP(s)", r.listen, r.pops.len())?;
        }
        if c.edge.is_none() && c.origin.is_none() && c.purge_api.is_none() && c.router.is_none() {
            writeln!(
                f,
                "  (no tables: every command uses its defaults and flags)"
            )?;
        }
        Ok(())
    }
}

/// `unknown field `x`, expected …` with prefix "unknown field `" → `x`.
fn quoted_after<'m>(message: &'m str, prefix: &str) -> Option<&'m str> {
    let rest = message.strip_prefix(prefix)?;
    rest.split_once('`').map(|(field, _)| field)
}

fn join_key(table: &str, field: &str) -> String {
    if table.is_empty() || table == "." {
        field.to_owned()
    } else if table == field || table.ends_with(&format!(".{field}")) {
        // Some paths already end with the offending key.
        table.to_owned()
    } else {
        format!("{table}.{field}")
    }
}

/// The 1-based line of a byte offset.
fn line_of(text: &str, span: Option<std::ops::Range<usize>>) -> Option<usize> {
    let start = span?.start;
    Some(text.get(..start)?.bytes().filter(|&b| b == b'\n').count() + 1)
}

fn one_line(e: &toml::de::Error) -> String {
    e.to_string()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Loads `path` if given, else an empty config.
pub fn load_optional(path: Option<&Path>) -> Result<FileConfig, ConfigError> {
    path.map_or_else(|| Ok(FileConfig::default()), FileConfig::load)
}

/// `edgecache check-config FILE`: parses and validates every table, printing a summary.
pub fn check_config(path: &Path) -> Result<String, ConfigError> {
    let config = FileConfig::load(path)?;
    config.validate().map_err(|e| e.in_file(path))?;
    Ok(format!("ok: {}\n{}", path.display(), config.summary()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(text: &str) -> String {
        let err = FileConfig::parse(text)
            .and_then(|c| c.validate())
            .unwrap_err();
        err.key()
            .unwrap_or_else(|| panic!("no key in {err}"))
            .to_owned()
    }

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
    fn unknown_key_is_named_with_its_table() {
        let err = FileConfig::parse("[edge]\nmemroy = 1\n").unwrap_err();
        assert_eq!(err.key(), Some("edge.memroy"), "{err}");
        assert!(err.to_string().contains("unknown key"), "{err}");
        assert_eq!(key_of("[edge.memory]\nsise = 1\n"), "edge.memory.sise");
        assert_eq!(key_of("[edgee]\n"), "edgee");
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = FileConfig::parse("[edge.memory]\nsize = \"12XB\"\n").unwrap_err();
        assert_eq!(err.key(), Some("edge.memory.size"), "{err}");
        assert!(err.to_string().contains("XB"), "{err}");
        assert_eq!(
            key_of("[[edge.origins]]\nurl = \"http://a\"\n[[edge.origins]]\nurl = \"ftp://b\"\n"),
            "edge.origins[1].url"
        );
        assert_eq!(key_of("[edge]\npop = 3\n"), "edge.pop");
    }

    #[test]
    fn missing_required_values_name_the_key() {
        assert_eq!(key_of("[edge]\npop = \"x\"\n"), "edge.origins");
        assert_eq!(
            key_of("[purge_api]\nlisten = \"127.0.0.1:0\"\n"),
            "purge_api.token"
        );
        assert_eq!(
            key_of("[origin]\nlisten = \"127.0.0.1:0\"\n"),
            "origin.root"
        );
        assert_eq!(
            key_of("[[router.pops]]\nname = \"a\"\nlat = 1.0\nlon = 2.0\n"),
            "router.pops[0].url"
        );
    }
}
