//! The per-worker key cache: validated keys by secret, filled from the
//! store on a miss and dropped whole when the store generation moves (a
//! management write happened). A hit allocates nothing and touches no lock.

use std::collections::HashMap;
use std::rc::Rc;

use std::collections::BTreeMap;

use crate::store::{
    Budget, KeyView, Limits, Meter, ModelLimits, Payer, Store, StoreError, counter_id, crypto,
};

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
    /// The key, its user and its team, those with a limit or a budget.
    pub parties: Vec<Party>,
    /// The key's limits on its use of one model, by model name.
    pub model_parties: BTreeMap<String, Party>,
}

/// One party whose limits a key's requests must pass, with the names of its
/// counters ready for the request path.
#[derive(Debug)]
pub struct Party {
    /// `key`, `user`, `team` or `model`, as error messages name it.
    pub whose: &'static str,
    /// Its slot in the ledger (`store::Payer::slot`).
    pub slot: Box<[u8]>,
    pub max_budget: Option<Budget>,
    pub rpm: Option<(u64, Box<[u8]>)>,
    pub tpm: Option<(u64, Box<[u8]>)>,
    pub parallel: Option<(u64, Box<[u8]>)>,
}

impl Party {
    fn new(whose: &'static str, payer: Payer<'_>, budget: Option<Budget>, limits: &Limits) -> Self {
        let slot = payer.slot();
        let counter = |limit: Option<u64>, meter| limit.map(|n| (n, counter_id(meter, &slot)));
        Party {
            whose,
            rpm: counter(limits.rpm_limit, Meter::Requests),
            tpm: counter(limits.tpm_limit, Meter::Tokens),
            parallel: counter(limits.max_parallel_requests, Meter::Parallel),
            max_budget: budget,
            slot: slot.into_boxed_slice(),
        }
    }

    fn of_model(key: &KeyView, model: &str, limits: &ModelLimits) -> Self {
        let as_limits = Limits {
            rpm_limit: limits.rpm_limit,
            tpm_limit: limits.tpm_limit,
            ..Limits::default()
        };
        Party::new(
            "model",
            Payer::KeyModel(key.key_id, model),
            limits.max_budget,
            &as_limits,
        )
    }

    fn is_limited(&self) -> bool {
        self.max_budget.is_some()
            || self.rpm.is_some()
            || self.tpm.is_some()
            || self.parallel.is_some()
    }
}

impl CachedKey {
    pub fn new(view: KeyView) -> Self {
        let upstream_auth = view.upstream_key.as_deref().map(|key| {
            format!("Authorization: Bearer {key}\r\n")
                .into_bytes()
                .into_boxed_slice()
        });
        let mut parties = vec![Party::new(
            "key",
            Payer::Key(view.key_id),
            view.max_budget,
            &view.limits,
        )];
        if let Some(user_id) = &view.user_id {
            parties.push(Party::new(
                "user",
                Payer::User(user_id),
                view.user_max_budget,
                &view.user_limits,
            ));
        }
        if let Some(team) = &view.team {
            parties.push(Party::new(
                "team",
                Payer::Team(&team.team_id),
                team.max_budget,
                &team.limits,
            ));
        }
        parties.retain(Party::is_limited);
        let model_parties = view
            .model_limits
            .iter()
            .map(|(model, limits)| (model.clone(), Party::of_model(&view, model, limits)))
            .filter(|(_, party)| party.is_limited())
            .collect();
        CachedKey {
            view,
            upstream_auth,
            parties,
            model_parties,
        }
    }

    /// Whether the key, its user, its team or its use of some model has a
    /// budget.
    pub fn has_budget(&self) -> bool {
        self.parties
            .iter()
            .chain(self.model_parties.values())
            .any(|p| p.max_budget.is_some())
    }

    /// Whether any request-rate limit applies (the answers then say how
    /// much is left, in `x-ratelimit-*`).
    pub fn is_rate_limited(&self) -> bool {
        self.parties
            .iter()
            .chain(self.model_parties.values())
            .any(|p| p.rpm.is_some() || p.tpm.is_some())
    }
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
        let entry = Rc::new(CachedKey::new(view));
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.clear();
        }
        self.entries.insert(secret.into(), entry.clone());
        Ok(Some(entry))
    }
}
