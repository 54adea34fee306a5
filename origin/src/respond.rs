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
    root: &Path,
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
