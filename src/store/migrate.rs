//! Migrations of older record layouts, one step per schema version. The
//! record encoding (bincode) is not self-describing, so each step keeps the
//! old layout it reads.

use std::collections::BTreeMap;

use heed::types::{Bytes, SerdeBincode};
use heed::{BytesDecode, Database, Env, RwTxn, WithoutTls};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::StoreError;
use super::model::{Budget, KeyRecord, Money, Usage, User, UserRole};

/// Version 1: keys belonged to exactly one project and had no user, model
/// allowlist or budget; usage had no spend.
mod v1 {
    use super::*;

    #[derive(Deserialize)]
    pub struct KeyRecord {
        pub id: Uuid,
        pub secret_hash: [u8; 32],
        pub hint: String,
        pub project_id: Uuid,
        pub alias: Option<String>,
        pub expires_at: Option<i64>,
        pub is_active: bool,
        pub max_requests: Option<u64>,
        pub metadata: String,
        pub created_at: i64,
        pub updated_at: i64,
    }

    #[derive(Deserialize)]
    pub struct Usage {
        pub requests: u64,
        pub reserved: u64,
        pub last_used_at: Option<i64>,
    }
}

/// Version 2: keys, users and budgets, without rate limits or teams.
mod v2 {
    use super::*;

    #[derive(Serialize, Deserialize)]
    pub struct KeyRecord {
        pub id: Uuid,
        pub secret_hash: [u8; 32],
        pub hint: String,
        pub project_id: Option<Uuid>,
        pub alias: Option<String>,
        pub user_id: Option<String>,
        pub team_id: Option<String>,
        pub models: Vec<String>,
        pub model_aliases: BTreeMap<String, String>,
        pub expires_at: Option<i64>,
        pub is_active: bool,
        pub max_requests: Option<u64>,
        pub max_budget: Option<Budget>,
        pub metadata: String,
        pub created_at: i64,
        pub updated_at: i64,
    }

    #[derive(Serialize, Deserialize)]
    pub struct User {
        pub user_id: String,
        pub user_email: Option<String>,
        pub user_role: UserRole,
        pub user_alias: Option<String>,
        pub teams: Vec<String>,
        pub max_budget: Option<Budget>,
        pub models: Vec<String>,
        pub metadata: String,
        pub password_hash: Option<String>,
        pub created_at: i64,
        pub updated_at: i64,
    }
}

/// Rewrites every key and user record in the version 3 layout: no limits
/// besides those they had.
pub fn v2_to_v3(env: &Env<WithoutTls>, txn: &mut RwTxn) -> Result<(), StoreError> {
    let keys: Database<Bytes, Bytes> = env.create_database(txn, Some("keys"))?;
    let mut rewritten = Vec::new();
    for entry in keys.iter(txn)? {
        let (id, bytes) = entry?;
        let old: v2::KeyRecord = decode(bytes)?;
        rewritten.push((
            id.to_vec(),
            KeyRecord {
                id: old.id,
                secret_hash: old.secret_hash,
                hint: old.hint,
                project_id: old.project_id,
                alias: old.alias,
                user_id: old.user_id,
                team_id: old.team_id,
                models: old.models,
                model_aliases: old.model_aliases,
                expires_at: old.expires_at,
                is_active: old.is_active,
                max_requests: old.max_requests,
                max_budget: old.max_budget,
                metadata: old.metadata,
                created_at: old.created_at,
                updated_at: old.updated_at,
                limits: Default::default(),
                model_limits: BTreeMap::new(),
            },
        ));
    }
    let keys = keys.remap_data_type::<SerdeBincode<KeyRecord>>();
    for (id, key) in rewritten {
        keys.put(txn, &id, &key)?;
    }

    let users: Database<Bytes, Bytes> = env.create_database(txn, Some("users"))?;
    let mut rewritten = Vec::new();
    for entry in users.iter(txn)? {
        let (id, bytes) = entry?;
        let old: v2::User = decode(bytes)?;
        rewritten.push((
            id.to_vec(),
            User {
                user_id: old.user_id,
                user_email: old.user_email,
                user_role: old.user_role,
                user_alias: old.user_alias,
                teams: old.teams,
                max_budget: old.max_budget,
                models: old.models,
                metadata: old.metadata,
                password_hash: old.password_hash,
                created_at: old.created_at,
                updated_at: old.updated_at,
                limits: Default::default(),
            },
        ));
    }
    let users = users.remap_data_type::<SerdeBincode<User>>();
    for (id, user) in rewritten {
        users.put(txn, &id, &user)?;
    }
    Ok(())
}

