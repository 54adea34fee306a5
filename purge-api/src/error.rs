//! The purge API's one error type: each variant maps to a status and `{"error": "..."}`.

use std::path::PathBuf;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::wire::ErrorBody;

/// Everything that can go wrong in the purge API, from its config to one request.
#[derive(Debug, thiserror::Error)]
pub enum PurgeApiError {
    /// A config value is unusable; `key` is its dotted path, e.g. `purge_api.token`.
    #[error("{key}: {message}")]
    Config { key: String, message: String },
    /// No or a wrong bearer token.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The body or query is malformed or names something invalid; the text says what.
    #[error("{0}")]
    BadRequest(String),
    /// The body is larger than the configured limit.
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The body is not declared as JSON.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The token's purge budget is spent; try again after `retry_after`.
    #[error("rate limit exceeded: retry in {}s", retry_secs(*.retry_after))]
    RateLimited { retry_after: Duration },
    /// The caller's address failed authentication too often in a row; every request from
    /// it is refused until `retry_after` has passed.
    #[error(
        "too many failed authentications from this address: retry in {}s",
        retry_secs(*.retry_after)
    )]
    AuthLocked { retry_after: Duration },
    /// No such purge, PoP or route.
    #[error("{0}")]
    NotFound(String),
    /// The route exists but not with this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The sled database under the data dir could not be opened.
    #[error("purge_api.data_dir: cannot open {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    /// A read or write of the purge log or PoP registry failed.
    #[error("storage: {0}")]
    Store(#[from] sled::Error),
    /// A stored record does not decode: the data dir is damaged or from another version.
    #[error("stored record {key} does not decode: {source}")]
    Corrupt {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    /// A blocking storage task panicked or was cancelled.
    #[error("storage task failed: {0}")]
    Task(String),
    /// The listener failed while serving.
    #[error("serve: {0}")]
    Serve(#[source] std::io::Error),
}

/// What the request logger reads back from an error response: one log line per error.
#[derive(Debug, Clone)]
pub(crate) struct ErrorNote {
    pub reason: &'static str,
    pub message: String,
}

fn retry_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl PurgeApiError {
    pub(crate) fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        PurgeApiError::Config {
            key: key.into(),
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        PurgeApiError::BadRequest(message.into())
    }

    /// Maps axum's JSON rejection, keeping its text (which names the field, line and column).
    pub(crate) fn from_json(rejection: JsonRejection, limit: usize) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(r) => {
                PurgeApiError::UnsupportedMediaType(r.body_text())
            }
            r if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                PurgeApiError::PayloadTooLarge { limit }
            }
            // Both syntax (axum: 400) and shape (axum: 422) problems are a malformed body.
            r => PurgeApiError::BadRequest(r.body_text()),
        }
    }

    pub(crate) fn from_query(rejection: QueryRejection) -> Self {
        PurgeApiError::BadRequest(rejection.body_text())
    }

    /// The status a client sees for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            PurgeApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            PurgeApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            PurgeApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            PurgeApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            PurgeApiError::RateLimited { .. } | PurgeApiError::AuthLocked { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            PurgeApiError::NotFound(_) => StatusCode::NOT_FOUND,
            PurgeApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            PurgeApiError::Config { .. }
            | PurgeApiError::Open { .. }
            | PurgeApiError::Store(_)
            | PurgeApiError::Corrupt { .. }
            | PurgeApiError::Task(_)
            | PurgeApiError::Serve(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short label for logs and the `reason` of `edgecache_purge_api_errors_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            PurgeApiError::Unauthorized(_) => "unauthorized",
            PurgeApiError::BadRequest(_) => "bad_request",
            PurgeApiError::PayloadTooLarge { .. } => "too_large",
            PurgeApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            PurgeApiError::RateLimited { .. } => "rate_limited",
            PurgeApiError::AuthLocked { .. } => "auth_locked",
            PurgeApiError::NotFound(_) => "not_found",
            PurgeApiError::MethodNotAllowed(_) => "method_not_allowed",
            _ => "internal",
        }
    }
}

impl IntoResponse for PurgeApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let note = ErrorNote {
            reason: self.reason(),
            message: self.to_string(),
        };
        // Storage details stay in the log (written once, by the request logger); the client
        // learns only that the server failed.
        let error = if status.is_server_error() {
            "internal server error".to_owned()
        } else {
            note.message.clone()
        };
        let mut response = (status, Json(ErrorBody { error })).into_response();
        let headers = response.headers_mut();
        match &self {
            PurgeApiError::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            PurgeApiError::RateLimited { retry_after }
            | PurgeApiError::AuthLocked { retry_after } => {
                headers.insert(header::RETRY_AFTER, retry_secs(*retry_after).max(1).into());
            }
            _ => {}
        }
        response.extensions_mut().insert(note);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn client_errors_say_what_was_wrong_in_json() {
        let response = PurgeApiError::bad_request("tags[0]: must not be empty").into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(
            body(response).await,
            serde_json::json!({"error": "tags[0]: must not be empty"})
        );
    }

    #[tokio::test]
    async fn server_errors_hide_the_details_but_note_them_for_the_log() {
        let err = PurgeApiError::Task("disk on fire at /var/x".into());
        let response = err.into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let note = response.extensions().get::<ErrorNote>().unwrap().clone();
        assert_eq!(note.reason, "internal");
        assert!(note.message.contains("/var/x"));
        assert_eq!(body(response).await["error"], "internal server error");
    }

    #[test]
    fn rate_limited_rounds_retry_after_up() {
        let err = PurgeApiError::RateLimited {
            retry_after: Duration::from_millis(1500),
        };
        assert_eq!(err.to_string(), "rate limit exceeded: retry in 2s");
        let response = err.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let tiny = PurgeApiError::RateLimited {
            retry_after: Duration::ZERO,
        };
        assert_eq!(tiny.into_response().headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn unauthorized_asks_for_a_bearer_token() {
        let response = PurgeApiError::Unauthorized("missing Authorization header").into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }

    #[test]
    fn config_errors_name_the_key() {
        let err = PurgeApiError::config("purge_api.token", "must not be empty");
        assert_eq!(err.to_string(), "purge_api.token: must not be empty");
    }
}
