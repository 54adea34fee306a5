//! GeoDNS over real UDP and TCP sockets: nearest PoP by source address or EDNS Client
//! Subnet, TTL, refusals, garbage, and PoPs leaving and coming back.

mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};
use support::health::HealthServer;

use edgecache::router::{self, RouterConfig, RouterError};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{Name, RData, RecordType};
use mmdb_writer::Writer;
use mmdb_writer::ipnet::IpNet;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const US: Ipv4Addr = Ipv4Addr::new(127, 0, 1, 1);
const EU: Ipv4Addr = Ipv4Addr::new(127, 0, 2, 1);
const AP: Ipv4Addr = Ipv4Addr::new(127, 0, 3, 1);
const ORIGIN: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 5);
/// A PoP reachable only over IPv6 (never contacted: its health is probed on IPv4 loopback).
const V6_POP: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);

struct Setup {
    pops: Vec<HealthServer>,
    udp: SocketAddr,
    tcp: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), RouterError>>,
    _dir: tempfile::TempDir,
}

impl Setup {
    /// us-east, eu-west, ap-south on 127.0.{1,2,3}.1, an IPv6-only PoP in Tokyo, a
    /// GeoIP2-City database placing 2001:db8:1::/48 in Tokyo and 198.51.100.0/24 in Paris.
    async fn start() -> Setup {
        let pops = vec![
            HealthServer::start(US).await,
            HealthServer::start(EU).await,
            HealthServer::start(AP).await,
            HealthServer::start(Ipv4Addr::new(127, 0, 4, 1)).await,
        ];
        let dir = tempfile::tempdir().unwrap();
        let mut city = Writer::new("GeoIP2-City");
        let record = |iso: &str, lat: f64, lon: f64| json!({"country": {"iso_code": iso}, "location": {"latitude": lat, "longitude": lon}});
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        city.insert(net("2001:db8:1::/48"), &record("JP", 35.68, 139.69))
            .unwrap();
        city.insert(net("198.51.100.0/24"), &record("FR", 48.86, 2.35))
            .unwrap();
        let db = dir.path().join("city.mmdb");
        std::fs::write(&db, city.to_bytes().unwrap()).unwrap();

        let spec = |name: &str, i: usize, at: &str| {
            router::parse_pop_spec(&format!("{name}={}@{at}", pops[i].url())).unwrap()
        };
        let v6 = router::parse_pop_spec(&format!(
            "tokyo-v6=http://[{V6_POP}]:8080@35.68,139.69,admin={}",
            pops[3].url()
        ))
        .unwrap();
        let mut config = RouterConfig::with_pops(vec![
            spec("us-east", 0, "39.04,-77.49"),
            spec("eu-west", 1, "53.35,-6.26"),
            spec("ap-south", 2, "19.08,72.88"),
            v6,
        ]);
        config.geoip = vec![db];
        config.origin = Some(format!("http://{ORIGIN}:8000"));

        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (udp_addr, tcp_addr) = (udp.local_addr().unwrap(), tcp.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(router::run(http, Some((udp, tcp)), config, async {
            let _ = stopped.await;
        }));
        Setup {
            pops,
            udp: udp_addr,
            tcp: tcp_addr,
            stop: Some(stop),
            task,
            _dir: dir,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(5), &mut self.task)
            .await
            .expect("router stops within 5 s")
            .unwrap()
            .unwrap();
    }
}

fn query(name: &str, rtype: RecordType, ecs: Option<(&str, u8)>) -> Message {
    let mut m = Message::new();
    m.set_id(next_id())
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    if let Some((addr, prefix)) = ecs {
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        edns.options_mut()
            .insert(EdnsOption::Subnet(ClientSubnet::new(
                addr.parse().unwrap(),
                prefix,
                0,
            )));
        m.set_edns(edns);
    }
    m
}

fn next_id() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0x1234);
    NEXT.fetch_add(7, Ordering::Relaxed)
}

/// One query over UDP from `from` (a loopback address), with up to three tries.
async fn ask_udp(server: SocketAddr, from: &str, message: &Message) -> Message {
    let socket = UdpSocket::bind((from.parse::<IpAddr>().unwrap(), 0))
        .await
        .unwrap();
    let bytes = message.to_vec().unwrap();
    for _ in 0..3 {
        socket.send_to(&bytes, server).await.unwrap();
        let mut buf = vec![0u8; 4096];
        if let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buf)).await
        {
            let reply = Message::from_vec(&buf[..n]).unwrap();
            assert_eq!(reply.id(), message.id());
            return reply;
        }
    }
    panic!("no UDP answer from {server}");
}

