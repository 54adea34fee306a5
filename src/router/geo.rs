//! Where a client is: the built-in local test ranges, then MaxMind-format databases
//! (GeoIP2-City records and the flat DB-IP / GeoLite2 records), and great-circle distance.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use maxminddb::Reader;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

use super::RouterError;

/// A point on Earth in degrees.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Coords {
    pub lat: f64,
    pub lon: f64,
}

/// What is known about one client address.
#[derive(Debug, Clone, PartialEq)]
pub struct Place {
    pub country: Option<String>,
    pub coords: Option<Coords>,
    /// The prefix length of the network the answer came from, when one was found: answers
    /// hold for that whole network (the EDNS Client Subnet scope).
    pub prefix_len: Option<u8>,
}

impl Place {
    pub const UNKNOWN: Place = Place {
        country: None,
        coords: None,
        prefix_len: None,
    };
}

/// The local test ranges of `edgecache up`: 127.1/16 North America, 127.2/16 Europe,
/// 127.3/16 Asia, so `curl --interface 127.2.0.9` is a client in Dublin.
const LOCAL_RANGES: [(u8, Coords, &str); 3] = [
    (
        1,
        Coords {
            lat: 39.04,
            lon: -77.49,
        },
        "US",
    ),
    (
        2,
        Coords {
            lat: 53.35,
            lon: -6.26,
        },
        "IE",
    ),
    (
        3,
        Coords {
            lat: 19.08,
            lon: 72.88,
        },
        "IN",
    ),
];

/// The local range holding `ip`, if any (IPv4-mapped IPv6 addresses count as IPv4).
pub fn local_place(ip: IpAddr) -> Option<Place> {
    let IpAddr::V4(v4) = ip.to_canonical() else {
        return None;
    };
    let [a, b, ..] = v4.octets();
    if a != 127 {
        return None;
    }
    LOCAL_RANGES
        .iter()
        .find(|(second, ..)| *second == b)
        .map(|(_, coords, country)| Place {
            country: Some((*country).to_owned()),
            coords: Some(*coords),
            prefix_len: Some(16),
        })
}

/// Great-circle distance in kilometres (haversine, mean Earth radius).
pub fn distance_km(a: Coords, b: Coords) -> f64 {
    const EARTH_RADIUS_KM: f64 = 6371.0088;
    let (phi1, phi2) = (a.lat.to_radians(), b.lat.to_radians());
    let dphi = (b.lat - a.lat).to_radians();
    let dlambda = (b.lon - a.lon).to_radians();
    let h = (dphi / 2.0).sin().powi(2) + phi1.cos() * phi2.cos() * (dlambda / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

/// The MaxMind-format databases, tried in order after the local ranges.
pub struct GeoDb {
    readers: Vec<(PathBuf, Reader<Vec<u8>>)>,
}

impl fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let paths: Vec<_> = self.readers.iter().map(|(p, _)| p).collect();
        f.debug_struct("GeoDb").field("paths", &paths).finish()
    }
}

impl GeoDb {
    /// Reads every database into memory. Blocking: large files take a moment.
    pub fn open(paths: &[PathBuf]) -> Result<GeoDb, RouterError> {
        let mut readers = Vec::with_capacity(paths.len());
        for path in paths {
            let reader = Reader::open_readfile(path).map_err(|source| RouterError::GeoIp {
                path: path.clone(),
                source,
            })?;
            tracing::info!(
                path = %path.display(),
                database_type = %reader.metadata().database_type,
                ip_version = reader.metadata().ip_version,
                "geoip database loaded"
            );
            readers.push((path.clone(), reader));
        }
        Ok(GeoDb { readers })
    }

    /// No databases: only the local ranges are known.
    pub fn empty() -> GeoDb {
        GeoDb {
            readers: Vec::new(),
        }
    }

    /// Where `ip` is. Never fails: an address no source knows is [`Place::UNKNOWN`].
    pub fn locate(&self, ip: IpAddr) -> Place {
        if let Some(place) = local_place(ip) {
            return place;
        }
        let ip = ip.to_canonical();
        let mut country_only = None;
        for (path, reader) in &self.readers {
            match lookup(reader, ip) {
                Ok(Some(place)) if place.coords.is_some() => return place,
                Ok(Some(place)) => {
                    country_only.get_or_insert(place);
                }
                Ok(None) => {}
                Err(err) => {
                    tracing::debug!(%ip, path = %path.display(), error = %err, "geoip lookup failed");
                }
            }
        }
        country_only.unwrap_or(Place::UNKNOWN)
    }
}

fn lookup(
    reader: &Reader<Vec<u8>>,
    ip: IpAddr,
) -> Result<Option<Place>, maxminddb::MaxMindDbError> {
    if ip.is_ipv6() && reader.metadata().ip_version == 4 {
        return Ok(None);
    }
    let result = reader.lookup(ip)?;
    let Some(record) = result.decode::<Record>()? else {
        return Ok(None);
    };
    let prefix_len = result.network().ok().map(|n| n.prefix());
    Ok(record.into_place(prefix_len))
}

/// The fields we read from either record shape; everything else is skipped undecoded.
#[derive(Deserialize)]
struct Record {
    /// GeoIP2-City: `location.latitude`, `location.longitude`, `country.iso_code`.
    #[serde(default)]
    location: Option<CityLocation>,
    #[serde(default)]
    country: Option<CityCountry>,
    #[serde(default)]
    registered_country: Option<CityCountry>,
    /// DB-IP / GeoLite2 from ip-location-db: flat `latitude`, `longitude`, `country_code`.
    #[serde(default, deserialize_with = "degrees")]
    latitude: Option<f64>,
    #[serde(default, deserialize_with = "degrees")]
    longitude: Option<f64>,
    #[serde(default)]
    country_code: Option<String>,
}

