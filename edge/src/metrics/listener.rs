//! The public listener's connection figures (open, refused, timed out), read from the
//! listener's own counters at each scrape.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use edgecache_tls::ListenerStats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

#[derive(Debug)]
pub(crate) struct ListenerCollector(pub Arc<ListenerStats>);

impl Collector for ListenerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let open = ConstGauge::new(i64::try_from(s.open.load(Ordering::Relaxed)).unwrap_or(0));
        open.encode(encoder.encode_descriptor(
            "edgecache_connections_open",
            "Connections open on the public listener",
            None,
            open.metric_type(),
        )?)?;
        counters_by_reason(
            &mut encoder,
            "edgecache_connections_refused",
            "Connections refused at accept, by the limit reached",
            &[
                ("max_connections", s.refused_total.load(Ordering::Relaxed)),
                (
                    "max_connections_per_ip",
                    s.refused_per_ip.load(Ordering::Relaxed),
                ),
            ],
        )?;
        counters_by_reason(
            &mut encoder,
            "edgecache_connections_timed_out",
            "Connections closed by a timeout, by which one",
            &[
                ("idle", s.idle_timeouts.load(Ordering::Relaxed)),
                ("request_head", s.head_timeouts.load(Ordering::Relaxed)),
                ("send", s.send_timeouts.load(Ordering::Relaxed)),
            ],
        )?;
        Ok(())
    }
}

/// One counter family with a `reason` label.
fn counters_by_reason(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(&str, u64)],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for &(reason, value) in values {
        let c = ConstCounter::new(value);
        c.encode(family.encode_family(&[("reason", reason)])?)?;
    }
    Ok(())
}
