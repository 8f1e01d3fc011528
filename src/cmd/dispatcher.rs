//! `llm-proxy dispatcher`: deliver request events from the event log in the
//! data directory to a sink, from this dispatcher's durable cursor on.
//! Exit status: 0 done (or stopped by a signal), 1 error, 2 the sink stayed
//! unreachable with `--once`, 3 the sink refused the API key (401, 403).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use anyhow::{Context, bail};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::cli::{DispatcherArgs, SinkService};
use crate::events::dispatch::{self, DispatchError, DispatchOptions};
use crate::events::sinks::{self, Sink};
use crate::settings::{Env, EventSettings};
use crate::store::{EventLog, event_log};

/// Retries of one batch with `--once` when `--retries` is not given.
const ONCE_RETRIES: u32 = 5;

pub fn run(args: &DispatcherArgs) -> anyhow::Result<ExitCode> {
    let env = match &args.config {
        Some(path) => Env::load(path, true)?,
        None => Env::load(Path::new(".env"), false)?,
    };
    let data_dir = args
        .db
        .clone()
        .or_else(|| env.path("DATABASE_PATH"))
        .unwrap_or_else(|| PathBuf::from("data"));
    let settings = EventSettings::resolve(&env, None)?;
    let (mut sink, endpoint) = make_sink(args, &env)?;
    let dir = event_log::dir_of(&data_dir);
    if !dir.join("data.mdb").exists() {
        bail!(
            "no event log in {} (start the server with this data directory first)",
            data_dir.display()
        );
    }
    let log = EventLog::open(&dir, settings.retention.max_bytes)
        .with_context(|| format!("cannot open the event log in {}", dir.display()))?;
    let options = DispatchOptions {
        name: args
            .name
            .clone()
            .unwrap_or_else(|| args.service.name().to_string()),
        read_ahead: args.buffer,
        batch_size: args.batch_size,
        once: args.once,
        max_retries: args.retries.or(args.once.then_some(ONCE_RETRIES)),
    };
    if options.batch_size == 0 || options.read_ahead == 0 {
        bail!("--buffer and --batch-size must be at least 1");
    }
    warn_of_a_shared_cursor(&log, &options.name, &endpoint);
    let state = Arc::new(AtomicU8::new(dispatch::RUN));
    let mut signals = Signals::new([SIGTERM, SIGINT]).context("cannot install signal handlers")?;
    let stopper = state.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                tracing::info!("stopping after the batch in flight");
                stopper.store(dispatch::STOP, Ordering::Release);
            }
        })?;
    tracing::info!(
        dispatcher = options.name,
        service = args.service.name(),
        log = %dir.display(),
        "dispatching events"
    );
    match dispatch::run(&log, &mut sink, &options, &state) {
        Ok(done) => {
            tracing::info!(
                delivered = done.events,
                cursor = done.cursor,
                lost_by_the_server = done.lost,
                "dispatcher stopped"
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(DispatchError::SinkUnreachable(reason)) => {
            eprintln!("error: the sink is unreachable: {reason}");
            Ok(ExitCode::from(2))
        }
        Err(DispatchError::SinkUnauthorized(reason)) => {
            eprintln!("error: the sink refused the API key: {reason} (check --api-key)");
            Ok(ExitCode::from(3))
        }
        Err(error) => Err(error.into()),
    }
}

/// Warns when this dispatcher's cursor was last used with another
/// endpoint: the new one gets only the events after it, not the earlier ones.
fn warn_of_a_shared_cursor(log: &EventLog, name: &str, endpoint: &str) {
    let cursor = match log.cursor(name) {
        Ok(cursor) => cursor,
        Err(_) => return,
    };
    match log.use_cursor_for(name, endpoint) {
        Ok(true) if cursor > 0 => tracing::warn!(
            dispatcher = name,
            cursor,
            "the cursor {name:?} was last used with another endpoint: this one gets only the events after seq {cursor}; give it a cursor of its own with --name to get them all"
        ),
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "cannot record this dispatcher's endpoint"),
    }
}

/// The sink, and its endpoint as given (a file: its full path).
fn make_sink(args: &DispatcherArgs, env: &Env) -> anyhow::Result<(Sink, String)> {
    let endpoint = args.endpoint.clone();
    let key_env = match args.service {
        SinkService::File => {
            let path = endpoint.context("--endpoint: the file to write events to is required")?;
            let sink = Sink::file(Path::new(&path))
                .with_context(|| format!("cannot open {path} for appending"))?;
            let full = std::fs::canonicalize(&path).map_or(path, |p| p.display().to_string());
            return Ok((sink, full));
        }
        SinkService::Http => "DISPATCHER_API_KEY",
        SinkService::Lunary => "LUNARY_PUBLIC_KEY",
        SinkService::Helicone => "HELICONE_API_KEY",
    };
    let url = match (args.service, endpoint) {
        (_, Some(url)) => url,
        (SinkService::Lunary, None) => sinks::LUNARY_ENDPOINT.into(),
        (SinkService::Helicone, None) => sinks::HELICONE_ENDPOINT.into(),
        _ => bail!("--endpoint: the URL to post events to is required"),
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        bail!("--endpoint: expected an http:// or https:// URL, got {url:?}");
    }
    let api_key = args.api_key.clone().or_else(|| env.get(key_env));
    if api_key.is_none() && args.service != SinkService::Http {
        bail!(
            "--api-key (or {key_env}) is required for {}",
            args.service.name()
        );
    }
    Ok((Sink::http(args.service.name(), url.clone(), api_key), url))
}
