//! CLI sign-ins (`llm-proxy login`): one record per started login, from
//! `POST /sso/cli/start` to the poll that hands out its key. Secrets are
//! kept as SHA-256 (the poll secret, the browser cookie); a login is spent
//! once its key is issued, and expired records go when the next one starts.

use heed::RwTxn;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::admin::NewKey;
use super::model::{KeyRecord, User, now_ms};
use super::{Store, StoreError};

/// The longest login id: ours are 27 characters, the ids an older CLI
/// makes up 8 to 200.
pub const MAX_LOGIN_ID: usize = 200;

/// How the user proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Via {
    Password,
    Oidc,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Password => "password",
            Via::Oidc => "oidc",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoginState {
    /// Nobody has signed in yet.
    Pending,
    /// The provider named the user; the browser has yet to approve.
    AwaitingApproval { user_id: String, via: Via },
    /// Signed in and approved: the next poll gets the key.
    Approved { user_id: String, via: Via },
    /// The sign-in was refused; says why.
    Refused { reason: String },
    /// The key was handed out: the login is spent.
    Issued { key_id: Uuid },
}

/// An OpenID Connect authorization request waiting for its callback.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OidcRequest {
    pub state: String,
    pub nonce: String,
    pub code_verifier: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Login {
    pub id: String,
    /// SHA-256 of the poll secret; `None` for the older flow, whose poll
    /// needs none.
    pub poll_secret_hash: Option<[u8; 32]>,
    pub legacy: bool,
    /// Shown in the terminal and on the page, so the user can tell the
    /// login is theirs.
    pub user_code: String,
    pub created_at: i64,
    pub expires_at: i64,
    /// The machine and OS user the key is for; `None` until the poll for
    /// the older flow (the poller's address and agent then stand for it).
    pub machine: Option<String>,
    pub hostname: Option<String>,
    /// SHA-256 of the browser's `llm_proxy_login` cookie: the pages accept
    /// only the browser that opened the login.
    pub browser_hash: Option<[u8; 32]>,
    /// The pages' hidden `csrf` field.
    pub form_token: String,
    pub oidc: Option<OidcRequest>,
    pub failed_passwords: u32,
    pub state: LoginState,
}

impl Login {
    pub fn is_expired(&self, now: i64) -> bool {
        self.expires_at <= now
    }
}

/// A login to start.
#[derive(Debug)]
pub struct NewLogin {
    pub id: String,
    pub poll_secret_hash: Option<[u8; 32]>,
    pub user_code: String,
    pub ttl_ms: i64,
    pub machine: Option<String>,
    pub hostname: Option<String>,
    pub form_token: String,
}

/// What `issue_login_key` did.
#[derive(Debug)]
pub enum Issue {
    /// The key (with its secret) and its user.
    Issued {
        key: Box<KeyRecord>,
        secret: String,
        user: Box<User>,
    },
    /// The login was not approved (any more): its current state.
    NotApproved(LoginState),
}

impl Store {
    /// Starts a login; expired ones are deleted first. Fails with
    /// `Taken` if the id is in use.
    pub fn start_login(&self, new: NewLogin) -> Result<Login, StoreError> {
        let now = now_ms();
        let login = Login {
            legacy: new.poll_secret_hash.is_none(),
            id: new.id,
            poll_secret_hash: new.poll_secret_hash,
            user_code: new.user_code,
            created_at: now,
            expires_at: now.saturating_add(new.ttl_ms),
            machine: new.machine,
            hostname: new.hostname,
            browser_hash: None,
            form_token: new.form_token,
            oidc: None,
            failed_passwords: 0,
            state: LoginState::Pending,
        };
        let mut txn = self.admin_txn()?;
        let mut expired = Vec::new();
        for entry in self.logins.iter(&txn)? {
            let (id, old) = entry?;
            if old.is_expired(now) {
                expired.push(id.to_string());
            }
        }
        for id in &expired {
            self.logins.delete(&mut txn, id)?;
        }
        if self.logins.get(&txn, &login.id)?.is_some() {
            return Err(StoreError::Taken("login_id", login.id));
        }
        self.logins.put(&mut txn, &login.id, &login)?;
        self.commit_replicated(txn)?;
        Ok(login)
    }

    pub fn get_login(&self, id: &str) -> Result<Option<Login>, StoreError> {
        // No login has such an id, and LMDB refuses empty or long keys.
        if id.is_empty() || id.len() > MAX_LOGIN_ID {
            return Ok(None);
        }
        let txn = self.env.read_txn()?;
        Ok(self.logins.get(&txn, id)?)
    }

    /// The login waiting for the OpenID Connect callback with this `state`.
    pub fn find_login_by_oidc_state(&self, state: &str) -> Result<Option<Login>, StoreError> {
        let txn = self.env.read_txn()?;
        for entry in self.logins.iter(&txn)? {
            let (_, login) = entry?;
            if login.oidc.as_ref().is_some_and(|o| o.state == state) {
                return Ok(Some(login));
            }
        }
        Ok(None)
    }

