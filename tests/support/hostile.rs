//! Tools for attacking an edge: a raw HTTP/1.1 origin that misbehaves on demand, and a raw
//! client that writes exact bytes and reads back exactly what the edge put on the wire.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How long a raw exchange or a wait on an origin may take before the test gives up.
pub const BOUND: Duration = Duration::from_secs(5);

/// A request as the raw origin parsed it off the wire.
#[derive(Debug, Clone)]
pub struct RawRequest {
    pub method: String,
    /// The request target exactly as sent, e.g. `/a%2Fb?x=1`.
    pub target: String,
    /// Fields in the order received, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked if it came chunked.
    pub body: Vec<u8>,
}

impl RawRequest {
    /// The first value of `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// Every value of `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        all_headers(&self.headers, name)
    }
}

type Responder = dyn Fn(&RawRequest) -> Vec<u8> + Send + Sync;

/// A raw TCP HTTP/1.1 origin on 127.0.0.1:0. Like Node, Go and nginx it keeps connections
/// alive, answers pipelined requests in order, and reads a `Content-Length` or chunked body
/// on every method, GET and HEAD included: an edge that forwards a body-framing field
/// without its body desynchronises it, and the tests see that. Each response is the raw
/// bytes the closure returns; the connection is closed after one that says
/// `Connection: close` or switches protocols.
pub struct RawOrigin {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<RawRequest>>>,
    count: watch::Receiver<usize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawOrigin {
    pub async fn start(respond: impl Fn(&RawRequest) -> Vec<u8> + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (counter, count) = watch::channel(0usize);
        let counter = Arc::new(counter);
        let respond: Arc<Responder> = Arc::new(respond);
        let task = {
            let seen = seen.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(serve_connection(
                        stream,
                        seen.clone(),
                        counter.clone(),
                        respond.clone(),
                    ));
                }
            })
        };
        Self {
            addr,
            seen,
            count,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests parsed so far.
    pub fn hits(&self) -> usize {
        *self.count.borrow()
    }

    pub fn seen(&self) -> Vec<RawRequest> {
        self.seen.lock().unwrap().clone()
    }

    /// The request targets seen so far, in order.
    pub fn targets(&self) -> Vec<String> {
        self.seen().into_iter().map(|r| r.target).collect()
    }

    /// Waits (at most [`BOUND`]) until at least `n` requests were parsed.
    pub async fn wait_for_hits(&self, n: usize) {
        let mut count = self.count.clone();
        let waited = tokio::time::timeout(BOUND, count.wait_for(|c| *c >= n)).await;
        assert!(
            matches!(waited, Ok(Ok(_))),
            "origin saw {} requests, not {n}: {:?}",
            self.hits(),
            self.targets()
        );
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    seen: Arc<Mutex<Vec<RawRequest>>>,
    counter: Arc<watch::Sender<usize>>,
    respond: Arc<Responder>,
) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        match parse_request(&buf) {
            Parse::Done(request, used) => {
                buf.drain(..used);
                seen.lock().unwrap().push(request.clone());
                counter.send_modify(|n| *n += 1);
                let response = respond(&request);
                if stream.write_all(&response).await.is_err() {
                    return;
                }
                if closes_after(&response) {
                    let _ = stream.shutdown().await;
                    return;
                }
                continue;
            }
            Parse::Partial => {}
            // What a strict server does with bytes it cannot frame: drop the connection.
            Parse::Invalid(_) => return,
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// True when the origin must close after writing `response`: it said `Connection: close`,
/// or it switched protocols (this origin speaks nothing else).
fn closes_after(response: &[u8]) -> bool {
    let Some(end) = find(response, b"\r\n\r\n") else {
        return true;
    };
    let Ok((status, headers)) = parse_status_head(&response[..end]) else {
        return true;
    };
    status == 101
        || all_headers(&headers, "connection")
            .iter()
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
}

enum Parse<T> {
    Done(T, usize),
    Partial,
    Invalid(String),
}

fn parse_request(buf: &[u8]) -> Parse<RawRequest> {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        return Parse::Partial;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Parse::Invalid(format!("request line {line:?}"));
    };
    if !version.starts_with("HTTP/1.") {
        return Parse::Invalid(format!("version {version:?}"));
    }
    let headers = match parse_fields(lines) {
        Ok(h) => h,
        Err(e) => return Parse::Invalid(e),
    };
    let rest = &buf[head_end + 4..];
    let (body, used) = match body_of(&headers, rest) {
        Parse::Done(body, used) => (body, used),
        Parse::Partial => return Parse::Partial,
        Parse::Invalid(e) => return Parse::Invalid(e),
    };
    let request = RawRequest {
        method: method.to_owned(),
        target: target.to_owned(),
        headers,
        body,
    };
    Parse::Done(request, head_end + 4 + used)
}

/// The body of a request: chunked if `Transfer-Encoding` ends in chunked, else by
/// `Content-Length`, else none.
fn body_of(headers: &[(String, String)], rest: &[u8]) -> Parse<Vec<u8>> {
    if is_chunked(headers) {
        return decode_chunked(rest);
    }
    match content_length(headers) {
        Ok(None) => Parse::Done(Vec::new(), 0),
        Ok(Some(n)) if rest.len() >= n => Parse::Done(rest[..n].to_vec(), n),
        Ok(Some(_)) => Parse::Partial,
        Err(e) => Parse::Invalid(e),
    }
}

fn is_chunked(headers: &[(String, String)]) -> bool {
    all_headers(headers, "transfer-encoding")
        .iter()
        .flat_map(|v| v.split(','))
        .next_back()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"))
}

/// The one `Content-Length` of a message; several that disagree are an error.
fn content_length(headers: &[(String, String)]) -> Result<Option<usize>, String> {
    let mut length = None;
    for value in all_headers(headers, "content-length") {
        for v in value.split(',') {
            let n: usize = v
                .trim()
                .parse()
                .map_err(|_| format!("content-length {value:?}"))?;
            if length.is_some_and(|l| l != n) {
                return Err("content-length values disagree".into());
            }
            length = Some(n);
        }
    }
    Ok(length)
}

/// Decodes a chunked body at the start of `buf`: (body, bytes used including trailers).
fn decode_chunked(buf: &[u8]) -> Parse<Vec<u8>> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let Some(eol) = find(&buf[at..], b"\r\n") else {
            return Parse::Partial;
        };
        let line = String::from_utf8_lossy(&buf[at..at + eol]).into_owned();
        let size_text = line.split(';').next().unwrap_or("").trim();
        // `from_str_radix` would take a leading `+`; HTTP does not.
        let size = match usize::from_str_radix(size_text, 16) {
            Ok(size) if !size_text.starts_with('+') => size,
            _ => return Parse::Invalid(format!("chunk size {line:?}")),
        };
        at += eol + 2;
        if size == 0 {
            // Trailer fields up to an empty line.
            loop {
                let Some(eol) = find(&buf[at..], b"\r\n") else {
                    return Parse::Partial;
                };
                at += eol + 2;
                if eol == 0 {
                    return Parse::Done(body, at);
                }
            }
        }
        if buf.len() < at + size + 2 {
            return Parse::Partial;
        }
        body.extend_from_slice(&buf[at..at + size]);
        if &buf[at + size..at + size + 2] != b"\r\n" {
            return Parse::Invalid("chunk not followed by CRLF".into());
        }
        at += size + 2;
    }
}