/// One query over a new TCP connection from `from`.
async fn ask_tcp(server: SocketAddr, from: &str, message: &Message) -> Message {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    let mut stream = tokio::time::timeout(Duration::from_secs(2), socket.connect(server))
        .await
        .unwrap()
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(2), exchange_tcp(&mut stream, message))
        .await
        .expect("TCP answer within 2 s");
    assert_eq!(reply.id(), message.id());
    reply
}

async fn exchange_tcp(stream: &mut TcpStream, message: &Message) -> Message {
    let bytes = message.to_vec().unwrap();
    stream
        .write_all(&(bytes.len() as u16).to_be_bytes())
        .await
        .unwrap();
    stream.write_all(&bytes).await.unwrap();
    let len = stream.read_u16().await.unwrap();
    let mut buf = vec![0u8; len as usize];
    stream.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).unwrap()
}

/// The addresses answered (A and AAAA), checking the answers' TTL.
fn addresses(reply: &Message) -> Vec<IpAddr> {
    reply
        .answers()
        .iter()
        .map(|r| {
            assert_eq!(r.ttl(), 20, "TTL");
            match r.data() {
                RData::A(a) => IpAddr::V4(a.0),
                RData::AAAA(a) => IpAddr::V6(a.0),
                other => panic!("unexpected record {other:?}"),
            }
        })
        .collect()
}

