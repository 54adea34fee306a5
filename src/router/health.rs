//! PoP health: one probe loop per PoP (`GET /healthz`), fall / rise thresholds, and the
//! shared up / down view every routing decision reads.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use super::RouterError;
use super::config::HealthConfig;
use super::select::Pop;

/// Which PoPs are up, by config index. Cheap to clone; clones see the same probes.
#[derive(Debug, Clone)]
pub struct HealthView {
    rx: watch::Receiver<Vec<bool>>,
}

impl HealthView {
    /// A view that never changes (no probes): for tests and tools.
    pub fn fixed(states: Vec<bool>) -> HealthView {
        HealthView {
            rx: watch::channel(states).1,
        }
    }

    /// The current state of every PoP.
    pub fn snapshot(&self) -> Vec<bool> {
        self.rx.borrow().clone()
    }

    /// Waits until `pred` holds for the states (or the probes stopped); for tests.
    pub async fn wait_for(&mut self, pred: impl FnMut(&Vec<bool>) -> bool) {
        let _ = self.rx.wait_for(pred).await;
    }
}

/// One PoP's consecutive-result counter: `fall` failures in a row take it down, `rise`
/// successes in a row bring it back. PoPs start up, so a router that just started sends
/// clients somewhere before the first probes are in.
#[derive(Debug, Clone)]
pub struct Tracker {
    fall: u32,
    rise: u32,
    healthy: bool,
    streak: u32,
}

impl Tracker {
    pub fn new(fall: u32, rise: u32) -> Tracker {
        Tracker {
            fall: fall.max(1),
            rise: rise.max(1),
            healthy: true,
            streak: 0,
        }
    }

    pub fn healthy(&self) -> bool {
        self.healthy
    }

    /// Counts one probe result; returns the new state when this result changed it.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if ok == self.healthy {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.healthy { self.fall } else { self.rise };
        if self.streak < needed {
            return None;
        }
        self.healthy = ok;
        self.streak = 0;
        Some(ok)
    }
}

/// Starts one probe loop per PoP on `tasks` (they stop when `tasks` is dropped).
pub fn spawn_probes(
    pops: &[Pop],
    config: &HealthConfig,
    tasks: &mut JoinSet<()>,
) -> Result<HealthView, RouterError> {
    let client = reqwest::Client::builder()
        // A new connection per probe: a PoP whose listener died must fail its next probe,
        // not be answered by a pooled connection that outlived it.
        .pool_max_idle_per_host(0)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(config.timeout())
        .timeout(config.timeout())
        .user_agent(concat!("edgecache-router/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(RouterError::Client)?;
    let (tx, rx) = watch::channel(vec![true; pops.len()]);
    let tx = Arc::new(tx);
    for (index, pop) in pops.iter().enumerate() {
        tasks.spawn(probe_loop(
            index,
            pop.name.clone(),
            pop.health_url.clone(),
            client.clone(),
            *config,
            tx.clone(),
        ));
    }
    Ok(HealthView { rx })
}

async fn probe_loop(
    index: usize,
    pop: String,
    url: String,
    client: reqwest::Client,
    config: HealthConfig,
    states: Arc<watch::Sender<Vec<bool>>>,
) {
    let mut tracker = Tracker::new(config.fall, config.rise);
    let mut ticks = tokio::time::interval(config.interval());
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let result = probe(&client, &url, config.timeout()).await;
        if let Err(reason) = &result {
            tracing::debug!(%pop, %url, %reason, "health probe failed");
        }
        match tracker.record(result.is_ok()) {
            Some(true) => tracing::info!(%pop, %url, "PoP is up"),
            Some(false) => tracing::warn!(
                %pop,
                %url,
                reason = %result.err().unwrap_or_default(),
                "PoP is down"
            ),
            None => continue,
        }
        let healthy = tracker.healthy();
        states.send_modify(|s| s[index] = healthy);
    }
}

/// One `GET`: any 2xx within `timeout` is healthy.
async fn probe(client: &reqwest::Client, url: &str, timeout: Duration) -> Result<(), String> {
    // reqwest's own timeout covers the request; this one also bounds DNS and the pool.
    match tokio::time::timeout(timeout, client.get(url).send()).await {
        Err(_) => Err(format!("no answer in {} ms", timeout.as_millis())),
        Ok(Err(err)) => Err(err.to_string()),
        Ok(Ok(response)) if response.status().is_success() => Ok(()),
        Ok(Ok(response)) => Err(format!("status {}", response.status())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_failures_take_a_pop_down_and_one_success_brings_it_back() {
        let mut t = Tracker::new(2, 1);
        assert!(t.healthy());
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), None, "a success resets the failure streak");
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), Some(false));
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), Some(true));
        assert_eq!(t.record(true), None);
    }

    #[test]
    fn rise_counts_consecutive_successes() {
        let mut t = Tracker::new(1, 3);
        assert_eq!(t.record(false), Some(false));
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(true), Some(true));
    }

    #[tokio::test]
    async fn a_fixed_view_reports_its_states() {
        let mut view = HealthView::fixed(vec![true, false]);
        assert_eq!(view.snapshot(), [true, false]);
        view.wait_for(|s| !s[1]).await;
    }

    #[tokio::test]
    async fn probes_mark_a_pop_without_a_listener_down() {
        // A port that was just free: connections are refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config: crate::router::RouterConfig = toml::from_str(&format!(
            "[[pops]]\nname = \"x\"\nurl = \"http://127.0.0.1:{port}\"\nlat = 0\nlon = 0\n\
             [health]\ninterval = \"10ms\"\ntimeout = \"200ms\""
        ))
        .unwrap();
        let pops = crate::router::select::pops_of(&config).unwrap();
        let mut tasks = JoinSet::new();
        let mut view = spawn_probes(&pops, &config.health, &mut tasks).unwrap();
        tokio::time::timeout(Duration::from_secs(5), view.wait_for(|s| !s[0]))
            .await
            .expect("PoP marked down");
    }
}
