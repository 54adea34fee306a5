//! The origin over a real socket: status, headers and body bytes as an edge or browser sees them.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use edgecache_origin::{FALLBACK_JS, FALLBACK_JS_PATH, Origin, OriginConfig, TagRule};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// `Last-Modified` of `style.css`, set explicitly so date conditions are exact.
const STYLE_DATE: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
const STYLE_MTIME: u64 = 784_111_777;

struct Site {
    _dir: tempfile::TempDir,
    _outside: tempfile::TempDir,
    origin: Origin,
    addr: SocketAddr,
    client: reqwest::Client,
}

impl Site {
    async fn start() -> Site {
        Site::start_allowing_dot_paths(&[]).await
    }

    async fn start_allowing_dot_paths(allow_dot_paths: &[&str]) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        write_site(dir.path(), outside.path());
        let mut config = OriginConfig::new(dir.path());
        config.tags = vec![
            TagRule::new("/img/**", ["images", "static"]),
            TagRule::new("*.png", ["png", "static"]),
        ];
        config.allow_dot_paths = allow_dot_paths.iter().map(|p| (*p).to_owned()).collect();
        let origin = Origin::new(config).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = origin.router();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Site {
            _dir: dir,
            _outside: outside,
            origin,
            addr,
            client,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut request = self.client.get(self.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        (status, headers, response.bytes().await.unwrap().to_vec())
    }

    async fn head(&self, path: &str) -> (StatusCode, HeaderMap) {
        let response = self.client.head(self.url(path)).send().await.unwrap();
        (response.status(), response.headers().clone())
    }

    /// Sends the request target verbatim, since an HTTP client library would normalise `..`.
    async fn raw_get(&self, target: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(self.addr).await.unwrap();
        let request =
            format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text[9..12].parse().unwrap();
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }
}

const ENV_SECRET: &[u8] = b"DATABASE_PASSWORD=env-secret";
const GIT_SECRET: &[u8] = b"[remote] url = https://token:git-secret@example.com";
const HIDDEN_SECRET: &[u8] = b"hidden-dir-secret";
const SECURITY_TXT: &[u8] = b"Contact: mailto:security@example.com\n";

fn big_content() -> Vec<u8> {
    (0..300_001u32).map(|i| (i % 251) as u8).collect()
}

fn write_site(root: &Path, outside: &Path) {
    let write = |name: &str, content: &[u8]| {
        let path = root.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    };
    write("index.html", b"<h1>home</h1>");
    write("docs/index.html", b"<h1>docs</h1>");
    write("app.3f9c2a1b.js", b"console.log('app');");
    write("style.css", b"body { color: red }");
    write("img/logo.png", b"\x89PNG fake image");
    write("big.bin", &big_content());
    write("lib.js", b"identity bytes of lib.js");
    write("lib.js.br", b"BROTLI");
    write("lib.js.gz", b"GZIP!");
    write("digits.txt", b"0123456789");
    let style = std::fs::File::options()
        .write(true)
        .open(root.join("style.css"))
        .unwrap();
    style
        .set_modified(UNIX_EPOCH + Duration::from_secs(STYLE_MTIME))
        .unwrap();
    write(".env", ENV_SECRET);
    write(".git/config", GIT_SECRET);
    write(".htpasswd", b"admin:$apr1$htpasswd-secret");
    write("sub/.hidden/file", HIDDEN_SECRET);
    write(".well-known/security.txt", SECURITY_TXT);
    write(".well-known/.git/config", GIT_SECRET);
    // Undotted names for dotted targets: what is served is decided by the resolved name too.
    std::os::unix::fs::symlink(root.join(".git"), root.join("public-git")).unwrap();
    std::os::unix::fs::symlink(root.join(".well-known"), root.join("wk")).unwrap();
    std::os::unix::fs::symlink(root.join("digits.txt"), root.join(".digits-alias")).unwrap();
    std::fs::write(outside.join("secret.txt"), b"top secret").unwrap();
    std::os::unix::fs::symlink(outside.join("secret.txt"), root.join("leak.txt")).unwrap();
    std::os::unix::fs::symlink(outside, root.join("leakdir")).unwrap();
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("missing {name}"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn files_get_body_and_the_headers_of_their_cache_rule() {
    let site = Site::start().await;

    let (status, headers, body) = site.get("/app.3f9c2a1b.js", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"console.log('app');");
    assert_eq!(
        header(&headers, "cache-control"),
        "public, max-age=31536000, immutable"
    );
    assert!(header(&headers, "content-type").ends_with("javascript; charset=utf-8"));
    assert_eq!(header(&headers, "content-length"), "19");
    assert_eq!(header(&headers, "accept-ranges"), "bytes");
    let etag = header(&headers, "etag");
    assert!(etag.starts_with("\"13-") && etag.ends_with('"'), "{etag}");
    assert!(headers.contains_key("last-modified") && headers.contains_key("date"));
    assert!(!headers.contains_key("vary") && !headers.contains_key("surrogate-key"));

    let (status, headers, body) = site.get("/", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"<h1>home</h1>");
    assert_eq!(header(&headers, "cache-control"), "public, max-age=60");
    assert_eq!(header(&headers, "content-type"), "text/html; charset=utf-8");

    let (_, headers, body) = site.get("/docs/", &[]).await;
    assert_eq!(body, b"<h1>docs</h1>");
    assert_eq!(header(&headers, "cache-control"), "public, max-age=60");

    let (_, headers, body) = site.get("/style.css", &[]).await;
    assert_eq!(body, b"body { color: red }");
    assert_eq!(header(&headers, "cache-control"), "public, max-age=3600");
    assert_eq!(header(&headers, "content-type"), "text/css; charset=utf-8");
    assert_eq!(header(&headers, "last-modified"), STYLE_DATE);
}

#[tokio::test]
async fn large_files_stream_intact() {
    let site = Site::start().await;
    let (status, headers, body) = site.get("/big.bin", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "content-length"), "300001");
    assert_eq!(header(&headers, "content-type"), "application/octet-stream");
    assert!(body == big_content(), "body differs");
}

#[tokio::test]
async fn directory_without_slash_redirects_and_missing_is_404() {
    let site = Site::start().await;
    let (status, headers, _) = site.get("/docs?x=1", &[]).await;
    assert_eq!(status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(header(&headers, "location"), "/docs/?x=1");

    let (status, headers, body) = site.get("/nope.html", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, b"not found\n");
    assert_eq!(
        header(&headers, "content-type"),
        "text/plain; charset=utf-8"
    );
    assert_eq!(
        site.get("/img/", &[]).await.0,
        StatusCode::NOT_FOUND,
        "no listing"
    );
}

#[tokio::test]
async fn if_none_match_and_if_modified_since_give_304() {
    let site = Site::start().await;
    let (_, headers, _) = site.get("/style.css", &[]).await;
    let etag = header(&headers, "etag").to_owned();

    let (status, headers, body) = site.get("/style.css", &[("if-none-match", &etag)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());
    assert_eq!(header(&headers, "etag"), etag);
    assert_eq!(header(&headers, "last-modified"), STYLE_DATE);
    assert_eq!(header(&headers, "cache-control"), "public, max-age=3600");

    let weak_list = format!("\"other\", W/{etag}");
    assert_eq!(
        site.get("/style.css", &[("if-none-match", &weak_list)])
            .await
            .0,
        StatusCode::NOT_MODIFIED
    );
    assert_eq!(
        site.get("/style.css", &[("if-none-match", "\"other\"")])
            .await
            .0,
        StatusCode::OK
    );

    let (status, _, body) = site
        .get("/style.css", &[("if-modified-since", STYLE_DATE)])
        .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());
    let earlier = "Sun, 06 Nov 1994 08:49:36 GMT";
    let (status, _, body) = site
        .get("/style.css", &[("if-modified-since", earlier)])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"body { color: red }");
    // If-None-Match takes precedence over If-Modified-Since.
    let both = [
        ("if-none-match", "\"other\""),
        ("if-modified-since", STYLE_DATE),
    ];
    assert_eq!(site.get("/style.css", &both).await.0, StatusCode::OK);
}

#[tokio::test]
async fn if_match_mismatch_is_412() {
    let site = Site::start().await;
    let (status, headers, body) = site.get("/style.css", &[("if-match", "\"stale\"")]).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(body, b"precondition failed\n");
    assert!(!headers.contains_key("cache-control"));

    let etag = header(&site.get("/style.css", &[]).await.1, "etag").to_owned();
    assert_eq!(
        site.get("/style.css", &[("if-match", &etag)]).await.0,
        StatusCode::OK
    );
    let earlier = "Sun, 06 Nov 1994 08:49:36 GMT";
    assert_eq!(
        site.get("/style.css", &[("if-unmodified-since", earlier)])
            .await
            .0,
        StatusCode::PRECONDITION_FAILED
    );
}

#[tokio::test]
async fn single_range_is_206_with_those_bytes() {
    let site = Site::start().await;
    let (status, headers, body) = site.get("/digits.txt", &[("range", "bytes=2-5")]).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, b"2345");
    assert_eq!(header(&headers, "content-range"), "bytes 2-5/10");
    assert_eq!(header(&headers, "content-length"), "4");
    assert_eq!(
        header(&headers, "content-type"),
        "text/plain; charset=utf-8"
    );

    let (_, headers, body) = site.get("/digits.txt", &[("range", "bytes=-3")]).await;
    assert_eq!(body, b"789");
    assert_eq!(header(&headers, "content-range"), "bytes 7-9/10");

    // Crosses read-chunk boundaries of a large file.
    let (status, _, body) = site
        .get("/big.bin", &[("range", "bytes=65530-200000")])
        .await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert!(body == big_content()[65530..=200000], "range bytes differ");
}

/// Splits a `multipart/byteranges` body into (headers, data) per part.
fn parse_multipart(body: &[u8], boundary: &str) -> Vec<(String, Vec<u8>)> {
    let delimiter = format!("\r\n--{boundary}");
    let mut text = b"\r\n".to_vec();
    text.extend_from_slice(body);
    let mut pieces = Vec::new();
    let mut rest = &text[..];
    while let Some(at) = find(rest, delimiter.as_bytes()) {
        pieces.push(&rest[..at]);
        rest = &rest[at + delimiter.len()..];
    }
    assert_eq!(rest, b"--\r\n", "closing delimiter");
    assert!(pieces[0].is_empty(), "no preamble");
    pieces[1..]
        .iter()
        .map(|piece| {
            let piece = piece.strip_prefix(b"\r\n").expect("CRLF after delimiter");
            let split = find(piece, b"\r\n\r\n").expect("blank line after part headers");
            let head = String::from_utf8(piece[..split].to_vec()).unwrap();
            (head, piece[split + 4..].to_vec())
        })
        .collect()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test]
async fn several_ranges_are_a_multipart_206() {
    let site = Site::start().await;
    let (status, headers, body) = site.get("/digits.txt", &[("range", "bytes=0-1, 6-")]).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    let content_type = header(&headers, "content-type");
    let boundary = content_type
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap_or_else(|| panic!("{content_type}"));
    assert_eq!(header(&headers, "content-length"), body.len().to_string());
    assert!(!headers.contains_key("content-range"));

    let parts = parse_multipart(&body, boundary);
    assert_eq!(parts.len(), 2);
    assert_eq!(
        parts[0].0,
        "Content-Type: text/plain; charset=utf-8\r\nContent-Range: bytes 0-1/10"
    );
    assert_eq!(parts[0].1, b"01");
    assert_eq!(
        parts[1].0,
        "Content-Type: text/plain; charset=utf-8\r\nContent-Range: bytes 6-9/10"
    );
    assert_eq!(parts[1].1, b"6789");
}

#[tokio::test]
async fn unsatisfiable_range_is_416_and_invalid_range_is_ignored() {
    let site = Site::start().await;
    let (status, headers, body) = site.get("/digits.txt", &[("range", "bytes=10-")]).await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&headers, "content-range"), "bytes */10");
    assert_eq!(body, b"range not satisfiable\n");

    let (status, headers, body) = site.get("/digits.txt", &[("range", "bytes=5-2")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"0123456789");
    assert!(!headers.contains_key("content-range"));
}

