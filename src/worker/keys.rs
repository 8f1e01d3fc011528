//! The per-worker key cache: validated keys by secret, filled from the
//! store on a miss and dropped whole when the store generation moves (a
//! management write happened). A hit allocates nothing and touches no lock.

use std::collections::HashMap;
use std::rc::Rc;

use crate::store::{KeyView, Store, StoreError, crypto};

/// Entries kept per worker before the cache starts over. An entry (the
/// key's view, its provider header, the secret, the map slot) takes about
/// 0.5 KB, so this bounds a worker's key cache to about 5 MB; past it, a
/// key costs one LMDB read (~1 µs) again.
const MAX_ENTRIES: usize = 10_000;

/// A key as the request path uses it.
#[derive(Debug)]
pub struct CachedKey {
    pub view: KeyView,
    /// `Authorization: Bearer <provider key>\r\n`, the header line ready to
    /// be written upstream.
    pub upstream_auth: Option<Box<[u8]>>,
}

#[derive(Default)]
pub struct KeyCache {
    generation: u64,
    entries: HashMap<Box<[u8]>, Rc<CachedKey>>,
}

impl KeyCache {
    /// Whether the store changed since the cache was filled; if so the
    /// cache is emptied and `true` returned.
    pub fn sync(&mut self, store: &Store) -> bool {
        let generation = store.generation();
        if generation == self.generation {
            return false;
        }
        self.entries.clear();
        self.generation = generation;
        true
    }

    /// The key with this secret, if there is one. Call `sync` first.
    pub fn lookup(
        &mut self,
        store: &Store,
        secret: &[u8],
    ) -> Result<Option<Rc<CachedKey>>, StoreError> {
        if let Some(found) = self.entries.get(secret) {
            return Ok(Some(found.clone()));
        }
        let Some(view) = store.lookup_key(&crypto::sha256(secret))? else {
            return Ok(None);
        };
        let upstream_auth = view.upstream_key.as_deref().map(|key| {
            format!("Authorization: Bearer {key}\r\n")
                .into_bytes()
                .into_boxed_slice()
        });
        let entry = Rc::new(CachedKey {
            view,
            upstream_auth,
        });
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.clear();
        }
        self.entries.insert(secret.into(), entry.clone());
        Ok(Some(entry))
    }
}
