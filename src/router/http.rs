//! The router's HTTP side: `GET /v1/route` (the ordered PoPs for a client), `/healthz`, the
//! dashboard, and a redirect to the nearest healthy PoP for every other path.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use super::RouterError;
use super::dashboard::Dashboard;
use super::select::{Decision, RouteTable};

/// The HTTP routes over `table`. Serve it with `into_make_service_with_connect_info::<SocketAddr>()`:
/// the caller's address is the default client.
/// With a `dashboard`, `/dashboard` and `/v1/dashboard` are its own.
pub fn app(table: Arc<RouteTable>, dashboard: Option<Arc<Dashboard>>) -> Router {
    let mut app = Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/route", get(route))
        .route("/v1/metrics", get(metrics))
        .fallback(redirect)
        .with_state(table);
    if let Some(dashboard) = dashboard {
        app = app.merge(super::dashboard::routes(dashboard));
    }
    app
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics(State(table): State<Arc<RouteTable>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        super::metrics::render(&table),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct RouteQuery {
    ip: Option<String>,
}

/// The body of `GET /v1/route`.
#[derive(Debug, Serialize)]
pub struct RouteAnswer<'a> {
    pub client: ClientInfo<'a>,
    pub pops: Vec<PopInfo<'a>>,
    /// Present when every PoP is down; the origin is then also first in `pops`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<&'a str>,
}

#[derive(Debug, Serialize)]
pub struct ClientInfo<'a> {
    pub ip: IpAddr,
    pub country: Option<&'a str>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct PopInfo<'a> {
    pub name: &'a str,
    pub url: &'a str,
    pub distance_km: Option<f64>,
    pub healthy: bool,
}

/// The JSON answer for one decision.
pub fn answer<'a>(table: &'a RouteTable, decision: &'a Decision) -> RouteAnswer<'a> {
    let mut pops: Vec<PopInfo<'a>> = decision
        .ranked
        .iter()
        .map(|r| {
            let pop = &table.pops()[r.pop];
            PopInfo {
                name: &pop.name,
                url: &pop.endpoint.url,
                // To 0.1 km: more digits would only suggest a precision GeoIP does not have.
                distance_km: r.distance_km.map(|d| (d * 10.0).round() / 10.0),
                healthy: r.healthy,
            }
        })
        .collect();
    let origin = match (decision.all_down(), table.origin()) {
        (true, Some(origin)) => {
            // The origin is not probed: it is where clients go when nothing else is up.
            pops.insert(
                0,
                PopInfo {
                    name: "origin",
                    url: &origin.url,
                    distance_km: None,
                    healthy: true,
                },
            );
            Some(origin.url.as_str())
        }
        _ => None,
    };
    RouteAnswer {
        client: ClientInfo {
            ip: decision.ip,
            country: decision.place.country.as_deref(),
            lat: decision.place.coords.map(|c| c.lat),
            lon: decision.place.coords.map(|c| c.lon),
        },
        pops,
        origin,
    }
}

async fn route(
    State(table): State<Arc<RouteTable>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    query: Result<Query<RouteQuery>, QueryRejection>,
) -> Result<Response, RouterError> {
    let Query(query) = query.map_err(|r| RouterError::BadRequest(r.body_text()))?;
    let ip = match query.ip.as_deref() {
        None => peer.ip().to_canonical(),
        Some(text) => parse_ip(text)?,
    };
    let decision = table.decide(ip);
    tracing::debug!(client = %ip, first = table.target(&decision).name(), "route");
    Ok(no_store(Json(answer(&table, &decision)).into_response()))
}

fn parse_ip(text: &str) -> Result<IpAddr, RouterError> {
    let trimmed = text.trim();
    let bare = trimmed
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(trimmed);
    bare.parse::<IpAddr>()
        .map(|ip| ip.to_canonical())
        .map_err(|_| {
            RouterError::BadRequest(format!("ip: {text:?} is not an IPv4 or IPv6 address"))
        })
}

/// Any other path: to the same path and query on the nearest healthy PoP (or the origin).
async fn redirect(
    State(table): State<Arc<RouteTable>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
) -> Response {
    let ip = peer.ip().to_canonical();
    let decision = table.decide(ip);
    let target = table.target(&decision);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let Some(location) = target.endpoint().redirect_to(path) else {
        return RouterError::BadRequest("the path cannot be redirected".into()).into_response();
    };
    tracing::debug!(client = %ip, to = target.name(), %path, "redirect");
    // 307 keeps the method and body of anything but GET and HEAD.
    let status = if method == Method::GET || method == Method::HEAD {
        StatusCode::FOUND
    } else {
        StatusCode::TEMPORARY_REDIRECT
    };
    no_store((status, [(header::LOCATION, location)]).into_response())
}

/// Answers depend on the client and on PoP health: no cache may keep them.
fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[derive(Debug, Serialize)]
struct ErrorBody {
    error: String,
}

impl IntoResponse for RouterError {
    fn into_response(self) -> Response {
        let (status, error) = match &self {
            RouterError::BadRequest(message) => (StatusCode::BAD_REQUEST, message.clone()),
            other => {
                tracing::error!(error = %other, "router request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal server error".to_owned(),
                )
            }
        };
        (status, Json(ErrorBody { error })).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::config::{PopConfig, RouterConfig};
    use crate::router::geo::GeoDb;
    use crate::router::health::HealthView;

    fn table(health: Vec<bool>, origin: Option<&str>) -> RouteTable {
        let pop = |name: &str, url: &str, lat, lon| PopConfig {
            name: name.into(),
            url: url.into(),
            lat,
            lon,
            admin_url: None,
        };
        let mut config = RouterConfig::with_pops(vec![
            pop("us-east", "http://127.0.1.1:8080", 39.04, -77.49),
            pop("eu-west", "http://127.0.2.1:8080", 53.35, -6.26),
        ]);
        config.origin = origin.map(Into::into);
        RouteTable::new(&config, GeoDb::empty(), HealthView::fixed(health)).unwrap()
    }

    #[test]
    fn answer_lists_nearest_first_with_rounded_distances() {
        let t = table(vec![true, true], None);
        let d = t.decide("127.2.0.9".parse().unwrap());
        let json = serde_json::to_value(answer(&t, &d)).unwrap();
        assert_eq!(json["client"]["country"], "IE");
        assert_eq!(json["pops"][0]["name"], "eu-west");
        assert_eq!(json["pops"][0]["distance_km"], 0.0);
        assert_eq!(json["pops"][1]["distance_km"], 5461.5);
        assert!(json.get("origin").is_none());
    }

    #[test]
    fn all_down_puts_the_origin_first() {
        let t = table(vec![false, false], Some("http://127.0.0.1:8000/"));
        let d = t.decide("127.1.0.9".parse().unwrap());
        let json = serde_json::to_value(answer(&t, &d)).unwrap();
        assert_eq!(json["origin"], "http://127.0.0.1:8000");
        assert_eq!(json["pops"][0]["name"], "origin");
        assert_eq!(json["pops"][1]["name"], "us-east");
        assert_eq!(json["pops"][1]["healthy"], false);
    }

    #[test]
    fn ip_parameter_accepts_both_families() {
        assert_eq!(
            parse_ip("1.2.3.4").unwrap(),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            parse_ip("[2001:db8::1]").unwrap(),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            parse_ip("::ffff:127.2.0.1").unwrap(),
            "127.2.0.1".parse::<IpAddr>().unwrap()
        );
        let err = parse_ip("nope").unwrap_err().to_string();
        assert_eq!(err, "ip: \"nope\" is not an IPv4 or IPv6 address");
    }
}
