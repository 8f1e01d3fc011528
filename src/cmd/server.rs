//! `llm-proxy server`: start the gateway and drain it on SIGTERM/SIGINT.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::cli::ServerArgs;
use crate::mock::{self, MockHandle, MockSettings};
use crate::providers::ProviderTable;
use crate::server;
use crate::settings::ServerSettings;

/// Keys used by `--demo` when none are configured.
const DEMO_CLIENT_KEY: &str = "sk-demo";
const DEMO_UPSTREAM_KEY: &str = "sk-mock-upstream";

pub fn run(args: &ServerArgs) -> anyhow::Result<()> {
    let mut settings = ServerSettings::resolve(args)?;
    let _demo_upstream = if args.demo {
        Some(start_demo_upstream(&mut settings)?)
    } else {
        None
    };
    if settings.client_keys.is_empty() {
        bail!(
            "no client key configured: set PROXY_API_KEY (comma-separated for several), or try --demo"
        );
    }
    let settings = Arc::new(settings);
    // Register before starting so that an early signal is not lost.
    let mut signals = Signals::new([SIGTERM, SIGINT]).context("cannot install signal handlers")?;
    let handle = server::start(settings.clone())?;
    tracing::info!(
        "listening on http://{} ({} workers, {})",
        handle.local_addr,
        settings.workers,
        handle.driver.name()
    );
    if args.demo {
        print_demo_hint(handle.local_addr, &settings.client_keys[0]);
    }
    let drainer = handle.drainer();
    let grace = settings.shutdown_timeout;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut received = signals.forever();
            if let Some(signal) = received.next() {
                tracing::info!(
                    signal,
                    ?grace,
                    "draining: no new connections, finishing requests in flight"
                );
                drainer.drain();
            }
            if received.next().is_some() {
                tracing::warn!("second signal: exiting now");
                std::process::exit(130);
            }
        })?;
    handle.join();
    tracing::info!("stopped");
    Ok(())
}

/// `--demo`: an in-process mock upstream, paced so streaming is visible.
fn start_demo_upstream(settings: &mut ServerSettings) -> anyhow::Result<MockHandle> {
    let mock = mock::start(MockSettings {
        addr: "127.0.0.1:0".parse()?,
        workers: 1,
        pin_cores: false,
        latency: Duration::ZERO,
        stream_chunks: 16,
        chunk_interval: Duration::from_millis(50),
        api_key: Some(DEMO_UPSTREAM_KEY.into()),
        tls: None,
    })?;
    settings.providers = ProviderTable::openai(&format!("http://{}", mock.local_addr))?;
    settings.upstream_key = Some(DEMO_UPSTREAM_KEY.into());
    if settings.client_keys.is_empty() {
        settings.client_keys = vec![DEMO_CLIENT_KEY.into()];
    }
    tracing::info!("demo: mock upstream on http://{}", mock.local_addr);
    Ok(mock)
}

fn print_demo_hint(addr: std::net::SocketAddr, key: &str) {
    let host = if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    };
    println!(
        "\nTry a streaming chat completion through the proxy:\n\n  curl -N http://{host}/v1/chat/completions \\\n    -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\\n    -d '{{\"model\":\"gpt-4o-mini\",\"stream\":true,\"messages\":[{{\"role\":\"user\",\"content\":\"Hello\"}}]}}'\n"
    );
}
