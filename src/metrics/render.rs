//! The Prometheus text exposition format (version 0.0.4) of every
//! worker's snapshot: one family at a time, HELP and TYPE first, each
//! worker's counters under its `worker` label, the histograms summed over
//! the workers, and every sample under the `node` label of the server
//! (`NODE_ID`), written in one place (`Page::sample`).

use std::collections::BTreeMap;
use std::fmt::Write;

use super::histogram::BOUNDS_LABEL;
use super::{Endpoint, Histogram, SOFT_BUDGET_KINDS, Series, Snapshot};

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders `snapshots` (one per worker that answered) for a server of
/// `workers` workers named `node`.
pub fn render(snapshots: &mut [Snapshot], workers: usize, node: &str) -> String {
    snapshots.sort_by_key(|s| s.worker);
    let out = &mut Page::new(node);

    out.family(
        "llm_proxy_build_info",
        "gauge",
        "The running build; always 1.",
    );
    out.sample(
        "llm_proxy_build_info",
        &format!("version=\"{}\"", env!("CARGO_PKG_VERSION")),
        1,
    );
    out.family(
        "llm_proxy_start_time_seconds",
        "gauge",
        "When the server started, in unix seconds.",
    );
    let started = snapshots
        .iter()
        .map(|s| s.started)
        .fold(f64::INFINITY, f64::min);
    if started.is_finite() {
        out.sample("llm_proxy_start_time_seconds", "", started);
    }
    out.family(
        "llm_proxy_workers",
        "gauge",
        "Worker threads of the server.",
    );
    out.sample("llm_proxy_workers", "", workers as u64);
    out.family(
        "llm_proxy_workers_reporting",
        "gauge",
        "Workers whose counters are in this scrape (fewer than llm_proxy_workers while one is busy or stopping).",
    );
    out.sample("llm_proxy_workers_reporting", "", snapshots.len() as u64);
    out.family(
        "llm_proxy_active_connections",
        "gauge",
        "Open client connections.",
    );
    for s in snapshots.iter() {
        out.sample(
            "llm_proxy_active_connections",
            &worker(s),
            s.connections as u64,
        );
    }

    requests(out, snapshots);
    cache(out, snapshots);

    let rejections = "llm_proxy_key_rejections_total";
    out.family(
        rejections,
        "counter",
        "Requests refused for their key, by error code (missing, invalid, revoked or expired key, quota, budget, model access).",
    );
    for s in snapshots.iter() {
        for (code, count) in &s.rejections {
            out.sample(
                rejections,
                &format!("reason=\"{code}\",{}", worker(s)),
                *count,
            );
        }
    }

    let alerts = "llm_proxy_soft_budget_alerts_total";
    out.family(
        alerts,
        "counter",
        "Soft budgets crossed: a key's, user's or team's spend went past its soft_budget (one alert per crossing, also a budget_alert record in the event log).",
    );
    for s in snapshots.iter() {
        for (kind, count) in SOFT_BUDGET_KINDS.iter().zip(s.soft_budget_alerts) {
            out.sample(alerts, &format!("kind=\"{kind}\",{}", worker(s)), count);
        }
    }

    let spend = "llm_proxy_spend_dollars_total";
    out.family(
        spend,
        "counter",
        "What requests cost, in dollars, by requested model.",
    );
    for s in snapshots.iter() {
        for (model, usage) in &s.usage {
            let labels = format!("model=\"{}\",{}", escape(model), worker(s));
            out.sample(spend, &labels, usage.spend as f64 / 1e12);
        }
    }
    let tokens = "llm_proxy_tokens_total";
    out.family(
        tokens,
        "counter",
        "Tokens used, by requested model and type (prompt, completion).",
    );
    for s in snapshots.iter() {
        for (model, usage) in &s.usage {
            let model = escape(model);
            for (kind, count) in [
                ("prompt", usage.prompt_tokens),
                ("completion", usage.completion_tokens),
            ] {
                let labels = format!("model=\"{model}\",type=\"{kind}\",{}", worker(s));
                out.sample(tokens, &labels, count);
            }
        }
    }

    extras(out, snapshots);
    std::mem::take(&mut out.text)
}

