//! Which PoP a client should use: PoPs by great-circle distance (or the default order for
//! clients of unknown location), healthy ones first, the origin when every PoP is down.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};

use reqwest::Url;
use reqwest::header::HeaderValue;

use super::RouterError;
use super::config::{RouterConfig, http_url};
use super::geo::{Coords, GeoDb, Place, distance_km};
use super::health::HealthView;

/// The host part of a PoP's or the origin's URL: what GeoDNS answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    V4(Ipv4Addr),
    V6(Ipv6Addr),
    Name(String),
}

/// Somewhere clients can be sent: a base URL (without a trailing `/`) and its host.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub url: String,
    pub host: Host,
}

impl Endpoint {
    pub fn parse(key: &str, value: &str) -> Result<Endpoint, RouterError> {
        let url = http_url(key, value)?;
        Ok(Endpoint {
            host: host_of(&url),
            url: base(&url),
        })
    }

    /// `self.url` + `path_and_query`, as a `Location` header value.
    pub fn redirect_to(&self, path_and_query: &str) -> Option<HeaderValue> {
        HeaderValue::try_from(format!("{}{path_and_query}", self.url)).ok()
    }
}

fn host_of(url: &Url) -> Host {
    let host = url.host_str().unwrap_or_default();
    match host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        Ok(IpAddr::V4(ip)) => Host::V4(ip),
        Ok(IpAddr::V6(ip)) => Host::V6(ip),
        Err(_) => Host::Name(host.to_ascii_lowercase()),
    }
}

fn base(url: &Url) -> String {
    url.as_str().trim_end_matches('/').to_owned()
}

/// One PoP as the router uses it.
#[derive(Debug, Clone)]
pub struct Pop {
    pub name: String,
    pub endpoint: Endpoint,
    pub coords: Coords,
    /// `admin_url/healthz` when the PoP has an admin listener, else `url/healthz`.
    pub health_url: String,
}

/// A PoP's place in one client's order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ranked {
    /// Index into the configured PoPs.
    pub pop: usize,
    /// From the client; `None` when the client's location is unknown.
    pub distance_km: Option<f64>,
    pub healthy: bool,
}

/// The PoPs in the order one client should try them: nearest first when `from` is known,
/// else `default_order`; healthy ones before unhealthy ones (which stay listed), with ties
/// kept in config order.
pub fn rank(
    pops: &[Pop],
    default_order: &[usize],
    from: Option<Coords>,
    health: &[bool],
) -> Vec<Ranked> {
    let healthy = |i: usize| health.get(i).copied().unwrap_or(true);
    let mut ranked: Vec<Ranked> = match from {
        Some(from) => {
            let mut v: Vec<Ranked> = (0..pops.len())
                .map(|i| Ranked {
                    pop: i,
                    distance_km: Some(distance_km(from, pops[i].coords)),
                    healthy: healthy(i),
                })
                .collect();
            v.sort_by(|a, b| {
                a.distance_km
                    .unwrap_or(0.0)
                    .total_cmp(&b.distance_km.unwrap_or(0.0))
            });
            v
        }
        None => default_order
            .iter()
            .map(|&i| Ranked {
                pop: i,
                distance_km: None,
                healthy: healthy(i),
            })
            .collect(),
    };
    // Stable: the distance (or default) order holds within each group.
    ranked.sort_by_key(|r| !r.healthy);
    ranked
}

/// Where one client should go, and why.
#[derive(Debug, Clone)]
pub struct Decision {
    pub ip: IpAddr,
    pub place: Place,
    pub ranked: Vec<Ranked>,
}

impl Decision {
    pub fn all_down(&self) -> bool {
        self.ranked.iter().all(|r| !r.healthy)
    }
}

/// The first choice for one client.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    Pop(&'a Pop),
    Origin(&'a Endpoint),
}

impl Target<'_> {
    pub fn endpoint(&self) -> &Endpoint {
        match self {
            Target::Pop(pop) => &pop.endpoint,
            Target::Origin(origin) => origin,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Target::Pop(pop) => &pop.name,
            Target::Origin(_) => "origin",
        }
    }
}

