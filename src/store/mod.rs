//! The embedded store: one LMDB environment (heed) in the data directory
//! holding projects, keys, users, model deployments, credentials and the
//! usage ledger. The only module that touches LMDB.
//!
//! - `read`: lookups for the request path (no write, no lock).
//! - `admin`: management of projects and keys; `users`, `catalog`: of users,
//!   and of deployments and credentials. Each write bumps the store
//!   generation, which tells every worker to re-read before the call returns.
//! - `ledger`: quota and budget leases, usage counts and spend written by
//!   the workers, and what a server that did not stop cleanly left leased;
//!   `counters`: leases of the per-minute and parallel limits; `window`:
//!   budget windows.
//! - `teams`: teams and their members.
//! - `audit`: the log of management calls.
//! - `logins`: CLI sign-ins in progress, and the keys they issue.
//! - `password`: users' passwords as they are stored, Argon2id hashes.
//! - `event_log`: the request event log, an LMDB environment of its own in
//!   `<data dir>/events/` (written by the server, read by dispatchers).
//! - `migrate`: older record layouts brought forward on open.
//!
//! Read transactions are opened without thread-local slots (`WithoutTls`):
//! many monoio tasks share a thread, and none holds a transaction across
//! an `.await`.

mod admin;
mod audit;
mod catalog;
mod counters;
pub mod crypto;
mod escrow;
pub mod event_log;
mod journal;
mod ledger;
mod logins;
mod migrate;
pub mod model;
pub mod password;
mod read;
mod replica;
pub mod shared;
mod teams;
mod usage;
mod users;
mod window;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use heed::types::{Bytes, SerdeBincode, Str};
use heed::{Database, Env, EnvOpenOptions, WithoutTls};

use journal::{Journal, Replicated};

pub use admin::{KeyChanges, NewKey, ProjectChanges};
pub use audit::{AuditEntry, AuditQuery, HIDDEN, is_secret_name, safe_target};
pub use catalog::{CredentialChanges, DeploymentChanges};
pub use counters::{CounterReport, Meter, WindowGrant, counter_id};
pub use crypto::Cipher;
pub use event_log::{EventLog, Retention};
pub use ledger::{BudgetGrant, Grant, Payer, Recovered, Report, Reports, SoftBudgetCrossed};
pub use logins::{
    Issue, Login, LoginState, MAX_LOGIN_ID, NewLogin, OidcRequest, Via, is_login_key,
};
pub use model::{
    Budget, BudgetWindow, Credential, Deployment, KeyRecord, Limits, ModelLimits, Money, Project,
    Team, TeamMember, TeamRole, Usage, User, UserRole, now_ms,
};
pub use read::{KeyView, Spend, TeamView};
pub use replica::Imported;
pub use teams::{NewTeam, TeamChanges};
pub use usage::PartyUse;
pub use users::{NewUser, UserChanges};

/// Version of the record layout. Opening a store written by a newer
/// version fails; older versions are migrated forward in `open`.
pub const SCHEMA_VERSION: u32 = 3;