    /// Ties the login to a browser (and, with a provider, to a fresh
    /// authorization request), while nobody has signed in yet.
    pub fn bind_login_browser(
        &self,
        id: &str,
        browser_hash: [u8; 32],
        oidc: Option<OidcRequest>,
    ) -> Result<Login, StoreError> {
        self.change_login(id, |login| {
            if login.state == LoginState::Pending {
                login.browser_hash = Some(browser_hash);
                login.oidc = oidc;
            }
        })
    }

    /// Moves the login to `state`; `from` says which states it may leave
    /// (the login is returned unchanged otherwise).
    pub fn set_login_state(
        &self,
        id: &str,
        from: fn(&LoginState) -> bool,
        state: LoginState,
    ) -> Result<Login, StoreError> {
        self.change_login(id, |login| {
            if from(&login.state) {
                login.state = state;
            }
        })
    }

    /// Counts a wrong password; the `max`th refuses the login.
    pub fn count_failed_password(&self, id: &str, max: u32) -> Result<Login, StoreError> {
        self.change_login(id, |login| {
            if login.state != LoginState::Pending {
                return;
            }
            login.failed_passwords += 1;
            if login.failed_passwords >= max {
                login.state = LoginState::Refused {
                    reason: format!("{max} wrong passwords"),
                };
            }
        })
    }

    fn change_login(&self, id: &str, change: impl FnOnce(&mut Login)) -> Result<Login, StoreError> {
        let mut txn = self.admin_txn()?;
        let mut login = self
            .logins
            .get(&txn, id)?
            .ok_or(StoreError::NotFound("login"))?;
        change(&mut login);
        self.logins.put(&mut txn, id, &login)?;
        self.commit_replicated(txn)?;
        Ok(login)
    }

    /// Hands out the approved login's key, in one transaction: creates the
    /// user's key (lifetime `key_ttl_ms`), deletes the keys earlier logins
    /// of that user issued to the same machine, and marks the login spent.
    /// `machine` stands for the machine when the login has none of its own.
    pub fn issue_login_key(
        &self,
        id: &str,
        key_ttl_ms: i64,
        machine: &str,
    ) -> Result<Issue, StoreError> {
        let mut txn = self.admin_txn()?;
        let mut login = self
            .logins
            .get(&txn, id)?
            .ok_or(StoreError::NotFound("login"))?;
        let LoginState::Approved { user_id, via } = login.state.clone() else {
            return Ok(Issue::NotApproved(login.state));
        };
        let user = self
            .users
            .get(&txn, &user_id)?
            .ok_or(StoreError::NotFound("user"))?;
        let machine = login.machine.clone().unwrap_or_else(|| machine.to_string());
        let replaced = self.login_keys_of(&txn, &user_id, &machine)?;
        for key_id in replaced {
            self.remove_key(&mut txn, key_id)?;
        }
        let metadata = json!({"cli_login": {
            "machine": machine,
            "hostname": login.hostname,
            "via": via.as_str(),
            "login_id": login.id,
        }});
        let (key, secret) = self.insert_key(
            &mut txn,
            NewKey {
                user_id: Some(user_id),
                expires_at: Some(now_ms().saturating_add(key_ttl_ms)),
                metadata: metadata.to_string(),
                ..NewKey::default()
            },
        )?;
        login.state = LoginState::Issued { key_id: key.id };
        self.logins.put(&mut txn, id, &login)?;
        // The replaced keys must stop working on every worker.
        self.commit_admin(txn)?;
        Ok(Issue::Issued {
            key: Box::new(key),
            secret,
            user: Box::new(user),
        })
    }

    /// Keys of `user_id` issued by a login to `machine`.
    fn login_keys_of(
        &self,
        txn: &RwTxn,
        user_id: &str,
        machine: &str,
    ) -> Result<Vec<Uuid>, StoreError> {
        let mut found = Vec::new();
        for entry in self.keys.iter(txn)? {
            let (_, key) = entry?;
            if key.user_id.as_deref() == Some(user_id)
                && login_machine(&key.metadata).as_deref() == Some(machine)
            {
                found.push(key.id);
            }
        }
        Ok(found)
    }
}

/// `metadata.cli_login.machine` of a key issued by a login.
pub fn login_machine(metadata: &str) -> Option<String> {
    let value: Value = serde_json::from_str(metadata).ok()?;
    value["cli_login"]["machine"].as_str().map(str::to_string)
}