fn requests(out: &mut Page, snapshots: &[Snapshot]) {
    // Sorted by labels, so that a family reads in a stable order.
    let mut series: Vec<_> = snapshots
        .iter()
        .flat_map(|s| s.series.iter().map(move |series| (s.worker, series)))
        .collect();
    series.sort_by(|(wa, a), (wb, b)| {
        (a.route, &a.model, a.status, wa).cmp(&(b.route, &b.model, b.status, wb))
    });
    let total = "llm_proxy_requests_total";
    out.family(
        total,
        "counter",
        "Requests served, by route, requested model, status and worker.",
    );
    for (w, s) in &series {
        let labels = format!(
            "route=\"{}\",model=\"{}\",status=\"{}\",worker=\"{w}\"",
            s.route.label(),
            escape(&s.model),
            s.status
        );
        out.sample(total, &labels, s.series.duration.count());
    }

    // The histograms, summed over the workers by route, model and status
    // class: 23 lines a series, so neither the number of workers nor that
    // of distinct status codes multiplies them.
    let mut merged: BTreeMap<(Endpoint, &str, u16), Series> = BTreeMap::new();
    for (_, s) in &series {
        let into = merged
            .entry((s.route, s.model.as_str(), s.status / 100))
            .or_default();
        into.duration.merge(&s.series.duration);
        into.upstream.merge(&s.series.upstream);
        into.first_byte.merge(&s.series.first_byte);
    }
    let labelled: Vec<_> = merged
        .iter()
        .map(|((route, model, class), s)| {
            let labels = format!(
                "route=\"{}\",model=\"{}\",status_class=\"{class}xx\"",
                route.label(),
                escape(model),
            );
            (labels, s)
        })
        .collect();
    let name = "llm_proxy_request_duration_seconds";
    out.family(
        name,
        "histogram",
        "From a request's head read to the request finished.",
    );
    for (labels, s) in &labelled {
        out.histogram(name, labels, &s.duration);
    }
    let name = "llm_proxy_upstream_duration_seconds";
    out.family(
        name,
        "histogram",
        "From a request sent upstream to the upstream's response head.",
    );
    for (labels, s) in &labelled {
        if s.upstream.count() > 0 {
            out.histogram(name, labels, &s.upstream);
        }
    }
    let name = "llm_proxy_upstream_first_byte_seconds";
    out.family(
        name,
        "histogram",
        "From a request sent upstream to the first response body bytes relayed to the client (time to first token of a stream).",
    );
    for (labels, s) in &labelled {
        if s.first_byte.count() > 0 {
            out.histogram(name, labels, &s.first_byte);
        }
    }
}

fn cache(out: &mut Page, snapshots: &[Snapshot]) {
    type Count = fn(&Snapshot) -> u64;
    let counters: [(&str, &str, Count); 5] = [
        (
            "llm_proxy_cache_hits_total",
            "Requests answered from the response cache.",
            |s| s.cache.hits,
        ),
        (
            "llm_proxy_cache_misses_total",
            "Cacheable requests not in the response cache.",
            |s| s.cache.misses,
        ),
        (
            "llm_proxy_cache_stores_total",
            "Answers stored in the response cache.",
            |s| s.cache.stores,
        ),
        (
            "llm_proxy_cache_bypasses_total",
            "Requests that asked to skip the response cache.",
            |s| s.cache.bypasses,
        ),
        (
            "llm_proxy_cache_shared_total",
            "Answers stored by another worker that reached this worker's shard.",
            |s| s.cache.shared,
        ),
    ];
    for (name, help, value) in counters {
        out.family(name, "counter", help);
        for s in snapshots {
            out.sample(name, &worker(s), value(s));
        }
    }
    let mut delay = Histogram::default();
    for s in snapshots {
        delay.merge(&s.cache.share_delay);
    }
    let name = "llm_proxy_cache_share_delay_seconds";
    out.family(
        name,
        "histogram",
        "From an answer stored on one worker to another worker's shard holding it (summed over the workers).",
    );
    out.histogram(name, "", &delay);
}

/// Other modules' counters: one family per name, in the order first seen.
fn extras(out: &mut Page, snapshots: &[Snapshot]) {
    let mut names: Vec<&str> = Vec::new();
    for extra in snapshots.iter().flat_map(|s| &s.extra) {
        if !names.contains(&extra.name) {
            names.push(extra.name);
        }
    }
    for name in names {
        let mut first = true;
        for s in snapshots {
            for extra in s.extra.iter().filter(|e| e.name == name) {
                if first {
                    out.family(name, extra.kind.as_str(), extra.help);
                    first = false;
                }
                let mut labels = String::new();
                for (label, value) in &extra.labels {
                    let _ = write!(labels, "{label}=\"{}\",", escape(value));
                }
                labels.push_str(&worker(s));
                out.sample(name, &labels, extra.value);
            }
        }
    }
}

fn worker(snapshot: &Snapshot) -> String {
    format!("worker=\"{}\"", snapshot.worker)
}

/// The page being rendered, and the one place sample lines are written:
/// every sample ends its labels with `node`.
struct Page {
    text: String,
    /// `node="<NODE_ID>"`, escaped: the label of every sample, so that
    /// several nodes scraped into one Prometheus stay apart.
    node: String,
}

impl Page {
    fn new(node: &str) -> Self {
        Self {
            text: String::with_capacity(16 << 10),
            node: format!("node=\"{}\"", escape(node)),
        }
    }

    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample: `name{labels,node="..."} value` (`labels` may be empty).
    fn sample(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        let node = &self.node;
        let comma = if labels.is_empty() { "" } else { "," };
        let _ = writeln!(self.text, "{name}{{{labels}{comma}{node}}} {value}");
    }

