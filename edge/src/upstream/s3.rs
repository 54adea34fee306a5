//! An S3-style bucket as an origin: object URLs (path-style or virtual-hosted), index keys,
//! SigV4 signing with `aws-sigv4`, and S3's credential errors turned into a clear 502.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use bytes::Bytes;
use http::header::{
    ALLOW, CONTENT_LENGTH, HeaderName, HeaderValue, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH,
    IF_RANGE, IF_UNMODIFIED_SINCE, RANGE,
};
use http::{HeaderMap, Method, StatusCode};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use tracing::warn;

use crate::config::S3Origin;
use crate::error::UpstreamError;

/// The request headers that travel to S3; the rest of the client's (cookies, its own
/// `Authorization`, forwarding headers) mean nothing to a bucket or would break the signature.
const PASSED_TO_S3: [HeaderName; 6] = [
    RANGE,
    IF_NONE_MATCH,
    IF_MODIFIED_SINCE,
    IF_MATCH,
    IF_UNMODIFIED_SINCE,
    IF_RANGE,
];

/// S3 error codes that mean the credentials or the signature are wrong: a fault of this
/// edge's configuration, not of the object, so the client gets a 502.
const CREDENTIAL_ERRORS: [&str; 9] = [
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
    "AuthorizationHeaderMalformed",
    "RequestTimeTooSkewed",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "InvalidSecurity",
    "MissingSecurityHeader",
];

/// Error bodies larger than this are passed through unread.
const MAX_ERROR_BODY: u64 = 64 << 10;

/// AWS's URI encoding of a key: everything but unreserved characters and `/`.
const KEY_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// One bucket. Its `Debug` leaves the credentials out.
#[derive(Clone)]
pub struct S3Target {
    /// `scheme://host[:port][/prefix]` of the objects: the bucket is in the host
    /// (virtual-hosted) or the first path segment (path-style).
    base: String,
    bucket: String,
    region: String,
    index: String,
    negative_ttl: u64,
    credentials: Option<Credentials>,
    label: String,
}

impl std::fmt::Debug for S3Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Target")
            .field("base", &self.base)
            .field("region", &self.region)
            .field("signed", &self.credentials.is_some())
            .finish_non_exhaustive()
    }
}

impl S3Target {
    /// Builds the target; `env` looks up `AWS_*` variables when the config has no keys.
    pub fn new(config: &S3Origin, env: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let endpoint =
            reqwest::Url::parse(&config.endpoint).map_err(|e| format!("s3.endpoint: {e}"))?;
        let host = endpoint
            .host_str()
            .ok_or_else(|| "s3.endpoint: no host".to_owned())?;
        let port = endpoint.port().map(|p| format!(":{p}")).unwrap_or_default();
        let prefix = endpoint.path().trim_end_matches('/');
        let base = if config.path_style {
            format!(
                "{}://{host}{port}{prefix}/{}",
                endpoint.scheme(),
                config.bucket
            )
        } else {
            format!(
                "{}://{}.{host}{port}{prefix}",
                endpoint.scheme(),
                config.bucket
            )
        };
        let credentials = match (&config.access_key_id, &config.secret_access_key) {
            (Some(id), Some(secret)) => {
                Some(Credentials::new(id, secret, None, None, "edgecache-config"))
            }
            _ => match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
                (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => {
                    let token = env("AWS_SESSION_TOKEN").filter(|t| !t.is_empty());
                    Some(Credentials::new(id, secret, token, None, "edgecache-env"))
                }
                _ => None,
            },
        };
        Ok(Self {
            label: format!("s3 {base}"),
            base,
            bucket: config.bucket.clone(),
            region: config.region.clone(),
            index: config.index.clone(),
            negative_ttl: config.negative_ttl.0.as_secs(),
            credentials,
        })
    }

    /// How logs name this origin (no credentials).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The object key for a request target: the decoded path without its leading `/`,
    /// the index key for `/` and paths ending in `/`. The query is dropped: a client's
    /// `?acl` or `?versions` must not reach the bucket, and `?v=2` names the same object.
    pub fn object_key(&self, path_and_query: &str) -> Option<String> {
        let path = path_and_query.split('?').next().unwrap_or("");
        let decoded = percent_decode_str(path).decode_utf8_lossy();
        let mut key = decoded.trim_start_matches('/').to_owned();
        if key.is_empty() || key.ends_with('/') {
            key.push_str(&self.index);
        }
        // URL parsers resolve `.` and `..` segments, which could leave the bucket.
        if key.split('/').any(|seg| seg == "." || seg == "..") {
            return None;
        }
        Some(key)
    }