async fn a_from(setup: &Setup, from: &str) -> Vec<IpAddr> {
    let reply = ask_udp(
        setup.udp,
        from,
        &query("assets.cdn.test.", RecordType::A, None),
    )
    .await;
    assert_eq!(reply.response_code(), ResponseCode::NoError);
    addresses(&reply)
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
async fn a_records_name_the_nearest_pop_by_source_address_over_udp_and_tcp() {
    let setup = Setup::start().await;
    for (from, pop) in [("127.1.0.9", US), ("127.2.0.9", EU), ("127.3.0.9", AP)] {
        let q = query("assets.cdn.test.", RecordType::A, None);
        let reply = ask_udp(setup.udp, from, &q).await;
        assert_eq!(reply.response_code(), ResponseCode::NoError);
        assert!(reply.authoritative(), "authoritative answer");
        assert_eq!(addresses(&reply), [IpAddr::V4(pop)], "UDP from {from}");
        assert_eq!(
            reply.answers()[0].name(),
            &Name::from_ascii("assets.cdn.test.").unwrap()
        );

        let q = query("ASSETS.cdn.test.", RecordType::A, None);
        let reply = ask_tcp(setup.tcp, from, &q).await;
        assert_eq!(addresses(&reply), [IpAddr::V4(pop)], "TCP from {from}");
    }
    // The zone apex is answered too.
    let q = query("cdn.test.", RecordType::A, None);
    let reply = ask_udp(setup.udp, "127.2.0.9", &q).await;
    assert_eq!(addresses(&reply), [IpAddr::V4(EU)]);
    setup.stop().await;
}

#[tokio::test]
async fn client_subnet_decides_the_answer_and_is_echoed_with_a_scope() {
    let setup = Setup::start().await;
    for (subnet, prefix, pop, scope) in [
        ("127.1.0.0", 24, US, 16),
        ("127.3.0.0", 24, AP, 16),
        ("198.51.100.0", 24, EU, 24),
    ] {
        // Same source address every time: only the subnet differs.
        let q = query("assets.cdn.test.", RecordType::A, Some((subnet, prefix)));
        let reply = ask_udp(setup.udp, "127.2.0.9", &q).await;
        assert_eq!(
            addresses(&reply),
            [IpAddr::V4(pop)],
            "ECS {subnet}/{prefix}"
        );
        let edns = reply.extensions().as_ref().expect("EDNS in the reply");
        let Some(EdnsOption::Subnet(echo)) = edns.option(EdnsCode::Subnet) else {
            panic!("no ECS option echoed: {edns:?}");
        };
        assert_eq!(echo.addr(), subnet.parse::<IpAddr>().unwrap());
        assert_eq!(echo.source_prefix(), prefix);
        assert_eq!(echo.scope_prefix(), scope, "{subnet}");
    }
    // An IPv6 subnet in Tokyo: AAAA is the IPv6 PoP there; A is empty (it has no IPv4).
    let q = query(
        "assets.cdn.test.",
        RecordType::AAAA,
        Some(("2001:db8:1::", 56)),
    );
    let reply = ask_tcp(setup.tcp, "127.1.0.9", &q).await;
    assert_eq!(addresses(&reply), [IpAddr::V6(V6_POP)]);
    let q = query(
        "assets.cdn.test.",
        RecordType::A,
        Some(("2001:db8:1::", 56)),
    );
    let reply = ask_udp(setup.udp, "127.1.0.9", &q).await;
    assert_eq!(reply.response_code(), ResponseCode::NoError);
    assert!(reply.answers().is_empty());
    // A source prefix of 0 means "don't use my client's address": the source decides.
    let q = query("assets.cdn.test.", RecordType::A, Some(("0.0.0.0", 0)));
    let reply = ask_udp(setup.udp, "127.3.0.9", &q).await;
    assert_eq!(addresses(&reply), [IpAddr::V4(AP)]);
    setup.stop().await;
}

#[tokio::test]
async fn aaaa_for_an_ipv4_pop_and_other_types_are_empty_and_other_names_refused() {
    let setup = Setup::start().await;
    for rtype in [RecordType::AAAA, RecordType::MX, RecordType::TXT] {
        let q = query("assets.cdn.test.", rtype, None);
        let reply = ask_udp(setup.udp, "127.2.0.9", &q).await;
        assert_eq!(reply.response_code(), ResponseCode::NoError, "{rtype}");
        assert!(reply.answers().is_empty(), "{rtype}");
    }
    for name in ["example.com.", "notcdn.test.", "cdn.test.example."] {
        let q = query(name, RecordType::A, None);
        let reply = ask_udp(setup.udp, "127.2.0.9", &q).await;
        assert_eq!(reply.response_code(), ResponseCode::Refused, "{name}");
        assert!(reply.answers().is_empty());
        let reply = ask_tcp(setup.tcp, "127.2.0.9", &q).await;
        assert_eq!(
            reply.response_code(),
            ResponseCode::Refused,
            "{name} over TCP"
        );
    }
    setup.stop().await;
}

#[tokio::test]
async fn garbage_packets_do_not_stop_the_server() {
    let setup = Setup::start().await;
    let socket = UdpSocket::bind("127.2.0.9:0").await.unwrap();
    // A header that promises a question and ends: FORMERR with the same id.
    let header_only = [0xBE, 0xEF, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    socket.send_to(&header_only, setup.udp).await.unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buf))
        .await
        .expect("FORMERR within 2 s")
        .unwrap();
    let reply = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(reply.id(), 0xBEEF);
    assert_eq!(reply.response_code(), ResponseCode::FormErr);
    // Shorter than a header, noise, a question with a bad label, nothing: never a crash.
    let noise: Vec<u8> = (0..700u32).map(|i| (i * 37 % 251) as u8).collect();
    let bad_label = [0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 63, b'a', 0, 1, 0, 1];
    for packet in [&[1u8, 2, 3][..], &noise, &bad_label, &[]] {
        socket.send_to(packet, setup.udp).await.unwrap();
    }
    let mut tcp = TcpStream::connect(setup.tcp).await.unwrap();
    tcp.write_all(&[0, 40]).await.unwrap();
    tcp.write_all(&noise[..40]).await.unwrap();
    drop(tcp);

    assert_eq!(a_from(&setup, "127.2.0.9").await, [IpAddr::V4(EU)]);
    let q = query("assets.cdn.test.", RecordType::A, None);
    let reply = ask_tcp(setup.tcp, "127.1.0.9", &q).await;
    assert_eq!(addresses(&reply), [IpAddr::V4(US)]);
    setup.stop().await;
}

#[tokio::test]
async fn a_dead_pop_leaves_dns_answers_within_two_seconds_and_all_down_means_origin() {
    let mut setup = Setup::start().await;
    assert_eq!(a_from(&setup, "127.2.0.9").await, [IpAddr::V4(EU)]);

    setup.pops[1].kill();
    let s = &setup;
    let took = within(
        Duration::from_secs(2),
        "eu-west leaves DNS",
        move || async move { a_from(s, "127.2.0.9").await != [IpAddr::V4(EU)] },
    )
    .await;
    eprintln!("eu-west left DNS answers after {took:?}");
    // Next nearest to Dublin is Ashburn.
    assert_eq!(a_from(&setup, "127.2.0.9").await, [IpAddr::V4(US)]);

    setup.pops[1].restart().await;
    let s = &setup;
    within(
        Duration::from_secs(3),
        "eu-west returns to DNS",
        move || async move { a_from(s, "127.2.0.9").await == [IpAddr::V4(EU)] },
    )
    .await;

    for pop in &mut setup.pops {
        pop.kill();
    }
    let s = &setup;
    within(
        Duration::from_secs(2),
        "origin answered",
        move || async move { a_from(s, "127.3.0.9").await == [IpAddr::V4(ORIGIN)] },
    )
    .await;
    setup.stop().await;
}