/// Whether a key's metadata says a login issued it.
pub fn is_login_key(metadata: &str) -> bool {
    serde_json::from_str::<Value>(metadata).is_ok_and(|v| v["cli_login"].is_object())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewUser, UserRole};

    struct TempStore(std::path::PathBuf, Store);

    impl Drop for TempStore {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn store() -> TempStore {
        let dir = std::env::temp_dir().join(format!(
            "llm-proxy-logins-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let store = Store::open(&dir, None).unwrap();
        TempStore(dir, store)
    }

    fn new_login(id: &str, ttl_ms: i64, machine: Option<&str>) -> NewLogin {
        NewLogin {
            id: id.into(),
            poll_secret_hash: Some([1; 32]),
            user_code: "BCDF-GHJK".into(),
            ttl_ms,
            machine: machine.map(str::to_string),
            hostname: Some("laptop".into()),
            form_token: "csrf".into(),
        }
    }

    fn user(store: &Store) -> User {
        store
            .create_user(NewUser {
                user_id: Some("u1".into()),
                user_email: Some("a@example.com".into()),
                user_role: UserRole::InternalUser,
                user_alias: None,
                teams: vec![],
                max_budget: None,
                models: vec![],
                metadata: String::new(),
                password_hash: None,
                limits: Default::default(),
            })
            .unwrap()
    }

    fn approve(store: &Store, id: &str) {
        store
            .set_login_state(
                id,
                |s| *s == LoginState::Pending,
                LoginState::Approved {
                    user_id: "u1".into(),
                    via: Via::Password,
                },
            )
            .unwrap();
    }

    #[test]
    fn a_login_goes_from_pending_to_issued_once() {
        let temp = store();
        let s = &temp.1;
        user(s);
        s.start_login(new_login("lg_1", 60_000, Some("m1")))
            .unwrap();
        assert!(matches!(
            s.start_login(new_login("lg_1", 60_000, None)),
            Err(StoreError::Taken(..))
        ));
        assert!(matches!(
            s.issue_login_key("lg_1", 1000, "x").unwrap(),
            Issue::NotApproved(LoginState::Pending)
        ));
        approve(s, "lg_1");
        let Issue::Issued { key, secret, user } = s.issue_login_key("lg_1", 1000, "x").unwrap()
        else {
            panic!("not issued");
        };
        assert_eq!(user.user_id, "u1");
        assert!(secret.starts_with("sk-"));
        assert_eq!(login_machine(&key.metadata).as_deref(), Some("m1"));
        assert!(is_login_key(&key.metadata));
        assert_eq!(
            s.get_login("lg_1").unwrap().unwrap().state,
            LoginState::Issued { key_id: key.id }
        );
        // Spent: a second issue hands out nothing.
        assert!(matches!(
            s.issue_login_key("lg_1", 1000, "x").unwrap(),
            Issue::NotApproved(LoginState::Issued { .. })
        ));

        // A second login from the same machine replaces the key; another
        // machine's key stays.
        s.start_login(new_login("lg_2", 60_000, Some("m1")))
            .unwrap();
        s.start_login(new_login("lg_3", 60_000, None)).unwrap();
        approve(s, "lg_2");
        approve(s, "lg_3");
        let Issue::Issued { key: second, .. } = s.issue_login_key("lg_2", 1000, "x").unwrap()
        else {
            panic!("not issued");
        };
        let Issue::Issued { key: third, .. } = s.issue_login_key("lg_3", 1000, "m2").unwrap()
        else {
            panic!("not issued");
        };
        assert!(s.find_key(&key.id.to_string()).is_err());
        assert!(s.find_key(&second.id.to_string()).is_ok());
        assert_eq!(login_machine(&third.metadata).as_deref(), Some("m2"));
    }

    #[test]
    fn wrong_passwords_refuse_and_expired_logins_go() {
        let temp = store();
        let s = &temp.1;
        s.start_login(new_login("lg_1", 60_000, None)).unwrap();
        for _ in 0..4 {
            assert_eq!(
                s.count_failed_password("lg_1", 5).unwrap().state,
                LoginState::Pending
            );
        }
        assert!(matches!(
            s.count_failed_password("lg_1", 5).unwrap().state,
            LoginState::Refused { .. }
        ));
        // A refused login cannot be approved.
        approve(s, "lg_1");
        assert!(matches!(
            s.get_login("lg_1").unwrap().unwrap().state,
            LoginState::Refused { .. }
        ));

        s.start_login(new_login("lg_old", -1, None)).unwrap();
        assert!(s.get_login("lg_old").unwrap().unwrap().is_expired(now_ms()));
        s.start_login(new_login("lg_new", 60_000, None)).unwrap();
        assert!(s.get_login("lg_old").unwrap().is_none());
        assert!(s.get_login("lg_1").unwrap().is_some());

        // The callback finds its login by state.
        let bound = s
            .bind_login_browser(
                "lg_new",
                [2; 32],
                Some(OidcRequest {
                    state: "st".into(),
                    nonce: "n".into(),
                    code_verifier: "v".into(),
                }),
            )
            .unwrap();
        assert_eq!(bound.browser_hash, Some([2; 32]));
        assert_eq!(
            s.find_login_by_oidc_state("st").unwrap().unwrap().id,
            "lg_new"
        );
        assert!(s.find_login_by_oidc_state("other").unwrap().is_none());
    }
}