    /// The URL of an object.
    pub fn object_url(&self, key: &str) -> String {
        format!("{}/{}", self.base, utf8_percent_encode(key, KEY_ENCODE))
    }

    /// Sends a GET or HEAD for the object behind `path_and_query`.
    pub async fn send(
        &self,
        client: &reqwest::Client,
        method: Method,
        path_and_query: &str,
        client_headers: &HeaderMap,
    ) -> Result<reqwest::Response, UpstreamError> {
        if method != Method::GET && method != Method::HEAD {
            return Ok(synthetic(
                StatusCode::METHOD_NOT_ALLOWED,
                &[(ALLOW, "GET, HEAD")],
                "an S3 origin serves GET and HEAD only\n",
            ));
        }
        let Some(key) = self.object_key(path_and_query) else {
            return Ok(synthetic(
                StatusCode::BAD_REQUEST,
                &[],
                "path has '.' or '..' segments\n",
            ));
        };
        let url = self.object_url(&key);
        let mut headers = HeaderMap::new();
        if let Some(creds) = &self.credentials {
            self.sign(creds, &method, &url, &mut headers)?;
        }
        for name in PASSED_TO_S3 {
            for v in client_headers.get_all(&name) {
                headers.append(name.clone(), v.clone());
            }
        }
        let resp = client
            .request(method, url)
            .headers(headers)
            .send()
            .await
            .map_err(|e| UpstreamError::from_reqwest(&e))?;
        let mut resp = self.check_credentials(resp).await?;
        // A missing key is cached like any answer (negative caching), for `negative_ttl`
        // unless the bucket said otherwise.
        if resp.status() == StatusCode::NOT_FOUND
            && !resp.headers().contains_key(http::header::CACHE_CONTROL)
            && let Ok(v) = http::HeaderValue::from_str(&format!("max-age={}", self.negative_ttl))
        {
            resp.headers_mut().insert(http::header::CACHE_CONTROL, v);
        }
        Ok(resp)
    }

    /// Adds the SigV4 headers (`Authorization`, `X-Amz-Date`, `X-Amz-Content-Sha256`,
    /// `X-Amz-Security-Token`); only `host` and those are signed.
    fn sign(
        &self,
        creds: &Credentials,
        method: &Method,
        url: &str,
        headers: &mut HeaderMap,
    ) -> Result<(), UpstreamError> {
        // Messages of signing errors name what is missing, never a key.
        let fail = |e: &dyn std::fmt::Display| {
            UpstreamError::Protocol(format!("cannot sign the request to {}: {e}", self.label))
        };
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let identity = creds.clone().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| fail(&e))?
            .into();
        let signable = SignableRequest::new(
            method.as_str(),
            url,
            std::iter::empty(),
            SignableBody::Bytes(&[]),
        )
        .map_err(|e| fail(&e))?;
        let (instructions, _signature) =
            sign(signable, &params).map_err(|e| fail(&e))?.into_parts();
        for (name, value) in instructions.headers() {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| fail(&e))?;
            let mut value = HeaderValue::from_str(value).map_err(|e| fail(&e))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        Ok(())
    }

    /// Turns S3's "your credentials are wrong" answers into an error (a 502 for the client,
    /// a log line for the operator); every other response passes through.
    async fn check_credentials(
        &self,
        resp: reqwest::Response,
    ) -> Result<reqwest::Response, UpstreamError> {
        let status = resp.status();
        if status != StatusCode::FORBIDDEN && status != StatusCode::BAD_REQUEST {
            return Ok(resp);
        }
        let header_code = resp
            .headers()
            .get("x-amz-error-code")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let small = resp
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n <= MAX_ERROR_BODY);
        let (code, resp) = match header_code {
            Some(code) => (Some(code), resp),
            None if small => {
                let version = resp.version();
                let headers = resp.headers().clone();
                let body = resp
                    .bytes()
                    .await
                    .map_err(|e| UpstreamError::from_reqwest(&e))?;
                let code = error_code(&body);
                let mut rebuilt = http::Response::new(body);
                *rebuilt.status_mut() = status;
                *rebuilt.version_mut() = version;
                *rebuilt.headers_mut() = headers;
                (code, reqwest::Response::from(rebuilt))
            }
            None => (None, resp),
        };
        match code {
            Some(code) if CREDENTIAL_ERRORS.contains(&code.as_str()) => {
                warn!(
                    origin = %self.label,
                    bucket = %self.bucket,
                    status = status.as_u16(),
                    code = %code,
                    signed = self.credentials.is_some(),
                    "S3 refused this edge's credentials or signature; check the origin's keys and region"
                );
                Err(UpstreamError::Protocol(format!(
                    "{} refused the credentials ({code})",
                    self.label
                )))
            }
            _ => Ok(resp),
        }
    }
}