#[derive(Deserialize)]
struct CityLocation {
    #[serde(default, deserialize_with = "degrees")]
    latitude: Option<f64>,
    #[serde(default, deserialize_with = "degrees")]
    longitude: Option<f64>,
}

#[derive(Deserialize)]
struct CityCountry {
    #[serde(default)]
    iso_code: Option<String>,
}

impl Record {
    fn into_place(self, prefix_len: Option<u8>) -> Option<Place> {
        let (lat, lon) = match &self.location {
            Some(CityLocation {
                latitude: Some(lat),
                longitude: Some(lon),
            }) => (Some(*lat), Some(*lon)),
            _ => (self.latitude, self.longitude),
        };
        let coords = match (lat, lon) {
            (Some(lat), Some(lon))
                if (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon) =>
            {
                Some(Coords { lat, lon })
            }
            _ => None,
        };
        let country = self
            .country
            .and_then(|c| c.iso_code)
            .or(self.country_code)
            .or_else(|| self.registered_country.and_then(|c| c.iso_code))
            .filter(|c| !c.is_empty());
        if coords.is_none() && country.is_none() {
            return None;
        }
        Some(Place {
            country,
            coords,
            prefix_len,
        })
    }
}

/// Degrees stored as a double, a float, an integer or a string (CSV-converted databases
/// store every field as a string).
fn degrees<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    struct Degrees;
    impl Visitor<'_> for Degrees {
        type Value = Option<f64>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a number of degrees")
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok(v.is_finite().then_some(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v as f64))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v as f64))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(v.trim().parse::<f64>().ok().filter(|n| n.is_finite()))
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(Degrees)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONDON: Coords = Coords {
        lat: 51.5074,
        lon: -0.1278,
    };
    const PARIS: Coords = Coords {
        lat: 48.8566,
        lon: 2.3522,
    };

    #[test]
    fn haversine_matches_known_distances() {
        assert!(
            (distance_km(LONDON, PARIS) - 343.6).abs() < 1.0,
            "{}",
            distance_km(LONDON, PARIS)
        );
        assert_eq!(distance_km(PARIS, PARIS), 0.0);
        assert!((distance_km(LONDON, PARIS) - distance_km(PARIS, LONDON)).abs() < 1e-9);
        // Antipodes: half the circumference, without NaN from rounding.
        let d = distance_km(
            Coords { lat: 0.0, lon: 0.0 },
            Coords {
                lat: 0.0,
                lon: 180.0,
            },
        );
        assert!((d - 20_015.1).abs() < 1.0, "{d}");
        // Across the antimeridian is short, not the long way round.
        let d = distance_km(
            Coords {
                lat: 0.0,
                lon: 179.5,
            },
            Coords {
                lat: 0.0,
                lon: -179.5,
            },
        );
        assert!((d - 111.2).abs() < 0.5, "{d}");
    }

    #[test]
    fn local_ranges_are_built_in() {
        let us = local_place("127.1.0.9".parse().unwrap()).unwrap();
        assert_eq!(us.country.as_deref(), Some("US"));
        assert_eq!(
            us.coords,
            Some(Coords {
                lat: 39.04,
                lon: -77.49
            })
        );
        assert_eq!(us.prefix_len, Some(16));
        let eu = local_place("::ffff:127.2.3.4".parse().unwrap()).unwrap();
        assert_eq!(eu.country.as_deref(), Some("IE"));
        let asia = GeoDb::empty().locate("127.3.255.255".parse().unwrap());
        assert_eq!(asia.country.as_deref(), Some("IN"));
        assert_eq!(local_place("127.0.0.1".parse().unwrap()), None);
        assert_eq!(local_place("127.4.0.1".parse().unwrap()), None);
        assert_eq!(
            GeoDb::empty().locate("8.8.8.8".parse().unwrap()),
            Place::UNKNOWN
        );
    }

    #[test]
    fn both_record_shapes_decode() {
        let city: Record = serde_json::from_value(serde_json::json!({
            "city": {"names": {"en": "Dublin"}},
            "country": {"iso_code": "IE", "names": {"en": "Ireland"}},
            "location": {"latitude": 53.35, "longitude": -6.26, "accuracy_radius": 50},
        }))
        .unwrap();
        let place = city.into_place(Some(24)).unwrap();
        assert_eq!(
            place.coords,
            Some(Coords {
                lat: 53.35,
                lon: -6.26
            })
        );
        assert_eq!(place.country.as_deref(), Some("IE"));
        let flat: Record = serde_json::from_value(serde_json::json!({
            "city": "Mumbai", "country_code": "IN", "latitude": "19.08", "longitude": 72.88,
        }))
        .unwrap();
        let place = flat.into_place(None).unwrap();
        assert_eq!(
            place.coords,
            Some(Coords {
                lat: 19.08,
                lon: 72.88
            })
        );
        assert_eq!(place.country.as_deref(), Some("IN"));
        let nothing: Record = serde_json::from_value(serde_json::json!({"asn": 1})).unwrap();
        assert_eq!(nothing.into_place(None), None);
        let out_of_range: Record = serde_json::from_value(
            serde_json::json!({"latitude": 95.0, "longitude": 1.0, "country_code": "XX"}),
        )
        .unwrap();
        let place = out_of_range.into_place(None).unwrap();
        assert_eq!((place.coords, place.country.as_deref()), (None, Some("XX")));
    }
}