#[tokio::test]
async fn if_range_mismatch_sends_the_whole_file() {
    let site = Site::start().await;
    let etag = header(&site.get("/digits.txt", &[]).await.1, "etag").to_owned();
    let stale = [("range", "bytes=0-1"), ("if-range", "\"stale\"")];
    let (status, _, body) = site.get("/digits.txt", &stale).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"0123456789");

    let current = [("range", "bytes=0-1"), ("if-range", etag.as_str())];
    let (status, _, body) = site.get("/digits.txt", &current).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, b"01");

    let by_date = [("range", "bytes=0-3"), ("if-range", STYLE_DATE)];
    assert_eq!(site.get("/style.css", &by_date).await.2, b"body");
}

#[tokio::test]
async fn precompressed_siblings_follow_accept_encoding_with_vary() {
    let site = Site::start().await;
    let (status, headers, body) = site
        .get("/lib.js", &[("accept-encoding", "gzip, br")])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"BROTLI");
    assert_eq!(header(&headers, "content-encoding"), "br");
    assert_eq!(header(&headers, "vary"), "Accept-Encoding");
    assert!(header(&headers, "content-type").ends_with("javascript; charset=utf-8"));
    assert_eq!(header(&headers, "content-length"), "6");
    let br_etag = header(&headers, "etag").to_owned();
    assert!(br_etag.ends_with("-br\""), "{br_etag}");

    let (_, headers, body) = site
        .get("/lib.js", &[("accept-encoding", "gzip, br;q=0")])
        .await;
    assert_eq!(body, b"GZIP!");
    assert_eq!(header(&headers, "content-encoding"), "gzip");
    assert_eq!(header(&headers, "vary"), "Accept-Encoding");
    assert!(header(&headers, "etag").ends_with("-gz\""));

    let (_, headers, body) = site.get("/lib.js", &[]).await;
    assert_eq!(body, b"identity bytes of lib.js");
    assert!(!headers.contains_key("content-encoding"));
    assert_eq!(header(&headers, "vary"), "Accept-Encoding");

    let revalidate = [
        ("accept-encoding", "br"),
        ("if-none-match", br_etag.as_str()),
    ];
    let (status, headers, _) = site.get("/lib.js", &revalidate).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!(header(&headers, "vary"), "Accept-Encoding");

    let ranged = [("accept-encoding", "br"), ("range", "bytes=0-1")];
    let (status, headers, body) = site.get("/lib.js", &ranged).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, b"BR");
    assert_eq!(header(&headers, "content-encoding"), "br");
    assert_eq!(header(&headers, "vary"), "Accept-Encoding");

    let (_, headers, body) = site.get("/lib.js.br", &[("accept-encoding", "br")]).await;
    assert_eq!(
        body, b"BROTLI",
        "a sibling asked for by name is a plain file"
    );
    assert!(!headers.contains_key("content-encoding"));
}

