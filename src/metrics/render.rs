//! The Prometheus text exposition format (version 0.0.4) of every
//! worker's snapshot: one family at a time, HELP and TYPE first, each
//! worker's counters under its `worker` label, the histograms summed over
//! the workers.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::histogram::BOUNDS_LABEL;
use super::{Endpoint, Histogram, SOFT_BUDGET_KINDS, Series, Snapshot};

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders `snapshots` (one per worker that answered) for a server of
/// `workers` workers.
pub fn render(snapshots: &mut [Snapshot], workers: usize) -> String {
    snapshots.sort_by_key(|s| s.worker);
    let mut out = String::with_capacity(16 << 10);
    let out = &mut out;

    family(
        out,
        "llm_proxy_build_info",
        "gauge",
        "The running build; always 1.",
    );
    sample(
        out,
        "llm_proxy_build_info",
        &format!("version=\"{}\"", env!("CARGO_PKG_VERSION")),
        1,
    );
    family(
        out,
        "llm_proxy_start_time_seconds",
        "gauge",
        "When the server started, in unix seconds.",
    );
    let started = snapshots
        .iter()
        .map(|s| s.started)
        .fold(f64::INFINITY, f64::min);
    if started.is_finite() {
        sample_f64(out, "llm_proxy_start_time_seconds", "", started);
    }
    family(
        out,
        "llm_proxy_workers",
        "gauge",
        "Worker threads of the server.",
    );
    sample(out, "llm_proxy_workers", "", workers as u64);
    family(
        out,
        "llm_proxy_workers_reporting",
        "gauge",
        "Workers whose counters are in this scrape (fewer than llm_proxy_workers while one is busy or stopping).",
    );
    sample(
        out,
        "llm_proxy_workers_reporting",
        "",
        snapshots.len() as u64,
    );
    family(
        out,
        "llm_proxy_active_connections",
        "gauge",
        "Open client connections.",
    );
    for s in snapshots.iter() {
        sample(
            out,
            "llm_proxy_active_connections",
            &worker(s),
            s.connections as u64,
        );
    }

    requests(out, snapshots);
    cache(out, snapshots);

    let rejections = "llm_proxy_key_rejections_total";
    family(
        out,
        rejections,
        "counter",
        "Requests refused for their key, by error code (missing, invalid, revoked or expired key, quota, budget, model access).",
    );
    for s in snapshots.iter() {
        for (code, count) in &s.rejections {
            sample(
                out,
                rejections,
                &format!("reason=\"{code}\",{}", worker(s)),
                *count,
            );
        }
    }

    let alerts = "llm_proxy_soft_budget_alerts_total";
    family(
        out,
        alerts,
        "counter",
        "Soft budgets crossed: a key's, user's or team's spend went past its soft_budget (one alert per crossing, also a budget_alert record in the event log).",
    );
    for s in snapshots.iter() {
        for (kind, count) in SOFT_BUDGET_KINDS.iter().zip(s.soft_budget_alerts) {
            sample(
                out,
                alerts,
                &format!("kind=\"{kind}\",{}", worker(s)),
                count,
            );
        }
    }

    let spend = "llm_proxy_spend_dollars_total";
    family(
        out,
        spend,
        "counter",
        "What requests cost, in dollars, by requested model.",
    );
    for s in snapshots.iter() {
        for (model, usage) in &s.usage {
            let labels = format!("model=\"{}\",{}", escape(model), worker(s));
            sample_f64(out, spend, &labels, usage.spend as f64 / 1e12);
        }
    }
    let tokens = "llm_proxy_tokens_total";
    family(
        out,
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
                sample(out, tokens, &labels, count);
            }
        }
    }

    extras(out, snapshots);
    std::mem::take(out)
}

