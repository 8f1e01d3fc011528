//! `llm-proxy setup`: writes the `.env` (mode 0600), initialises the store
//! and, unless `--skip-project`, creates a project and a token, printing
//! the token once.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::cli::SetupArgs;
use crate::manage::expiry_after;
use crate::settings::{self, Env};
use crate::store::{NewKey, Store, crypto};

/// What setup needs, once the flags (or the prompts) have been read.
struct Answers {
    openai_key: Option<String>,
    management_token: Option<String>,
    project: String,
    duration_hours: u64,
    skip_project: bool,
}

pub fn run(args: &SetupArgs) -> anyhow::Result<()> {
    let addr = check_addr(&args.addr)?;
    // Values already in the env file are kept unless given again.
    let env = Env::load(&args.config, false)?;
    let mut answers = if args.interactive {
        ask(args)?
    } else {
        Answers {
            openai_key: args.openai_key.clone(),
            management_token: args.management_token.clone(),
            project: args.project.clone(),
            duration_hours: args.duration,
            skip_project: args.skip_project,
        }
    };
    answers.openai_key = answers.openai_key.or_else(|| env.get("OPENAI_API_KEY"));
    answers.management_token = answers
        .management_token
        .or_else(|| env.get("MANAGEMENT_TOKEN"));
    if !answers.skip_project && answers.openai_key.is_none() {
        bail!("--openai-key is required to create a project (or pass --skip-project)");
    }
    if answers.duration_hours == 0 {
        bail!("--duration must be at least 1 hour");
    }
    // The data directory: a flag's (or the environment's) from the current
    // directory, the file's own from the file's directory, as the server
    // reads them.
    let (db, db_text) = match (&args.db, env.path("DATABASE_PATH")) {
        (None, Some(from_file)) => (from_file, env.get("DATABASE_PATH").unwrap_or_default()),
        (given, _) => {
            let db = given.clone().unwrap_or_else(|| PathBuf::from("data"));
            let text = db_setting(&db, &args.config)?;
            (db, text)
        }
    };
    let generated = answers.management_token.is_none();
    let management_token = match answers.management_token {
        Some(token) => {
            let (token, warning) = settings::management_token(&token, "the management token")?;
            if let Some(warning) = warning {
                eprintln!("warning: {warning}");
            }
            token
        }
        None => new_management_token()?,
    };

    let mut values = vec![
        ("MANAGEMENT_TOKEN", management_token.clone()),
        ("DATABASE_PATH", db_text),
        ("LISTEN_ADDR", addr),
    ];
    if let Some(key) = &answers.openai_key {
        values.insert(0, ("OPENAI_API_KEY", key.clone()));
    }
    write_env_file(&args.config, &values)?;
    println!("Wrote {} (mode 0600)", args.config.display());
    if generated {
        println!(
            "Generated a management token; it is in {}",
            args.config.display()
        );
    }

    let store = Store::open_checked(
        &db,
        env.get("ENCRYPTION_KEY").as_deref(),
        env.flag("REQUIRE_ENCRYPTION_KEY")?,
    )
    .with_context(|| format!("cannot open the store in {}", db.display()))?;
    println!("Store ready in {}", db.display());
    if answers.skip_project {
        return Ok(());
    }
    let openai_key = answers.openai_key.unwrap_or_default();
    let project = match store
        .list_projects()?
        .into_iter()
        .find(|p| p.name == answers.project.trim())
    {
        Some(existing) => {
            println!(
                "Project {:?} exists already ({})",
                existing.name, existing.id
            );
            existing
        }
        None => {
            let project = store.create_project(&answers.project, &openai_key)?;
            println!("Created project {:?} ({})", project.name, project.id);
            project
        }
    };
    let lifetime = Duration::from_secs(answers.duration_hours.saturating_mul(3600));
    let (key, secret) = store.create_key(NewKey {
        project_id: Some(project.id),
        expires_at: Some(expiry_after(lifetime)),
        ..NewKey::default()
    })?;
    println!(
        "\nToken: {secret}\n  (shown once; store it now)\n  id {}, expires in {} h\n",
        key.id, answers.duration_hours
    );
    println!(
        "Start the proxy with: llm-proxy server --config {}",
        args.config.display()
    );
    Ok(())
}