#[tokio::test]
async fn traversal_and_encoded_separators_are_refused() {
    let site = Site::start().await;
    let (status, body) = site.raw_get("/../etc/passwd").await;
    assert_eq!(
        (status, body.as_str()),
        (400, "bad request path: '..' segment\n")
    );
    let (status, body) = site.raw_get("/%2e%2e/%2E%2E/etc/passwd").await;
    assert_eq!(
        (status, body.as_str()),
        (400, "bad request path: '..' segment\n")
    );
    assert_eq!(site.raw_get("/docs/../index.html").await.0, 400);

    let (status, _, body) = site.get("/docs%2Findex.html", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, b"bad request path: encoded slash (%2F)\n");
    let (status, _, body) = site.get("/docs%5cindex.html", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, b"bad request path: backslash\n");
    let (status, _, body) = site.get("/index.html%00.png", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, b"bad request path: NUL byte\n");
}

#[tokio::test]
async fn symlinks_out_of_the_root_are_404() {
    let site = Site::start().await;
    let (status, _, body) = site.get("/leak.txt", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, b"not found\n");
    assert_eq!(
        site.get("/leakdir/secret.txt", &[]).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn head_has_length_but_no_body() {
    let site = Site::start().await;
    let response = site.client.head(site.url("/big.bin")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(response.headers(), "content-length"), "300001");
    assert!(response.headers().contains_key("etag"));
    assert!(response.bytes().await.unwrap().is_empty());

    let ranged = site
        .client
        .head(site.url("/digits.txt"))
        .header("range", "bytes=0-1");
    let response = ranged.send().await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "ranges apply to GET only"
    );
    assert_eq!(header(response.headers(), "content-length"), "10");
}

#[tokio::test]
async fn other_methods_are_405_with_allow() {
    let site = Site::start().await;
    for method in [
        reqwest::Method::POST,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ] {
        let response = site
            .client
            .request(method.clone(), site.url("/index.html"))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method}"
        );
        assert_eq!(header(response.headers(), "allow"), "GET, HEAD");
    }
}

