//! Dot-files and dot-directories (`.env`, `.git/`): never served unless `origin.allow_dot_paths` names them.

use std::ffi::OsStr;

use crate::config::OriginConfig;
use crate::error::OriginError;

/// Which dot-named path components may be served.
///
/// A component is dot-named if it starts with `.`. Each allowed prefix excuses only the
/// dot-named components it spells out itself: `/.well-known/` serves
/// `/.well-known/security.txt` but not `/.well-known/.git/config`, so allowing one
/// directory never re-exposes a repository or secret checked out below it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DotPaths {
    /// Each allowed prefix split into its non-empty segments.
    allowed: Vec<Vec<String>>,
}

impl DotPaths {
    /// Checks `origin.allow_dot_paths`, naming the first bad entry.
    pub(crate) fn compile(config: &OriginConfig) -> Result<Self, OriginError> {
        let mut allowed = Vec::with_capacity(config.allow_dot_paths.len());
        for (i, prefix) in config.allow_dot_paths.iter().enumerate() {
            let bad = |why: &str| {
                OriginError::config(
                    format!("origin.allow_dot_paths[{i}]"),
                    format!("{prefix:?} {why}"),
                )
            };
            let Some(rest) = prefix.strip_prefix('/') else {
                return Err(bad("must start with /"));
            };
            let segments: Vec<String> = rest
                .split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            // No request path keeps such a segment, so the entry could never match.
            if segments.iter().any(|s| s == "." || s == "..") {
                return Err(bad("must not contain '.' or '..' segments"));
            }
            if !segments.iter().any(|s| is_dot_named(OsStr::new(s))) {
                return Err(bad(
                    "names no dot-file or dot-directory, so it would allow nothing",
                ));
            }
            allowed.push(segments);
        }
        Ok(DotPaths { allowed })
    }

    /// Whether a path made of `components` (relative to the root, decoded) may be served:
    /// every dot-named component must lie within an allowed prefix that matches the path.
    pub(crate) fn permits<S: AsRef<OsStr>>(&self, components: &[S]) -> bool {
        let Some(last_dot) = components.iter().rposition(|c| is_dot_named(c.as_ref())) else {
            return true;
        };
        self.allowed.iter().any(|prefix| {
            prefix.len() > last_dot
                && prefix.len() <= components.len()
                && prefix
                    .iter()
                    .zip(components)
                    .all(|(p, c)| OsStr::new(p) == c.as_ref())
        })
    }
}

fn is_dot_named(component: &OsStr) -> bool {
    component.as_encoded_bytes().first() == Some(&b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowing(prefixes: &[&str]) -> Result<DotPaths, String> {
        let mut config = OriginConfig::new("/unused");
        config.allow_dot_paths = prefixes.iter().map(|p| (*p).to_owned()).collect();
        DotPaths::compile(&config).map_err(|e| e.to_string())
    }

    fn permits(dots: &DotPaths, path: &str) -> bool {
        let components: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        dots.permits(&components)
    }

    #[test]
    fn by_default_any_dot_named_component_is_refused() {
        let dots = DotPaths::default();
        for path in [
            "/.env",
            "/.git/config",
            "/a/.secret/x",
            "/.well-known/security.txt",
            "/..a",
        ] {
            assert!(!permits(&dots, path), "{path}");
        }
        for path in ["/", "/a.txt", "/a/b.c/d", "/env.", "/a..b"] {
            assert!(permits(&dots, path), "{path}");
        }
    }

    #[test]
    fn a_prefix_excuses_only_the_dot_components_it_names() {
        let dots = allowing(&["/.well-known/", "/docs/.vuepress"]).unwrap();
        assert!(permits(&dots, "/.well-known"));
        assert!(permits(&dots, "/.well-known/security.txt"));
        assert!(permits(&dots, "/.well-known/acme-challenge/tok"));
        assert!(permits(&dots, "/docs/.vuepress/theme.css"));
        assert!(!permits(&dots, "/.well-known/.git/config"), "nested dot");
        assert!(!permits(&dots, "/.well-knownx/a"), "segment boundary");
        assert!(!permits(&dots, "/x/.well-known/a"), "anchored at the root");
        assert!(!permits(&dots, "/.env"));
        assert!(!permits(&dots, "/docs/.git/config"));
    }

    #[test]
    fn a_prefix_longer_than_the_path_does_not_match() {
        let dots = allowing(&["/.well-known/acme-challenge/"]).unwrap();
        assert!(permits(&dots, "/.well-known/acme-challenge/tok"));
        assert!(!permits(&dots, "/.well-known/"));
        assert!(!permits(&dots, "/.well-known/security.txt"));
    }

    #[test]
    fn bad_entries_are_named_by_index() {
        assert_eq!(
            allowing(&["/.well-known/", ".well-known/"]).unwrap_err(),
            r#"origin.allow_dot_paths[1]: ".well-known/" must start with /"#
        );
        assert_eq!(
            allowing(&[""]).unwrap_err(),
            r#"origin.allow_dot_paths[0]: "" must start with /"#
        );
        assert!(
            allowing(&["/.a/../.git"])
                .unwrap_err()
                .starts_with("origin.allow_dot_paths[0]: \"/.a/../.git\" must not contain")
        );
        assert_eq!(
            allowing(&["/"]).unwrap_err(),
            r#"origin.allow_dot_paths[0]: "/" names no dot-file or dot-directory, so it would allow nothing"#
        );
        assert_eq!(allowing(&[]).unwrap(), DotPaths::default());
    }
}