/// `--interactive`: prompts for what the flags did not give.
fn ask(args: &SetupArgs) -> anyhow::Result<Answers> {
    if !std::io::stdin().is_terminal() {
        bail!("--interactive needs a terminal; pass the values as flags instead");
    }
    let theme = dialoguer::theme::SimpleTheme;
    let openai_key = match &args.openai_key {
        Some(key) => key.clone(),
        None => dialoguer::Password::with_theme(&theme)
            .with_prompt("OpenAI API key")
            .interact()?,
    };
    let management_token = match &args.management_token {
        Some(token) => token.clone(),
        None => dialoguer::Password::with_theme(&theme)
            .with_prompt("Management token (empty: generate one)")
            .allow_empty_password(true)
            .interact()?,
    };
    let skip_project = args.skip_project
        || !dialoguer::Confirm::with_theme(&theme)
            .with_prompt("Create a project and a token now?")
            .default(true)
            .interact()?;
    let (project, duration_hours) = if skip_project {
        (args.project.clone(), args.duration)
    } else {
        let project = dialoguer::Input::with_theme(&theme)
            .with_prompt("Project name")
            .default(args.project.clone())
            .interact_text()?;
        let hours = dialoguer::Input::with_theme(&theme)
            .with_prompt("Token lifetime in hours")
            .default(args.duration)
            .interact_text()?;
        (project, hours)
    };
    Ok(Answers {
        openai_key: Some(openai_key).filter(|k| !k.trim().is_empty()),
        management_token: Some(management_token).filter(|t| !t.trim().is_empty()),
        project,
        duration_hours,
        skip_project,
    })
}

/// `--addr`: `host:port` (a name, an IPv4 address or a bracketed IPv6
/// address) or `:port`, as `llm-proxy server` reads `LISTEN_ADDR`; checked
/// here so that a typo does not wait for the server's start to show.
fn check_addr(text: &str) -> anyhow::Result<String> {
    let text = text.trim();
    let valid = text.rsplit_once(':').is_some_and(|(host, port)| {
        port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok() && valid_host(host)
    });
    if !valid {
        bail!(
            "--addr {text:?} is not host:port or :port (e.g. \"localhost:8080\", \"127.0.0.1:8080\", \":8080\")"
        );
    }
    Ok(text.to_string())
}

/// Empty (every interface), `[IPv6]`, an IPv4 address or a DNS name.
fn valid_host(host: &str) -> bool {
    if host.is_empty() {
        return true;
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return host.parse::<std::net::Ipv4Addr>().is_ok();
    }
    host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// `DATABASE_PATH` as the env file at `config` should say it so that the
/// server, which takes a relative path in the file from the file's
/// directory, finds `db` (a path from the current directory): an absolute
/// one as it is; a relative one relative to the file when `db` is inside
/// the file's directory, absolute otherwise.
fn db_setting(db: &Path, config: &Path) -> anyhow::Result<String> {
    if db.is_absolute() {
        return Ok(db.display().to_string());
    }
    let absolute = |path: &Path| {
        std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))
    };
    let db = absolute(db)?;
    let config_dir = absolute(config)?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let setting = match db.strip_prefix(&config_dir) {
        Ok(inside) if inside.as_os_str().is_empty() => PathBuf::from("."),
        Ok(inside) if !inside.components().any(|c| c.as_os_str() == "..") => inside.to_path_buf(),
        _ => db,
    };
    Ok(setting.display().to_string())
}

/// 32 random bytes, URL-safe base64.
pub(crate) fn new_management_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    crypto::fill_random(&mut bytes)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Sets `values` in the env file at `path`, keeping its other lines, and
/// leaves it readable by its owner only.
fn write_env_file(path: &Path, values: &[(&str, String)]) -> anyhow::Result<()> {
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut lines: Vec<String> = Vec::new();
    let mut written = vec![false; values.len()];
    for line in existing.lines() {
        let name = line
            .trim_start()
            .trim_start_matches("export ")
            .split('=')
            .next()
            .unwrap_or("")
            .trim();
        match values.iter().position(|(key, _)| *key == name) {
            Some(i) => {
                lines.push(format!("{}={}", values[i].0, quote(&values[i].1)));
                written[i] = true;
            }
            None => lines.push(line.to_string()),
        }
    }
    for ((key, value), done) in values.iter().zip(written) {
        if !done {
            lines.push(format!("{key}={}", quote(value)));
        }
    }
    let mut text = lines.join("\n");
    text.push('\n');
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    write_private(path, text.as_bytes())
}

/// Quotes a value for the env file when it needs it.
fn quote(value: &str) -> String {
    if value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./:@+,".contains(c))
    {
        value.to_string()
    } else if !value.contains('\'') {
        // Single quotes: taken literally, no `$` expansion.
        format!("'{value}'")
    } else {
        let escaped = value
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('$', "\\$");
        format!("\"{escaped}\"")
    }
}

fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    // An existing file keeps its mode on open: tighten it explicitly.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(contents)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        for good in [
            "localhost:8080",
            ":8080",
            "0.0.0.0:80",
            "127.0.0.1:0",
            "[::1]:8080",
            "proxy.internal-1.example:65535",
        ] {
            assert_eq!(check_addr(good).unwrap(), good);
        }
        for bad in [
            "",
            "garbage",
            "8080",
            "localhost",
            "localhost:",
            "localhost:http",
            ":65536",
            "::1:8080",
            "[nope]:80",
            "host name:80",
            "-a:80",
            "a..b:80",
            ":+80",
            "999.1.1.1:80",
        ] {
            assert!(check_addr(bad).is_err(), "{bad:?}");
        }
    }
}
