//! A latency histogram with fixed buckets: one array of counts, bucket
//! bounds known at compile time, so recording is a few comparisons and two
//! integer adds.

/// Upper bounds of the buckets in nanoseconds, as compared when recording.
const BOUNDS_NS: [u64; 20] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
    60_000_000_000,
    120_000_000_000,
    300_000_000_000,
];

/// The same bounds in seconds, as the `le` label renders them.
pub const BOUNDS_LABEL: [&str; 20] = [
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
    "0.25", "0.5", "1", "2.5", "5", "10", "30", "60", "120", "300",
];

/// Counts of observations per bucket (not cumulative; the last one is
/// `+Inf`), and their sum.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    counts: [u64; BOUNDS_NS.len() + 1],
    sum_ns: u64,
}

impl Histogram {
    #[inline]
    pub fn observe(&mut self, ns: u64) {
        // Linear: most requests fall in the first few buckets.
        let bucket = BOUNDS_NS
            .iter()
            .position(|&bound| ns <= bound)
            .unwrap_or(BOUNDS_NS.len());
        self.counts[bucket] += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_ns as f64 / 1e9
    }

    /// Adds `other`'s observations to these (another worker's, at render).
    pub fn merge(&mut self, other: &Histogram) {
        for (count, more) in self.counts.iter_mut().zip(other.counts) {
            *count += more;
        }
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
    }

    /// Cumulative counts, one per bound in `BOUNDS_LABEL`, then `+Inf`.
    pub fn cumulative(&self) -> impl Iterator<Item = u64> + '_ {
        self.counts.iter().scan(0, |total, count| {
            *total += count;
            Some(*total)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let mut histogram = Histogram::default();
        histogram.observe(100_000); // on a bound: that bucket
        histogram.observe(100_001);
        histogram.observe(400_000_000_000); // past the last bound: +Inf
        let cumulative: Vec<u64> = histogram.cumulative().collect();
        assert_eq!(cumulative.len(), BOUNDS_LABEL.len() + 1);
        assert_eq!(cumulative[0], 1);
        assert_eq!(cumulative[1], 2);
        assert_eq!(cumulative[BOUNDS_LABEL.len() - 1], 2);
        assert_eq!(cumulative[BOUNDS_LABEL.len()], 3);
        assert_eq!(histogram.count(), 3);
        assert!((histogram.sum_seconds() - 400.000200001).abs() < 1e-9);
    }

    #[test]
    fn labels_match_bounds() {
        for (ns, label) in BOUNDS_NS.iter().zip(BOUNDS_LABEL) {
            let seconds: f64 = label.parse().unwrap();
            assert_eq!((seconds * 1e9).round() as u64, *ns, "{label}");
        }
    }
}
