//! Opening the sign-in page for `login`: `$BROWSER` if set (split on
//! whitespace; `%s` is replaced by the URL, else the URL is appended), else
//! the desktop's opener, `open` on macOS and `xdg-open` elsewhere.
//!
//! The browser is started in its own process group with its output
//! discarded, so that it neither writes over the terminal nor dies with a
//! Ctrl-C meant for the CLI. Not opening it is never an error: the URL is
//! printed anyway.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// Starts a browser on `url`; `Err` says why none was started, for a note.
/// `env` is the process environment (injected for tests).
pub fn open(url: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<(), String> {
    let argv = command_line(url, env)?;
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| "no browser command".to_string())?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    // Reaped in the background; a failed opener is worth a note, which comes
    // while the CLI waits for the sign-in.
    let program = program.clone();
    std::thread::spawn(move || {
        if let Ok(status) = child.wait()
            && !status.success()
        {
            super::login::note(&format!(
                "{program} could not open a browser ({status}): open the URL yourself"
            ));
        }
    });
    Ok(())
}

/// The command that opens `url`, or why there is none.
fn command_line(url: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Vec<String>, String> {
    if let Some(browser) = env("BROWSER").filter(|b| !b.trim().is_empty()) {
        let mut argv: Vec<String> = browser.split_whitespace().map(String::from).collect();
        if argv.iter().any(|arg| arg.contains("%s")) {
            for arg in &mut argv {
                *arg = arg.replace("%s", url);
            }
        } else {
            argv.push(url.to_string());
        }
        return Ok(argv);
    }
    if cfg!(target_os = "macos") {
        return Ok(vec!["open".into(), url.into()]);
    }
    // Without a display, xdg-open would start a text browser on a terminal
    // whose input and output it does not have.
    let display = ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|name| env(name).is_some_and(|value| !value.is_empty()));
    if !display {
        return Err("no display; set BROWSER to choose a browser".into());
    }
    Ok(vec!["xdg-open".into(), url.into()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::litellm::test_env::env;

    #[test]
    fn browser_variable_first() {
        let url = "http://p/sso?a=1&b=2";
        let appended = command_line(url, &env(&[("BROWSER", " firefox  --new-tab ")])).unwrap();
        assert_eq!(appended, ["firefox", "--new-tab", url]);
        let placed = command_line(url, &env(&[("BROWSER", "open-it --url=%s now")])).unwrap();
        assert_eq!(placed, ["open-it", &format!("--url={url}"), "now"]);
        if !cfg!(target_os = "macos") {
            let desktop = command_line(url, &env(&[("DISPLAY", ":0")])).unwrap();
            assert_eq!(desktop, ["xdg-open", url]);
            assert!(command_line(url, &env(&[("BROWSER", " ")])).is_err());
        }
    }
}