/// Everything a routing decision needs: the PoPs, their health, the databases.
#[derive(Debug)]
pub struct RouteTable {
    pops: Vec<Pop>,
    default_order: Vec<usize>,
    origin: Option<Endpoint>,
    geo: GeoDb,
    health: HealthView,
    /// Decisions by the target chosen: one per PoP, then the origin.
    decisions: Vec<AtomicU64>,
}

impl RouteTable {
    /// Builds the table from a validated config.
    pub fn new(
        config: &RouterConfig,
        geo: GeoDb,
        health: HealthView,
    ) -> Result<RouteTable, RouterError> {
        config.validate()?;
        let pops = pops_of(config)?;
        Ok(RouteTable {
            decisions: (0..=pops.len()).map(|_| AtomicU64::new(0)).collect(),
            pops,
            default_order: default_order(config),
            origin: config
                .origin
                .as_deref()
                .map(|o| Endpoint::parse("router.origin", o))
                .transpose()?,
            geo,
            health,
        })
    }

    pub fn pops(&self) -> &[Pop] {
        &self.pops
    }

    pub fn origin(&self) -> Option<&Endpoint> {
        self.origin.as_ref()
    }

    /// Where `ip` is, by the local ranges and the databases.
    pub fn locate(&self, ip: IpAddr) -> Place {
        self.geo.locate(ip)
    }

    /// Locates `ip` and orders the PoPs for it.
    pub fn decide(&self, ip: IpAddr) -> Decision {
        self.decide_at(ip, self.geo.locate(ip))
    }

    /// Orders the PoPs for a client already located.
    pub fn decide_at(&self, ip: IpAddr, place: Place) -> Decision {
        let health = self.health.snapshot();
        let ranked = rank(&self.pops, &self.default_order, place.coords, &health);
        let decision = Decision { ip, place, ranked };
        let chosen = match (decision.all_down(), &self.origin) {
            (true, Some(_)) => Some(self.pops.len()),
            _ => decision.ranked.first().map(|r| r.pop),
        };
        if let Some(counter) = chosen.and_then(|i| self.decisions.get(i)) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        decision
    }

    /// Decisions so far that chose PoP `i` (`pops().len()`: the origin).
    pub fn decisions(&self, i: usize) -> u64 {
        self.decisions
            .get(i)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Each PoP's health now, in `pops()` order.
    pub fn health_snapshot(&self) -> Vec<bool> {
        self.health.snapshot()
    }

    /// The nearest healthy PoP; when none is healthy, the origin, or failing that the PoP
    /// that would be first (a PoP thought down beats no answer).
    pub fn target<'a>(&'a self, decision: &Decision) -> Target<'a> {
        match (decision.all_down(), &self.origin) {
            (true, Some(origin)) => Target::Origin(origin),
            _ => Target::Pop(&self.pops[decision.ranked[0].pop]),
        }
    }
}

/// The configured PoPs with their URLs parsed.
pub fn pops_of(config: &RouterConfig) -> Result<Vec<Pop>, RouterError> {
    config
        .pops
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let endpoint = Endpoint::parse(&format!("router.pops[{i}].url"), &p.url)?;
            let health_base = match &p.admin_url {
                Some(admin) => Endpoint::parse(&format!("router.pops[{i}].admin_url"), admin)?.url,
                None => endpoint.url.clone(),
            };
            Ok(Pop {
                name: p.name.clone(),
                endpoint,
                coords: Coords {
                    lat: p.lat,
                    lon: p.lon,
                },
                health_url: format!("{health_base}/healthz"),
            })
        })
        .collect()
}

