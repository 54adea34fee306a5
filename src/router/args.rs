//! The flags of `edgecache route`, `--pop NAME=URL@LAT,LON[,admin=URL]` specs, and the
//! config they make together with the `[router]` table.

use std::path::PathBuf;

use super::config::{PopConfig, RouterConfig};

/// The flags of `edgecache route`; each overrides its key in the `[router]` table.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RouteArgs {
    /// Config file (TOML, `[router]` table).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// HTTP listen address; port 0 picks a free port.
    #[arg(long)]
    pub listen: Option<String>,
    /// GeoDNS listen address (UDP and TCP); port 0 picks a free port.
    #[arg(long)]
    pub dns_listen: Option<String>,
    /// MaxMind-format database (.mmdb); repeat for separate IPv4 and IPv6 files.
    #[arg(long = "geoip", value_name = "FILE")]
    pub geoip: Vec<PathBuf>,
    /// Where clients go when every PoP is down.
    #[arg(long)]
    pub origin: Option<String>,
    /// DNS zone answered by GeoDNS.
    #[arg(long)]
    pub zone: Option<String>,
    /// A PoP (repeatable; replaces the config's PoPs), e.g.
    /// `us-east=http://127.0.1.1:8080@39.04,-77.49,admin=http://127.0.1.1:9080`.
    #[arg(long = "pop", value_name = "NAME=URL@LAT,LON[,admin=URL]", value_parser = parse_pop_spec)]
    pub pops: Vec<PopConfig>,
    /// The purge API, for purge progress on the dashboard.
    #[arg(long, value_name = "URL")]
    pub purge_api: Option<String>,
    /// Bearer token for the purge API.
    #[arg(long, env = "EDGECACHE_PURGE_TOKEN", value_name = "TOKEN")]
    pub purge_token: Option<String>,
}

/// The router config: `file` (the `[router]` table, if any) with the flags on top, validated.
pub fn config_from(args: &RouteArgs, file: Option<RouterConfig>) -> anyhow::Result<RouterConfig> {
    let mut config = file.unwrap_or_default();
    if let Some(listen) = &args.listen {
        config.listen.clone_from(listen);
    }
    if let Some(dns) = &args.dns_listen {
        config.dns_listen = Some(dns.clone());
    }
    if !args.geoip.is_empty() {
        config.geoip.clone_from(&args.geoip);
    }
    if let Some(origin) = &args.origin {
        config.origin = Some(origin.clone());
    }
    if let Some(zone) = &args.zone {
        config.zone.clone_from(zone);
    }
    if !args.pops.is_empty() {
        config.pops.clone_from(&args.pops);
    }
    if let Some(api) = &args.purge_api {
        config.dashboard.purge_api = Some(api.clone());
    }
    if let Some(token) = &args.purge_token {
        config.dashboard.purge_token = Some(token.clone());
    }
    config.validate()?;
    Ok(config)
}

/// Parses `NAME=URL@LAT,LON[,admin=ADMIN_URL]`; the URLs themselves are checked by
/// [`RouterConfig::validate`].
pub fn parse_pop_spec(spec: &str) -> Result<PopConfig, String> {
    const FORMAT: &str = "expected NAME=URL@LAT,LON[,admin=ADMIN_URL]";
    let (name, rest) = spec
        .split_once('=')
        .ok_or_else(|| format!("{spec:?}: no '=' after the name; {FORMAT}"))?;
    let (url, place) = rest
        .split_once('@')
        .ok_or_else(|| format!("{spec:?}: no '@' before the coordinates; {FORMAT}"))?;
    let mut parts = place.split(',');
    let lat = number(parts.next(), "latitude", spec, FORMAT)?;
    let lon = number(parts.next(), "longitude", spec, FORMAT)?;
    let mut admin_url = None;
    for option in parts {
        match option.split_once('=') {
            Some(("admin", value)) if !value.is_empty() => admin_url = Some(value.to_owned()),
            _ => {
                return Err(format!(
                    "{spec:?}: unknown option {option:?} (the only one is admin=URL)"
                ));
            }
        }
    }
    Ok(PopConfig {
        name: name.trim().to_owned(),
        url: url.trim().to_owned(),
        lat,
        lon,
        admin_url,
    })
}

fn number(part: Option<&str>, what: &str, spec: &str, format: &str) -> Result<f64, String> {
    let text = part.map(str::trim).unwrap_or_default();
    if text.is_empty() {
        return Err(format!("{spec:?}: missing {what}; {format}"));
    }
    text.parse::<f64>()
        .ok()
        .filter(|n| n.is_finite())
        .ok_or_else(|| format!("{spec:?}: {what} {text:?} is not a number"))
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

    #[test]
    fn pop_spec_with_and_without_admin() {
        let p = parse_pop_spec("us-east=http://127.0.1.1:8080@39.04,-77.49").unwrap();
        assert_eq!(p.name, "us-east");
        assert_eq!(p.url, "http://127.0.1.1:8080");
        assert_eq!((p.lat, p.lon), (39.04, -77.49));
        assert_eq!(p.admin_url, None);
        let p =
            parse_pop_spec("eu=http://[::1]:80/@53.35,-6.26,admin=http://127.0.2.1:9080").unwrap();
        assert_eq!(p.url, "http://[::1]:80/");
        assert_eq!(p.admin_url.as_deref(), Some("http://127.0.2.1:9080"));
    }

    #[test]
    fn bad_pop_specs_say_what_is_wrong() {
        let err = |s| parse_pop_spec(s).unwrap_err();
        assert!(err("us-east").contains("no '='"), "{}", err("us-east"));
        assert!(err("a=http://x").contains("no '@'"));
        assert!(err("a=http://x@39.0").contains("missing longitude"));
        assert!(err("a=http://x@north,1").contains("latitude \"north\" is not a number"));
        assert!(err("a=http://x@1,2,weight=3").contains("unknown option \"weight=3\""));
        assert!(err("a=http://x@NaN,2").contains("not a number"));
    }

    #[test]
    fn flags_override_the_file() {
        let file = RouterConfig::with_pops(vec![pop("a", 1.0, 2.0)]);
        let args = RouteArgs {
            listen: Some("127.0.0.1:0".into()),
            dns_listen: Some("127.0.0.1:0".into()),
            zone: Some("cdn.example".into()),
            pops: vec![parse_pop_spec("b=http://127.0.2.1:8080@53.35,-6.26").unwrap()],
            ..RouteArgs::default()
        };
        let c = config_from(&args, Some(file)).unwrap();
        assert_eq!(c.listen, "127.0.0.1:0");
        assert_eq!(c.dns_listen.as_deref(), Some("127.0.0.1:0"));
        assert_eq!(c.zone, "cdn.example");
        assert_eq!(c.pops.len(), 1);
        assert_eq!(c.pops[0].name, "b");
        let err = config_from(&RouteArgs::default(), None).unwrap_err();
        assert!(err.to_string().starts_with("router.pops:"), "{err}");
    }
}
