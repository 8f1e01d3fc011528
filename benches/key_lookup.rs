//! Key lookup on the request path: a hit in the worker's key cache
//! (`worker::keys::KeyCache::lookup`), and a miss that reads LMDB
//! (`store::Store::lookup_key`, after hashing the secret as the cache does).
//! Run with `cargo bench --bench key_lookup`; results in docs/benchmarks.md.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark's setup fails by panicking, and it prints what it measured"
)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use llm_proxy::store::{Cipher, NewKey, Store, crypto};
use llm_proxy::worker::keys::KeyCache;

/// Keys in the store, so that a miss walks a realistic B-tree.
const KEYS: usize = 2_000;

fn store_with_keys(encrypted: bool) -> (Store, Vec<String>, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "llm-proxy-bench-keys-{}-{encrypted}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let cipher = encrypted.then(|| Cipher::from_env_value(&"ab".repeat(32)).unwrap());
    let store = Store::open(&dir, cipher).unwrap();
    let project = store
        .create_project("bench", "sk-upstream-key-0123456789")
        .unwrap();
    let secrets = (0..KEYS)
        .map(|_| {
            let (_, secret) = store
                .create_key(NewKey {
                    project_id: Some(project.id),
                    max_requests: Some(1_000_000),
                    ..NewKey::default()
                })
                .unwrap();
            secret
        })
        .collect();
    (store, secrets, dir)
}

fn lookups(c: &mut Criterion) {
    let (store, secrets, dir) = store_with_keys(false);
    let mut cache = KeyCache::default();
    cache.sync(&store);
    let secret = secrets[KEYS / 2].as_bytes();
    assert!(matches!(cache.lookup(&store, secret), Ok(Some(_))));
    c.bench_function("key cache hit (KeyCache::lookup)", |b| {
        b.iter(|| {
            cache.sync(&store);
            black_box(matches!(
                cache.lookup(&store, black_box(secret)),
                Ok(Some(_))
            ))
        })
    });
    drop(store);
    let _ = std::fs::remove_dir_all(dir);
    bench_misses(
        c,
        false,
        "key cache miss: sha256 + LMDB (Store::lookup_key)",
    );
    bench_misses(
        c,
        true,
        "key cache miss, provider key encrypted (Store::lookup_key)",
    );
}

/// Lookups spread over the whole store, as the cache makes them on misses.
fn bench_misses(c: &mut Criterion, encrypted: bool, name: &str) {
    let (store, secrets, dir) = store_with_keys(encrypted);
    let mut i = 0;
    c.bench_function(name, |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            let hash = crypto::sha256(secrets[i].as_bytes());
            black_box(store.lookup_key(&hash).unwrap().is_some())
        })
    });
    drop(store);
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group!(benches, lookups);
criterion_main!(benches);
