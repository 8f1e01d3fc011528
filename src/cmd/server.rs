//! `llm-proxy server`: start the gateway and drain it on SIGTERM/SIGINT.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use anyhow::Context;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::cli::ServerArgs;
use crate::events::dispatch::{self, DispatchOptions};
use crate::events::sinks::Sink;
use crate::litellm_config::ConfigModel;
use crate::manage::litellm::models as litellm_models;
use crate::mock::{self, MockHandle, MockSettings};
use crate::providers::ProviderTable;
use crate::server;
use crate::settings::ServerSettings;
use crate::store::shared::SharedConfig;
use crate::store::{NewKey, Store, StoreError};

/// Keys used by `--demo` when none are configured.
const DEMO_CLIENT_KEY: &str = "sk-demo-key";
const DEMO_UPSTREAM_KEY: &str = "sk-mock-upstream";

pub fn run(args: &ServerArgs) -> anyhow::Result<()> {
    let mut settings = ServerSettings::resolve(args)?;
    let listeners = server::listen(&settings)?;
    settings.listening_on(listeners[0].local_addr()?);
    let demo = if args.demo {
        Some(start_demo_upstream(&mut settings)?)
    } else {
        None
    };
    // The demo's management token: the configured one, else one for this run.
    let demo_token = match (&demo, &settings.management_token) {
        (Some(_), None) => {
            let token = super::setup::new_management_token()?;
            settings.management_token = Some(token.clone());
            DemoToken::Generated(token)
        }
        _ => DemoToken::Configured,
    };
    let store = Store::open_checked(
        &settings.data_dir,
        settings.encryption_key.as_deref(),
        settings.require_encryption,
    )
    .with_context(|| format!("cannot open the store in {}", settings.data_dir.display()))?;
    let store = Arc::new(store);
    if let Some(url) = &settings.database_url {
        let config = SharedConfig {
            url: url.clone(),
            node: settings.node_id.clone(),
            term: settings.lease_term,
            ca_file: settings.database_ca_file.clone(),
        };
        store
            .start_shared(config)
            .context("cannot start in shared mode")?;
        tracing::info!(node = %settings.node_id, "shared mode: this node's store is a replica of PostgreSQL");
    }
    // Which store this is, without doubt: a relative path would depend on
    // where the server was started from.
    let data_dir = std::path::absolute(&settings.data_dir).unwrap_or(settings.data_dir.clone());
    tracing::info!("data directory {}", data_dir.display());
    if demo.is_some() {
        seed_demo(&store)?;
    }
    load_config_models(&store, &settings.config_models)?;
    match &settings.management_token {
        // The master key calls the models too, as LiteLLM's does.
        Some(token) => match store.sync_master_key(token) {
            Ok(()) => {}
            // Too short, or not plain ASCII, for a key.
            Err(StoreError::Invalid(reason)) => {
                tracing::warn!("the master key cannot call the models: {reason}")
            }
            Err(StoreError::SharedUnavailable(reason)) => {
                tracing::warn!(
                    "the master key is not recorded as a key (restart once the shared store is back): {reason}"
                )
            }
            Err(error) => return Err(error).context("cannot record the master key as a key"),
        },
        None => tracing::warn!("MANAGEMENT_TOKEN is not set: the management API is disabled"),
    }
    let settings = Arc::new(settings);
    // Register before starting so that an early signal is not lost.
    let mut signals = Signals::new([SIGTERM, SIGINT]).context("cannot install signal handlers")?;
    let handle = server::start(settings.clone(), store.clone(), listeners)?;
    let file_dispatcher = start_file_dispatcher(&settings, &handle)?;
    tracing::info!(
        "listening on http://{} ({} workers, {})",
        handle.local_addr,
        settings.workers,
        handle.driver.name()
    );
    if args.demo {
        print_demo_hint(handle.local_addr, DEMO_CLIENT_KEY, &demo_token);
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
    if let Some(dispatcher) = file_dispatcher {
        dispatcher.finish();
    }
    if let Some(shared) = store.shared() {
        shared.shutdown();
    }
    tracing::info!("stopped");
    Ok(())
}

/// `--file-event-log`: the file dispatcher, run in-process on its own thread.
struct FileDispatcher {
    state: Arc<AtomicU8>,
    thread: std::thread::JoinHandle<()>,
}

impl FileDispatcher {
    /// Delivers what the writer flushed at shutdown, then stops.
    fn finish(self) {
        self.state.store(dispatch::DRAIN, Ordering::Release);
        let _ = self.thread.join();
    }
}

fn start_file_dispatcher(
    settings: &ServerSettings,
    handle: &server::ServerHandle,
) -> anyhow::Result<Option<FileDispatcher>> {
    let Some(path) = &settings.events.file_event_log else {
        return Ok(None);
    };
    let Some(log) = handle.event_log() else {
        anyhow::bail!("FILE_EVENT_LOG needs request events: EVENT_LOG is off");
    };
    let mut sink = Sink::file(path)
        .with_context(|| format!("cannot open {} for appending", path.display()))?;
    let state = Arc::new(AtomicU8::new(dispatch::RUN));
    let options = DispatchOptions {
        name: "file-event-log".into(),
        read_ahead: 1000,
        batch_size: 500,
        once: false,
        max_retries: None,
    };
    let thread_state = state.clone();
    let thread = std::thread::Builder::new()
        .name("file-event-log".into())
        .spawn(move || {
            if let Err(error) = dispatch::run(&log, &mut sink, &options, &thread_state) {
                tracing::error!(%error, "the file event log stopped");
            }
        })?;
    tracing::info!(path = %path.display(), "request events go to the file event log");
    Ok(Some(FileDispatcher { state, thread }))
}

/// What `--demo` runs beside the server; the temporary store goes with it.
struct Demo {
    _upstream: MockHandle,
    data_dir: std::path::PathBuf,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// `--demo`: an in-process mock upstream, paced so streaming is visible,
/// and a throw-away store (never the real data directory).
fn start_demo_upstream(settings: &mut ServerSettings) -> anyhow::Result<Demo> {
    let mock = mock::start(MockSettings {
        addr: "127.0.0.1:0".parse()?,
        workers: 1,
        pin_cores: false,
        latency: Duration::ZERO,
        stream_chunks: 16,
        chunk_interval: Duration::from_millis(50),
        api_key: Some(DEMO_UPSTREAM_KEY.into()),
        tls: None,
        aws_access_key_id: None,
        aws_secret_access_key: None,
    })?;
    settings.providers = ProviderTable::openai(&format!("http://{}", mock.local_addr))?;
    settings.data_dir = std::env::temp_dir().join(format!("llm-proxy-demo-{}", std::process::id()));
    settings.encryption_key = None;
    settings.require_encryption = false;
    tracing::info!(
        "demo: mock upstream on http://{}, temporary store in {}",
        mock.local_addr,
        settings.data_dir.display()
    );
    Ok(Demo {
        _upstream: mock,
        data_dir: settings.data_dir.clone(),
    })
}

/// A demo project with the mock's key, and the demo client key.
fn seed_demo(store: &Store) -> anyhow::Result<()> {
    let project = store.create_project("demo", DEMO_UPSTREAM_KEY)?;
    store.create_key(NewKey {
        project_id: Some(project.id),
        alias: Some("demo".into()),
        secret: Some(DEMO_CLIENT_KEY.into()),
        ..NewKey::default()
    })?;
    Ok(())
}

/// Where the demo's management token came from.
enum DemoToken {
    /// `MANAGEMENT_TOKEN` (or the config's master key): not printed.
    Configured,
    /// Made for this run, printed once so that the management commands work.
    Generated(String),
}

fn print_demo_hint(addr: std::net::SocketAddr, key: &str, token: &DemoToken) {
    let host = if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    };
    println!(
        "\nTry a streaming chat completion through the proxy:\n\n  curl -N http://{host}/v1/chat/completions \\\n    -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\\n    -d '{{\"model\":\"gpt-4o-mini\",\"stream\":true,\"messages\":[{{\"role\":\"user\",\"content\":\"Hello\"}}]}}'\n"
    );
    // The client commands' default address is localhost:8080.
    let urls = if addr.port() == 8080 {
        String::new()
    } else {
        format!(" MANAGE_API_BASE_URL=http://{host} LLM_PROXY_URL=http://{host}")
    };
    match token {
        DemoToken::Generated(token) => println!(
            "Manage the demo store with this run's management token:\n\n  export MANAGEMENT_TOKEN={token} LLM_PROXY_API_KEY={token}{urls}\n  llm-proxy manage project list\n  llm-proxy keys generate --key-alias mine\n"
        ),
        DemoToken::Configured if urls.is_empty() => println!(
            "Manage the demo store with your MANAGEMENT_TOKEN:\n\n  llm-proxy manage project list\n"
        ),
        DemoToken::Configured => println!(
            "Manage the demo store with your MANAGEMENT_TOKEN:\n\n  export{urls}\n  llm-proxy manage project list\n"
        ),
    }
}

/// Puts the config file's `model_list` in the store in place of the
/// previous start's (models made through the API are left alone).
fn load_config_models(store: &Store, models: &[ConfigModel]) -> anyhow::Result<()> {
    let mut prepared = Vec::with_capacity(models.len());
    for (index, model) in models.iter().enumerate() {
        let checked = litellm_models::prepare(
            model.model_name.clone(),
            model.litellm_params.clone(),
            model.model_info.clone(),
            None,
        )
        .and_then(|(id, changes)| {
            litellm_models::check_credential_of(store, &changes)?;
            Ok((id, changes))
        })
        .map_err(|error| anyhow::anyhow!("model_list[{index}]: {error}"))?;
        let (id, changes) = checked;
        let name = changes.model_name.as_deref().unwrap_or_default();
        let id = id.unwrap_or_else(|| format!("config-{index}-{name}"));
        prepared.push((id, changes));
    }
    if !models.is_empty() {
        tracing::info!(models = models.len(), "models from the config file");
    }
    match store.replace_config_deployments(prepared) {
        // Shared mode, PostgreSQL down: the replica serves the models it has.
        Err(StoreError::SharedUnavailable(reason)) => {
            tracing::warn!(
                "the config file's models are not stored; the replica's are served (restart once the shared store is back): {reason}"
            );
            Ok(())
        }
        result => result.context("cannot store the config file's models"),
    }
}
