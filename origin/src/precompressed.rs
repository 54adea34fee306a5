//! Precompressed siblings (`file.br`, `file.gz`) and the `Accept-Encoding` negotiation that picks one.

use std::path::{Path, PathBuf};

use crate::path::{DocumentRoot, is_file};

/// The content coding of the bytes actually sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Identity,
    Brotli,
    Gzip,
}

impl Encoding {
    /// The `Content-Encoding` token, if any.
    pub(crate) fn as_str(self) -> Option<&'static str> {
        match self {
            Encoding::Identity => None,
            Encoding::Brotli => Some("br"),
            Encoding::Gzip => Some("gzip"),
        }
    }

    /// Appended to the ETag so each variant validates on its own.
    pub(crate) fn etag_suffix(self) -> &'static str {
        match self {
            Encoding::Identity => "",
            Encoding::Brotli => "-br",
            Encoding::Gzip => "-gz",
        }
    }
}

/// Quality values (in thousandths, 0..=1000) the client gave the codings we can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AcceptEncoding {
    pub(crate) br: u16,
    pub(crate) gzip: u16,
}

impl AcceptEncoding {
    /// Parses an `Accept-Encoding` header (RFC 9110 §12.5.3).
    ///
    /// A missing header is read as "identity only": the RFC allows any coding then, but
    /// clients that send nothing (scripts, `curl` without `--compressed`) rarely decode.
    pub(crate) fn parse(header: Option<&str>) -> Self {
        let mut br = None;
        let mut gzip = None;
        let mut any = None;
        for item in header.unwrap_or("").split(',') {
            let mut params = item.split(';');
            let coding = params.next().unwrap_or("").trim().to_ascii_lowercase();
            if coding.is_empty() {
                continue;
            }
            let mut q = 1000;
            for param in params {
                let Some((name, value)) = param.split_once('=') else {
                    continue;
                };
                if name.trim().eq_ignore_ascii_case("q") {
                    // An unreadable weight is taken as "not acceptable" rather than guessed at.
                    q = parse_qvalue(value.trim()).unwrap_or(0);
                }
            }
            match coding.as_str() {
                "br" => br = Some(q),
                "gzip" | "x-gzip" => gzip = Some(q),
                "*" => any = Some(q),
                _ => {}
            }
        }
        AcceptEncoding {
            br: br.or(any).unwrap_or(0),
            gzip: gzip.or(any).unwrap_or(0),
        }
    }
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`, in thousandths.
fn parse_qvalue(value: &str) -> Option<u16> {
    let (int, frac) = value.split_once('.').unwrap_or((value, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |acc, b| acc * 10 + u16::from(b - b'0'));
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// The precompressed files found next to a requested file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Siblings {
    br: Option<PathBuf>,
    gz: Option<PathBuf>,
}

impl Siblings {
    /// Looks for `<path>.br` and `<path>.gz`, accepting only regular files `root` may serve.
    pub(crate) async fn find(root: &DocumentRoot, path: &Path) -> Self {
        Siblings {
            br: sibling(root, path, "br").await,
            gz: sibling(root, path, "gz").await,
        }
    }

    /// Whether responses for this path vary by `Accept-Encoding`.
    pub(crate) fn any(&self) -> bool {
        self.br.is_some() || self.gz.is_some()
    }

    /// The best variant the client accepts: the highest weight wins, ties go to brotli
    /// (smaller), and identity when neither compressed sibling is acceptable.
    pub(crate) fn choose(&self, accept: AcceptEncoding) -> Option<(Encoding, &Path)> {
        let br = self.br.as_deref().filter(|_| accept.br > 0);
        let gz = self.gz.as_deref().filter(|_| accept.gzip > 0);
        match (br, gz) {
            (Some(_), Some(gz)) if accept.gzip > accept.br => Some((Encoding::Gzip, gz)),
            (Some(br), _) => Some((Encoding::Brotli, br)),
            (None, Some(gz)) => Some((Encoding::Gzip, gz)),
            (None, None) => None,
        }
    }
}

async fn sibling(root: &DocumentRoot, path: &Path, extension: &str) -> Option<PathBuf> {
    let mut name = path.file_name()?.to_os_string();
    name.push(".");
    name.push(extension);
    let candidate = path.with_file_name(name);
    let canonical = root.canonical(&candidate).await?;
    is_file(&canonical).await.then_some(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dot_paths::DotPaths;

    fn accept(header: &str) -> (u16, u16) {
        let parsed = AcceptEncoding::parse(Some(header));
        (parsed.br, parsed.gzip)
    }

    #[test]
    fn accept_encoding_weights() {
        assert_eq!(accept("gzip, deflate, br"), (1000, 1000));
        assert_eq!(accept("gzip;q=0.8, br;q=0.5"), (500, 800));
        assert_eq!(accept("br;q=0"), (0, 0));
        assert_eq!(accept("br;q=0.000, gzip"), (0, 1000));
        assert_eq!(accept("*"), (1000, 1000));
        assert_eq!(accept("*;q=0.1, br;q=0"), (0, 100));
        assert_eq!(accept("GZIP ; Q=1.0"), (0, 1000));
        assert_eq!(accept("x-gzip"), (0, 1000));
        assert_eq!(accept("identity"), (0, 0));
        assert_eq!(accept(""), (0, 0));
        assert_eq!(accept(" , ,;"), (0, 0));
        assert_eq!(
            AcceptEncoding::parse(None),
            AcceptEncoding { br: 0, gzip: 0 }
        );
    }

    #[test]
    fn malformed_weights_are_not_acceptable() {
        assert_eq!(accept("br;q=2"), (0, 0));
        assert_eq!(accept("br;q=1.5"), (0, 0));
        assert_eq!(accept("br;q=0.1234"), (0, 0));
        assert_eq!(accept("br;q=abc, gzip;q=-1"), (0, 0));
        assert_eq!(accept("br;q="), (0, 0));
    }

    #[test]
    fn qvalue_grammar() {
        assert_eq!(parse_qvalue("0"), Some(0));
        assert_eq!(parse_qvalue("0."), Some(0));
        assert_eq!(parse_qvalue("0.5"), Some(500));
        assert_eq!(parse_qvalue("0.05"), Some(50));
        assert_eq!(parse_qvalue("0.999"), Some(999));
        assert_eq!(parse_qvalue("1"), Some(1000));
        assert_eq!(parse_qvalue("1.000"), Some(1000));
        assert_eq!(parse_qvalue("1.001"), None);
        assert_eq!(parse_qvalue(".5"), None);
    }

    #[test]
    fn choice_prefers_brotli_unless_gzip_weighs_more() {
        let siblings = Siblings {
            br: Some("/s/a.js.br".into()),
            gz: Some("/s/a.js.gz".into()),
        };
        let pick = |h: &str| {
            siblings
                .choose(AcceptEncoding::parse(Some(h)))
                .map(|(e, _)| e)
        };
        assert_eq!(pick("gzip, br"), Some(Encoding::Brotli));
        assert_eq!(pick("gzip;q=1, br;q=0.9"), Some(Encoding::Gzip));
        assert_eq!(pick("gzip, br;q=0"), Some(Encoding::Gzip));
        assert_eq!(pick("identity"), None);

        let gz_only = Siblings {
            br: None,
            gz: Some("/s/a.js.gz".into()),
        };
        let (encoding, path) = gz_only
            .choose(AcceptEncoding::parse(Some("br, gzip")))
            .unwrap();
        assert_eq!((encoding, path), (Encoding::Gzip, Path::new("/s/a.js.gz")));
        assert!(gz_only.any());
        assert!(!Siblings::default().any());
    }

    #[tokio::test]
    async fn finds_only_regular_file_siblings_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::write(root.join("a.js"), "a").unwrap();
        std::fs::write(root.join("a.js.gz"), "gz").unwrap();
        std::fs::create_dir(root.join("a.js.br")).unwrap();
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(root.join("b.js"), "b").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("b.js.br")).unwrap();

        let document_root = DocumentRoot::new(root.clone(), DotPaths::default());
        let a = Siblings::find(&document_root, &root.join("a.js")).await;
        assert_eq!(a.gz, Some(root.join("a.js.gz")));
        assert_eq!(a.br, None, "a directory is not a sibling");
        let b = Siblings::find(&document_root, &root.join("b.js")).await;
        assert!(!b.any(), "a symlink out of the root is not a sibling");
        std::fs::write(root.join(".env"), "secret").unwrap();
        std::fs::write(root.join("c.js"), "c").unwrap();
        std::os::unix::fs::symlink(root.join(".env"), root.join("c.js.gz")).unwrap();
        let c = Siblings::find(&document_root, &root.join("c.js")).await;
        assert!(!c.any(), "a symlink to a dot-file is not a sibling");
    }
}