/// Largest size the store may grow to (address space, not disk).
const MAP_SIZE: usize = 1 << 34;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("LMDB: {0}")]
    Lmdb(heed::Error),
    /// The file system of the data directory is full (ENOSPC, EDQUOT, or
    /// a write LMDB could only partly make there; see `commit`).
    #[error("no space left on device: the file system of the data directory is full")]
    NoSpace,
    /// LMDB's map (the most the environment may grow to) is used up.
    #[error("the store is full: LMDB's map size is used up")]
    MapFull,
    #[error("cannot create the data directory {0}: {1}")]
    CreateDir(PathBuf, std::io::Error),
    #[error(
        "the store in {path} has schema version {found}, newer than this llm-proxy understands ({SCHEMA_VERSION}): upgrade llm-proxy"
    )]
    TooNew { path: PathBuf, found: u32 },
    #[error(
        "ENCRYPTION_KEY must be 32 bytes, as base64 or 64 hex characters (generate one with: openssl rand -base64 32)"
    )]
    BadEncryptionKey,
    #[error("a provider key is encrypted but ENCRYPTION_KEY is not set")]
    EncryptionKeyNeeded,
    #[error(
        "a provider key cannot be decrypted: ENCRYPTION_KEY is not the key it was encrypted with"
    )]
    WrongEncryptionKey,
    #[error("the system's secure random generator failed")]
    Crypto,
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A record named in a write does not exist: what it is, and its name.
    #[error("no {0} {1:?}")]
    NoSuch(&'static str, String),
    #[error("a project named {0:?} already exists")]
    NameTaken(String),
    /// A unique field (named first) already has this value.
    #[error("{0} {1:?} is already taken")]
    Taken(&'static str, String),
    #[error("{0}")]
    Invalid(String),
    /// Shared mode: PostgreSQL cannot be reached; writes wait for it.
    #[error("{0}")]
    SharedUnavailable(String),
    /// Shared mode: PostgreSQL refused a write.
    #[error("{0}")]
    Shared(String),
}

impl From<heed::Error> for StoreError {
    fn from(error: heed::Error) -> Self {
        match os_code(&error) {
            Some(libc::ENOSPC | libc::EDQUOT) => return StoreError::NoSpace,
            _ if matches!(error, heed::Error::Mdb(heed::MdbError::MapFull)) => {
                return StoreError::MapFull;
            }
            _ => {}
        }
        StoreError::Lmdb(error)
    }
}

impl StoreError {
    /// Whether the store could not write for want of room (disk or map).
    pub fn is_full(&self) -> bool {
        matches!(self, StoreError::NoSpace | StoreError::MapFull)
    }
}

/// The operating system's error number in an LMDB error, if it is one.
fn os_code(error: &heed::Error) -> Option<i32> {
    match error {
        heed::Error::Io(error) => error.raw_os_error(),
        heed::Error::Mdb(heed::MdbError::Other(code)) => Some(*code),
        _ => None,
    }
}

/// Free space below which a failed write is put down to a full disk.
const NEARLY_FULL: u64 = 1 << 20;

/// Commits `txn`, a write transaction of the environment in `dir`.
///
/// LMDB writes a transaction's pages with one `pwritev`; on a file system
/// with less room than that, the kernel writes what fits and returns a
/// short count, which LMDB reports as EIO ("short write, filesystem
/// full?" in mdb.c, `mdb_page_flush`); only a write of which nothing fits
/// fails with ENOSPC. So on a full disk about half the failed commits said
/// "Input/output error". An EIO while the file system has (nearly) no
/// room left is a full disk, and said so.
pub(crate) fn commit(txn: heed::RwTxn<'_>, dir: &Path) -> Result<(), StoreError> {
    txn.commit().map_err(|error| {
        if os_code(&error) == Some(libc::EIO) && free_bytes(dir).is_some_and(|f| f < NEARLY_FULL) {
            StoreError::NoSpace
        } else {
            error.into()
        }
    })
}

/// Bytes this process may still write on the file system of `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string and `stat` is written by
    // statvfs before it is read (only when it returns 0).
    let stat = unsafe {
        if libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) != 0 {
            return None;
        }
        stat.assume_init()
    };
    // Root may use the blocks reserved for it.
    // SAFETY: geteuid has no preconditions and cannot fail.
    let blocks = if unsafe { libc::geteuid() } == 0 {
        stat.f_bfree
    } else {
        stat.f_bavail
    };
    Some(blocks as u64 * stat.f_frsize as u64)
}

type Uuid16 = Bytes;

