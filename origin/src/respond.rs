//! Turns a resolved file into its response: variant choice, preconditions, ranges and headers.

use std::fs::Metadata;
use std::io;
use std::path::Path;

use axum::body::Body;
use axum::response::Response;
use http::header::{
    ACCEPT_ENCODING, ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE,
};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use tokio::fs::File;

use crate::body::{self, Segment};
use crate::conditional::{self, Precondition};
use crate::error::OriginError;
use crate::headers::{Representation, Validators, content_type};
use crate::multipart::Multipart;
use crate::path::DocumentRoot;
use crate::precompressed::{AcceptEncoding, Encoding, Siblings};
use crate::range::{self, RangePlan, range_len};
use crate::rules::Rules;

/// A file that passed path resolution, with everything needed to answer for it.
#[derive(Debug)]
pub(crate) struct FileRequest<'a> {
    pub(crate) method: &'a Method,
    pub(crate) headers: &'a HeaderMap,
    /// Root joined with the request path, where precompressed siblings live.
    pub(crate) path: &'a Path,
    /// The file itself, known to be inside the root.
    pub(crate) canonical: &'a Path,
    /// The decoded URL path the rules and the content type are chosen by.
    pub(crate) url_path: &'a str,
}

/// Answers a GET or HEAD for one file with 200, 206, 304, 412 or 416.
pub(crate) async fn respond(
    root: &DocumentRoot,
    rules: &Rules,
    request: FileRequest<'_>,
) -> Result<Response, OriginError> {
    let siblings = Siblings::find(root, request.path).await;
    let accept = AcceptEncoding::parse(
        request
            .headers
            .get(ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok()),
    );
    let (encoding, file, meta) = open_variant(request.canonical, siblings.choose(accept)).await?;
    let rep = Representation {
        len: meta.len(),
        content_type: content_type(request.url_path),
        encoding,
        validators: Validators::new(meta.len(), meta.modified().ok(), encoding),
        cache_control: rules.cache_control(request.url_path).cloned(),
        surrogate_key: rules.surrogate_key(request.url_path),
        vary: siblings.any(),
    };

    let precondition = conditional::evaluate(request.headers, &rep.validators);
    let plan = match precondition {
        Precondition::Proceed
            if request.method == Method::GET
                && conditional::if_range_allows(request.headers, &rep.validators) =>
        {
            range::plan(request.headers.get(RANGE), rep.len)
        }
        _ => RangePlan::Full,
    };
    tracing::debug!(
        encoding = encoding.as_str().unwrap_or("identity"),
        precondition = precondition.as_str(),
        range = plan.as_str(),
        "file"
    );

    let mut response = match precondition {
        Precondition::Failed => precondition_failed(&rep),
        Precondition::NotModified => not_modified(&rep),
        Precondition::Proceed => match plan {
            RangePlan::Full => full(&rep, file),
            RangePlan::Partial(ranges) => partial(&rep, file, &ranges),
            RangePlan::Unsatisfiable => range_not_satisfiable(&rep),
        },
    };
    if request.method == Method::HEAD {
        // Content-Length stays: a HEAD reports what the GET would send.
        *response.body_mut() = Body::empty();
    }
    Ok(response)
}

/// Opens the chosen precompressed sibling, falling back to the file itself if the sibling
/// cannot be read, since identity is always an acceptable answer.
async fn open_variant(
    canonical: &Path,
    chosen: Option<(Encoding, &Path)>,
) -> Result<(Encoding, File, Metadata), OriginError> {
    if let Some((encoding, sibling)) = chosen {
        match open(sibling).await {
            Ok((file, meta)) => return Ok((encoding, file, meta)),
            Err(err) => tracing::warn!(
                path = %sibling.display(),
                error = %err,
                "precompressed sibling unreadable, serving identity"
            ),
        }
    }
    match open(canonical).await {
        Ok((file, meta)) => Ok((Encoding::Identity, file, meta)),
        // Deleted between resolution and open.
        Err(err) if err.kind() == io::ErrorKind::NotFound => Err(OriginError::NotFound),
        Err(err) => Err(OriginError::io(canonical, err)),
    }
}

