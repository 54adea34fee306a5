//! Purges reaching PoPs: registration, the long-poll push path, pull catch-up, status and lag.

#[path = "support/server.rs"]
mod support;

use std::time::{Duration, Instant};

use edgecache_purge_api::{ClientError, PurgeApi, PurgeRequest, RegisterPop, unix_ms};
use support::{Service, config, error_text, json};

fn prefix(p: &str) -> PurgeRequest {
    PurgeRequest {
        prefixes: vec![p.to_owned()],
        ..Default::default()
    }
}

fn pop(name: &str) -> RegisterPop {
    RegisterPop {
        name: name.to_owned(),
        url: format!("http://{name}.test:8080"),
        admin_url: None,
        applied_seq: None,
    }
}

#[tokio::test]
async fn a_purge_is_complete_once_every_live_pop_reports_it_applied() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(config(dir.path())).await;
    let client = service.client();
    client.register(&pop("us-east")).await.unwrap();
    client.register(&pop("eu-west")).await.unwrap();
    let accepted = client.purge(&prefix("/img/")).await.unwrap();

    let status = client.status(&accepted.id).await.unwrap();
    assert!(!status.complete);
    assert!(status.pops.iter().all(|p| p.live && !p.applied));

    client
        .report_applied("us-east", accepted.seq)
        .await
        .unwrap();
    let status = client.status(&accepted.id).await.unwrap();
    assert!(!status.complete, "eu-west has not applied it yet");

    client
        .report_applied("eu-west", accepted.seq)
        .await
        .unwrap();
    let status = client
        .wait_complete(&accepted.id, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(status.complete);
    assert_eq!(status.request, prefix("/img/"));
    for p in &status.pops {
        let at = p.applied_at.expect("applied_at once applied");
        assert!(at >= status.accepted_at && at <= unix_ms(), "{p:?}");
    }
    assert!(status.propagation_ms().is_some());

    let raw = json(
        service
            .get(&format!("/v1/purge/{}", accepted.id))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(raw["complete"], true);
    assert_eq!(raw["pops"][0]["name"], "eu-west");
    assert_eq!(raw["pops"][0]["applied"], true);
    assert_eq!(raw["pops"][0]["live"], true);
    assert!(raw["pops"][0]["applied_at"].is_u64());
    service.stop().await;
}

#[tokio::test]
async fn a_dead_pop_does_not_block_completion() {
    let dir = tempfile::tempdir().unwrap();
    {
        // A PoP that registered long ago and was not heard from since.
        let api = PurgeApi::open(config(dir.path())).unwrap();
        api.pops()
            .register(pop("gone"), unix_ms() - 60_000)
            .unwrap();
        api.flush().unwrap();
    }
    let service = Service::start(config(dir.path())).await;
    let client = service.client();
    client.register(&pop("alive")).await.unwrap();
    let accepted = client.purge(&prefix("/")).await.unwrap();
    client.report_applied("alive", accepted.seq).await.unwrap();

    let status = client.status(&accepted.id).await.unwrap();
    assert!(status.complete);
    let gone = status.pops.iter().find(|p| p.name == "gone").unwrap();
    assert!(!gone.live && !gone.applied && gone.applied_at.is_none());

    let pops = client.pops().await.unwrap();
    let gone = pops.iter().find(|p| p.name == "gone").unwrap();
    assert!(!gone.live);
    assert_eq!((gone.last_applied_seq, gone.behind), (0, 1));
    assert!(gone.lag_seconds >= 0.0);
    assert_eq!(
        service
            .metric("edgecache_purge_pop_live{pop=\"gone\"}")
            .await,
        Some(0.0)
    );
    assert_eq!(
        service
            .metric("edgecache_purge_pop_applied_seq{pop=\"alive\"}")
            .await,
        Some(1.0)
    );
    // Once decommissioned it is no longer listed.
    client.remove_pop("gone").await.unwrap();
    let err = client.remove_pop("gone").await.unwrap_err();
    assert_eq!(err.status(), Some(404));
    assert_eq!(client.pops().await.unwrap().len(), 1);
    service.stop().await;
}

#[tokio::test]
async fn a_long_poll_returns_as_soon_as_a_purge_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(config(dir.path())).await;
    let client = service.client();
    client.register(&pop("us-east")).await.unwrap();
    let poller = tokio::spawn({
        let client = client.clone();
        async move {
            let answer = client
                .poll_as("us-east", 0, Duration::from_secs(10))
                .await
                .unwrap();
            (answer, Instant::now())
        }
    });
    // Purge only once the poll is parked on the server, so the wake-up path is what is tested.
    while service.metric("edgecache_purge_polls_waiting").await != Some(1.0) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let accepted = client.purge(&prefix("/css/")).await.unwrap();
    let accepted_at = Instant::now();
    let (answer, answered_at) = poller.await.unwrap();
    assert_eq!(answer.last_seq, 1);
    assert_eq!(answer.purges.len(), 1);
    assert_eq!(answer.purges[0].id, accepted.id);
    assert_eq!(answer.purges[0].request, prefix("/css/"));
    let woken_after = answered_at.saturating_duration_since(accepted_at);
    assert!(
        woken_after < Duration::from_secs(5),
        "woken by the purge, not the 10 s timeout"
    );
    service.stop().await;
}

