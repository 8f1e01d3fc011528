//! `llm-proxy mock-upstream`: the OpenAI-compatible mock, in the foreground.

use std::time::Duration;

use crate::cli::MockArgs;
use crate::mock::{self, MockSettings};
use crate::settings::parse_listen_addr;

pub fn run(args: &MockArgs) -> anyhow::Result<()> {
    if args.workers == 0 {
        anyhow::bail!("--workers must be at least 1");
    }
    let settings = MockSettings {
        addr: parse_listen_addr(&args.addr)?,
        workers: args.workers,
        pin_cores: args.pin_cores,
        latency: Duration::from_millis(args.latency_ms),
        stream_chunks: args.stream_chunks,
        chunk_interval: Duration::from_millis(args.chunk_interval_ms),
        api_key: args.api_key.clone(),
        tls: args.tls_cert.clone().zip(args.tls_key.clone()),
        aws_access_key_id: args.aws_access_key_id.clone(),
        aws_secret_access_key: args.aws_secret_access_key.clone(),
    };
    let scheme = if settings.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let handle = mock::start(settings)?;
    tracing::info!(
        "mock upstream listening on {scheme}://{}",
        handle.local_addr
    );
    handle.join();
    Ok(())
}