#[tokio::test]
async fn tag_rules_set_surrogate_key() {
    let site = Site::start().await;
    let (status, headers, _) = site.get("/img/logo.png", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "surrogate-key"), "images static png");
    assert_eq!(header(&headers, "content-type"), "image/png");
    let etag = header(&headers, "etag").to_owned();
    let (status, headers, _) = site.get("/img/logo.png", &[("if-none-match", &etag)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!(header(&headers, "surrogate-key"), "images static png");
}

#[tokio::test]
async fn requests_counts_every_request() {
    let site = Site::start().await;
    assert_eq!(site.origin.requests(), 0);
    site.get("/index.html", &[]).await;
    site.get("/missing", &[]).await;
    site.client.post(site.url("/")).send().await.unwrap();
    site.raw_get("/../x").await;
    assert_eq!(site.origin.requests(), 4);
    assert_eq!(
        site.origin.clone().requests(),
        4,
        "clones share the counter"
    );
}

#[tokio::test]
async fn run_serves_until_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "up").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = OriginConfig::new(dir.path());
    let server = tokio::spawn(edgecache_origin::run(listener, config, async {
        stopped.await.ok();
    }));

    let body = reqwest::get(format!("http://{addr}/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "up");
    stop.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn run_refuses_a_bad_config_naming_the_key() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = OriginConfig::new("/definitely/not/a/dir");
    let err = edgecache_origin::run(listener, config, std::future::pending())
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("origin.root: "), "{err}");
}