/// Opens `path` and takes its metadata from the open handle, so length and validators
/// describe the very bytes that will be read.
async fn open(path: &Path) -> io::Result<(File, Metadata)> {
    let file = File::open(path).await?;
    let meta = file.metadata().await?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "not a regular file",
        ));
    }
    Ok((file, meta))
}

fn full(rep: &Representation, file: File) -> Response {
    let mut response = Response::new(body::whole(file, rep.len));
    let headers = response.headers_mut();
    rep.insert_content_headers(headers);
    headers.insert(CONTENT_LENGTH, HeaderValue::from(rep.len));
    response
}

fn partial(rep: &Representation, file: File, ranges: &[std::ops::RangeInclusive<u64>]) -> Response {
    let (body, length, content_range, multipart_type) = match ranges {
        [range] => {
            let segment = Segment::File {
                start: *range.start(),
                len: range_len(range),
            };
            let content_range = HeaderValue::from_str(&range::content_range(range, rep.len)).ok();
            (
                body::stream(file, vec![segment]),
                range_len(range),
                content_range,
                None,
            )
        }
        _ => {
            let part_type = rep
                .content_type
                .to_str()
                .unwrap_or("application/octet-stream");
            let multipart = Multipart::new(ranges, part_type, rep.len);
            let (length, content_type) = (multipart.len(), multipart.content_type());
            (
                body::stream(file, multipart.into_segments()),
                length,
                None,
                Some(content_type),
            )
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    let headers = response.headers_mut();
    rep.insert_content_headers(headers);
    headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
    if let Some(content_range) = content_range {
        headers.insert(CONTENT_RANGE, content_range);
    }
    if let Some(content_type) = multipart_type {
        headers.insert(CONTENT_TYPE, content_type);
    }
    response
}

/// `304`: just what a cache needs to refresh its stored copy.
fn not_modified(rep: &Representation) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    rep.insert_cache_headers(response.headers_mut());
    response
}

/// `412` carries no `Cache-Control`: the rules describe the file, and a cache must not
/// store this refusal as if it were the file.
fn precondition_failed(rep: &Representation) -> Response {
    let mut response = text(StatusCode::PRECONDITION_FAILED, "precondition failed\n");
    rep.insert_vary(response.headers_mut());
    response
}

/// `416` names the real length so the client can ask again; no `Cache-Control`, as for 412.
fn range_not_satisfiable(rep: &Representation) -> Response {
    let mut response = text(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable\n");
    let headers = response.headers_mut();
    headers.insert(CONTENT_RANGE, range::unsatisfied_range(rep.len));
    headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    rep.insert_vary(headers);
    response
}

fn text(status: StatusCode, body: &'static str) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    response
}

#[cfg(test)]
mod tests {
    use http::header::{CACHE_CONTROL, CONTENT_ENCODING, ETAG, IF_NONE_MATCH, VARY};

    use super::*;
    use crate::config::OriginConfig;
    use crate::dot_paths::DotPaths;

    struct Fixture {
        _dir: tempfile::TempDir,
        root: std::path::PathBuf,
        document_root: DocumentRoot,
        rules: Rules,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::write(root.join("a.txt"), "hello world").unwrap();
        std::fs::write(root.join("a.txt.gz"), "GZ").unwrap();
        let rules = Rules::compile(&OriginConfig::new(&root)).unwrap();
        Fixture {
            _dir: dir,
            document_root: DocumentRoot::new(root.clone(), DotPaths::default()),
            root,
            rules,
        }
    }

    async fn call(fx: &Fixture, method: Method, pairs: &[(http::HeaderName, &str)]) -> Response {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        let path = fx.root.join("a.txt");
        let request = FileRequest {
            method: &method,
            headers: &headers,
            path: &path,
            canonical: &path,
            url_path: "/a.txt",
        };
        respond(&fx.document_root, &fx.rules, request)
            .await
            .unwrap()
    }

    async fn body(response: Response) -> Vec<u8> {
        axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec()
    }

    #[tokio::test]
    async fn full_response_has_every_header() {
        let fx = fixture();
        let response = call(&fx, Method::GET, &[]).await;
        assert_eq!(response.status(), StatusCode::OK);
        let h = response.headers();
        assert_eq!(h[CONTENT_TYPE], "text/plain; charset=utf-8");
        assert_eq!(h[CONTENT_LENGTH], "11");
        assert_eq!(h[CACHE_CONTROL], "public, max-age=3600");
        assert_eq!(h[ACCEPT_RANGES], "bytes");
        assert_eq!(h[VARY], "Accept-Encoding");
        assert!(h[ETAG].to_str().unwrap().starts_with("\"b-"));
        assert!(!h.contains_key(CONTENT_ENCODING));
        assert_eq!(body(response).await, b"hello world");
    }

    #[tokio::test]
    async fn head_keeps_headers_and_drops_the_body() {
        let fx = fixture();
        let response = call(&fx, Method::HEAD, &[(RANGE, "bytes=0-1")]).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[CONTENT_LENGTH], "11");
        assert!(body(response).await.is_empty());
    }

    #[tokio::test]
    async fn gzip_variant_ranges_and_revalidates_on_its_own_etag() {
        let fx = fixture();
        let gz = call(&fx, Method::GET, &[(ACCEPT_ENCODING, "gzip")]).await;
        assert_eq!(gz.headers()[CONTENT_ENCODING], "gzip");
        let etag = gz.headers()[ETAG].to_str().unwrap().to_owned();
        assert!(etag.ends_with("-gz\""));
        assert_eq!(body(gz).await, b"GZ");

        let ranged = call(
            &fx,
            Method::GET,
            &[(ACCEPT_ENCODING, "gzip"), (RANGE, "bytes=1-")],
        )
        .await;
        assert_eq!(ranged.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(ranged.headers()[CONTENT_RANGE], "bytes 1-1/2");
        assert_eq!(body(ranged).await, b"Z");

        let fresh = call(
            &fx,
            Method::GET,
            &[(ACCEPT_ENCODING, "gzip"), (IF_NONE_MATCH, &etag)],
        )
        .await;
        assert_eq!(fresh.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(fresh.headers()[VARY], "Accept-Encoding");
        assert!(!fresh.headers().contains_key(CONTENT_LENGTH));
        let identity = call(&fx, Method::GET, &[(IF_NONE_MATCH, &etag)]).await;
        assert_eq!(
            identity.status(),
            StatusCode::OK,
            "identity has another ETag"
        );
    }

    #[tokio::test]
    async fn refusals_carry_no_cache_control() {
        let fx = fixture();
        let failed = call(&fx, Method::GET, &[(http::header::IF_MATCH, "\"x\"")]).await;
        assert_eq!(failed.status(), StatusCode::PRECONDITION_FAILED);
        assert!(!failed.headers().contains_key(CACHE_CONTROL));
        let unsatisfiable = call(&fx, Method::GET, &[(RANGE, "bytes=50-")]).await;
        assert_eq!(unsatisfiable.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(unsatisfiable.headers()[CONTENT_RANGE], "bytes */11");
        assert!(!unsatisfiable.headers().contains_key(CACHE_CONTROL));
    }

    #[tokio::test]
    async fn an_unreadable_sibling_falls_back_to_identity() {
        let fx = fixture();
        let canonical = fx.root.join("a.txt");
        let missing = fx.root.join("gone.gz");
        let (encoding, _, meta) = open_variant(&canonical, Some((Encoding::Gzip, &missing)))
            .await
            .unwrap();
        assert_eq!((encoding, meta.len()), (Encoding::Identity, 11));
        let err = open_variant(&missing, None).await.unwrap_err();
        assert!(matches!(err, OriginError::NotFound));
    }
}
