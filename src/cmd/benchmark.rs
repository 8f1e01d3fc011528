//! `llm-proxy benchmark`: arguments become validated [`LoadSettings`] (every
//! input error is found here, before anything is sent), the load generator
//! runs, and its measurements become a compact report or one JSON object.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

use crate::cli::{BenchMethod, BenchOutput, BenchmarkArgs};
use crate::loadgen::{
    self, CacheCounts, ErrorKind, LoadError, LoadReport, LoadSettings, Percentiles,
    RESERVED_HEADERS, Recorder, RequestSpec, Sample,
};
use crate::providers::Target;

pub fn run(args: &BenchmarkArgs) -> anyhow::Result<()> {
    let settings = settings(args, |name| std::env::var(name).ok())?;
    register_interrupt(&settings.stop)?;
    let request = args.debug.then(|| loadgen::describe_request(&settings));
    let header = Header::of(&settings);
    let bar = progress_bar(settings.requests);
    let anonymous = settings.request.token.is_none();
    let report = loadgen::run(settings, |done| {
        if let Some(bar) = &bar {
            bar.set_position(done);
        }
    })
    .map_err(|error| match error {
        LoadError::Auth { status, message } if anonymous => LoadError::Auth {
            status,
            message: format!(
                "{message} (no token was sent: pass --token or set {})",
                args.token_env
            ),
        },
        other => other,
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let report = report?;
    let out = match args.output {
        BenchOutput::Text => text_report(&header, &report, request.as_deref(), args.debug),
        BenchOutput::Json => {
            let mut object = json_report(&header, &report);
            if args.debug {
                object["request"] = json!(request);
                object["samples"] = json!(report.recorder.samples.values().collect::<Vec<_>>());
            }
            format!("{object:#}\n")
        }
    };
    print!("{out}");
    Ok(())
}

fn usage(message: impl Into<String>) -> LoadError {
    LoadError::Usage(message.into())
}

/// Validates every argument; `env` reads the token variable.
fn settings(
    args: &BenchmarkArgs,
    env: impl Fn(&str) -> Option<String>,
) -> Result<LoadSettings, LoadError> {
    let target = Target::parse(&args.base_url).map_err(|e| usage(format!("{e:#}")))?;
    if args.base_url.contains(['?', '#']) {
        return Err(usage("--base-url must not have a query or fragment"));
    }
    let endpoint = if args.endpoint.starts_with('/') {
        args.endpoint.clone()
    } else {
        format!("/{}", args.endpoint)
    };
    if endpoint
        .chars()
        .any(|c| c.is_ascii_whitespace() || c.is_control())
    {
        return Err(usage(
            "--endpoint must not contain spaces or control characters",
        ));
    }
    if args.concurrency == 0 {
        return Err(usage("--concurrency must be at least 1"));
    }
    if args.workers == 0 {
        return Err(usage("--workers must be at least 1"));
    }
    if args.requests == Some(0) {
        return Err(usage("--requests must be at least 1"));
    }
    if let Some(rate) = args.rate
        && !(rate.is_finite() && rate > 0.0)
    {
        return Err(usage(
            "--rate must be a positive number of requests per second",
        ));
    }
    let token = args
        .token
        .clone()
        .or_else(|| env(&args.token_env))
        .filter(|t| !t.is_empty());
    if token.as_deref().is_some_and(|t| t.contains(['\r', '\n'])) {
        return Err(usage("the token must be on one line"));
    }
    let body = match &args.json {
        None => None,
        Some(text) => {
            let parsed: Value = serde_json::from_str(text)
                .map_err(|e| usage(format!("--json is not valid JSON: {e}")))?;
            Some((text.clone().into_bytes(), parsed))
        }
    };
    let stream = body
        .as_ref()
        .is_some_and(|(_, json)| json.get("stream") == Some(&Value::Bool(true)));
    let headers = args
        .headers
        .iter()
        .map(|h| parse_header(h))
        .collect::<Result<Vec<_>, _>>()?;
    let method = match args.method {
        BenchMethod::Get => http::Method::GET,
        BenchMethod::Post => http::Method::POST,
        BenchMethod::Put => http::Method::PUT,
        BenchMethod::Patch => http::Method::PATCH,
    };
    Ok(LoadSettings {
        base_url: args.base_url.clone(),
        target,
        request: RequestSpec {
            method,
            endpoint,
            token,
            body: body.map(|(bytes, _)| bytes),
            cache_ttl: args.cache.then_some(args.cache_ttl),
            headers,
        },
        stream,
        connections: args.concurrency,
        workers: args.workers,
        requests: args.requests,
        duration: args.duration,
        rate: args.rate,
        timeout: args.timeout,
        ca_file: args.ca_file.clone(),
        debug: args.debug,
        stop: Arc::new(AtomicBool::new(false)),
    })
}

/// `Name: value`, with a valid field name that the load generator does not own.
fn parse_header(text: &str) -> Result<(String, String), LoadError> {
    let bad = || usage(format!("--header {text:?} must look like 'Name: value'"));
    let (name, value) = text.split_once(':').ok_or_else(bad)?;
    let (name, value) = (name.trim(), value.trim());
    let token_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token_char) || value.contains(['\r', '\n']) {
        return Err(bad());
    }
    if RESERVED_HEADERS
        .iter()
        .any(|r| r.eq_ignore_ascii_case(name))
    {
        return Err(usage(format!(
            "--header cannot set {name}: the benchmark sets it itself"
        )));
    }
    Ok((name.to_string(), value.to_string()))
}

/// First Ctrl-C: stop sending and report what was measured; second: exit.
fn register_interrupt(stop: &Arc<AtomicBool>) -> anyhow::Result<()> {
    use signal_hook::consts::SIGINT;
    signal_hook::flag::register_conditional_shutdown(SIGINT, 130, stop.clone())?;
    signal_hook::flag::register(SIGINT, stop.clone())?;
    Ok(())
}

/// A live line on stderr, only when stderr is a terminal.
fn progress_bar(total: Option<u64>) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let (bar, template) = match total {
        Some(total) => (
            ProgressBar::new(total),
            "{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} requests, {per_sec:0}",
        ),
        None => (
            ProgressBar::no_length(),
            "{spinner} {elapsed_precise} {pos} requests, {per_sec:0}",
        ),
    };
    bar.set_draw_target(ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    Some(bar)
}

/// What was asked for, for both report formats.
struct Header {
    base_url: String,
    url: String,
    method: String,
    stream: bool,
    rate: Option<f64>,
    connections: usize,
    requests: Option<u64>,
    duration: Option<std::time::Duration>,
    /// `--cache`: the requests opted in to the response cache.
    cache: bool,
}

impl Header {
    fn of(settings: &LoadSettings) -> Self {
        let target = &settings.target;
        let scheme = if target.tls { "https" } else { "http" };
        Self {
            base_url: settings.base_url.clone(),
            url: format!(
                "{scheme}://{}{}{}",
                target.authority, target.base_path, settings.request.endpoint
            ),
            method: settings.request.method.to_string(),
            stream: settings.stream,
            rate: settings.rate,
            connections: settings.connections,
            requests: settings.requests,
            duration: settings.duration,
            cache: settings.request.cache_ttl.is_some(),
        }
    }
}

fn micros(ns: u64) -> f64 {
    ns as f64 / 1_000.0
}

fn percentiles_json(p: Option<Percentiles>) -> Value {
    match p {
        None => Value::Null,
        Some(p) => json!({
            "count": p.count,
            "min": micros(p.min),
            "mean": p.mean.round() / 1_000.0,
            "p50": micros(p.p50),
            "p90": micros(p.p90),
            "p99": micros(p.p99),
            "p999": micros(p.p999),
            "max": micros(p.max),
        }),
    }
}

fn json_report(header: &Header, report: &LoadReport) -> Value {
    let r = &report.recorder;
    let status: serde_json::Map<String, Value> = r
        .status
        .iter()
        .map(|(status, count)| (status.to_string(), json!(count)))
        .collect();
    let errors: serde_json::Map<String, Value> = ErrorKind::ALL
        .iter()
        .map(|kind| {
            (
                kind.name().to_string(),
                json!(r.errors.get(kind).copied().unwrap_or(0)),
            )
        })
        .collect();
    let split = Percentiles::of(&r.upstream).map(|upstream| {
        json!({
            "responses": upstream.count,
            "upstream_us": percentiles_json(Some(upstream)),
            "overhead_us": percentiles_json(Percentiles::of(&r.overhead)),
        })
    });
    let incomplete = r
        .errors
        .get(&ErrorKind::IncompleteStream)
        .copied()
        .unwrap_or(0);
    let streams = header.stream.then(|| {
        json!({
            "count": r.streams,
            "complete": r.streams - incomplete,
            "incomplete": incomplete,
            "events": r.stream_events,
            "first_event_us": percentiles_json(Percentiles::of(&r.first_event)),
            "mean_gap_us": percentiles_json(Percentiles::of(&r.event_gap)),
        })
    });
    json!({
        "target": {
            "base_url": header.base_url,
            "url": header.url,
            "method": header.method,
            "stream": header.stream,
        },
        "load": {
            "mode": if header.rate.is_some() { "open" } else { "closed" },
            "rate": header.rate,
            "connections": header.connections,
            "workers": report.workers,
            "driver": report.driver.name(),
            "requests": header.requests,
            "duration_s": header.duration.map(|d| d.as_secs_f64()),
        },
        "requests": r.requests(),
        "elapsed_s": report.elapsed.as_secs_f64(),
        "requests_per_sec": (report.requests_per_sec() * 10.0).round() / 10.0,
        "status": status,
        "errors": errors,
        "errors_total": r.errors_total(),
        "connections_opened": r.connections_opened,
        "latency_us": percentiles_json(Percentiles::of(&r.latency)),
        "ttfb_us": percentiles_json(Percentiles::of(&r.ttfb)),
        "upstream_split": split,
        "cache": {
            "hit": r.cache.hit,
            "miss": r.cache.miss,
            "bypass": r.cache.bypass,
            "hit_ratio": r.cache.hit_ratio(),
            "workers_answered": r.cache_workers.len(),
            "workers": r.cache_workers.iter().map(|(worker, counts)| json!({
                "worker": worker,
                "hit": counts.hit,
                "miss": counts.miss,
                "bypass": counts.bypass,
                "hit_ratio": counts.hit_ratio(),
            })).collect::<Vec<_>>(),
            "without_worker": r.cache_without_worker(),
            "hit_latency_us": percentiles_json(Percentiles::of(&r.hit_latency)),
            "miss_latency_us": percentiles_json(Percentiles::of(&r.miss_latency)),
        },
        "streams": streams,
        "interrupted": report.interrupted,
    })
}

/// A duration in nanoseconds, in the unit that reads best.
fn human(ns: u64) -> String {
    let ns = ns as f64;
    if ns < 1e6 {
        format!("{:.1}µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2}ms", ns / 1e6)
    } else {
        format!("{:.2}s", ns / 1e9)
    }
}

fn percentile_line(p: &Percentiles) -> String {
    format!(
        "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        human(p.p50),
        human(p.p90),
        human(p.p99),
        human(p.p999),
        human(p.max)
    )
}

fn text_report(header: &Header, report: &LoadReport, request: Option<&str>, debug: bool) -> String {
    let r = &report.recorder;
    let mut out = String::new();
    if debug {
        write_samples(&mut out, request, r.samples.values());
    }
    let _ = writeln!(out, "Target      {} {}", header.method, header.url);
    let mode = match header.rate {
        Some(rate) => format!("open loop at {rate} req/s"),
        None => "closed loop".to_string(),
    };
    let _ = writeln!(
        out,
        "Load        {mode}, {} connection{} on {} client thread{} ({})",
        header.connections,
        plural(header.connections),
        report.workers,
        plural(report.workers),
        report.driver.name()
    );
    let _ = writeln!(
        out,
        "Requests    {} in {:.2}s: {:.1} req/s{}",
        r.requests(),
        report.elapsed.as_secs_f64(),
        report.requests_per_sec(),
        if report.interrupted {
            " (interrupted)"
        } else {
            ""
        }
    );
    let status: Vec<String> = r.status.iter().map(|(s, n)| format!("{s}: {n}")).collect();
    let _ = writeln!(out, "Status      {}", list_or_none(&status));
    let errors: Vec<String> = r
        .errors
        .iter()
        .map(|(kind, n)| format!("{}: {n}", kind.name()))
        .collect();
    let _ = writeln!(out, "Errors      {}", list_or_none(&errors));
    if let Some(p) = Percentiles::of(&r.latency) {
        let _ = writeln!(out, "Latency     {}", percentile_line(&p));
    }
    if let Some(p) = Percentiles::of(&r.ttfb) {
        let _ = writeln!(out, "First byte  {}", percentile_line(&p));
    }
    if let Some(p) = Percentiles::of(&r.upstream) {
        let _ = writeln!(out, "Upstream    {}", percentile_line(&p));
        if let Some(o) = Percentiles::of(&r.overhead) {
            let _ = writeln!(out, "Overhead    {}", percentile_line(&o));
        }
        let _ = writeln!(
            out,
            "            (from X-UPSTREAM-REQUEST-START/STOP on {} responses; overhead = time to response head - upstream time)",
            p.count
        );
    }
    if let Some(ratio) = r.cache.hit_ratio() {
        let _ = writeln!(
            out,
            "Cache       hit ratio {:.1}% (hit: {}, miss: {}, bypass: {})",
            ratio * 100.0,
            r.cache.hit,
            r.cache.miss,
            r.cache.bypass
        );
        write_cache_workers(&mut out, r);
        if let Some(p) = Percentiles::of(&r.hit_latency) {
            let _ = writeln!(out, "Cache hit   {}", percentile_line(&p));
        }
        if let Some(p) = Percentiles::of(&r.miss_latency) {
            let _ = writeln!(out, "Cache miss  {}", percentile_line(&p));
        }
    } else if header.cache {
        let _ = writeln!(
            out,
            "Cache       no response named a cache state (X-PROXY-CACHE / Cache-Status)"
        );
    }
    if header.stream {
        let incomplete = r
            .errors
            .get(&ErrorKind::IncompleteStream)
            .copied()
            .unwrap_or(0);
        let _ = writeln!(
            out,
            "Streams     {} streams, {} incomplete, {} events",
            r.streams, incomplete, r.stream_events
        );
        if let Some(p) = Percentiles::of(&r.first_event) {
            let _ = writeln!(out, "First event {}", percentile_line(&p));
        }
        if let Some(p) = Percentiles::of(&r.event_gap) {
            let _ = writeln!(out, "Event gap   {}", percentile_line(&p));
        }
    }
    out
}

/// Width the per-worker line wraps at.
const WRAP: usize = 100;
/// The report's label column.
const INDENT: &str = "            ";

/// Under the cache line, when responses named the proxy worker that answered
/// (`X-PROXY-CACHE-WORKER`): how many workers answered and each one's hit
/// ratio, wrapped; then how many responses named no worker, if any did not.
fn write_cache_workers(out: &mut String, r: &Recorder) {
    if r.cache_workers.is_empty() {
        return;
    }
    let answered = r.cache_workers.len();
    let mut line = format!(
        "{INDENT}{answered} proxy worker{} answered:",
        plural(answered)
    );
    let last = answered - 1;
    for (i, (worker, counts)) in r.cache_workers.iter().enumerate() {
        let mut item = format!("#{worker} {}", worker_ratio(counts));
        if i < last {
            item.push(',');
        }
        if line.chars().count() + 1 + item.chars().count() > WRAP {
            let _ = writeln!(out, "{line}");
            line = INDENT.to_string();
        } else {
            line.push(' ');
        }
        line.push_str(&item);
    }
    let _ = writeln!(out, "{line}");
    let without = r.cache_without_worker();
    if without > 0 {
        let _ = writeln!(
            out,
            "{INDENT}{without} response{} named no worker",
            if without == 1 { "" } else { "s" }
        );
    }
}

/// `90.0% (9/10)`: hits over the worker's responses; bypasses named when any.
fn worker_ratio(counts: &CacheCounts) -> String {
    let ratio = counts.hit_ratio().unwrap_or(0.0) * 100.0;
    let bypass = if counts.bypass > 0 {
        format!(", bypass: {}", counts.bypass)
    } else {
        String::new()
    };
    format!("{ratio:.1}% ({}/{}{bypass})", counts.hit, counts.total())
}

fn write_samples<'a>(
    out: &mut String,
    request: Option<&str>,
    samples: impl Iterator<Item = &'a Sample>,
) {
    if let Some(request) = request {
        let _ = writeln!(out, "--- request ---\n{request}\n");
    }
    for sample in samples {
        let _ = writeln!(out, "--- sample response: {} ---", sample.status);
        let _ = writeln!(out, "HTTP/1.1 {} {}", sample.status, sample.reason);
        for (name, value) in &sample.headers {
            let _ = writeln!(out, "{name}: {value}");
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "{}", sample.body.trim_end());
        if sample.truncated {
            let _ = writeln!(out, "[body truncated]");
        }
        let _ = writeln!(out);
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_validated() {
        assert_eq!(
            parse_header("X-Mock-Cut-After: 2").unwrap(),
            ("X-Mock-Cut-After".into(), "2".into())
        );
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("bad name: x").is_err());
        assert!(parse_header("Content-Length: 3").is_err());
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human(12_345), "12.3µs");
        assert_eq!(human(12_345_678), "12.35ms");
        assert_eq!(human(2_500_000_000), "2.50s");
    }

    fn with_workers(workers: &[(u16, CacheCounts)], without: u64) -> Recorder {
        let mut r = Recorder::new();
        for (worker, counts) in workers {
            r.cache.merge(counts);
            r.cache_workers.insert(*worker, *counts);
        }
        r.cache.hit += without;
        r
    }

    fn counts(hit: u64, miss: u64, bypass: u64) -> CacheCounts {
        CacheCounts { hit, miss, bypass }
    }

    #[test]
    fn the_per_worker_line_names_each_worker_in_order() {
        let r = with_workers(
            &[
                (2, counts(8, 1, 1)),
                (0, counts(9, 1, 0)),
                (1, counts(10, 0, 0)),
            ],
            0,
        );
        let mut out = String::new();
        write_cache_workers(&mut out, &r);
        assert_eq!(
            out,
            "            3 proxy workers answered: #0 90.0% (9/10), #1 100.0% (10/10), #2 80.0% (8/10, bypass: 1)\n"
        );

        let r = with_workers(&[(0, counts(0, 1, 0))], 4);
        let mut out = String::new();
        write_cache_workers(&mut out, &r);
        assert_eq!(
            out,
            "            1 proxy worker answered: #0 0.0% (0/1)\n            4 responses named no worker\n"
        );

        // No worker named: nothing.
        let mut out = String::new();
        write_cache_workers(&mut out, &with_workers(&[], 5));
        assert_eq!(out, "");
    }

    #[test]
    fn many_workers_wrap_under_the_label_column() {
        let workers: Vec<_> = (0..64).map(|w| (w, counts(24, 1, 0))).collect();
        let mut out = String::new();
        write_cache_workers(&mut out, &with_workers(&workers, 0));
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines.len() > 5, "{out}");
        assert!(
            lines[0].starts_with("            64 proxy workers answered: #0 96.0% (24/25), #1 ")
        );
        for line in &lines {
            assert!(line.chars().count() <= WRAP, "{line:?}");
            assert!(
                line.starts_with(INDENT) && !line[INDENT.len()..].starts_with(' '),
                "{line:?}"
            );
        }
        for w in 0..64 {
            assert_eq!(out.matches(&format!("#{w} ")).count(), 1, "#{w} in {out}");
        }
        assert!(out.ends_with("#63 96.0% (24/25)\n"), "{out}");
    }
}