/// The exact answer for a file that does not exist, which a hidden one must match.
async fn missing_file_answer(site: &Site) -> (u16, String) {
    let answer = site.raw_get("/no-such-file").await;
    assert_eq!(answer, (404, "not found\n".to_owned()));
    answer
}

#[tokio::test]
async fn dot_files_and_directories_are_404_like_a_missing_file() {
    let site = Site::start().await;
    let missing = missing_file_answer(&site).await;
    for target in [
        "/.env",
        "/%2eenv",
        "/%2Eenv",
        "/.git/config",
        "/.%67it/config",
        "/%2egit/config",
        "/.git",
        "/.git/",
        "/.htpasswd",
        "/sub/.hidden/file",
        "/sub/%2ehidden/file",
        "/sub/.hidden/",
        "/.well-known/security.txt",
    ] {
        let (status, body) = site.raw_get(target).await;
        assert_eq!((status, &body), (missing.0, &missing.1), "{target}");
        for secret in [ENV_SECRET, GIT_SECRET, HIDDEN_SECRET, b"htpasswd-secret"] {
            let secret = String::from_utf8_lossy(secret);
            assert!(!body.contains(&*secret), "{target} leaked {secret}");
        }
    }
    // Through the client too, so nothing depends on the raw request line.
    let (status, headers, body) = site.get("/.env", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, b"not found\n");
    assert!(!headers.contains_key("etag") && !headers.contains_key("last-modified"));
}