    fn histogram(&mut self, name: &str, labels: &str, histogram: &Histogram) {
        let mut cumulative = histogram.cumulative();
        let bucket = format!("{name}_bucket");
        let comma = if labels.is_empty() { "" } else { "," };
        for (bound, count) in BOUNDS_LABEL.iter().zip(cumulative.by_ref()) {
            self.sample(&bucket, &format!("{labels}{comma}le=\"{bound}\""), count);
        }
        let total = cumulative.next().unwrap_or(0);
        self.sample(&bucket, &format!("{labels}{comma}le=\"+Inf\""), total);
        self.sample(&format!("{name}_sum"), labels, histogram.sum_seconds());
        self.sample(&format!("{name}_count"), labels, total);
    }
}

/// A label value as the text format wants it: `\`, `"` and newlines escaped.
fn escape(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return value.into();
    }
    let mut escaped = String::with_capacity(value.len() + 2);
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped.into()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metrics::{Endpoint, Extra, Kind, WorkerMetrics};
    use crate::record::Record;

    #[test]
    fn renders_every_worker_under_its_label() {
        let mut first = WorkerMetrics::new(1);
        let mut second = WorkerMetrics::new(0);
        let record = Record {
            model: Some("we\"ird\\model\n".into()),
            routed: true,
            ..Record::default()
        };
        first.record(
            Endpoint::ChatCompletions,
            200,
            Duration::from_millis(3),
            &record,
            None,
        );
        second.record_local(Endpoint::Local, 200, Duration::from_micros(50));
        let mut snapshots = vec![first.snapshot(), second.snapshot()];
        snapshots[0].extra.push(Extra {
            name: "llm_proxy_things_total",
            help: "Things.",
            kind: Kind::Counter,
            labels: vec![("reason", "full".into())],
            value: 7,
        });
        let text = render(&mut snapshots, 2, "edge-7");
        assert!(text.contains(
            "llm_proxy_requests_total{route=\"/v1/chat/completions\",model=\"we\\\"ird\\\\model\\n\",status=\"200\",worker=\"1\",node=\"edge-7\"} 1\n"
        ));
        assert!(text.contains(
            "llm_proxy_request_duration_seconds_bucket{route=\"local\",model=\"\",status_class=\"2xx\",le=\"0.0001\",node=\"edge-7\"} 1\n"
        ));
        assert!(text.contains("llm_proxy_active_connections{worker=\"0\",node=\"edge-7\"} 0\n"));
        assert!(text.contains("# TYPE llm_proxy_things_total counter\n"));
        assert!(
            text.contains(
                "llm_proxy_things_total{reason=\"full\",worker=\"1\",node=\"edge-7\"} 7\n"
            )
        );
        assert!(text.contains("llm_proxy_workers{node=\"edge-7\"} 2\n"));
        assert_eq!(text.matches("# TYPE llm_proxy_requests_total").count(), 1);
    }

    #[test]
    fn every_sample_names_the_node_last() {
        let mut metrics = WorkerMetrics::new(0);
        metrics.record_local(Endpoint::Local, 200, Duration::from_micros(50));
        metrics.soft_budget_crossed("key");
        let text = render(&mut [metrics.snapshot()], 1, "rack \"b\"\\7");
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert!(samples.len() > 30, "{text}");
        for line in samples {
            let (series, _) = line.rsplit_once(' ').unwrap();
            assert!(
                series.ends_with("{node=\"rack \\\"b\\\"\\\\7\"}")
                    || series.ends_with(",node=\"rack \\\"b\\\"\\\\7\"}"),
                "{line}"
            );
        }
    }

    #[test]
    fn histograms_are_summed_over_workers_and_status_classes() {
        let record = Record {
            model: Some("m".into()),
            routed: true,
            ..Record::default()
        };
        let mut workers: Vec<WorkerMetrics> = (0..4).map(WorkerMetrics::new).collect();
        for (i, metrics) in workers.iter_mut().enumerate() {
            for status in [400, 401, 404, 413] {
                let elapsed = Duration::from_millis(1 + i as u64);
                metrics.record(Endpoint::ChatCompletions, status, elapsed, &record, None);
            }
        }
        let mut snapshots: Vec<_> = workers.iter().map(WorkerMetrics::snapshot).collect();
        let text = render(&mut snapshots, 4, "edge-7");
        // 16 counters, one per worker and status; one histogram.
        assert_eq!(text.matches("llm_proxy_requests_total{").count(), 16);
        let count = "llm_proxy_request_duration_seconds_count{route=\"/v1/chat/completions\",model=\"m\",status_class=\"4xx\",node=\"edge-7\"} 16\n";
        assert!(text.contains(count), "{text}");
        assert_eq!(
            text.matches("llm_proxy_request_duration_seconds_count{")
                .count(),
            1
        );
    }
}
