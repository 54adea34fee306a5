//! The origin HTTP service: shared state, the request handler, and `run` for binaries and tests.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::header::LOCATION;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::config::OriginConfig;
use crate::dot_paths::DotPaths;
use crate::error::OriginError;
use crate::path::{DocumentRoot, RequestPath, Resolved, resolve};
use crate::respond::{FileRequest, respond};
use crate::rules::Rules;

/// A static origin over one document root. Cheap to clone: clones share state and counters.
#[derive(Clone)]
pub struct Origin {
    inner: Arc<Shared>,
}

struct Shared {
    root: DocumentRoot,
    rules: Rules,
    requests: AtomicU64,
}

impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origin")
            .field("root", &self.inner.root.path())
            .field("requests", &self.requests())
            .finish_non_exhaustive()
    }
}

impl Origin {
    /// Validates `config`, compiles its rules and canonicalizes the root.
    pub fn new(config: OriginConfig) -> Result<Origin, OriginError> {
        config.validate()?;
        let root = std::fs::canonicalize(&config.root).map_err(|err| {
            OriginError::config("origin.root", format!("{}: {err}", config.root.display()))
        })?;
        let rules = Rules::compile(&config)?;
        let dot_paths = DotPaths::compile(&config)?;
        Ok(Origin {
            inner: Arc::new(Shared {
                root: DocumentRoot::new(root, dot_paths),
                rules,
                requests: AtomicU64::new(0),
            }),
        })
    }

    /// The service: every path and method goes to one handler.
    pub fn router(&self) -> Router {
        Router::new()
            .route(FALLBACK_JS_PATH, axum::routing::get(fallback_js))
            .fallback(handle)
            .with_state(self.clone())
    }

    /// Requests received so far, whatever their method or outcome.
    pub fn requests(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// The canonical document root.
    pub fn root(&self) -> &Path {
        self.inner.root.path()
    }
}

/// Where the browser fallback script is served, by the origin and by every edge.
pub const FALLBACK_JS_PATH: &str = "/.edgecache/fallback.js";

/// The browser fallback script: assets that fail to load from an edge are loaded again
/// from the origin.
pub const FALLBACK_JS: &str = include_str!("../../assets/fallback.js");

async fn fallback_js() -> impl axum::response::IntoResponse {
    (
        [
            (
                http::header::CONTENT_TYPE,
                "application/javascript; charset=utf-8",
            ),
            (http::header::CACHE_CONTROL, "public, max-age=300"),
            // Pages on edge hosts load it from the origin.
            (http::header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        FALLBACK_JS,
    )
}

/// Serves `config` on `listener` until `shutdown` completes, then drains open requests.
pub async fn run(
    listener: TcpListener,
    config: OriginConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), OriginError> {
    let origin = Origin::new(config)?;
    let addr = listener.local_addr().map_err(OriginError::Serve)?;
    tracing::info!(%addr, root = %origin.root().display(), "origin serving");
    // The shared listener: TCP_NODELAY, request-head and idle timeouts, connection caps.
    edgecache_tls::serve(
        listener,
        origin.router(),
        edgecache_tls::Serve::plain(),
        shutdown,
    )
    .await
    .map_err(OriginError::Serve)?;
    tracing::info!(%addr, "origin stopped");
    Ok(())
}

async fn handle(
    State(origin): State<Origin>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    origin.inner.requests.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!("request", method = %method, path = %uri.path());
    async move {
        let response = match serve(&origin, &method, &uri, &headers).await {
            Ok(response) => response,
            Err(err) => err.into_response(),
        };
        tracing::debug!(status = response.status().as_u16(), "response");
        response
    }
    .instrument(span)
    .await
}

async fn serve(
    origin: &Origin,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Response, OriginError> {
    if method != Method::GET && method != Method::HEAD {
        return Err(OriginError::MethodNotAllowed);
    }
    let request_path = RequestPath::parse(uri.path())?;
    let shared = &origin.inner;
    match resolve(&shared.root, &request_path, uri.query()).await? {
        Resolved::Redirect(location) => Ok(redirect(&location)),
        Resolved::File {
            path,
            canonical,
            url_path,
        } => {
            let request = FileRequest {
                method,
                headers,
                path: &path,
                canonical: &canonical,
                url_path: &url_path,
            };
            respond(&shared.root, &shared.rules, request).await
        }
    }
}

fn redirect(location: &str) -> Response {
    let mut response = StatusCode::MOVED_PERMANENTLY.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(LOCATION, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> (tempfile::TempDir, Origin) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("docs")).unwrap();
        std::fs::write(dir.path().join("docs/index.html"), "docs").unwrap();
        let origin = Origin::new(OriginConfig::new(dir.path())).unwrap();
        (dir, origin)
    }

    async fn call(origin: &Origin, method: Method, uri: &str) -> Response {
        let uri: Uri = uri.parse().unwrap();
        handle(State(origin.clone()), method, uri, HeaderMap::new()).await
    }

    #[test]
    fn new_refuses_a_bad_config_and_canonicalizes_the_root() {
        let err = Origin::new(OriginConfig::new("/no/such/root")).unwrap_err();
        assert!(err.to_string().starts_with("origin.root:"), "{err}");
        let (dir, origin) = origin();
        assert_eq!(origin.root(), dir.path().canonicalize().unwrap());
        assert!(format!("{origin:?}").contains("requests: 0"));
    }

    #[tokio::test]
    async fn every_request_is_counted_whatever_its_outcome() {
        let (_dir, origin) = origin();
        assert_eq!(
            call(&origin, Method::GET, "/docs/").await.status(),
            StatusCode::OK
        );
        let redirect = call(&origin, Method::GET, "/docs?a=b").await;
        assert_eq!(redirect.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(redirect.headers()[LOCATION], "/docs/?a=b");
        let options = call(&origin, Method::OPTIONS, "/").await;
        assert_eq!(options.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            call(&origin, Method::GET, "/%2e%2e/").await.status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            call(&origin, Method::GET, "/missing").await.status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(origin.requests(), 5);
    }
}