fn requests(out: &mut String, snapshots: &[Snapshot]) {
    // Sorted by labels, so that a family reads in a stable order.
    let mut series: Vec<_> = snapshots
        .iter()
        .flat_map(|s| s.series.iter().map(move |series| (s.worker, series)))
        .collect();
    series.sort_by(|(wa, a), (wb, b)| {
        (a.route, &a.model, a.status, wa).cmp(&(b.route, &b.model, b.status, wb))
    });
    let total = "llm_proxy_requests_total";
    family(
        out,
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
        sample(out, total, &labels, s.series.duration.count());
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
    family(
        out,
        name,
        "histogram",
        "From a request's head read to the request finished.",
    );
    for (labels, s) in &labelled {
        histogram(out, name, labels, &s.duration);
    }
    let name = "llm_proxy_upstream_duration_seconds";
    family(
        out,
        name,
        "histogram",
        "From a request sent upstream to the upstream's response head.",
    );
    for (labels, s) in &labelled {
        if s.upstream.count() > 0 {
            histogram(out, name, labels, &s.upstream);
        }
    }
    let name = "llm_proxy_upstream_first_byte_seconds";
    family(
        out,
        name,
        "histogram",
        "From a request sent upstream to the first response body bytes relayed to the client (time to first token of a stream).",
    );
    for (labels, s) in &labelled {
        if s.first_byte.count() > 0 {
            histogram(out, name, labels, &s.first_byte);
        }
    }
}

fn cache(out: &mut String, snapshots: &[Snapshot]) {
    type Count = fn(&Snapshot) -> u64;
    let counters: [(&str, &str, Count); 4] = [
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
    ];
    for (name, help, value) in counters {
        family(out, name, "counter", help);
        for s in snapshots {
            sample(out, name, &worker(s), value(s));
        }
    }
}

/// Other modules' counters: one family per name, in the order first seen.
fn extras(out: &mut String, snapshots: &[Snapshot]) {
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
                    family(out, name, extra.kind.as_str(), extra.help);
                    first = false;
                }
                let mut labels = String::new();
                for (label, value) in &extra.labels {
                    let _ = write!(labels, "{label}=\"{}\",", escape(value));
                }
                labels.push_str(&worker(s));
                sample(out, name, &labels, extra.value);
            }
        }
    }
}

fn worker(snapshot: &Snapshot) -> String {
    format!("worker=\"{}\"", snapshot.worker)
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &str, value: u64) {
    let _ = if labels.is_empty() {
        writeln!(out, "{name} {value}")
    } else {
        writeln!(out, "{name}{{{labels}}} {value}")
    };
}

fn sample_f64(out: &mut String, name: &str, labels: &str, value: f64) {
    let _ = if labels.is_empty() {
        writeln!(out, "{name} {value}")
    } else {
        writeln!(out, "{name}{{{labels}}} {value}")
    };
}

fn histogram(out: &mut String, name: &str, labels: &str, histogram: &Histogram) {
    let mut cumulative = histogram.cumulative();
    for (bound, count) in BOUNDS_LABEL.iter().zip(cumulative.by_ref()) {
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {count}");
    }
    let total = cumulative.next().unwrap_or(0);
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {total}");
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", histogram.sum_seconds());
    let _ = writeln!(out, "{name}_count{{{labels}}} {total}");
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
        let text = render(&mut snapshots, 2);
        assert!(text.contains(
            "llm_proxy_requests_total{route=\"/v1/chat/completions\",model=\"we\\\"ird\\\\model\\n\",status=\"200\",worker=\"1\"} 1\n"
        ));
        assert!(text.contains(
            "llm_proxy_request_duration_seconds_bucket{route=\"local\",model=\"\",status_class=\"2xx\",le=\"0.0001\"} 1\n"
        ));
        assert!(text.contains("llm_proxy_active_connections{worker=\"0\"} 0\n"));
        assert!(text.contains("# TYPE llm_proxy_things_total counter\n"));
        assert!(text.contains("llm_proxy_things_total{reason=\"full\",worker=\"1\"} 7\n"));
        assert!(text.contains("llm_proxy_workers 2\n"));
        assert_eq!(text.matches("# TYPE llm_proxy_requests_total").count(), 1);
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
        let text = render(&mut snapshots, 4);
        // 16 counters, one per worker and status; one histogram.
        assert_eq!(text.matches("llm_proxy_requests_total{").count(), 16);
        let count = "llm_proxy_request_duration_seconds_count{route=\"/v1/chat/completions\",model=\"m\",status_class=\"4xx\"} 16\n";
        assert!(text.contains(count), "{text}");
        assert_eq!(
            text.matches("llm_proxy_request_duration_seconds_count{")
                .count(),
            1
        );
    }
}
