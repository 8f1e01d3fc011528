//! The shared store's schema: SQL migrations kept in the repository
//! (`migrations/`), numbered, applied in order in one transaction under an
//! advisory lock (so that nodes starting at once apply each one once), and
//! a refusal to work on a database whose schema is newer than this binary.

use tokio_postgres::Client;

use super::SharedError;

/// The migrations, in order; the schema version is their count.
const MIGRATIONS: [(&str, &str); 3] = [
    (
        "shared store",
        include_str!("migrations/0001_shared_store.sql"),
    ),
    (
        "audit log copied by each node",
        include_str!("migrations/0002_audit.sql"),
    ),
    (
        "use counted by each node",
        include_str!("migrations/0003_node_usage.sql"),
    ),
];

/// The schema version this binary writes.
pub const VERSION: i32 = MIGRATIONS.len() as i32;

/// Any constant, the same on every node: the advisory lock migrations
/// are applied under.
const LOCK: i64 = 0x6c6c_6d70_726f_7879;

/// What `migrate` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    pub from: i32,
    pub to: i32,
}

/// Applies the migrations the database lacks, and returns the cluster id
/// (made by the first migration's run).
pub async fn migrate(client: &mut Client) -> Result<(Migrated, String), SharedError> {
    let txn = client.transaction().await?;
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])
        .await?;
    // "relation already exists, skipping" is no news.
    txn.batch_execute("SET LOCAL client_min_messages = warning")
        .await?;
    txn.batch_execute(
        "CREATE TABLE IF NOT EXISTS llm_proxy_schema (
             version integer PRIMARY KEY,
             name text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let found: i32 = txn
        .query_one(
            "SELECT coalesce(max(version), 0) FROM llm_proxy_schema",
            &[],
        )
        .await?
        .get(0);
    if found > VERSION {
        return Err(SharedError::TooNew {
            found,
            known: VERSION,
        });
    }
    for (index, (name, sql)) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        txn.batch_execute(sql).await?;
        let version = index as i32 + 1;
        txn.execute(
            "INSERT INTO llm_proxy_schema (version, name) VALUES ($1, $2)",
            &[&version, name],
        )
        .await?;
    }
    txn.execute(
        "INSERT INTO llm_proxy_cluster (cluster_id) VALUES (gen_random_uuid()::text)
         ON CONFLICT DO NOTHING",
        &[],
    )
    .await?;
    let cluster: String = txn
        .query_one("SELECT cluster_id FROM llm_proxy_cluster", &[])
        .await?
        .get(0);
    txn.commit().await?;
    Ok((
        Migrated {
            from: found,
            to: VERSION,
        },
        cluster,
    ))
}
