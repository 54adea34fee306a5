//! Safe resolution of a request path to a file under the document root.

use std::path::{Path, PathBuf};

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

use crate::dot_paths::DotPaths;
use crate::error::OriginError;

/// Served for a request naming a directory.
pub(crate) const INDEX_FILE: &str = "index.html";

/// Bytes re-encoded when a decoded path is put back into a `Location` header.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'\\')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// A request path, decoded and checked, split into its non-empty segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestPath {
    segments: Vec<String>,
    trailing_slash: bool,
}

impl RequestPath {
    /// Decodes the raw (still percent-encoded) path of a request URI.
    pub(crate) fn parse(raw: &str) -> Result<Self, OriginError> {
        let Some(rest) = raw.strip_prefix('/') else {
            return Err(OriginError::BadPath("path must start with /"));
        };
        let mut segments = Vec::new();
        for raw_segment in rest.split('/') {
            // An encoded separator would let one URL segment become two path components,
            // or a different one on Windows, so it is refused rather than decoded.
            let lower = raw_segment.to_ascii_lowercase();
            if lower.contains("%2f") {
                return Err(OriginError::BadPath("encoded slash (%2F)"));
            }
            if lower.contains("%5c") || raw_segment.contains('\\') {
                return Err(OriginError::BadPath("backslash"));
            }
            let bytes: Vec<u8> = percent_decode_str(raw_segment).collect();
            if bytes.contains(&0) {
                return Err(OriginError::BadPath("NUL byte"));
            }
            let Ok(segment) = String::from_utf8(bytes) else {
                return Err(OriginError::BadPath("not valid UTF-8"));
            };
            match segment.as_str() {
                ".." => return Err(OriginError::BadPath("'..' segment")),
                "" | "." => {}
                _ => segments.push(segment),
            }
        }
        Ok(RequestPath {
            segments,
            trailing_slash: raw.ends_with('/'),
        })
    }

    /// The decoded path as rules see it, e.g. `/docs/a b.html`.
    pub(crate) fn decoded(&self) -> String {
        let mut path = String::from("/");
        path.push_str(&self.segments.join("/"));
        if self.trailing_slash && !self.segments.is_empty() {
            path.push('/');
        }
        path
    }

    /// Where a directory named without its trailing slash lives, re-encoded so the
    /// `Location` is always a single-origin absolute path (never `//host`).
    fn directory_location(&self, query: Option<&str>) -> String {
        let mut location = String::new();
        for segment in &self.segments {
            location.push('/');
            location.extend(utf8_percent_encode(segment, SEGMENT));
        }
        location.push('/');
        if let Some(query) = query {
            location.push('?');
            location.push_str(query);
        }
        location
    }
}

/// What a request path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resolved {
    /// A regular file inside the root.
    File {
        /// Root joined with the request's segments: precompressed siblings are looked up next to it.
        path: PathBuf,
        /// Where it really is; opened instead of `path` so a symlink swapped in after the
        /// check cannot redirect the read.
        canonical: PathBuf,
        /// The decoded URL path of the file, with the index file named for a directory.
        url_path: String,
    },
    /// A directory requested without its trailing slash: redirect so relative links resolve.
    Redirect(String),
}

/// The canonical document root and which dot-named paths under it may be served.
#[derive(Debug, Clone)]
pub(crate) struct DocumentRoot {
    path: PathBuf,
    dot_paths: DotPaths,
}

