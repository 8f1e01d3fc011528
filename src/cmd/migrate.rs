//! `llm-proxy migrate`: applies the shared store's schema migrations, and
//! with `--import` copies a single-node store into an empty shared store.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::cli::MigrateArgs;
use crate::settings::Env;
use crate::store::{Store, shared};

pub fn run(args: &MigrateArgs) -> anyhow::Result<()> {
    let env = match &args.config {
        Some(path) => Env::load(path, true)?,
        None => Env::load(Path::new(".env"), false)?,
    };
    let Some(url) = args
        .database_url
        .clone()
        .or_else(|| env.get("DATABASE_URL"))
        .filter(|url| !url.is_empty())
    else {
        bail!("DATABASE_URL is not set: give --database-url postgres://…");
    };
    let ca_file = args
        .database_ca_file
        .clone()
        .or_else(|| env.path("DATABASE_CA_FILE"));
    let (migrated, cluster) = shared::connect_and_migrate(&url, ca_file.as_deref())?;
    if migrated.from == migrated.to {
        println!(
            "PostgreSQL schema: version {} (up to date), cluster {cluster}",
            migrated.to
        );
    } else {
        println!(
            "PostgreSQL schema: version {} → {}, cluster {cluster}",
            migrated.from, migrated.to
        );
    }
    if args.import {
        let dir = args
            .db
            .clone()
            .or_else(|| env.path("DATABASE_PATH"))
            .unwrap_or_else(|| PathBuf::from("data"));
        import(&url, ca_file.as_deref(), &dir, &env)?;
    }
    Ok(())
}

fn import(url: &str, ca_file: Option<&Path>, dir: &Path, env: &Env) -> anyhow::Result<()> {
    if !dir.join("data.mdb").exists() {
        bail!("{} holds no store to import", dir.display());
    }
    let store = Store::open_checked(dir, env.get("ENCRYPTION_KEY").as_deref(), false)
        .with_context(|| format!("cannot open the store in {}", dir.display()))?;
    if let Some((cluster, _)) = store.replica_state()? {
        bail!(
            "{} is already the replica of cluster {cluster}: nothing to import",
            dir.display()
        );
    }
    let imported = store.export_for_import()?;
    let (cluster, change) = shared::import_rows(url, ca_file, &imported.rows, &imported.used)?;
    store.mark_imported(&cluster, change)?;
    println!(
        "imported {} records and {} limits (with what they used) from {} into cluster {cluster}",
        imported.rows.len(),
        imported.used.len(),
        dir.display()
    );
    Ok(())
}
