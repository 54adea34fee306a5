//! GeoDNS: `A` / `AAAA` for the CDN zone answered with the nearest healthy PoP's address,
//! locating the client by its EDNS Client Subnet when the resolver sends one.

use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::op::{Edns, Header, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::rdata::{A, AAAA, CNAME};
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};
use hickory_server::authority::MessageResponseBuilder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};

use super::RouterError;
use super::geo::Place;
use super::select::{Host, RouteTable};

/// Answers live briefly so a PoP that goes down leaves resolvers' caches quickly.
pub const TTL: u32 = 20;

/// The hickory request handler for the zone.
#[derive(Debug)]
pub struct GeoDns {
    table: Arc<RouteTable>,
    zone: LowerName,
}

/// What to send back for one request.
#[derive(Debug)]
struct Answer {
    code: ResponseCode,
    authoritative: bool,
    records: Vec<Record>,
    edns: Option<Edns>,
}

impl GeoDns {
    /// `zone` as in the config, e.g. `cdn.test`.
    pub fn new(table: Arc<RouteTable>, zone: &str) -> Result<GeoDns, RouterError> {
        let name = Name::from_ascii(format!("{}.", zone.trim_end_matches('.')))
            .map_err(|err| RouterError::config("router.zone", err.to_string()))?;
        Ok(GeoDns {
            table,
            zone: LowerName::new(&name),
        })
    }

    fn answer(&self, request: &Request) -> Answer {
        let mut answer = Answer {
            code: ResponseCode::NoError,
            authoritative: false,
            records: Vec::new(),
            edns: None,
        };
        let ecs = request
            .edns()
            .and_then(|e| match e.option(EdnsCode::Subnet) {
                Some(EdnsOption::Subnet(subnet)) => Some(*subnet),
                _ => None,
            });
        if let Some(req_edns) = request.edns() {
            let mut edns = Edns::new();
            edns.set_max_payload(req_edns.max_payload().max(512));
            edns.set_version(0);
            if req_edns.version() > 0 {
                edns.set_rcode_high(ResponseCode::BADVERS.high());
                answer.code = ResponseCode::BADVERS;
                answer.edns = Some(edns);
                return answer;
            }
            answer.edns = Some(edns);
        }
        if request.message_type() != MessageType::Query {
            answer.code = ResponseCode::FormErr;
            return answer;
        }
        if request.op_code() != OpCode::Query {
            answer.code = ResponseCode::NotImp;
            return answer;
        }
        let [query] = request.queries() else {
            answer.code = ResponseCode::FormErr;
            return answer;
        };
        if query.query_class() != DNSClass::IN || !self.zone.zone_of(query.name()) {
            answer.code = ResponseCode::Refused;
            return answer;
        }
        answer.authoritative = true;

        // The resolver's client, when it says who that is (RFC 7871); a source prefix of 0
        // means it will not, and the answer is then the resolver's own.
        let (client, source_prefix) = match &ecs {
            Some(s) if s.source_prefix() > 0 => (s.addr(), Some(s.source_prefix())),
            _ => (request.src().ip(), None),
        };
        let place = self.table.locate(client);
        let decision = self.table.decide_at(client.to_canonical(), place.clone());
        let target = self.table.target(&decision);
        let owner = query.original().name().clone();
        let rdata = match (query.query_type(), &target.endpoint().host) {
            (RecordType::A, Host::V4(ip)) => Some(RData::A(A(*ip))),
            (RecordType::AAAA, Host::V6(ip)) => Some(RData::AAAA(AAAA(*ip))),
            (RecordType::A | RecordType::AAAA | RecordType::CNAME, Host::Name(host)) => {
                Name::from_ascii(format!("{host}."))
                    .ok()
                    .map(|name| RData::CNAME(CNAME(name)))
            }
            // NOERROR without records: the name exists, not with this type.
            _ => None,
        };
        tracing::debug!(
            %client,
            name = %owner,
            qtype = %query.query_type(),
            to = target.name(),
            answered = rdata.is_some(),
            "dns query"
        );
        answer
            .records
            .extend(rdata.map(|rdata| Record::from_rdata(owner, TTL, rdata)));
        if let (Some(edns), Some(subnet)) = (answer.edns.as_mut(), &ecs) {
            let scope = source_prefix.map_or(0, |source| scope_prefix(client, &place, source));
            edns.options_mut()
                .insert(EdnsOption::Subnet(ClientSubnet::new(
                    subnet.addr(),
                    subnet.source_prefix(),
                    scope,
                )));
        }
        answer
    }
}

/// How much of the client's address the answer depends on: the network the location came
/// from, or all the bits the resolver sent when the location is unknown.
fn scope_prefix(client: IpAddr, place: &Place, source_prefix: u8) -> u8 {
    // A location found for an IPv4-mapped address has an IPv4 prefix: not comparable.
    let same_family = client.to_canonical().is_ipv4() == client.is_ipv4();
    match place.prefix_len {
        Some(prefix) if same_family => prefix,
        _ => source_prefix,
    }
}

#[async_trait::async_trait]
impl RequestHandler for GeoDns {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let answer = self.answer(request);
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = answer.edns {
            builder.edns(edns);
        }
        let mut header = Header::response_from_request(request.header());
        header.set_authoritative(answer.authoritative);
        header.set_response_code(answer.code);
        let response = builder.build(
            header,
            answer.records.iter(),
            std::iter::empty(),
            std::iter::empty(),
            std::iter::empty(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(err) => {
                tracing::debug!(src = %request.src(), error = %err, "dns response not sent");
                let mut header = Header::response_from_request(request.header());
                header.set_response_code(ResponseCode::ServFail);
                header.into()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::geo::Coords;

    #[test]
    fn scope_is_the_located_network_or_the_source_prefix() {
        let found = Place {
            country: Some("IE".into()),
            coords: Some(Coords { lat: 1.0, lon: 2.0 }),
            prefix_len: Some(16),
        };
        assert_eq!(scope_prefix("127.2.0.0".parse().unwrap(), &found, 24), 16);
        assert_eq!(
            scope_prefix("1.2.3.0".parse().unwrap(), &Place::UNKNOWN, 24),
            24
        );
        assert_eq!(
            scope_prefix("::ffff:127.2.0.0".parse().unwrap(), &found, 120),
            120
        );
    }

    #[test]
    fn zone_names_are_fully_qualified_and_case_blind() {
        let zone = LowerName::new(&Name::from_ascii("cdn.test.").unwrap());
        let q = |s: &str| LowerName::new(&Name::from_ascii(s).unwrap());
        assert!(zone.zone_of(&q("assets.CDN.test.")));
        assert!(zone.zone_of(&q("cdn.test.")));
        assert!(!zone.zone_of(&q("example.com.")));
        assert!(!zone.zone_of(&q("notcdn.test.")));
    }
}