#[tokio::test]
async fn head_of_a_dot_file_is_404_without_its_length() {
    let site = Site::start().await;
    let (missing_status, missing_headers) = site.head("/no-such-file").await;
    for path in ["/.env", "/%2eenv", "/.git/config", "/sub/.hidden/file"] {
        let (status, headers) = site.head(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(
            headers.get("content-length"),
            missing_headers.get("content-length"),
            "{path}: length must be the 404's, not the file's"
        );
    }
    assert_eq!(missing_status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_dot_directory_behind_an_undotted_symlink_is_404() {
    let site = Site::start().await;
    let (status, _, body) = site.get("/public-git/config", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, b"not found\n");
    assert_eq!(site.get("/public-git/", &[]).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        site.get("/public-git", &[]).await.0,
        StatusCode::NOT_FOUND,
        "not a redirect that would reveal a directory"
    );
    assert_eq!(
        site.get("/.digits-alias", &[]).await.0,
        StatusCode::NOT_FOUND,
        "a dotted name is refused even when its target is not"
    );
    assert_eq!(site.get("/digits.txt", &[]).await.2, b"0123456789");
}

#[tokio::test]
async fn well_known_is_404_unless_allowed() {
    let site = Site::start().await;
    let (status, _, body) = site.get("/.well-known/security.txt", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, b"not found\n");
    assert_eq!(
        site.get("/wk/security.txt", &[]).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn allowed_dot_prefix_is_served_with_its_bytes() {
    let site = Site::start_allowing_dot_paths(&["/.well-known/"]).await;
    let (status, headers, body) = site.get("/.well-known/security.txt", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, SECURITY_TXT);
    assert_eq!(
        header(&headers, "content-type"),
        "text/plain; charset=utf-8"
    );
    let (status, headers) = site.head("/.well-known/security.txt").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        header(&headers, "content-length"),
        SECURITY_TXT.len().to_string()
    );
    let (status, body) = site.raw_get("/%2ewell-known/security.txt").await;
    assert_eq!((status, body.as_bytes()), (200, SECURITY_TXT));
    let (status, _, body) = site.get("/wk/security.txt", &[]).await;
    assert_eq!(
        (status, body.as_slice()),
        (StatusCode::OK, SECURITY_TXT),
        "an allowed file may be reached through an undotted symlink"
    );

    // The allowance names one directory; every other dot-path stays hidden.
    let missing = missing_file_answer(&site).await;
    for target in [
        "/.well-known/.git/config",
        "/.env",
        "/.git/config",
        "/sub/.hidden/file",
        "/public-git/config",
    ] {
        assert_eq!(site.raw_get(target).await, missing, "{target}");
    }
}

#[tokio::test]
async fn fallback_script_is_served_though_its_path_is_dotted() {
    let site = Site::start().await;
    let (status, headers, body) = site.get(FALLBACK_JS_PATH, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, FALLBACK_JS.as_bytes());
    assert_eq!(
        header(&headers, "content-type"),
        "application/javascript; charset=utf-8"
    );
    let (status, headers) = site.head(FALLBACK_JS_PATH).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        header(&headers, "content-length"),
        FALLBACK_JS.len().to_string()
    );
}

#[tokio::test]
async fn a_bad_allow_dot_path_is_a_config_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = OriginConfig::new(dir.path());
    config.allow_dot_paths = vec!["/.well-known/".into(), ".well-known/".into()];
    let err = Origin::new(config).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"origin.allow_dot_paths[1]: ".well-known/" must start with /"#
    );
}
