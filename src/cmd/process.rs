//! What both binaries (`llm-proxy`, `dheera_ai-proxy`) do around their
//! commands: parse, set up logging and the panic policy, run, and turn the
//! outcome into an exit status.
//!
//! Exit statuses: 0 success, 1 general error (bad arguments included), 2
//! server unreachable, 3 authentication failed, 4 not found (client
//! commands: unknown model, credential, key or user).

use std::io::IsTerminal;
use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

use crate::http_client::ClientError;
use crate::loadgen::LoadError;

/// Parses the command line with `parse`, then runs `run` and reports its
/// error, if any, on one line.
pub fn main<T: clap::CommandFactory>(
    parse: impl FnOnce() -> Result<T, clap::Error>,
    run: impl FnOnce(T) -> anyhow::Result<ExitCode>,
) -> ExitCode {
    let parsed = match parse() {
        Ok(parsed) => parsed,
        Err(error) if error.kind() == clap::error::ErrorKind::DisplayVersion => {
            return print_version(&T::command());
        }
        Err(error) => return clap_exit(&error),
    };
    init_logging();
    abort_on_panic();
    match run(parsed) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(exit_code(&error))
        }
    }
}

/// A panic is a bug: stop the whole process (status 134) so that a
/// supervisor restarts it, rather than serve on with a dead worker whose
/// listener still takes connections.
fn abort_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::abort();
    }));
}

/// 2 server unreachable, 3 authentication failed, 4 not found, 1 anything else.
fn exit_code(error: &anyhow::Error) -> u8 {
    if let Some(error) = error.downcast_ref::<LoadError>() {
        return error.exit_code();
    }
    // `migrate`: PostgreSQL is the server that cannot be reached.
    if let Some(error) = error.downcast_ref::<crate::store::shared::SharedError>() {
        return if error.is_unreachable() { 2 } else { 1 };
    }
    error
        .downcast_ref::<ClientError>()
        .map_or(1, ClientError::exit_code)
}

/// `--version`, after any subcommand too: the program's name and version,
/// as at the top level (clap would name the subcommand,
/// `llm-proxy-manage-token-list`).
fn print_version(command: &clap::Command) -> ExitCode {
    let version = command.get_version().unwrap_or(env!("CARGO_PKG_VERSION"));
    println!("{} {version}", command.get_name());
    ExitCode::SUCCESS
}

/// `--help` and `--version` exit 0; bad arguments exit 1 (2 means "server
/// unreachable" here, not clap's "usage error").
fn clap_exit(error: &clap::Error) -> ExitCode {
    let _ = error.print();
    if error.use_stderr() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// `RUST_LOG` wins; otherwise `LOG_LEVEL` (as in the seed); default `info`.
fn init_logging() {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| {
            EnvFilter::try_new(std::env::var("LOG_LEVEL").unwrap_or_else(|_| "info".into()))
        })
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
