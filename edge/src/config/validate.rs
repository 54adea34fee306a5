//! Validation of the `[edge]` table: every check names the bad key.

use std::net::SocketAddr;

use super::{EdgeConfig, OriginEntry};
use crate::error::EdgeError;

impl EdgeConfig {
    /// Checks every field, naming the first bad key.
    pub fn validate(&self) -> Result<(), EdgeError> {
        let bad = |key: &str, why: String| Err(EdgeError::Config(format!("{key}: {why}")));
        for (key, addr) in [("edge.listen", &self.listen), ("edge.admin", &self.admin)] {
            if let Err(e) = addr.parse::<SocketAddr>() {
                return bad(key, format!("{addr:?} is not an address: {e}"));
            }
        }
        if self.pop.is_empty()
            || !self
                .pop
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return bad(
                "edge.pop",
                format!("{:?} must be letters, digits, '-' or '_'", self.pop),
            );
        }
        if self.origins.is_empty() {
            return bad("edge.origins", "at least one origin is required".into());
        }
        for (i, o) in self.origins.iter().enumerate() {
            validate_origin(&format!("edge.origins[{i}]"), o).map_err(EdgeError::Config)?;
        }
        if let Some(parent) = &self.parent {
            match reqwest::Url::parse(parent) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {
                    let own = format!(
                        "{}:{}",
                        u.host_str().unwrap_or(""),
                        u.port_or_known_default().unwrap_or(0)
                    );
                    if own == self.listen || format!("[{}]", own) == self.listen {
                        return bad(
                            "edge.parent",
                            format!("{parent:?} is this edge itself: a loop"),
                        );
                    }
                }
                _ => return bad("edge.parent", format!("{parent:?} must be an http(s) URL")),
            }
        }
        if let Some(api) = &self.purge.api {
            match reqwest::Url::parse(api) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => return bad("edge.purge.api", format!("{api:?} must be an http(s) URL")),
            }
            if self.purge.token.as_deref().is_none_or(str::is_empty) {
                return bad("edge.purge.token", "required with edge.purge.api".into());
            }
        }
        if let Some(ca) = &self.purge.ca {
            check_ca("edge.purge.ca", ca).map_err(EdgeError::Config)?;
        }
        if let Some(tls) = &self.tls {
            tls.validate("edge.tls").map_err(EdgeError::Config)?;
        }
        if self.disk.dir.is_some() && self.disk.size.0 == 0 {
            return bad("edge.disk.size", "must be more than 0".into());
        }
        if self.memory.size.0 == 0 {
            return bad("edge.memory.size", "must be more than 0".into());
        }
        if !(0.0..=1.0).contains(&self.cache.heuristic_fraction) {
            return bad(
                "edge.cache.heuristic_fraction",
                "must be between 0 and 1".into(),
            );
        }
        if let Some(token) = &self.admin_token
            && (token.0.is_empty() || !token.0.bytes().all(|b| b.is_ascii_graphic()))
        {
            return bad(
                "edge.admin_token",
                "must be printable ASCII without spaces".into(),
            );
        }
        crate::forward::ForwardRules::new(&self.forwarding).map_err(EdgeError::Config)?;
        let l = &self.limits;
        for (key, d) in [
            ("edge.limits.request_head_timeout", l.request_head_timeout),
            ("edge.limits.idle_timeout", l.idle_timeout),
            ("edge.limits.send_timeout", l.send_timeout),
        ] {
            if d.0.is_zero() {
                return bad(key, "must be more than 0".into());
            }
        }
        for (key, n) in [
            ("edge.limits.max_connections", l.max_connections),
            (
                "edge.limits.max_connections_per_ip",
                l.max_connections_per_ip,
            ),
            (
                "edge.limits.h2_max_concurrent_streams",
                l.h2_max_concurrent_streams as usize,
            ),
        ] {
            if n == 0 {
                return bad(key, "must be more than 0".into());
            }
        }
        if l.h2_max_header_list_size.0 < 1024 || l.h2_max_header_list_size.0 > u64::from(u32::MAX) {
            return bad(
                "edge.limits.h2_max_header_list_size",
                "must be between 1KiB and 4GiB".into(),
            );
        }
        for (key, d) in [
            ("edge.timeouts.connect", self.timeouts.connect),
            ("edge.timeouts.first_byte", self.timeouts.first_byte),
            ("edge.timeouts.idle", self.timeouts.idle),
            ("edge.timeouts.total", self.timeouts.total),
        ] {
            if d.0.is_zero() {
                return bad(key, "must be more than 0".into());
            }
        }
        Ok(())
    }
}

/// A CA file must hold at least one PEM certificate.
fn check_ca(key: &str, path: &std::path::Path) -> Result<(), String> {
    edgecache_tls::cert::load_chain(path)
        .map(drop)
        .map_err(|e| format!("{key}: {e}"))
}

