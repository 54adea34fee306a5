//! The purge API over HTTP: accepting purges durably, auth, bad input, rate limits, restarts.

#[path = "support/server.rs"]
mod support;

use edgecache_purge_api::{PurgeApi, PurgeRequest, RegisterPop};
use support::{Service, TOKEN, config, error_text, json};

fn tags(tags: &[&str]) -> PurgeRequest {
    PurgeRequest {
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn accepted_purges_get_the_next_seq_and_a_202() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(config(dir.path())).await;
    for expected in 1..=3u64 {
        let response = service
            .post("/v1/purge", r#"{"urls": ["/app.js?v=2"], "soft": true}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        let body = json(response).await;
        assert_eq!(body["seq"], expected);
        let id = body["id"].as_str().unwrap();
        assert!(id.starts_with(&format!("p-{expected}-")), "{id}");
        assert_eq!(location, format!("/v1/purge/{id}"));
    }
    let status = json(service.get("/v1/purge/").send().await.unwrap()).await;
    assert!(status["error"].is_string(), "{status}");
    let poll = json(service.get("/v1/purges?since=1").send().await.unwrap()).await;
    assert_eq!(poll["last_seq"], 3);
    assert_eq!(poll["purges"].as_array().unwrap().len(), 2);
    assert_eq!(poll["purges"][0]["request"]["urls"][0], "/app.js?v=2");
    assert_eq!(poll["purges"][0]["request"]["soft"], true);
    assert_eq!(
        service.metric("edgecache_purges_accepted_total").await,
        Some(3.0)
    );
    service.stop().await;
}

#[tokio::test]
async fn a_restart_keeps_every_purge_and_the_registry_and_continues_the_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(config(dir.path())).await;
    let client = service.client();
    let first = client.purge(&tags(&["a"])).await.unwrap();
    let second = client.purge(&tags(&["b"])).await.unwrap();
    let pop = RegisterPop {
        name: "us-east".into(),
        url: "http://127.0.1.1:8080".into(),
        admin_url: Some("http://127.0.1.1:9080".into()),
        applied_seq: None,
    };
    client.register(&pop).await.unwrap();
    client.report_applied("us-east", 1).await.unwrap();
    service.stop().await;

    let service = Service::start(config(dir.path())).await;
    let client = service.client();
    let status = client.status(&first.id).await.unwrap();
    assert_eq!((status.seq, status.request.clone()), (1, tags(&["a"])));
    assert_eq!(client.status(&second.id).await.unwrap().seq, 2);
    let third = client.purge(&tags(&["c"])).await.unwrap();
    assert_eq!(third.seq, 3);
    let pops = client.pops().await.unwrap();
    assert_eq!(pops.len(), 1);
    assert_eq!(pops[0].name, "us-east");
    assert_eq!(pops[0].admin_url.as_deref(), Some("http://127.0.1.1:9080"));
    assert_eq!((pops[0].last_applied_seq, pops[0].behind), (1, 2));
    service.stop().await;
}

#[tokio::test]
async fn a_bad_token_is_401_and_nothing_is_appended() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(config(dir.path())).await;
    let http = reqwest::Client::new();
    let body = r#"{"tags": ["a"]}"#;
    let attempts = [
        (None, "missing Authorization: Bearer header"),
        (Some("Bearer wrong-token"), "invalid bearer token"),
        (Some("Bearer test-token-and-more"), "invalid bearer token"),
        (
            Some("Basic dGVzdC10b2tlbg=="),
            "Authorization must be \"Bearer TOKEN\"",
        ),
    ];
    for (authorization, expected) in attempts {
        let mut request = http
            .post(service.url("/v1/purge"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{authorization:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        assert_eq!(error_text(response).await, expected);
    }
    let pops = http.get(service.url("/v1/pops")).send().await.unwrap();
    assert_eq!(pops.status(), 401);
    let poll = json(service.get("/v1/purges").send().await.unwrap()).await;
    assert_eq!(poll["last_seq"], 0);
    assert_eq!(
        service
            .metric("edgecache_purge_api_errors_total{reason=\"unauthorized\"}")
            .await,
        Some(5.0)
    );
    // Health and metrics stay open for probes.
    let health = http.get(service.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    service.stop().await;
}

#[tokio::test]
async fn malformed_bodies_are_400_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(config(dir.path())).await;
    let cases = [
        (r#"{"tags": ["a"]"#, "EOF while parsing"),
        (r#"{"url": ["/a"]}"#, "unknown field `url`"),
        (
            r#"{"tags": "a"}"#,
            "tags: invalid type: string \"a\", expected a sequence",
        ),
        (
            r#"{"urls": ["app.js"]}"#,
            "urls[0]: must be a path starting with /",
        ),
        (
            r#"{"prefixes": ["/img/", "img"]}"#,
            "prefixes[1]: must be a path starting with /",
        ),
        (
            r#"{"tags": ["has space"]}"#,
            "tags[0]: must not contain whitespace",
        ),
        (r#"{}"#, "purge names nothing"),
        (r#"{"soft": true}"#, "purge names nothing"),
    ];
    for (body, expected) in cases {
        let response = service.post("/v1/purge", body).send().await.unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let text = error_text(response).await;
        assert!(text.contains(expected), "{body}: {text}");
    }
    let response = service
        .post("/v1/pops/register", r#"{"name": "a b", "url": "http://x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(error_text(response).await.starts_with("name: "));
    let response = service.get("/v1/purges?since=abc").send().await.unwrap();
    assert_eq!(response.status(), 400);
    assert!(error_text(response).await.contains("since"));
    let poll = json(service.get("/v1/purges").send().await.unwrap()).await;
    assert_eq!(poll["last_seq"], 0, "nothing invalid was appended");
    service.stop().await;
}

#[tokio::test]
async fn a_body_that_is_not_declared_json_is_415() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(config(dir.path())).await;
    let response = reqwest::Client::new()
        .post(service.url("/v1/purge"))
        .bearer_auth(TOKEN)
        .body(r#"{"tags": ["a"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    assert!(error_text(response).await.contains("application/json"));
    service.stop().await;
}

#[tokio::test]
async fn an_oversize_body_is_413() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.max_body_bytes = 4096;
    let service = Service::start(config).await;
    let many: Vec<String> = (0..500).map(|i| format!("/asset/{i}.js")).collect();
    let body = serde_json::json!({ "urls": many }).to_string();
    assert!(body.len() > 4096);
    let response = service.post("/v1/purge", &body).send().await.unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(
        error_text(response).await,
        "request body is larger than 4096 bytes"
    );
    service.stop().await;
}

#[tokio::test]
async fn too_many_entries_are_400() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.max_entries = 3;
    let service = Service::start(config).await;
    let body = r#"{"tags": ["a", "b", "c", "d"]}"#;
    let response = service.post("/v1/purge", body).send().await.unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        error_text(response).await,
        "tags: 4 entries, at most 3 per request"
    );
    service.stop().await;
}

#[tokio::test]
async fn purges_past_the_rate_limit_get_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.rate_per_second = 0.5;
    config.burst = 2;
    let service = Service::start(config).await;
    for _ in 0..2 {
        let response = service.post("/v1/purge", r#"{"all": true}"#).send().await;
        assert_eq!(response.unwrap().status(), 202);
    }
    let response = service
        .post("/v1/purge", r#"{"all": true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "2");
    assert_eq!(
        error_text(response).await,
        "rate limit exceeded: retry in 2s"
    );
    // Edges following the log are not limited.
    let poll = json(service.get("/v1/purges").send().await.unwrap()).await;
    assert_eq!(poll["last_seq"], 2);
    service.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(config(dir.path())).await;
    let response = service.get("/v2/purge").send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(error_text(response).await, "no route for GET /v2/purge");
    let response = service.get("/v1/purge").send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(
        error_text(response).await,
        "GET is not allowed on /v1/purge"
    );
    let response = service.get("/v1/purge/p-1-abc").send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(error_text(response).await, "no purge with id \"p-1-abc\"");
    service.stop().await;
}

#[tokio::test]
async fn run_refuses_a_bad_config_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = config(dir.path());
    config.token = String::new();
    let err = edgecache_purge_api::run(listener, config, std::future::pending())
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "purge_api.token: must not be empty");
    // Only one process may own a data dir at a time.
    let api = PurgeApi::open(support::config(dir.path())).unwrap();
    let err = PurgeApi::open(support::config(dir.path())).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("purge_api.data_dir: cannot open"),
        "{err}"
    );
    drop(api);
}

#[tokio::test]
async fn an_address_that_keeps_failing_authentication_is_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(config(dir.path())).await;
    let http = reqwest::Client::new();
    let attempt = |client: &reqwest::Client, token: &str| {
        client
            .post(service.url("/v1/purge"))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .body(r#"{"tags": ["a"]}"#)
            .send()
    };
    // Ten failures in a row are plain 401s; the eleventh locks the address out.
    for i in 0..11 {
        let response = attempt(&http, &format!("guess-{i}")).await.unwrap();
        assert_eq!(response.status(), 401, "guess {i}");
    }
    // Now even the right token is refused from that address, without being compared.
    let locked = attempt(&http, TOKEN).await.unwrap();
    assert_eq!(locked.status(), 429);
    assert_eq!(locked.headers()["retry-after"], "1");
    assert!(
        error_text(locked)
            .await
            .starts_with("too many failed authentications from this address")
    );
    // Another address is not affected, and nothing was appended by the attempts.
    let elsewhere = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let accepted = attempt(&elsewhere, TOKEN).await.unwrap();
    assert_eq!(accepted.status(), 202);
    assert_eq!(json(accepted).await["seq"], 1);
    assert_eq!(
        service
            .metric("edgecache_purge_api_errors_total{reason=\"auth_locked\"}")
            .await,
        Some(1.0)
    );
    service.stop().await;
}
