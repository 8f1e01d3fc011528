//! The login file: what `login` stored (the server, its key, whose key it
//! is), read by every later client command of both programs.
//!
//! It lives at `$LLM_PROXY_CONFIG_DIR/login.json`, else
//! `$XDG_CONFIG_HOME/llm-proxy/login.json`, else
//! `~/.config/llm-proxy/login.json`. It holds a live key: its directory is
//! created 0700 and the file 0600, written whole to a temporary file that
//! is then renamed, so no reader ever sees half a file and no other user
//! ever sees the key.

use std::fmt;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::http_client::ClientError;

const FILE_NAME: &str = "login.json";

/// One login, as stored.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredLogin {
    /// The proxy that issued the key, without a trailing slash.
    pub base_url: String,
    /// The virtual key itself (`sk-…`); never printed.
    pub key: String,
    pub key_id: Option<String>,
    pub user_id: Option<String>,
    pub user_email: Option<String>,
    pub user_role: Option<String>,
    /// RFC 3339, as the server said; `None` for a key that does not expire.
    pub expires_at: Option<String>,
    /// RFC 3339, when this file was written.
    pub logged_in_at: String,
}

impl fmt::Debug for StoredLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredLogin")
            .field("base_url", &self.base_url)
            .field("key", &"<redacted>")
            .field("key_id", &self.key_id)
            .field("user_email", &self.user_email)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl StoredLogin {
    /// Whether `base_url` names the server this login is for (a trailing
    /// slash aside): its key must never go anywhere else.
    pub fn is_for(&self, base_url: &str) -> bool {
        normalized(base_url) == normalized(&self.base_url)
    }
}

fn normalized(url: &str) -> &str {
    url.trim().trim_end_matches('/')
}

/// Where the login file is, from the environment; `None` when there is no
/// configuration directory to speak of (no `HOME`).
pub fn path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let set = |name: &str| env(name).filter(|value| !value.trim().is_empty());
    if let Some(dir) = set("LLM_PROXY_CONFIG_DIR") {
        return Some(PathBuf::from(dir).join(FILE_NAME));
    }
    // The XDG spec ignores a relative XDG_CONFIG_HOME.
    if let Some(dir) = set("XDG_CONFIG_HOME").filter(|dir| Path::new(dir).is_absolute()) {
        return Some(PathBuf::from(dir).join("llm-proxy").join(FILE_NAME));
    }
    let home = set("HOME")?;
    Some(
        PathBuf::from(home)
            .join(".config")
            .join("llm-proxy")
            .join(FILE_NAME),
    )
}

/// The login stored at `path`; `None` when there is none.
pub fn load(path: &Path) -> Result<Option<StoredLogin>, ClientError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(ClientError::Failed(format!(
                "cannot read the login file {} ({e})",
                path.display()
            )));
        }
    };
    let damaged = |why: String| {
        ClientError::Failed(format!(
            "the login file {} is damaged ({why}): log in again, or delete it",
            path.display()
        ))
    };
    let login: StoredLogin = serde_json::from_str(&text).map_err(|e| damaged(e.to_string()))?;
    if login.key.trim().is_empty() || login.base_url.trim().is_empty() {
        return Err(damaged("no key or no base_url".into()));
    }
    Ok(Some(login))
}

/// Writes `login` to `path`: the directory 0700 if it has to be made, the
/// file 0600 from its first byte, replaced in one rename.
pub fn save(path: &Path, login: &StoredLogin) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let temporary = dir.join(format!(".{FILE_NAME}.{}.tmp", std::process::id()));
    let written = write_new(&temporary, login).and_then(|()| fs::rename(&temporary, path));
    if written.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    written?;
    // The rename itself is durable once the directory is synced; a failure
    // here only weakens durability, the file is in place.
    if let Ok(dir) = fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

fn write_new(path: &Path, login: &StoredLogin) -> io::Result<()> {
    // Left behind by a process of the same id that died mid-write.
    let _ = fs::remove_file(path);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    let mut text = serde_json::to_string_pretty(login).map_err(io::Error::other)?;
    text.push('\n');
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// Deletes the login file; `false` if there was none.
pub fn remove(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::litellm::test_env::env;
    use std::os::unix::fs::PermissionsExt;

    pub(crate) fn sample(base_url: &str) -> StoredLogin {
        StoredLogin {
            base_url: base_url.into(),
            key: "sk-stored-1234567890".into(),
            key_id: Some("k-1".into()),
            user_id: Some("u-1".into()),
            user_email: Some("alice@example.com".into()),
            user_role: Some("internal_user".into()),
            expires_at: Some("2030-01-01T00:00:00Z".into()),
            logged_in_at: "2029-12-31T00:00:00Z".into(),
        }
    }

    #[test]
    fn location_follows_the_environment() {
        let all = env(&[
            ("LLM_PROXY_CONFIG_DIR", "/c"),
            ("XDG_CONFIG_HOME", "/x"),
            ("HOME", "/h"),
        ]);
        assert_eq!(path(&all), Some(PathBuf::from("/c/login.json")));
        let xdg = env(&[("XDG_CONFIG_HOME", "/x"), ("HOME", "/h")]);
        assert_eq!(path(&xdg), Some(PathBuf::from("/x/llm-proxy/login.json")));
        let relative = env(&[("XDG_CONFIG_HOME", "x"), ("HOME", "/h")]);
        assert_eq!(
            path(&relative),
            Some(PathBuf::from("/h/.config/llm-proxy/login.json"))
        );
        assert_eq!(path(&env(&[("LLM_PROXY_CONFIG_DIR", " ")])), None);
    }

    #[test]
    fn saved_private_loaded_and_removed() {
        let dir = std::env::temp_dir().join(format!("login-file-test-{}", std::process::id()));
        let file = dir.join("sub").join("login.json");
        let login = sample("http://proxy:8080");
        save(&file, &login).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(file.parent().unwrap()), 0o700);
        assert_eq!(load(&file).unwrap(), Some(login.clone()));
        save(&file, &sample("http://other")).unwrap();
        assert_eq!(load(&file).unwrap().unwrap().base_url, "http://other");
        assert!(!format!("{login:?}").contains(&login.key));
        assert!(remove(&file).unwrap());
        assert!(!remove(&file).unwrap());
        assert_eq!(load(&file).unwrap(), None);
        fs::write(&file, "{oops").unwrap();
        let error = load(&file).unwrap_err();
        assert!(error.to_string().contains("is damaged"), "{error}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn same_server_despite_a_trailing_slash() {
        let login = sample("http://proxy:8080/");
        assert!(login.is_for("http://proxy:8080"));
        assert!(login.is_for("http://proxy:8080//"));
        assert!(!login.is_for("http://proxy:8081"));
        assert!(!login.is_for("https://proxy:8080"));
    }
}
