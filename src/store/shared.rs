//! The store shared by async tasks: each call runs on the blocking pool. Every
//! write goes through one session ([`SharedStore::call`]); with PostgreSQL and
//! `state.postgres.pool_size` above 1, status reads ([`SharedStore::read`]) use
//! sessions of their own, so `/health` and `/metrics` answer while a long scan
//! commits. The sessions are one generation: [`SharedStore::reconnect`] puts a
//! new generation in place without waiting for a call stuck on the old one (a
//! silent partition), which ends on its own and is dropped with it.

use super::{OpenError, Store};
use crate::config::{StateBackend, StateConfig};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

#[derive(Clone)]
pub struct SharedStore {
    sessions: Arc<RwLock<Arc<Sessions>>>,
}

/// One generation of sessions.
struct Sessions {
    writer: Mutex<Store>,
    readers: Vec<Mutex<Store>>,
    next: AtomicUsize,
}

impl Sessions {
    fn new(writer: Store, readers: Vec<Store>) -> Arc<Self> {
        Arc::new(Self {
            writer: Mutex::new(writer),
            readers: readers.into_iter().map(Mutex::new).collect(),
            next: AtomicUsize::new(0),
        })
    }

    /// Opens a writer and `readers` reading sessions.
    fn open(config: &StateConfig, readers: usize) -> Result<Arc<Self>, OpenError> {
        let writer = Store::open(config)?;
        let readers = (0..readers)
            .map(|_| Store::open(config))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::new(writer, readers))
    }
}

impl SharedStore {
    pub fn new(store: Store) -> Self {
        Self::of(Sessions::new(store, Vec::new()))
    }

    fn of(sessions: Arc<Sessions>) -> Self {
        Self {
            sessions: Arc::new(RwLock::new(sessions)),
        }
    }

    /// The sessions in force now.
    fn current(&self) -> Arc<Sessions> {
        self.sessions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Opens the configured state for writing, on the blocking pool: one session.
    pub async fn open(config: &StateConfig) -> Result<Self, OpenError> {
        Self::open_sessions(config, false).await
    }

    /// As [`SharedStore::open`], with the reading sessions that
    /// `state.postgres.pool_size` allows beside the writer (the daemon's).
    pub async fn open_with_readers(config: &StateConfig) -> Result<Self, OpenError> {
        Self::open_sessions(config, true).await
    }

    async fn open_sessions(config: &StateConfig, readers: bool) -> Result<Self, OpenError> {
        let config = config.clone();
        let readers = match &config.backend {
            StateBackend::Postgres(pg) if readers => pg.pool_size.saturating_sub(1),
            _ => 0,
        };
        tokio::task::spawn_blocking(move || Ok(Self::of(Sessions::open(&config, readers)?)))
            .await
            .expect("opening the state panicked")
    }

    /// Puts new sessions in place of every one (after the database dropped
    /// them, or while one waits on a database that does not answer): as many
    /// readers as before. Calls already running finish on the old ones.
    pub async fn reconnect(&self, config: &StateConfig) -> Result<(), OpenError> {
        let config = config.clone();
        let readers = self.current().readers.len();
        let fresh = tokio::task::spawn_blocking(move || Sessions::open(&config, readers))
            .await
            .expect("reconnecting to the state panicked")?;
        *self
            .sessions
            .write()
            .unwrap_or_else(PoisonError::into_inner) = fresh;
        Ok(())
    }

    /// Runs `f` on the writing session.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> T + Send + 'static,
    ) -> T {
        let sessions = self.current();
        tokio::task::spawn_blocking(move || {
            let mut store = sessions
                .writer
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            f(&mut store)
        })
        .await
        .expect("a store call panicked")
    }

    /// Runs `f`, which only reads, on a reading session if there is one (a free
    /// one first), else on the writing session.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> T + Send + 'static,
    ) -> T {
        let sessions = self.current();
        if sessions.readers.is_empty() {
            return self.call(f).await;
        }
        tokio::task::spawn_blocking(move || {
            let readers = &sessions.readers;
            let free = readers.iter().find_map(|s| s.try_lock().ok());
            let mut store = match free {
                Some(store) => store,
                None => {
                    let i = sessions.next.fetch_add(1, Ordering::Relaxed) % readers.len();
                    readers[i].lock().unwrap_or_else(PoisonError::into_inner)
                }
            };
            f(&mut store)
        })
        .await
        .expect("a store read panicked")
    }
}