impl DocumentRoot {
    /// `path` must already be canonical, so containment checks compare like with like.
    pub(crate) fn new(path: PathBuf, dot_paths: DotPaths) -> Self {
        DocumentRoot { path, dot_paths }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The canonical form of `path` (the root joined with request segments) if it may be
    /// served: it exists, stays inside the root, and neither the name asked for nor the name
    /// it resolves to has a dot-named component the config does not allow.
    ///
    /// Every file the origin reads (the file, a directory's index, a precompressed sibling)
    /// goes through here, so this is the one place dot-files are refused. Both names are
    /// checked because a symlink can hide either: `public-git -> .git` and `.env -> env.txt`.
    /// A refusal looks exactly like a missing file.
    pub(crate) async fn canonical(&self, path: &Path) -> Option<PathBuf> {
        if !self.permits(path) {
            tracing::debug!(path = %path.display(), "dot-named path refused");
            return None;
        }
        let canonical = tokio::fs::canonicalize(path).await.ok()?;
        if !canonical.starts_with(&self.path) {
            return None;
        }
        if !self.permits(&canonical) {
            tracing::debug!(
                path = %path.display(),
                resolved = %canonical.display(),
                "resolves to a dot-named path, refused"
            );
            return None;
        }
        Some(canonical)
    }

    /// Whether the components of `path` below the root pass the dot-path rule. Components
    /// of the root itself never count: a site may well live in `~/.sites/blog`.
    fn permits(&self, path: &Path) -> bool {
        let Ok(relative) = path.strip_prefix(&self.path) else {
            return false;
        };
        let components: Vec<&std::ffi::OsStr> =
            relative.components().map(|c| c.as_os_str()).collect();
        self.dot_paths.permits(&components)
    }
}

/// Resolves `request` under `root`.
///
/// Symlinks are followed, but only to targets inside the root: anything whose canonical path
/// leaves the root, or that is a dot-file not allowed by the config, is reported as missing,
/// so the response does not reveal what lies outside or what is hidden.
pub(crate) async fn resolve(
    root: &DocumentRoot,
    request: &RequestPath,
    query: Option<&str>,
) -> Result<Resolved, OriginError> {
    let mut path = root.path.clone();
    path.extend(&request.segments);
    let canonical = root.canonical(&path).await.ok_or(OriginError::NotFound)?;
    let meta = tokio::fs::metadata(&canonical)
        .await
        .map_err(|_| OriginError::NotFound)?;

    if meta.is_dir() {
        if !request.trailing_slash {
            return Ok(Resolved::Redirect(request.directory_location(query)));
        }
        path.push(INDEX_FILE);
        let index = root.canonical(&path).await.ok_or(OriginError::NotFound)?;
        if !is_file(&index).await {
            return Err(OriginError::NotFound);
        }
        let url_path = format!("{}{INDEX_FILE}", request.decoded());
        return Ok(Resolved::File {
            path,
            canonical: index,
            url_path,
        });
    }
    // A file named with a trailing slash would break its relative links; sockets, FIFOs
    // and devices are never content.
    if !meta.is_file() || request.trailing_slash {
        return Err(OriginError::NotFound);
    }
    Ok(Resolved::File {
        path,
        canonical,
        url_path: request.decoded(),
    })
}

/// Whether `path` (already canonical) is a regular file.
pub(crate) async fn is_file(path: &Path) -> bool {
    tokio::fs::metadata(path)
        .await
        .is_ok_and(|meta| meta.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(raw: &str) -> &'static str {
        match RequestPath::parse(raw) {
            Err(OriginError::BadPath(why)) => why,
            other => panic!("{raw}: expected BadPath, got {other:?}"),
        }
    }

    #[test]
    fn decodes_segments_and_skips_empty_and_dot() {
        let path = RequestPath::parse("/a%20b//./c.txt").unwrap();
        assert_eq!(path.segments, ["a b", "c.txt"]);
        assert!(!path.trailing_slash);
        assert_eq!(path.decoded(), "/a b/c.txt");
        assert_eq!(RequestPath::parse("/").unwrap().decoded(), "/");
        assert_eq!(RequestPath::parse("/docs/").unwrap().decoded(), "/docs/");
        assert_eq!(RequestPath::parse("/caf%C3%A9").unwrap().decoded(), "/café");
    }

    #[test]
    fn refuses_traversal_in_every_spelling() {
        assert_eq!(bad("/.."), "'..' segment");
        assert_eq!(bad("/a/../../etc/passwd"), "'..' segment");
        assert_eq!(bad("/%2e%2e/etc/passwd"), "'..' segment");
        assert_eq!(bad("/.%2E/x"), "'..' segment");
        assert_eq!(bad("/a/..%2fb"), "encoded slash (%2F)");
        assert_eq!(bad("/a%2Fb"), "encoded slash (%2F)");
        assert_eq!(bad("/a%5cb"), "backslash");
        assert_eq!(bad("/a\\b"), "backslash");
        assert_eq!(bad("/a%00.html"), "NUL byte");
        assert_eq!(bad("/%ff"), "not valid UTF-8");
        assert_eq!(bad("*"), "path must start with /");
        assert_eq!(bad(""), "path must start with /");
    }

    #[test]
    fn names_that_only_look_like_traversal_are_fine() {
        let path = RequestPath::parse("/..a/b../...").unwrap();
        assert_eq!(path.segments, ["..a", "b..", "..."]);
        // A malformed escape is kept literally rather than refused.
        assert_eq!(RequestPath::parse("/100%").unwrap().decoded(), "/100%");
    }

    #[test]
    fn directory_location_is_reencoded_and_keeps_the_query() {
        let path = RequestPath::parse("//evil.com/a%20b").unwrap();
        assert_eq!(path.directory_location(Some("x=1")), "/evil.com/a%20b/?x=1");
        assert_eq!(
            RequestPath::parse("/").unwrap().directory_location(None),
            "/"
        );
    }

    #[tokio::test]
    async fn resolves_files_directories_and_refuses_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("docs")).unwrap();
        std::fs::create_dir_all(root.join("empty")).unwrap();
        std::fs::write(root.join("docs/index.html"), "i").unwrap();
        std::fs::write(root.join("a.txt"), "a").unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("out")).unwrap();
        std::os::unix::fs::symlink(root.join("a.txt"), root.join("alias.txt")).unwrap();

        let document_root = DocumentRoot::new(root.clone(), DotPaths::default());
        let resolve = |raw: &str| {
            let root = document_root.clone();
            let request = RequestPath::parse(raw).unwrap();
            async move { resolve(&root, &request, None).await }
        };
        assert_eq!(
            resolve("/a.txt").await.unwrap(),
            Resolved::File {
                path: root.join("a.txt"),
                canonical: root.join("a.txt"),
                url_path: "/a.txt".into()
            }
        );
        assert_eq!(
            resolve("/docs/").await.unwrap(),
            Resolved::File {
                path: root.join("docs/index.html"),
                canonical: root.join("docs/index.html"),
                url_path: "/docs/index.html".into()
            }
        );
        assert_eq!(
            resolve("/docs").await.unwrap(),
            Resolved::Redirect("/docs/".into())
        );
        match resolve("/alias.txt").await.unwrap() {
            Resolved::File {
                path, canonical, ..
            } => {
                assert_eq!(path, root.join("alias.txt"));
                assert_eq!(canonical, root.join("a.txt"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            resolve("/empty/").await,
            Err(OriginError::NotFound)
        ));
        assert!(matches!(
            resolve("/a.txt/").await,
            Err(OriginError::NotFound)
        ));
        assert!(matches!(
            resolve("/missing").await,
            Err(OriginError::NotFound)
        ));
        assert!(matches!(
            resolve("/out/secret").await,
            Err(OriginError::NotFound)
        ));
        assert!(matches!(resolve("/out/").await, Err(OriginError::NotFound)));
    }

    #[tokio::test]
    async fn dot_names_asked_for_or_resolved_to_are_not_found_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        for (name, content) in [
            (".env", "env"),
            (".git/config", "git"),
            ("a/.secret/x", "x"),
            (".well-known/security.txt", "sec"),
            (".well-known/index.html", "wk"),
            (".well-known/.git/config", "nested"),
            ("plain.txt", "plain"),
        ] {
            let path = root.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        std::os::unix::fs::symlink(root.join(".git"), root.join("public-git")).unwrap();
        std::os::unix::fs::symlink(root.join("plain.txt"), root.join(".alias")).unwrap();
        std::os::unix::fs::symlink(root.join(".well-known"), root.join("wk")).unwrap();

        let mut config = crate::config::OriginConfig::new(&root);
        let resolves = |config: &crate::config::OriginConfig, raw: &str| {
            let root = DocumentRoot::new(root.clone(), DotPaths::compile(config).unwrap());
            let request = RequestPath::parse(raw).unwrap();
            async move { resolve(&root, &request, None).await.ok() }
        };
        for raw in [
            "/.env",
            "/%2eenv",
            "/.git/config",
            "/.%67it/config",
            "/.git",
            "/.git/",
            "/a/.secret/x",
            "/.well-known/security.txt",
            "/public-git/config",
            "/.alias",
            "/wk/security.txt",
        ] {
            assert_eq!(resolves(&config, raw).await, None, "{raw}");
        }
        assert!(resolves(&config, "/plain.txt").await.is_some());

        config.allow_dot_paths = vec!["/.well-known/".into()];
        for raw in ["/.well-known/security.txt", "/%2ewell-known/security.txt"] {
            let Some(Resolved::File { canonical, .. }) = resolves(&config, raw).await else {
                panic!("{raw} not served");
            };
            assert_eq!(canonical, root.join(".well-known/security.txt"));
        }
        assert_eq!(
            resolves(&config, "/.well-known").await,
            Some(Resolved::Redirect("/.well-known/".into()))
        );
        assert!(resolves(&config, "/.well-known/").await.is_some());
        assert!(
            resolves(&config, "/wk/security.txt").await.is_some(),
            "an allowed target may be reached through any name"
        );
        assert_eq!(resolves(&config, "/.well-known/.git/config").await, None);
        assert_eq!(resolves(&config, "/.env").await, None);
        assert_eq!(resolves(&config, "/public-git/config").await, None);
    }

    #[tokio::test]
    async fn a_dot_named_root_is_not_itself_hidden() {
        let parent = tempfile::tempdir().unwrap();
        let root = parent.path().canonicalize().unwrap().join(".site");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("a.txt"), "a").unwrap();
        let document_root = DocumentRoot::new(root.clone(), DotPaths::default());
        assert_eq!(
            document_root.canonical(&root.join("a.txt")).await,
            Some(root.join("a.txt"))
        );
    }
}
