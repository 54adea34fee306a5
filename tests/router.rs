//! The GeoIP router over HTTP: `/v1/route` for every kind of client location, redirects,
//! and PoPs leaving and rejoining as their health servers die and come back.

mod support;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::health::HealthServer;
use support::router::TestRouter as Router;

use edgecache::router::{self, PopConfig, RouterConfig};
use mmdb_writer::ipnet::IpNet;
use mmdb_writer::{IpVersion, Writer};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// Three PoPs on their own loopback addresses, as `edgecache up` runs them. `eu-west` is
/// probed on a separate admin listener; the others on their public URL.
struct Pops {
    us: HealthServer,
    eu_public: HealthServer,
    eu_admin: HealthServer,
    ap: HealthServer,
}

impl Pops {
    async fn start() -> Pops {
        Pops {
            us: HealthServer::start("127.0.1.1").await,
            eu_public: HealthServer::start("127.0.2.1").await,
            eu_admin: HealthServer::start("127.0.2.1").await,
            ap: HealthServer::start("127.0.3.1").await,
        }
    }

    fn config(&self) -> Vec<PopConfig> {
        vec![
            PopConfig {
                name: "us-east".into(),
                url: self.us.url(),
                lat: 39.04,
                lon: -77.49,
                admin_url: None,
            },
            PopConfig {
                name: "eu-west".into(),
                url: self.eu_public.url(),
                lat: 53.35,
                lon: -6.26,
                admin_url: Some(self.eu_admin.url()),
            },
            router::parse_pop_spec(&format!("ap-south={}@19.08,72.88", self.ap.url())).unwrap(),
        ]
    }
}

#[derive(Serialize)]
struct FlatFloat {
    country_code: &'static str,
    city: &'static str,
    latitude: f32,
    longitude: f32,
}

/// Three databases like the real ones: a GeoIP2-City one (IPv4 + IPv6), and the IPv4 and
/// IPv6 halves of a flat DB-IP-style one.
fn write_databases(dir: &Path) -> Vec<PathBuf> {
    let net = |s: &str| s.parse::<IpNet>().unwrap();
    let mut city = Writer::new("GeoIP2-City");
    let city_record = |iso: &str, lat: f64, lon: f64| {
        json!({
            "city": {"geoname_id": 1, "names": {"en": "Somewhere"}},
            "country": {"iso_code": iso, "names": {"en": iso}},
            "location": {"latitude": lat, "longitude": lon, "accuracy_radius": 20, "time_zone": "UTC"},
        })
    };
    city.insert(net("198.51.100.0/24"), &city_record("FR", 48.86, 2.35))
        .unwrap();
    city.insert(net("2001:db8:1::/48"), &city_record("JP", 35.68, 139.69))
        .unwrap();

    let mut flat_v4 = Writer::builder("dbip-city-ipv4")
        .ip_version(IpVersion::V4)
        .build();
    let sf = FlatFloat {
        country_code: "US",
        city: "San Francisco",
        latitude: 37.77,
        longitude: -122.42,
    };
    flat_v4.insert(net("203.0.113.0/24"), &sf).unwrap();
    // Converted-from-CSV databases store numbers as strings.
    let bangalore = json!({"country_code": "IN", "city": "Bengaluru", "latitude": "12.97", "longitude": "77.59"});
    flat_v4.insert(net("192.0.2.0/24"), &bangalore).unwrap();

    let mut flat_v6 = Writer::new("dbip-city-ipv6");
    let dublin =
        json!({"country_code": "IE", "city": "Dublin", "latitude": 53.3, "longitude": -6.2});
    flat_v6.insert(net("2001:db8:2::/48"), &dublin).unwrap();

    [
        ("city.mmdb", city),
        ("flat-v4.mmdb", flat_v4),
        ("flat-v6.mmdb", flat_v6),
    ]
    .into_iter()
    .map(|(name, writer)| {
        let path = dir.join(name);
        std::fs::write(&path, writer.to_bytes().unwrap()).unwrap();
        path
    })
    .collect()
}

fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn route(base: &str, ip: &str) -> Value {
    let response = client_from("127.0.0.1")
        .get(format!("{base}/v1/route?ip={ip}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "route for {ip}");
    json_body(response).await
}

async fn json_body(response: reqwest::Response) -> Value {
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}

async fn first_pop(base: &str, ip: &str) -> String {
    pop_names(&route(base, ip).await)[0].to_owned()
}

fn pop_names(answer: &Value) -> Vec<&str> {
    answer["pops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect()
}

/// Polls `check` every 20 ms until it holds; panics after `limit`. Returns the time taken.
async fn within<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn nearest_pop_for_local_ranges_and_both_database_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let pops = Pops::start().await;
    let mut config = RouterConfig::with_pops(pops.config());
    config.geoip = write_databases(dir.path());
    let router = Router::start(config).await;

    // (client, nearest, country, lat)
    let cases = [
        ("127.1.0.5", "us-east", "US", 39.04),
        ("127.2.0.5", "eu-west", "IE", 53.35),
        ("127.3.200.1", "ap-south", "IN", 19.08),
        ("::ffff:127.2.0.5", "eu-west", "IE", 53.35),
        ("198.51.100.7", "eu-west", "FR", 48.86),
        ("2001:db8:1::5", "ap-south", "JP", 35.68),
        ("203.0.113.9", "us-east", "US", 37.77),
        ("192.0.2.1", "ap-south", "IN", 12.97),
        ("2001:db8:2:ffff::1", "eu-west", "IE", 53.3),
    ];
    for (ip, nearest, country, lat) in cases {
        let answer = route(&router.base, ip).await;
        assert_eq!(pop_names(&answer)[0], nearest, "{ip}: {answer}");
        assert_eq!(answer["client"]["country"], country, "{ip}");
        let got_lat = answer["client"]["lat"].as_f64().unwrap();
        assert!((got_lat - lat).abs() < 1e-3, "{ip}: lat {got_lat}");
        let distances: Vec<f64> = answer["pops"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["distance_km"].as_f64().unwrap())
            .collect();
        assert!(
            distances.windows(2).all(|w| w[0] <= w[1]),
            "{ip}: {distances:?}"
        );
        assert!(
            answer["pops"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["healthy"] == true)
        );
        assert!(answer.get("origin").is_none());
    }
    let answer = route(&router.base, "127.2.0.5").await;
    assert_eq!(answer["pops"][0]["url"], pops.eu_public.url());
    assert_eq!(answer["pops"][0]["distance_km"], 0.0);
    assert_eq!(answer["pops"][1]["name"], "us-east");
    assert_eq!(answer["pops"][1]["distance_km"], 5461.5);
    assert_eq!(answer["client"]["ip"], "127.2.0.5");
    router.stop().await;
}

#[tokio::test]
async fn unknown_clients_get_the_default_order_and_bad_input_a_400() {
    let pops = Pops::start().await;
    let mut config = RouterConfig::with_pops(pops.config());
    config.default_order = Some(vec!["eu-west".into(), "ap-south".into()]);
    let router = Router::start(config).await;

    for ip in ["100.64.0.1", "2001:db8:9::1", "127.0.0.1"] {
        let answer = route(&router.base, ip).await;
        assert_eq!(
            pop_names(&answer),
            ["eu-west", "ap-south", "us-east"],
            "{ip}"
        );
        assert_eq!(answer["client"]["country"], Value::Null);
        assert_eq!(answer["client"]["lat"], Value::Null);
        assert_eq!(answer["pops"][0]["distance_km"], Value::Null);
    }

    let client = client_from("127.0.0.1");
    for bad in ["not-an-ip", "300.1.1.1", ""] {
        let response = client
            .get(format!("{}/v1/route?ip={bad}", router.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{bad:?}");
        let body = json_body(response).await;
        assert_eq!(
            body["error"],
            format!("ip: {bad:?} is not an IPv4 or IPv6 address")
        );
    }
    let health = client
        .get(format!("{}/healthz", router.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    // Three decisions, all for eu-west; the 400s decided nothing.
    let metrics = client
        .get(format!("{}/v1/metrics", router.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "edgecache_router_decisions_total{pop=\"eu-west\"} 3",
        "edgecache_router_decisions_total{pop=\"us-east\"} 0",
        "edgecache_router_pop_healthy{pop=\"eu-west\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line:?} in\n{metrics}");
    }
    router.stop().await;
}

#[tokio::test]
async fn callers_are_located_by_their_address_and_redirected_with_path_and_query() {
    let pops = Pops::start().await;
    let router = Router::start(RouterConfig::with_pops(pops.config())).await;

    let response = client_from("127.3.0.9")
        .get(format!("{}/v1/route", router.base))
        .send()
        .await
        .unwrap();
    let answer = json_body(response).await;
    assert_eq!(answer["client"]["ip"], "127.3.0.9");
    assert_eq!(pop_names(&answer)[0], "ap-south");

    for (from, pop) in [("127.2.0.9", &pops.eu_public), ("127.1.0.9", &pops.us)] {
        let response = client_from(from)
            .get(format!("{}/img/logo.png?v=2&size=large", router.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 302, "{from}");
        assert_eq!(
            response.headers()["location"],
            format!("{}/img/logo.png?v=2&size=large", pop.url()).as_str()
        );
        assert_eq!(response.headers()["cache-control"], "no-store");
    }
    let response = client_from("127.2.0.9")
        .post(format!("{}/upload", router.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 307, "other methods keep their method");
    router.stop().await;
}

#[tokio::test]
async fn a_dead_pop_leaves_within_two_seconds_and_comes_back() {
    let mut pops = Pops::start().await;
    let eu_url = pops.eu_public.url();
    let router = Router::start(RouterConfig::with_pops(pops.config())).await;
    let base = router.base.as_str();
    assert_eq!(first_pop(base, "127.2.0.9").await, "eu-west");

    // Only the admin listener dies: the public one still answers /healthz, so leaving
    // proves the admin URL is the one probed.
    pops.eu_admin.kill();
    let took = within(
        Duration::from_secs(2),
        "eu-west leaves",
        move || async move { first_pop(base, "127.2.0.9").await != "eu-west" },
    )
    .await;
    eprintln!("eu-west left after {took:?}");
    let answer = route(base, "127.2.0.9").await;
    assert_eq!(pop_names(&answer), ["us-east", "ap-south", "eu-west"]);
    assert_eq!(answer["pops"][2]["healthy"], false);
    let redirect = client_from("127.2.0.9")
        .get(format!("{base}/a.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        redirect.headers()["location"],
        format!("{}/a.css", pops.us.url()).as_str()
    );

    pops.eu_admin.restart().await;
    within(
        Duration::from_secs(3),
        "eu-west returns",
        move || async move { first_pop(base, "127.2.0.9").await == "eu-west" },
    )
    .await;
    let answer = route(base, "127.2.0.9").await;
    assert_eq!(answer["pops"][0]["url"], eu_url);
    assert_eq!(answer["pops"][0]["healthy"], true);
    router.stop().await;
}

#[tokio::test]
async fn with_every_pop_down_clients_go_to_the_origin() {
    let mut pops = Pops::start().await;
    let origin = HealthServer::start("127.0.0.1").await;
    let mut config = RouterConfig::with_pops(pops.config());
    config.origin = Some(origin.url());
    let router = Router::start(config).await;
    let base = router.base.as_str();

    pops.us.kill();
    pops.eu_admin.kill();
    pops.ap.kill();
    within(
        Duration::from_secs(2),
        "all PoPs down",
        move || async move { route(base, "127.1.0.9").await.get("origin").is_some() },
    )
    .await;
    let answer = route(base, "127.1.0.9").await;
    assert_eq!(answer["origin"], origin.url());
    assert_eq!(
        pop_names(&answer),
        ["origin", "us-east", "eu-west", "ap-south"]
    );
    assert_eq!(answer["pops"][0]["url"], origin.url());
    assert!(
        answer["pops"].as_array().unwrap()[1..]
            .iter()
            .all(|p| p["healthy"] == false)
    );
    let redirect = client_from("127.1.0.9")
        .get(format!("{base}/index.html?x=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(redirect.status(), 302);
    assert_eq!(
        redirect.headers()["location"],
        format!("{}/index.html?x=1", origin.url()).as_str()
    );

    pops.ap.restart().await;
    within(
        Duration::from_secs(3),
        "ap-south returns",
        move || async move {
            let answer = route(base, "127.1.0.9").await;
            answer.get("origin").is_none() && pop_names(&answer)[0] == "ap-south"
        },
    )
    .await;
    router.stop().await;
}

#[tokio::test]
async fn a_missing_database_is_an_error_naming_the_key() {
    let pops = Pops::start().await;
    let mut config = RouterConfig::with_pops(pops.config());
    config.geoip = vec![PathBuf::from("/nonexistent/city.mmdb")];
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = router::run(http, None, config, std::future::pending::<()>())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("router.geoip: cannot open /nonexistent/city.mmdb"),
        "{err}"
    );
}