/// Rewrites every key and usage record in the version 2 layout.
pub fn v1_to_v2(env: &Env<WithoutTls>, txn: &mut RwTxn) -> Result<(), StoreError> {
    let keys: Database<Bytes, Bytes> = env.create_database(txn, Some("keys"))?;
    let mut rewritten = Vec::new();
    for entry in keys.iter(txn)? {
        let (id, bytes) = entry?;
        let old: v1::KeyRecord = decode(bytes)?;
        rewritten.push((
            id.to_vec(),
            v2::KeyRecord {
                id: old.id,
                secret_hash: old.secret_hash,
                hint: old.hint,
                project_id: Some(old.project_id),
                alias: old.alias,
                user_id: None,
                team_id: None,
                models: Vec::new(),
                model_aliases: BTreeMap::new(),
                expires_at: old.expires_at,
                is_active: old.is_active,
                max_requests: old.max_requests,
                max_budget: None,
                metadata: old.metadata,
                created_at: old.created_at,
                updated_at: old.updated_at,
            },
        ));
    }
    let keys = keys.remap_data_type::<SerdeBincode<v2::KeyRecord>>();
    for (id, key) in rewritten {
        keys.put(txn, &id, &key)?;
    }

    let usage: Database<Bytes, Bytes> = env.create_database(txn, Some("usage"))?;
    let mut rewritten = Vec::new();
    for entry in usage.iter(txn)? {
        let (id, bytes) = entry?;
        let old: v1::Usage = decode(bytes)?;
        rewritten.push((
            id.to_vec(),
            Usage {
                requests: old.requests,
                reserved: old.reserved,
                last_used_at: old.last_used_at,
                spend: Money(0),
            },
        ));
    }
    let usage = usage.remap_data_type::<SerdeBincode<Usage>>();
    for (id, record) in rewritten {
        usage.put(txn, &id, &record)?;
    }
    Ok(())
}

fn decode<T: DeserializeOwned + 'static>(bytes: &[u8]) -> Result<T, StoreError> {
    SerdeBincode::<T>::bytes_decode(bytes)
        .map_err(|e| StoreError::Invalid(format!("cannot migrate an older record: {e}")))
}

#[cfg(test)]
mod tests {
    use heed::EnvOpenOptions;
    use heed::types::Str;
    use serde::Serialize;

    use super::*;
    use crate::store::{SCHEMA_VERSION, Store};

    /// The version 1 layouts, as version 1 wrote them.
    #[derive(Serialize)]
    struct KeyV1 {
        id: Uuid,
        secret_hash: [u8; 32],
        hint: String,
        project_id: Uuid,
        alias: Option<String>,
        expires_at: Option<i64>,
        is_active: bool,
        max_requests: Option<u64>,
        metadata: String,
        created_at: i64,
        updated_at: i64,
    }

    #[derive(Serialize)]
    struct UsageV1 {
        requests: u64,
        reserved: u64,
        last_used_at: Option<i64>,
    }

    #[test]
    fn version_1_keys_and_usage_are_carried_forward() {
        let dir = std::env::temp_dir().join(format!("llm-proxy-migrate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let id = Uuid::from_u128(42);
        let project = Uuid::from_u128(7);
        {
            // SAFETY: the directory is new and opened once in this test.
            let env = unsafe { EnvOpenOptions::new().max_dbs(16).open(&dir) }.expect("env");
            let mut txn = env.write_txn().expect("txn");
            let meta: Database<Str, Bytes> =
                env.create_database(&mut txn, Some("meta")).expect("meta");
            meta.put(&mut txn, "schema_version", &1u32.to_be_bytes())
                .expect("version");
            let keys: Database<Bytes, SerdeBincode<KeyV1>> =
                env.create_database(&mut txn, Some("keys")).expect("keys");
            let key = KeyV1 {
                id,
                secret_hash: [3; 32],
                hint: "sk-abc…wxyz".into(),
                project_id: project,
                alias: Some("ci".into()),
                expires_at: Some(99),
                is_active: true,
                max_requests: Some(10),
                metadata: "{\"team\":\"a\"}".into(),
                created_at: 1,
                updated_at: 2,
            };
            keys.put(&mut txn, id.as_bytes(), &key).expect("key");
            let usage: Database<Bytes, SerdeBincode<UsageV1>> =
                env.create_database(&mut txn, Some("usage")).expect("usage");
            let record = UsageV1 {
                requests: 4,
                reserved: 6,
                last_used_at: Some(5),
            };
            usage.put(&mut txn, id.as_bytes(), &record).expect("usage");
            txn.commit().expect("commit");
            env.prepare_for_closing().wait();
        }

        let store = Store::open(&dir, None).expect("open migrates");
        assert_eq!(store.schema_version().expect("version"), SCHEMA_VERSION);
        let (key, usage) = store.find_key(&id.to_string()).expect("the key");
        assert_eq!(key.project_id, Some(project));
        assert_eq!(key.alias.as_deref(), Some("ci"));
        assert_eq!((key.expires_at, key.max_requests), (Some(99), Some(10)));
        assert_eq!(key.metadata, "{\"team\":\"a\"}");
        assert!(key.models.is_empty() && key.user_id.is_none() && key.max_budget.is_none());
        assert_eq!(
            (usage.requests, usage.reserved, usage.last_used_at),
            (4, 6, Some(5))
        );
        assert_eq!(usage.spend, Money(0));
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
