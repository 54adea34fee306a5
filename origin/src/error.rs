//! The origin's one error type: bad config, refused requests and I/O failures, each mapped to a status.

use std::path::PathBuf;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

/// Everything that can go wrong in the origin, from loading its config to serving a request.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    /// A config value is unusable; `key` is its dotted path, e.g. `origin.cache_rules[1].pattern`.
    #[error("{key}: {message}")]
    Config { key: String, message: String },
    /// The request path cannot name a file under the root (encoded slash, NUL, `..`, …).
    #[error("bad request path: {0}")]
    BadPath(&'static str),
    /// Nothing servable at that path, including anything that resolves outside the root.
    #[error("not found")]
    NotFound,
    /// Only GET and HEAD are served.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A file that exists could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The listener failed while serving.
    #[error("serve: {0}")]
    Serve(#[source] std::io::Error),
}

impl OriginError {
    pub(crate) fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        OriginError::Config {
            key: key.into(),
            message: message.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        OriginError::Io {
            path: path.into(),
            source,
        }
    }

    /// The status a client sees for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            OriginError::BadPath(_) => StatusCode::BAD_REQUEST,
            OriginError::NotFound => StatusCode::NOT_FOUND,
            OriginError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            OriginError::Config { .. } | OriginError::Io { .. } | OriginError::Serve(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

impl IntoResponse for OriginError {
    fn into_response(self) -> Response {
        let status = self.status();
        // Server-side failures are logged in full but shown to the client only as a status,
        // so file system paths and OS error text never leave the machine.
        let body = if status.is_server_error() {
            tracing::error!(status = status.as_u16(), error = %self, "request failed");
            "internal server error\n".to_owned()
        } else {
            tracing::debug!(status = status.as_u16(), error = %self, "request refused");
            format!("{self}\n")
        };
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if status == StatusCode::METHOD_NOT_ALLOWED {
            headers.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_text(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn bad_path_names_the_problem_with_400() {
        let response = OriginError::BadPath("encoded slash").into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
        assert_eq!(
            body_text(response).await,
            "bad request path: encoded slash\n"
        );
    }

    #[tokio::test]
    async fn io_errors_hide_the_path() {
        let err = OriginError::io("/secret/file", std::io::Error::other("disk on fire"));
        assert_eq!(err.to_string(), "/secret/file: disk on fire");
        let response = err.into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body_text(response).await, "internal server error\n");
    }

    #[test]
    fn method_not_allowed_lists_allowed_methods() {
        let response = OriginError::MethodNotAllowed.into_response();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[header::ALLOW], "GET, HEAD");
    }

    #[test]
    fn config_error_names_the_key() {
        let err = OriginError::config("origin.root", "/x is not a directory");
        assert_eq!(err.to_string(), "origin.root: /x is not a directory");
    }
}