fn parse_fields<'a>(lines: impl Iterator<Item = &'a str>) -> Result<Vec<(String, String)>, String> {
    lines
        .map(|line| {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| format!("field line {line:?}"))?;
            if name.is_empty() || name.contains([' ', '\t']) {
                return Err(format!("field name {name:?}"));
            }
            Ok((name.to_owned(), value.trim().to_owned()))
        })
        .collect()
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn all_headers<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ---- Responses an origin can give -------------------------------------------------------

/// A response with a correct `Content-Length` (and no body bytes for a HEAD).
pub fn response_to(
    request: &RawRequest,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut out = out.into_bytes();
    if request.method != "HEAD" {
        out.extend_from_slice(body);
    }
    out
}

fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        _ => "Whatever",
    }
}

/// The body the cacheable origin gives for `target`.
pub fn naming(target: &str) -> String {
    format!("path {target}")
}

/// (a) A normal cacheable origin: every path answered with a body naming the target it saw,
/// `Cache-Control: public, max-age=300`.
pub fn cacheable(request: &RawRequest) -> Vec<u8> {
    response_to(
        request,
        200,
        &[("Cache-Control", "public, max-age=300")],
        naming(&request.target).as_bytes(),
    )
}

/// (b) A reflecting origin (cacheable too): the body echoes the request target and every
/// request field, one per line, as an origin that builds pages from its request would.
pub fn reflecting(request: &RawRequest) -> Vec<u8> {
    let mut body = format!("target: {}\n", request.target);
    for (name, value) in &request.headers {
        body.push_str(&format!("{name}: {value}\n"));
    }
    response_to(
        request,
        200,
        &[
            ("Cache-Control", "public, max-age=300"),
            ("Content-Type", "text/html"),
        ],
        body.as_bytes(),
    )
}