#[tokio::test]
async fn a_pop_that_was_down_pulls_every_missed_purge_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(config(dir.path())).await;
    let client = service.client();
    client.register(&pop("ap-south")).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(client.purge(&prefix(&format!("/{i}/"))).await.unwrap().id);
    }
    // The edge comes back knowing it applied up to seq 1 and pages through the rest.
    let back = RegisterPop {
        applied_seq: Some(1),
        ..pop("ap-south")
    };
    assert_eq!(client.register(&back).await.unwrap().behind, 4);
    let mut since = 1;
    let mut seen = Vec::new();
    loop {
        let url = format!("/v1/purges?since={since}&limit=2&pop=ap-south");
        let page = json(service.get(&url).send().await.unwrap()).await;
        let purges = page["purges"].as_array().unwrap().clone();
        assert!(purges.len() <= 2);
        for p in &purges {
            since = p["seq"].as_u64().unwrap();
            seen.push(p["id"].as_str().unwrap().to_owned());
        }
        client.report_applied("ap-south", since).await.unwrap();
        if since >= page["last_seq"].as_u64().unwrap() {
            break;
        }
    }
    assert_eq!(seen, ids[1..]);
    let info = client.report_applied("ap-south", 5).await.unwrap();
    assert_eq!((info.behind, info.lag_seconds), (0, 0.0));
    for id in &ids {
        assert!(client.status(id).await.unwrap().complete, "{id}");
    }
    service.stop().await;
}

#[tokio::test]
async fn progress_that_the_log_cannot_explain_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(config(dir.path())).await;
    let client = service.client();
    client.register(&pop("us-east")).await.unwrap();
    let err = client.report_applied("us-east", 7).await.unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert!(
        err.to_string().contains("past the log's last seq 0"),
        "{err}"
    );
    let err = client.report_applied("nobody", 0).await.unwrap_err();
    assert_eq!(err.status(), Some(404));
    let response = service
        .post("/v1/pops/us-east/applied", r#"{"seq": "one"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(error_text(response).await.contains("seq: invalid type"));
    service.stop().await;
}

#[tokio::test]
async fn the_client_reports_server_errors_and_timeouts() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(config(dir.path())).await;
    let client = service.client();
    let err = client.purge(&PurgeRequest::default()).await.unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert!(err.to_string().contains("purge names nothing"), "{err}");

    let stranger = edgecache_purge_api::PurgeClient::new(&service.base, "nope").unwrap();
    let err = stranger.pops().await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert!(
        err.to_string().ends_with("401: invalid bearer token"),
        "{err}"
    );

    client.register(&pop("slow")).await.unwrap();
    let accepted = client.purge(&prefix("/")).await.unwrap();
    let err = client
        .wait_complete(&accepted.id, Duration::from_millis(200))
        .await
        .unwrap_err();
    let ClientError::Timeout { last, .. } = err else {
        panic!("expected a timeout, got {err}");
    };
    assert!(!last.complete);
    assert_eq!(last.pops[0].name, "slow");

    let answer = client.poll(0, Duration::ZERO).await.unwrap();
    assert_eq!(answer.purges.len(), 1);
    service.stop().await;

    let err = client.pops().await.unwrap_err();
    assert!(matches!(err, ClientError::Http { .. }), "{err}");
}

#[tokio::test]
async fn shutdown_answers_open_long_polls_instead_of_waiting_them_out() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(config(dir.path())).await;
    let poller = tokio::spawn({
        let client = service.client();
        async move { client.poll(0, Duration::from_secs(10)).await }
    });
    while service.metric("edgecache_purge_polls_waiting").await != Some(1.0) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stopping = Instant::now();
    service.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "{:?}",
        stopping.elapsed()
    );
    let answer = poller.await.unwrap().unwrap();
    assert!(answer.purges.is_empty());
}
