//! Metrics read from a node's own state at each scrape, for counts that
//! the node keeps anyway, such as the parameter server's push totals.

use std::collections::HashMap;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};

use crate::NODE_LABEL;

/// The kind and text of one metric that a [`SnapshotCollector`] reports.
#[derive(Debug, Clone, Copy)]
pub struct MetricSpec {
    pub name: &'static str,
    pub help: &'static str,
}

/// Metric families of one node at one moment, built value by value.
#[derive(Debug)]
pub struct Snapshot {
    node: String,
    families: Vec<MetricFamily>,
}

impl Snapshot {
    /// Starts an empty snapshot of `node`.
    pub fn new(node: &str) -> Self {
        Self {
            node: node.to_owned(),
            families: Vec::new(),
        }
    }

    fn push(&mut self, spec: MetricSpec, kind: MetricType, mut metric: proto::Metric) {
        let mut node = proto::LabelPair::default();
        node.set_name(NODE_LABEL.to_owned());
        node.set_value(self.node.clone());
        metric.set_label(vec![node]);
        let mut family = MetricFamily::default();
        family.set_name(spec.name.to_owned());
        family.set_help(spec.help.to_owned());
        family.set_field_type(kind);
        family.set_metric(vec![metric]);
        self.families.push(family);
    }

    /// Adds a counter.
    pub fn counter(&mut self, spec: MetricSpec, value: f64) -> &mut Self {
        let mut counter = proto::Counter::default();
        counter.set_value(value);
        let mut metric = proto::Metric::default();
        metric.set_counter(counter);
        self.push(spec, MetricType::COUNTER, metric);
        self
    }

    /// Adds a gauge.
    pub fn gauge(&mut self, spec: MetricSpec, value: f64) -> &mut Self {
        let metric = proto::Metric::from_gauge({
            let mut gauge = proto::Gauge::default();
            gauge.set_value(value);
            gauge
        });
        self.push(spec, MetricType::GAUGE, metric);
        self
    }

    /// Adds a histogram of integer observations given as counts per value,
    /// with buckets at `bounds` (ascending) and `+Inf`; `sum` is the sum of
    /// the observations.
    pub fn histogram_of_counts(
        &mut self,
        spec: MetricSpec,
        bounds: &[u64],
        counts: &std::collections::BTreeMap<u64, u64>,
        sum: f64,
    ) -> &mut Self {
        let buckets = bounds
            .iter()
            .map(|&bound| {
                let mut bucket = proto::Bucket::default();
                bucket.set_upper_bound(bound as f64);
                bucket.set_cumulative_count(counts.range(..=bound).map(|(_, count)| count).sum());
                bucket
            })
            .collect();
        let mut histogram = proto::Histogram::default();
        histogram.set_bucket(buckets);
        histogram.set_sample_count(counts.values().sum());
        histogram.set_sample_sum(sum);
        let mut metric = proto::Metric::default();
        metric.set_histogram(histogram);
        self.push(spec, MetricType::HISTOGRAM, metric);
        self
    }

    /// Returns the families added so far.
    pub fn into_families(self) -> Vec<MetricFamily> {
        self.families
    }
}

/// A collector that calls `read` at every scrape for the current values of
/// the metrics in its specs.
pub struct SnapshotCollector<F> {
    descs: Vec<Desc>,
    read: F,
}

impl<F> std::fmt::Debug for SnapshotCollector<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotCollector")
            .field("descs", &self.descs)
            .finish_non_exhaustive()
    }
}

impl<F> SnapshotCollector<F>
where
    F: Fn() -> Snapshot + Send + Sync,
{
    /// Creates a collector of `node` for the metrics in `specs`.
    ///
    /// # Errors
    ///
    /// Fails when a name or help text is not valid in Prometheus.
    pub fn new(node: &str, specs: &[MetricSpec], read: F) -> prometheus::Result<Self> {
        let labels = HashMap::from([(NODE_LABEL.to_owned(), node.to_owned())]);
        let descs = specs
            .iter()
            .map(|spec| {
                Desc::new(
                    spec.name.to_owned(),
                    spec.help.to_owned(),
                    Vec::new(),
                    labels.clone(),
                )
            })
            .collect::<prometheus::Result<Vec<_>>>()?;
        Ok(Self { descs, read })
    }
}

impl<F> Collector for SnapshotCollector<F>
where
    F: Fn() -> Snapshot + Send + Sync,
{
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        (self.read)().into_families()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use prometheus::{Encoder, Registry, TextEncoder};

    use super::*;

    const STALENESS: MetricSpec = MetricSpec {
        name: "downpour_test_staleness",
        help: "Staleness of each push, in updates.",
    };
    const PUSHES: MetricSpec = MetricSpec {
        name: "downpour_test_pushes_total",
        help: "Pushes applied.",
    };

    #[test]
    fn snapshot_encodes_cumulative_buckets() {
        let registry = Registry::new();
        let collector = SnapshotCollector::new("ps-0", &[STALENESS, PUSHES], || {
            let counts = BTreeMap::from([(0, 5), (1, 3), (3, 2), (40, 1)]);
            let mut snapshot = Snapshot::new("ps-0");
            snapshot
                .histogram_of_counts(STALENESS, &[0, 1, 2, 4, 8], &counts, 49.0)
                .counter(PUSHES, 11.0);
            snapshot
        })
        .unwrap();
        registry.register(Box::new(collector)).unwrap();

        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut text)
            .unwrap();
        let text = String::from_utf8(text).unwrap();
        for line in [
            "downpour_test_staleness_bucket{node=\"ps-0\",le=\"0\"} 5",
            "downpour_test_staleness_bucket{node=\"ps-0\",le=\"1\"} 8",
            "downpour_test_staleness_bucket{node=\"ps-0\",le=\"2\"} 8",
            "downpour_test_staleness_bucket{node=\"ps-0\",le=\"4\"} 10",
            "downpour_test_staleness_bucket{node=\"ps-0\",le=\"8\"} 10",
            "downpour_test_staleness_bucket{node=\"ps-0\",le=\"+Inf\"} 11",
            "downpour_test_staleness_sum{node=\"ps-0\"} 49",
            "downpour_test_staleness_count{node=\"ps-0\"} 11",
            "downpour_test_pushes_total{node=\"ps-0\"} 11",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