/// (c) Ambiguous framing: `Content-Length: 5` and `Transfer-Encoding: chunked` on one
/// response whose chunked body is "hello world" (RFC 9112 §6.3: chunked wins, and the
/// message must not be passed on with both).
pub fn ambiguous_framing(request: &RawRequest) -> Vec<u8> {
    let head = "HTTP/1.1 200 OK\r\n\
                Cache-Control: public, max-age=300\r\n\
                Content-Length: 5\r\n\
                Transfer-Encoding: chunked\r\n\r\n";
    let mut out = head.as_bytes().to_vec();
    if request.method != "HEAD" {
        out.extend_from_slice(b"b\r\nhello world\r\n0\r\n\r\n");
    }
    out
}

/// (d) Switches to WebSocket whether asked or not, then sends a WebSocket text frame.
pub fn switching_protocols(_request: &RawRequest) -> Vec<u8> {
    let mut out = b"HTTP/1.1 101 Switching Protocols\r\n\
                    Upgrade: websocket\r\n\
                    Connection: Upgrade\r\n\
                    Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        .to_vec();
    out.extend_from_slice(b"\x81\x05hello");
    out
}

// ---- A raw client -----------------------------------------------------------------------

/// Writes `request` to `addr` on a fresh connection and returns every byte read until the
/// server closes (or [`BOUND`] passes). The write side stays open: hyper drops a request
/// whose client half-closed before it was answered.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    exchange(addr, request, None).await
}

/// Like [`raw_exchange`], but returns as soon as `n` complete responses with explicit
/// framing were read (for connections the server keeps alive).
pub async fn raw_exchange_n(addr: SocketAddr, request: &[u8], n: usize) -> Vec<u8> {
    exchange(addr, request, Some(n)).await
}

async fn exchange(addr: SocketAddr, request: &[u8], want: Option<usize>) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The server may close before reading everything (it refused the first request):
    // what it answered is still there to read.
    let _ = stream.write_all(request).await;
    let deadline = tokio::time::Instant::now() + BOUND;
    let mut got = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        if let Some(n) = want
            && let Ok(responses) = parse_responses(&got)
            && responses.len() >= n
            && responses.iter().all(|r| r.framing != Framing::Close)
        {
            return got;
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
        }
    }
}

/// How a response's body was delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body by definition (1xx, 204, 304).
    None,
    Length(usize),
    Chunked,
    /// Read until the connection closed (or, after a 101, the other protocol's bytes).
    Close,
}

/// One response as read off the wire.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub framing: Framing,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        all_headers(&self.headers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `Cache-Status`, or "".
    pub fn cache_status(&self) -> &str {
        self.header("cache-status").unwrap_or("")
    }
}