/// Indexes of the PoPs for unknown clients: `default_order`, then the rest in config order.
fn default_order(config: &RouterConfig) -> Vec<usize> {
    let index = |name: &str| config.pops.iter().position(|p| p.name == name);
    let mut order: Vec<usize> = config
        .default_order
        .iter()
        .flatten()
        .filter_map(|name| index(name))
        .collect();
    for i in 0..config.pops.len() {
        if !order.contains(&i) {
            order.push(i);
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::config::PopConfig;

    fn config() -> RouterConfig {
        let pop = |name: &str, url: &str, lat, lon| PopConfig {
            name: name.into(),
            url: url.into(),
            lat,
            lon,
            admin_url: None,
        };
        RouterConfig::with_pops(vec![
            pop("us-east", "http://127.0.1.1:8080", 39.04, -77.49),
            pop("eu-west", "http://127.0.2.1:8080/", 53.35, -6.26),
            pop("ap-south", "https://Mumbai.Example:443/base/", 19.08, 72.88),
        ])
    }

    fn names(pops: &[Pop], ranked: &[Ranked]) -> Vec<String> {
        ranked.iter().map(|r| pops[r.pop].name.clone()).collect()
    }

    const LONDON: Coords = Coords {
        lat: 51.5,
        lon: -0.13,
    };
    const SINGAPORE: Coords = Coords {
        lat: 1.35,
        lon: 103.8,
    };

    #[test]
    fn nearest_first_then_farther() {
        let pops = pops_of(&config()).unwrap();
        let order = [0, 1, 2];
        let ranked = rank(&pops, &order, Some(LONDON), &[true; 3]);
        assert_eq!(names(&pops, &ranked), ["eu-west", "us-east", "ap-south"]);
        assert!(ranked[0].distance_km.unwrap() < 500.0);
        let ranked = rank(&pops, &order, Some(SINGAPORE), &[true; 3]);
        assert_eq!(names(&pops, &ranked), ["ap-south", "eu-west", "us-east"]);
    }

    #[test]
    fn unhealthy_pops_move_last_but_stay_listed() {
        let pops = pops_of(&config()).unwrap();
        let ranked = rank(&pops, &[0, 1, 2], Some(LONDON), &[true, false, true]);
        assert_eq!(names(&pops, &ranked), ["us-east", "ap-south", "eu-west"]);
        assert_eq!(
            ranked.iter().map(|r| r.healthy).collect::<Vec<_>>(),
            [true, true, false]
        );
        let ranked = rank(&pops, &[0, 1, 2], Some(LONDON), &[false; 3]);
        assert_eq!(names(&pops, &ranked), ["eu-west", "us-east", "ap-south"]);
    }

    #[test]
    fn unknown_clients_get_the_default_order() {
        let mut c = config();
        c.default_order = Some(vec!["ap-south".into()]);
        let order = default_order(&c);
        assert_eq!(order, [2, 0, 1]);
        let pops = pops_of(&c).unwrap();
        let ranked = rank(&pops, &order, None, &[true, true, false]);
        assert_eq!(names(&pops, &ranked), ["us-east", "eu-west", "ap-south"]);
        assert!(ranked.iter().all(|r| r.distance_km.is_none()));
        assert_eq!(default_order(&config()), [0, 1, 2]);
    }

    #[test]
    fn urls_give_the_dns_host_and_a_base_for_redirects() {
        let pops = pops_of(&config()).unwrap();
        assert_eq!(pops[0].endpoint.host, Host::V4(Ipv4Addr::new(127, 0, 1, 1)));
        assert_eq!(pops[0].endpoint.url, "http://127.0.1.1:8080");
        assert_eq!(pops[1].health_url, "http://127.0.2.1:8080/healthz");
        assert_eq!(pops[2].endpoint.host, Host::Name("mumbai.example".into()));
        assert_eq!(pops[2].endpoint.url, "https://mumbai.example/base");
        assert_eq!(
            pops[2].endpoint.redirect_to("/a.js?v=2").unwrap(),
            "https://mumbai.example/base/a.js?v=2"
        );
        let v6 = Endpoint::parse("k", "http://[2001:db8::1]:8080").unwrap();
        assert_eq!(v6.host, Host::V6("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn all_down_targets_the_origin_or_else_the_nearest_pop() {
        let mut c = config();
        let client: IpAddr = "127.2.0.1".parse().unwrap();
        let table = RouteTable::new(&c, GeoDb::empty(), HealthView::fixed(vec![false; 3])).unwrap();
        assert_eq!(table.target(&table.decide(client)).name(), "eu-west");
        c.origin = Some("http://127.0.0.1:8000".into());
        let table = RouteTable::new(&c, GeoDb::empty(), HealthView::fixed(vec![false; 3])).unwrap();
        let target = table.target(&table.decide(client));
        assert_eq!(target.name(), "origin");
        assert_eq!(target.endpoint().url, "http://127.0.0.1:8000");
        let table = RouteTable::new(
            &c,
            GeoDb::empty(),
            HealthView::fixed(vec![true, false, true]),
        )
        .unwrap();
        assert_eq!(table.target(&table.decide(client)).name(), "us-east");
    }
}
