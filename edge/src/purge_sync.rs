//! Keeping an edge in step with the purge API: register, then hold a long-poll open for
//! purges past the last one applied, apply them in order, and report progress. Until the
//! edge has caught up it is not ready and serves nothing from its disk tier.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use edgecache_purge_api::{PurgeClient, PurgeRequest, RegisterPop};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::node::Edge;

/// Where the edge can be reached, for the purge API's PoP list.
pub struct Registration {
    pub public_url: String,
    pub admin_url: Option<String>,
}

/// Follows the purge log until `stop` turns true.
pub async fn follow(
    edge: Arc<Edge>,
    client: PurgeClient,
    me: Registration,
    wait: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let pop = edge.pop().to_owned();
    let mut backoff = Duration::from_millis(250);
    let mut registered = false;
    while !*stop.borrow() {
        if !registered {
            let reg = RegisterPop {
                name: pop.clone(),
                url: me.public_url.clone(),
                admin_url: me.admin_url.clone(),
                applied_seq: Some(edge.purges.last_seq()),
            };
            match client.register(&reg).await {
                Ok(_) => {
                    registered = true;
                    info!(pop = %pop, api = client.base_url(), "registered with the purge API");
                }
                Err(e) => {
                    warn!(pop = %pop, error = %e, "purge API registration failed; retrying");
                    backoff = pause(backoff, &mut stop).await;
                    continue;
                }
            }
        }
        let since = edge.purges.last_seq();
        // Catching up does not wait for new purges; once caught up, hold the poll open.
        let wait = if edge.caught_up() {
            wait
        } else {
            Duration::ZERO
        };
        let poll = tokio::select! {
            r = client.poll_as(&pop, since, wait) => r,
            _ = stop.changed() => break,
        };
        match poll {
            Ok(resp) => {
                backoff = Duration::from_millis(250);
                if !edge.caught_up() && !edge.has_disk() && since == 0 {
                    // A memory-only edge starts empty: no purge from before it started can
                    // name anything it holds, so it joins the log at its end.
                    edge.purges.reset_seq(resp.last_seq);
                    edge.mark_caught_up();
                    // Tell the API, or purges from before we started never complete.
                    if let Err(e) = client.report_applied(&pop, resp.last_seq).await {
                        warn!(pop = %pop, error = %e, "cannot report purge progress");
                    }
                    continue;
                }
                if resp.last_seq < since {
                    // The log was reset: nothing says what changed, so everything goes.
                    warn!(pop = %pop, since, last_seq = resp.last_seq, "purge log reset; purging everything");
                    let all = PurgeRequest {
                        all: true,
                        ..PurgeRequest::default()
                    };
                    edge.apply_purge(&all, None, None);
                    edge.purges.reset_seq(resp.last_seq);
                }
                let applied = !resp.purges.is_empty();
                for record in &resp.purges {
                    if record.seq <= edge.purges.last_seq() {
                        continue;
                    }
                    edge.apply_purge(&record.request, Some(record.seq), Some(record.accepted_at));
                }
                if applied {
                    edge.sweep_soon();
                    if let Err(e) = client.report_applied(&pop, edge.purges.last_seq()).await {
                        warn!(pop = %pop, error = %e, "cannot report purge progress");
                    }
                }
                if edge.purges.last_seq() >= resp.last_seq {
                    edge.mark_caught_up();
                }
            }
            Err(e) => {
                if e.status() == Some(404) {
                    // The API forgot us (its registry was reset): register again.
                    registered = false;
                }
                warn!(pop = %pop, error = %e, "purge poll failed; retrying");
                backoff = pause(backoff, &mut stop).await;
            }
        }
    }
}

/// Waits `backoff` (or until stopped) and returns the next, longer backoff.
async fn pause(backoff: Duration, stop: &mut watch::Receiver<bool>) -> Duration {
    tokio::select! {
        () = tokio::time::sleep(backoff) => {}
        _ = stop.changed() => {}
    }
    (backoff * 2).min(Duration::from_secs(5))
}

/// Seconds from a purge's acceptance to now.
pub fn lag_seconds(accepted_at_ms: u64) -> f64 {
    let now = crate::purge::unix_ms(SystemTime::now());
    now.saturating_sub(accepted_at_ms) as f64 / 1000.0
}