/// Splits what a server sent into responses (to GETs), checking that the framing is
/// self-consistent: no message with both `Content-Length` and `Transfer-Encoding`, no
/// `Content-Length` values that disagree, no body shorter than announced, and nothing left
/// over that is not a response.
pub fn parse_responses(bytes: &[u8]) -> Result<Vec<RawResponse>, String> {
    parse_responses_to(bytes, &[])
}

/// [`parse_responses`] for requests whose methods were `methods` in order (GET past its
/// end): a response to a HEAD has no body whatever its `Content-Length` says.
pub fn parse_responses_to(bytes: &[u8], methods: &[&str]) -> Result<Vec<RawResponse>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let head_end = find(rest, b"\r\n\r\n").ok_or_else(|| {
            format!(
                "incomplete head after {} responses: {:?}",
                out.len(),
                String::from_utf8_lossy(rest)
            )
        })?;
        let (status, headers) = parse_status_head(&rest[..head_end])?;
        let body_at = head_end + 4;
        let has_te = find_header(&headers, "transfer-encoding").is_some();
        let length = content_length(&headers)?;
        if has_te && length.is_some() {
            return Err(format!(
                "response {status} has both Content-Length and Transfer-Encoding"
            ));
        }
        let to_head = methods.get(out.len()) == Some(&"HEAD");
        let (body, used, framing) = if status == 101 {
            (
                rest[body_at..].to_vec(),
                rest.len() - body_at,
                Framing::Close,
            )
        } else if (100..200).contains(&status) || status == 204 || status == 304 || to_head {
            (Vec::new(), 0, Framing::None)
        } else if has_te {
            if !is_chunked(&headers) {
                return Err(format!("response {status}: transfer-coding not chunked"));
            }
            match decode_chunked(&rest[body_at..]) {
                Parse::Done(body, used) => (body, used, Framing::Chunked),
                Parse::Partial => return Err(format!("response {status}: chunked body cut")),
                Parse::Invalid(e) => return Err(format!("response {status}: {e}")),
            }
        } else if let Some(n) = length {
            if rest.len() - body_at < n {
                return Err(format!(
                    "response {status}: Content-Length {n} but {} body bytes",
                    rest.len() - body_at
                ));
            }
            (rest[body_at..body_at + n].to_vec(), n, Framing::Length(n))
        } else {
            (
                rest[body_at..].to_vec(),
                rest.len() - body_at,
                Framing::Close,
            )
        };
        out.push(RawResponse {
            status,
            headers,
            body,
            framing,
        });
        at += body_at + used;
    }
    Ok(out)
}

/// The responses in `bytes`, panicking with the bytes if they are not well framed.
pub fn responses(bytes: &[u8]) -> Vec<RawResponse> {
    responses_to(bytes, &[])
}

/// [`responses`] for requests with these methods (see [`parse_responses_to`]).
pub fn responses_to(bytes: &[u8], methods: &[&str]) -> Vec<RawResponse> {
    parse_responses_to(bytes, methods)
        .unwrap_or_else(|e| panic!("{e}; on the wire: {:?}", String::from_utf8_lossy(bytes)))
}

/// The one response in `bytes`.
pub fn only_response(bytes: &[u8]) -> RawResponse {
    let mut all = responses(bytes);
    assert_eq!(
        all.len(),
        1,
        "expected one response: {:?}",
        String::from_utf8_lossy(bytes)
    );
    all.remove(0)
}

fn parse_status_head(head: &[u8]) -> Result<(u16, Vec<(String, String)>), String> {
    let head = String::from_utf8_lossy(head);
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or("");
    let mut parts = line.splitn(3, ' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Err(format!("status line {line:?}"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(format!("status line {line:?}"));
    }
    let status = code.parse().map_err(|_| format!("status line {line:?}"))?;
    Ok((status, parse_fields(lines)?))
}