pub struct Store {
    env: Env<WithoutTls>,
    meta: Database<Str, Bytes>,
    projects: Replicated<Uuid16, SerdeBincode<Project>>,
    project_names: Replicated<Str, Uuid16>,
    keys: Replicated<Uuid16, SerdeBincode<KeyRecord>>,
    key_hashes: Replicated<Bytes, Uuid16>,
    usage: Database<Uuid16, SerdeBincode<Usage>>,
    users: Replicated<Str, SerdeBincode<User>>,
    /// Spend of each user, apart from the user record like `usage`.
    user_spend: Database<Str, SerdeBincode<Money>>,
    /// Budget leased to workers and not yet spent or handed back, per key
    /// (`k` + id) and per user (`u` + user id); see `ledger`.
    reserved: Database<Bytes, SerdeBincode<Money>>,
    deployments: Replicated<Str, SerdeBincode<Deployment>>,
    credentials: Replicated<Str, SerdeBincode<Credential>>,
    teams: Replicated<Str, SerdeBincode<Team>>,
    /// Spend of teams (`t` + team id) and of keys' use of one model (`m` +
    /// key id + model name), apart from their records like `usage`.
    payer_spend: Database<Bytes, SerdeBincode<Money>>,
    /// The end of the current budget window of each payer whose budget has
    /// one (`budget_duration`), by the payer's slot (see `ledger::Payer`).
    budget_windows: Replicated<Bytes, SerdeBincode<i64>>,
    /// What workers have leased of per-minute and parallel limits, by
    /// limited party and meter (see `counters`).
    counters: counters::CounterDb,
    /// Management calls, by sequential id (big-endian, so in order).
    audit: Database<Bytes, SerdeBincode<AuditEntry>>,
    /// Shared mode: what this node holds of allowances leased from
    /// PostgreSQL, and its reports of use not yet applied there (`escrow`).
    node_allowances: escrow::AllowanceDb,
    outbox: escrow::OutboxDb,
    /// Shared mode: this node's figures of use as last published, and the
    /// nodes' sums as last read (`usage`).
    published: usage::UseDb,
    cluster_usage: usage::UseDb,
    /// CLI sign-ins in progress, by login id.
    logins: Replicated<Str, SerdeBincode<logins::Login>>,
    cipher: Option<Cipher>,
    /// The rows the management write in progress changed (shared mode).
    journal: Arc<Journal>,
    /// The connection to PostgreSQL, in shared mode.
    shared: std::sync::OnceLock<shared::Shared>,
    /// Bumped after every management write commits; workers compare it
    /// with the generation their key cache was filled at.
    generation: AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.env.path())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir`. One `Store` per
    /// directory per process.
    pub fn open(dir: &Path, cipher: Option<Cipher>) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::CreateDir(dir.to_path_buf(), e))?;
        // SAFETY: heed requires that the environment is opened once per
        // process and that the files are not modified by other means; the
        // data directory belongs to llm-proxy and `Store` is opened once.
        let env = unsafe {
            EnvOpenOptions::new()
                .read_txn_without_tls()
                .map_size(MAP_SIZE)
                .max_dbs(24)
                .max_readers(1024)
                .open(dir)?
        };
        let mut txn = env.write_txn()?;
        let meta: Database<Str, Bytes> = env.create_database(&mut txn, Some("meta"))?;
        let found = meta
            .get(&txn, "schema_version")?
            .and_then(|v| <[u8; 4]>::try_from(v).ok())
            .map(u32::from_be_bytes);
        match found {
            Some(version) if version > SCHEMA_VERSION => {
                return Err(StoreError::TooNew {
                    path: dir.to_path_buf(),
                    found: version,
                });
            }
            Some(version @ (1 | 2)) => {
                if version == 1 {
                    migrate::v1_to_v2(&env, &mut txn)?;
                }
                migrate::v2_to_v3(&env, &mut txn)?;
                meta.put(&mut txn, "schema_version", &SCHEMA_VERSION.to_be_bytes())?;
            }
            Some(_) => {}
            None => meta.put(&mut txn, "schema_version", &SCHEMA_VERSION.to_be_bytes())?,
        }
        let journal = Arc::new(Journal::default());
        let store = Store {
            meta,
            projects: Replicated::new(
                env.create_database(&mut txn, Some("projects"))?,
                &journal::PROJECTS,
                journal.clone(),
            ),
            project_names: Replicated::new(
                env.create_database(&mut txn, Some("project_names"))?,
                &journal::PROJECT_NAMES,
                journal.clone(),
            ),
            keys: Replicated::new(
                env.create_database(&mut txn, Some("keys"))?,
                &journal::KEYS,
                journal.clone(),
            ),
            key_hashes: Replicated::new(
                env.create_database(&mut txn, Some("key_hashes"))?,
                &journal::KEY_HASHES,
                journal.clone(),
            ),
            usage: env.create_database(&mut txn, Some("usage"))?,
            users: Replicated::new(
                env.create_database(&mut txn, Some("users"))?,
                &journal::USERS,
                journal.clone(),
            ),
            user_spend: env.create_database(&mut txn, Some("user_spend"))?,
            reserved: env.create_database(&mut txn, Some("reserved"))?,
            deployments: Replicated::new(
                env.create_database(&mut txn, Some("deployments"))?,
                &journal::DEPLOYMENTS,
                journal.clone(),
            ),
            credentials: Replicated::new(
                env.create_database(&mut txn, Some("credentials"))?,
                &journal::CREDENTIALS,
                journal.clone(),
            ),
            teams: Replicated::new(
                env.create_database(&mut txn, Some("teams"))?,
                &journal::TEAMS,
                journal.clone(),
            ),
            payer_spend: env.create_database(&mut txn, Some("payer_spend"))?,
            budget_windows: Replicated::new(
                env.create_database(&mut txn, Some("budget_windows"))?,
                &journal::BUDGET_WINDOWS,
                journal.clone(),
            ),
            counters: env.create_database(&mut txn, Some("counters"))?,
            audit: env.create_database(&mut txn, Some("audit"))?,
            logins: Replicated::new(
                env.create_database(&mut txn, Some("logins"))?,
                &journal::LOGINS,
                journal.clone(),
            ),
            node_allowances: env.create_database(&mut txn, Some("node_allowances"))?,
            outbox: env.create_database(&mut txn, Some("outbox"))?,
            published: env.create_database(&mut txn, Some("published"))?,
            cluster_usage: env.create_database(&mut txn, Some("cluster_usage"))?,
            env: env.clone(),
            cipher,
            journal,
            shared: std::sync::OnceLock::new(),
            generation: AtomicU64::new(1),
        };
        let scrubbed = store.scrub_audit_targets(&mut txn)?;
        if scrubbed > 0 {
            tracing::info!(
                entries = scrubbed,
                "audit log: tokens named by their secret in older entries now named by their hint"
            );
        }
        commit(txn, dir)?;
        Ok(store)
    }

    /// Opens the store with the cipher from `ENCRYPTION_KEY` (if any) and
    /// checks that every sealed provider key can be opened with it.
    pub fn open_checked(
        dir: &Path,
        encryption_key: Option<&str>,
        require_encryption: bool,
    ) -> Result<Self, StoreError> {
        let cipher = match encryption_key {
            Some(value) => Some(Cipher::from_env_value(value)?),
            None if require_encryption => {
                return Err(StoreError::Invalid(
                    "REQUIRE_ENCRYPTION_KEY is set but ENCRYPTION_KEY is not".into(),
                ));
            }
            None => None,
        };
        let store = Self::open(dir, cipher)?;
        store.check_sealed()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        self.env.path()
    }

    pub fn schema_version(&self) -> Result<u32, StoreError> {
        let txn = self.env.read_txn()?;
        Ok(self
            .meta
            .get(&txn, "schema_version")?
            .and_then(|v| <[u8; 4]>::try_from(v).ok())
            .map_or(0, u32::from_be_bytes))
    }

    /// The current generation (see the field).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn bump_generation(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn check_sealed(&self) -> Result<(), StoreError> {
        let txn = self.env.read_txn()?;
        for entry in self.projects.iter(&txn)? {
            let (_, project) = entry?;
            crypto::unseal(self.cipher.as_ref(), &project.upstream_key)?;
        }
        for entry in self.credentials.iter(&txn)? {
            let (_, credential) = entry?;
            crypto::unseal(self.cipher.as_ref(), &credential.values)?;
        }
        for entry in self.deployments.iter(&txn)? {
            let (_, deployment) = entry?;
            if let Some(secrets) = &deployment.secrets {
                crypto::unseal(self.cipher.as_ref(), secrets)?;
            }
        }
        Ok(())
    }

    /// Writes the schema version directly; for tests of the version check.
    #[doc(hidden)]
    pub fn set_schema_version_for_tests(&self, version: u32) -> Result<(), StoreError> {
        let mut txn = self.env.write_txn()?;
        self.meta
            .put(&mut txn, "schema_version", &version.to_be_bytes())?;
        commit(txn, self.path())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_or_map_is_said_so() {
        let os = |code| heed::Error::Io(std::io::Error::from_raw_os_error(code));
        for error in [
            os(libc::ENOSPC),
            os(libc::EDQUOT),
            heed::Error::Mdb(heed::MdbError::Other(libc::ENOSPC)),
        ] {
            let error = StoreError::from(error);
            assert!(matches!(error, StoreError::NoSpace), "{error}");
            assert!(error.to_string().starts_with("no space left on device"));
        }
        let map = StoreError::from(heed::Error::Mdb(heed::MdbError::MapFull));
        assert!(matches!(map, StoreError::MapFull) && map.is_full());
        assert!(map.to_string().starts_with("the store is full"));
        // Any other I/O error stays what it is.
        let eio = StoreError::from(os(libc::EIO));
        assert!(matches!(eio, StoreError::Lmdb(_)) && !eio.is_full());
    }
}