/// The `<Code>` of an S3 XML error body.
fn error_code(body: &Bytes) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("<Code>")? + "<Code>".len();
    let len = text[start..].find("</Code>")?;
    Some(text[start..start + len].trim().to_owned())
}

/// A response made by the edge on the origin's behalf.
fn synthetic(
    status: StatusCode,
    headers: &[(HeaderName, &'static str)],
    body: &'static str,
) -> reqwest::Response {
    let mut r = http::Response::new(Bytes::from_static(body.as_bytes()));
    *r.status_mut() = status;
    for (name, value) in headers {
        r.headers_mut()
            .insert(name.clone(), HeaderValue::from_static(value));
    }
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    reqwest::Response::from(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(path_style: bool) -> S3Target {
        let mut c = S3Origin::new("http://s3.test:9000", "assets", "us-east-1");
        c.path_style = path_style;
        S3Target::new(&c, |_| None).unwrap()
    }

    #[test]
    fn path_style_and_virtual_hosted_urls() {
        let p = target(true);
        assert_eq!(
            p.object_url(&p.object_key("/img/a b.png?v=2").unwrap()),
            "http://s3.test:9000/assets/img/a%20b.png"
        );
        let v = target(false);
        assert_eq!(
            v.object_url(&v.object_key("/img/a%20b.png").unwrap()),
            "http://assets.s3.test:9000/img/a%20b.png"
        );
    }

    #[test]
    fn directories_map_to_the_index_key() {
        let t = target(true);
        assert_eq!(t.object_key("/").unwrap(), "index.html");
        assert_eq!(t.object_key("").unwrap(), "index.html");
        assert_eq!(t.object_key("/docs/?x=1").unwrap(), "docs/index.html");
        assert_eq!(t.object_key("/docs").unwrap(), "docs");
    }

    #[test]
    fn dot_segments_are_refused() {
        let t = target(true);
        assert!(t.object_key("/../other/key").is_none());
        assert!(t.object_key("/a/%2e%2e/b").is_none());
        assert!(t.object_key("/a/.hidden").is_some());
    }

    #[test]
    fn signing_adds_headers_and_debug_hides_keys() {
        let mut c = S3Origin::new("http://127.0.0.1:9000", "assets", "us-east-1");
        c.access_key_id = Some("AKIDEXAMPLE".into());
        c.secret_access_key = Some("wJalrXUtnFEMI-secret".into());
        let t = S3Target::new(&c, |_| None).unwrap();
        let mut h = HeaderMap::new();
        t.sign(
            t.credentials.as_ref().unwrap(),
            &Method::GET,
            &t.object_url("index.html"),
            &mut h,
        )
        .unwrap();
        let auth = h.get("authorization").unwrap().to_str().unwrap();
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"),
            "{auth}"
        );
        assert!(auth.contains("/us-east-1/s3/aws4_request"), "{auth}");
        assert!(h.contains_key("x-amz-date"));
        assert!(h.contains_key("x-amz-content-sha256"));
        let debug = format!("{t:?}");
        assert!(
            !debug.contains("wJalrXUtnFEMI-secret") && !debug.contains("AKIDEXAMPLE"),
            "{debug}"
        );
    }

    #[test]
    fn environment_credentials_are_used_when_the_config_has_none() {
        let c = S3Origin::new("http://127.0.0.1:9000", "assets", "us-east-1");
        let t = S3Target::new(&c, |name| match name {
            "AWS_ACCESS_KEY_ID" => Some("AKIDENV".into()),
            "AWS_SECRET_ACCESS_KEY" => Some("secret".into()),
            _ => None,
        })
        .unwrap();
        assert!(t.credentials.is_some());
        assert!(target(true).credentials.is_none());
    }

    #[test]
    fn error_codes_are_read_from_xml() {
        let body = Bytes::from_static(
            b"<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code><Message>x</Message></Error>",
        );
        assert_eq!(error_code(&body).as_deref(), Some("SignatureDoesNotMatch"));
        assert_eq!(error_code(&Bytes::from_static(b"nope")), None);
    }
}