/// Checks one `[[edge.origins]]` entry; the error starts with the bad key.
fn validate_origin(key: &str, o: &OriginEntry) -> Result<(), String> {
    let http_url = |sub: &str, url: &str| match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(u),
        Ok(_) => Err(format!(
            "{key}.{sub}: {url:?} must be an http:// or https:// URL"
        )),
        Err(e) => Err(format!("{key}.{sub}: {url:?}: {e}")),
    };
    if o.retry_after.is_some_and(|d| d.0.is_zero()) {
        return Err(format!("{key}.retry_after: must be more than 0"));
    }
    if let Some(ca) = &o.ca {
        check_ca(&format!("{key}.ca"), ca)?;
    }
    match (&o.url, &o.s3) {
        (Some(_), Some(_)) => Err(format!("{key}: set one of url and s3, not both")),
        (None, None) => Err(format!("{key}: set url (an HTTP origin) or s3 (a bucket)")),
        (Some(url), None) => http_url("url", url).map(drop),
        (None, Some(s3)) => {
            let endpoint = http_url("s3.endpoint", &s3.endpoint)?;
            if endpoint.query().is_some() {
                return Err(format!("{key}.s3.endpoint: must not have a query"));
            }
            let bucket_ok = (3..=63).contains(&s3.bucket.len())
                && s3.bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                });
            if !bucket_ok {
                return Err(format!(
                    "{key}.s3.bucket: {:?} is not a bucket name (3-63 of a-z, 0-9, '-', '.')",
                    s3.bucket
                ));
            }
            if !s3.path_style
                && endpoint
                    .host_str()
                    .is_some_and(|h| h.parse::<std::net::IpAddr>().is_ok() || h.starts_with('['))
            {
                return Err(format!(
                    "{key}.s3.path_style: false needs an endpoint with a host name, not an IP address"
                ));
            }
            if s3.region.is_empty() {
                return Err(format!("{key}.s3.region: must not be empty"));
            }
            match (&s3.access_key_id, &s3.secret_access_key) {
                (Some(_), None) => {
                    return Err(format!(
                        "{key}.s3.secret_access_key: required with access_key_id"
                    ));
                }
                (None, Some(_)) => {
                    return Err(format!(
                        "{key}.s3.access_key_id: required with secret_access_key"
                    ));
                }
                (Some(id), Some(_)) if id.is_empty() => {
                    return Err(format!("{key}.s3.access_key_id: must not be empty"));
                }
                _ => {}
            }
            if s3.index.is_empty() || s3.index.starts_with('/') {
                return Err(format!(
                    "{key}.s3.index: {:?} must be a key such as \"index.html\"",
                    s3.index
                ));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use std::time::Duration;

    #[test]
    fn validation_names_the_key() {
        let mut c = EdgeConfig::default();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("edge.origins"), "{err}");
        c.origins.push(OriginEntry::http("ftp://x"));
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("edge.origins[0].url"), "{err}");
        c.origins[0].url = Some("http://127.0.0.1:8000".into());
        c.validate().unwrap();
        c.pop = "bad pop".into();
        assert!(c.validate().unwrap_err().to_string().contains("edge.pop"));
    }

    #[test]
    fn origins_need_exactly_one_of_url_and_s3() {
        let mut c = EdgeConfig::default();
        c.origins.push(OriginEntry::http("http://127.0.0.1:8000"));
        c.origins.push(OriginEntry::default());
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("edge.origins[1]: set url"), "{err}");
        c.origins[1] = OriginEntry::s3(S3Origin::new(
            "http://127.0.0.1:9000",
            "assets",
            "us-east-1",
        ));
        c.validate().unwrap();
        c.origins[1].url = Some("http://127.0.0.1:8001".into());
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("edge.origins[1]: set one of url and s3"),
            "{err}"
        );
        c.origins[1].url = None;
        c.origins[1].s3.as_mut().unwrap().bucket = "No_Such".into();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("edge.origins[1].s3.bucket"), "{err}");
        c.origins[1].s3.as_mut().unwrap().bucket = "assets".into();
        c.origins[1].s3.as_mut().unwrap().access_key_id = Some("AKID".into());
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("edge.origins[1].s3.secret_access_key"),
            "{err}"
        );
        c.origins[1].retry_after = Some(HumanDuration(Duration::ZERO));
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("edge.origins[1].retry_after"), "{err}");
    }

    #[test]
    fn s3_origin_from_toml_hides_the_secret() {
        let c: EdgeConfig = toml::from_str(
            r#"
            [[origins]]
            s3 = { endpoint = "http://127.0.0.1:9000", bucket = "assets", region = "us-east-1", access_key_id = "AKIDEXAMPLE", secret_access_key = "very-secret-key" }
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        let s3 = c.origins[0].s3.as_ref().unwrap();
        assert!(s3.path_style);
        assert_eq!(s3.index, "index.html");
        let debug = format!("{c:?}");
        assert!(!debug.contains("very-secret-key"), "{debug}");
        assert!(!debug.contains("AKIDEXAMPLE"), "{debug}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<EdgeConfig>("lisen = \"x\"").unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
    }
}
