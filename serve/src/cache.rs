//! The evaluation keys kept loaded: each expanded once into a
//! [`Server`](fhec_runtime::app::Server) (masks regenerated, bootstrap keys in the Fourier
//! domain), shared by every job that uses it, and dropped least recently used first when
//! their expanded sizes exceed the memory budget. A job holding a server keeps it alive until
//! it ends, even once evicted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use fhec_runtime::app::Server;

/// One key's slot: its loaded server, filled by the first user (later ones wait for it).
#[derive(Default)]
struct Slot {
    server: Mutex<Option<Arc<Server>>>,
}

struct Entry {
    slot: Arc<Slot>,
    bytes: usize,
    last_use: u64,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    tick: u64,
}

/// The loaded keys, by key id, within a byte budget.
pub struct KeyCache {
    budget: usize,
    inner: Mutex<Inner>,
}

impl KeyCache {
    /// An empty cache of `budget` bytes (at least one key stays loaded whatever its size).
    pub fn new(budget: usize) -> KeyCache {
        KeyCache { budget, inner: Mutex::new(Inner::default()) }
    }

    fn slot(&self, id: &str, bytes: usize) -> Arc<Slot> {
        let mut inner = self.inner.lock().expect("cache lock");
        inner.tick += 1;
        let tick = inner.tick;
        let e =
            inner.entries.entry(id.to_string()).or_insert_with(|| Entry { slot: Arc::default(), bytes, last_use: 0 });
        e.last_use = tick;
        let slot = e.slot.clone();
        Self::evict(&mut inner, self.budget, id);
        slot
    }

    /// Drops the least recently used entries other than `keep` while the total is over budget.
    fn evict(inner: &mut Inner, budget: usize, keep: &str) {
        while inner.entries.values().map(|e| e.bytes).sum::<usize>() > budget {
            let oldest = inner.entries.iter().filter(|(k, _)| k.as_str() != keep).min_by_key(|(_, e)| e.last_use);
            match oldest.map(|(k, _)| k.clone()) {
                Some(k) => {
                    inner.entries.remove(&k);
                }
                None => break,
            }
        }
    }

    /// The server of key `id` (`bytes` expanded), loading it with `load` if no one has: call
    /// it on a blocking thread, since loading takes seconds and a second caller waits for the
    /// first.
    pub fn get_or_load<E>(
        &self,
        id: &str,
        bytes: usize,
        load: impl FnOnce() -> Result<Server, E>,
    ) -> Result<Arc<Server>, E> {
        let slot = self.slot(id, bytes);
        let mut s = slot.server.lock().expect("slot lock");
        if let Some(server) = &*s {
            return Ok(server.clone());
        }
        let server = Arc::new(load()?);
        *s = Some(server.clone());
        Ok(server)
    }

    /// Keeps an already loaded server (the one that checked an uploaded key).
    pub fn insert(&self, id: &str, bytes: usize, server: Server) {
        let slot = self.slot(id, bytes);
        *slot.server.lock().expect("slot lock") = Some(Arc::new(server));
    }

    /// Forgets a key (deleted).
    pub fn remove(&self, id: &str) {
        self.inner.lock().expect("cache lock").entries.remove(id);
    }

    /// The ids of the keys loaded (or being loaded), which this process's workers prefer.
    pub fn ids(&self) -> Vec<String> {
        self.inner.lock().expect("cache lock").entries.keys().cloned().collect()
    }

    /// Keys loaded and their expanded bytes.
    pub fn usage(&self) -> (usize, usize) {
        let inner = self.inner.lock().expect("cache lock");
        let loaded: Vec<_> = inner
            .entries
            .values()
            .filter(|e| e.slot.server.try_lock().map(|s| s.is_some()).unwrap_or(true))
            .map(|e| e.bytes)
            .collect();
        (loaded.len(), loaded.iter().sum())
    }
}
