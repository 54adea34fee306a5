//! The router's Prometheus metrics (`GET /v1/metrics`): routing decisions by the PoP they
//! chose, and each PoP's health as the router's probes see it.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::select::RouteTable;

type Labels = Vec<(&'static str, String)>;

/// The OpenMetrics text of `table`'s counters, read at the time of the call.
pub fn render(table: &RouteTable) -> String {
    let mut registry = Registry::default();
    let decisions = Family::<Labels, Counter>::default();
    registry.register(
        "edgecache_router_decisions",
        "Routing decisions (route API answers, redirects, DNS answers) by the PoP chosen first; \
         `origin` when every PoP was down",
        decisions.clone(),
    );
    let healthy = Family::<Labels, Gauge>::default();
    registry.register(
        "edgecache_router_pop_healthy",
        "1 when the router's probes find the PoP healthy, 0 when not",
        healthy.clone(),
    );
    let health = table.health_snapshot();
    for (i, pop) in table.pops().iter().enumerate() {
        let labels = vec![("pop", pop.name.clone())];
        decisions.get_or_create(&labels).inc_by(table.decisions(i));
        let up = health.get(i).copied().unwrap_or(false);
        healthy.get_or_create(&labels).set(i64::from(up));
    }
    if table.origin().is_some() {
        let labels = vec![("pop", "origin".to_owned())];
        decisions
            .get_or_create(&labels)
            .inc_by(table.decisions(table.pops().len()));
    }
    let mut out = String::with_capacity(1024);
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &registry);
    out
}
