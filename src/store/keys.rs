//! Desired and acknowledged state: everything stored about one key, read as
//! plain views (what a key wants is decided by `reconcile`).

use super::*;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredRecord {
    pub fields: FieldsBuf,
    pub autopay: Option<bool>,
    pub removed: bool,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// SHA-256 (hex) of the file as last read, and its last Git commit and author.
    pub file_sha256: Option<String>,
    pub git_commit: Option<String>,
    pub git_author: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckedRecord {
    /// `None` until a ManageCustomer was acknowledged.
    pub fields: Option<FieldsBuf>,
    pub unenrolled: bool,
    pub acked_at: i64,
}

/// Everything stored about one key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyState {
    pub desired: Option<DesiredRecord>,
    pub acked: Option<AckedRecord>,
    pub queue: Option<QueueRecord>,
    /// The cause of a held unenroll, waiting for `approve`.
    pub held: Option<String>,
    /// A provider's stop signal: sticky, never held.
    pub stop: Option<StopRecord>,
    /// The newest customer fields a provider reported.
    pub provider: Option<ProviderFieldsRecord>,
}

/// Customer fields a provider reported ("" = not reported), and by which event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderFieldsRecord {
    pub fields: FieldsBuf,
    pub provider: String,
    pub event_id: String,
    /// The event's own time, unix ms.
    pub created_ms: i64,
}

/// A provider said a customer's debit authorisation is gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StopRecord {
    pub provider: String,
    pub event_id: String,
    pub reason: String,
}

/// The per-key lookups behind [`KeyState`], prepared once per batch.
pub(super) struct StateQueries<'c> {
    desired: rusqlite::CachedStatement<'c>,
    acked: rusqlite::CachedStatement<'c>,
    queue: rusqlite::CachedStatement<'c>,
    held: rusqlite::CachedStatement<'c>,
    stop: rusqlite::CachedStatement<'c>,
    provider: rusqlite::CachedStatement<'c>,
}

impl<'c> StateQueries<'c> {
    pub(super) fn new(conn: &'c Connection) -> DbResult<Self> {
        Ok(Self {
            desired: conn.prepare_cached(
                "SELECT d.first_name, d.last_name, d.email, d.autopay, d.removed, f.path, d.line,
                        f.sha256, f.git_commit, f.git_author
                 FROM desired d LEFT JOIN files f ON f.id = d.file_id
                 WHERE d.business_unit = ?1 AND d.account = ?2 AND d.sub_account = ?3",
            )?,
            acked: conn.prepare_cached(
                "SELECT first_name, last_name, email, unenrolled, acked_at FROM acked
                 WHERE business_unit = ?1 AND account = ?2 AND sub_account = ?3",
            )?,
            queue: conn.prepare_cached(
                "SELECT state, attempts, next_attempt_at, last_error FROM queue
                 WHERE business_unit = ?1 AND account = ?2 AND sub_account = ?3",
            )?,
            held: conn.prepare_cached(
                "SELECT cause FROM holds WHERE business_unit = ?1 AND account = ?2 AND sub_account = ?3",
            )?,
            stop: conn.prepare_cached(
                "SELECT provider, event_id, reason FROM stops
                 WHERE business_unit = ?1 AND account = ?2 AND sub_account = ?3",
            )?,
            provider: conn.prepare_cached(
                "SELECT first_name, last_name, email, provider, event_id, created_ms FROM provider_fields
                 WHERE business_unit = ?1 AND account = ?2 AND sub_account = ?3",
            )?,
        })
    }

    /// Everything stored about one key.
    pub(super) fn read(&mut self, key: KeyRef<'_>) -> DbResult<KeyState> {
        let p = params![key.business_unit, key.account, key.sub_account];
        Ok(KeyState {
            desired: self.desired.query_row(p, read_desired).optional()?,
            acked: self.acked.query_row(p, read_acked).optional()?,
            queue: self.queue.query_row(p, read_queue).optional()?,
            held: self.held.query_row(p, |r| r.get(0)).optional()?,
            stop: self.stop.query_row(p, read_stop).optional()?,
            provider: self
                .provider
                .query_row(p, |r| read_provider_fields_at(r, 0))
                .optional()?,
        })
    }
}

fn read_desired(r: &rusqlite::Row<'_>) -> DbResult<DesiredRecord> {
    read_desired_at(r, 0)
}

fn read_desired_at(r: &rusqlite::Row<'_>, at: usize) -> DbResult<DesiredRecord> {
    let sha: Option<Vec<u8>> = r.get(at + 7)?;
    Ok(DesiredRecord {
        file_sha256: sha.map(|h| h.iter().map(|b| format!("{b:02x}")).collect()),
        git_commit: r.get(at + 8)?,
        git_author: r.get(at + 9)?,
        fields: FieldsBuf {
            first_name: r.get(at)?,
            last_name: r.get(at + 1)?,
            email: r.get(at + 2)?,
        },
        autopay: r.get(at + 3)?,
        removed: r.get(at + 4)?,
        file: r.get(at + 5)?,
        line: r.get(at + 6)?,
    })
}

fn read_acked(r: &rusqlite::Row<'_>) -> DbResult<AckedRecord> {
    read_acked_at(r, 0)
}

fn read_acked_at(r: &rusqlite::Row<'_>, at: usize) -> DbResult<AckedRecord> {
    let first: Option<String> = r.get(at)?;
    let last: Option<String> = r.get(at + 1)?;
    let email: Option<String> = r.get(at + 2)?;
    Ok(AckedRecord {
        fields: match (first, last, email) {
            (Some(first_name), Some(last_name), Some(email)) => Some(FieldsBuf {
                first_name,
                last_name,
                email,
            }),
            _ => None,
        },
        unenrolled: r.get(at + 3)?,
        acked_at: r.get(at + 4)?,
    })
}

fn read_stop(r: &rusqlite::Row<'_>) -> DbResult<StopRecord> {
    Ok(StopRecord {
        provider: r.get(0)?,
        event_id: r.get(1)?,
        reason: r.get(2)?,
    })
}

fn read_provider_fields_at(r: &rusqlite::Row<'_>, at: usize) -> DbResult<ProviderFieldsRecord> {
    Ok(ProviderFieldsRecord {
        fields: FieldsBuf {
            first_name: r.get(at)?,
            last_name: r.get(at + 1)?,
            email: r.get(at + 2)?,
        },
        provider: r.get(at + 3)?,
        event_id: r.get(at + 4)?,
        created_ms: r.get(at + 5)?,
    })
}

fn read_queue(r: &rusqlite::Row<'_>) -> DbResult<QueueRecord> {
    read_queue_at(r, 0)
}

fn read_queue_at(r: &rusqlite::Row<'_>, at: usize) -> DbResult<QueueRecord> {
    Ok(QueueRecord {
        state: QueueState::parse(r.get_ref(at)?.as_str()?),
        attempts: r.get(at + 1)?,
        next_attempt_at: r.get(at + 2)?,
        last_error: r.get(at + 3)?,
    })
}

impl Store {
    /// Everything stored about each key, in the order given.
    pub fn load_states<'k>(
        &self,
        keys: impl ExactSizeIterator<Item = KeyRef<'k>>,
    ) -> Result<Vec<Option<Box<KeyState>>>> {
        self.load_states_in(keys).step("reading customers' state")
    }

    fn load_states_in<'k>(
        &self,
        keys: impl ExactSizeIterator<Item = KeyRef<'k>>,
    ) -> DbResult<Vec<Option<Box<KeyState>>>> {
        if keys.len() == 0 || self.is_empty_in()? {
            return Ok(keys.map(|_| None).collect());
        }
        let mut queries = StateQueries::new(&self.conn)?;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let state = queries.read(key)?;
            out.push((state != KeyState::default()).then(|| Box::new(state)));
        }
        Ok(out)
    }

    /// Calls `f` for every queued key with its stored state, in key order.
    pub fn for_each_queued(&self, f: impl FnMut(KeyRef<'_>, KeyState)) -> Result<()> {
        self.for_each_queued_in(f).step("reading the queue")
    }

    fn for_each_queued_in(&self, mut f: impl FnMut(KeyRef<'_>, KeyState)) -> DbResult<()> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT q.business_unit, q.account, q.sub_account,
                    d.first_name, d.last_name, d.email, d.autopay, d.removed, f.path, d.line,
                    f.sha256, f.git_commit, f.git_author,
                    a.first_name, a.last_name, a.email, a.unenrolled, a.acked_at,
                    q.state, q.attempts, q.next_attempt_at, q.last_error,
                    d.business_unit IS NOT NULL, a.business_unit IS NOT NULL, h.cause,
                    s.provider, s.event_id, s.reason,
                    pf.first_name, pf.last_name, pf.email, pf.provider, pf.event_id, pf.created_ms
             FROM queue q
             LEFT JOIN desired d USING (business_unit, account, sub_account)
             LEFT JOIN files f ON f.id = d.file_id
             LEFT JOIN acked a USING (business_unit, account, sub_account)
             LEFT JOIN holds h USING (business_unit, account, sub_account)
             LEFT JOIN stops s USING (business_unit, account, sub_account)
             LEFT JOIN provider_fields pf USING (business_unit, account, sub_account)
             ORDER BY q.business_unit, q.account, q.sub_account",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let has_desired: bool = r.get(22)?;
            let has_acked: bool = r.get(23)?;
            let state = KeyState {
                desired: if has_desired {
                    Some(read_desired_at(r, 3)?)
                } else {
                    None
                },
                acked: if has_acked {
                    Some(read_acked_at(r, 13)?)
                } else {
                    None
                },
                queue: Some(read_queue_at(r, 18)?),
                held: r.get(24)?,
                stop: match r.get::<_, Option<String>>(25)? {
                    Some(provider) => Some(StopRecord {
                        provider,
                        event_id: r.get(26)?,
                        reason: r.get(27)?,
                    }),
                    None => None,
                },
                provider: if r.get_ref(31)?.data_type() == rusqlite::types::Type::Null {
                    None
                } else {
                    Some(read_provider_fields_at(r, 28)?)
                },
            };
            let key = KeyRef {
                business_unit: r.get_ref(0)?.as_str()?,
                account: r.get_ref(1)?.as_str()?,
                sub_account: r.get_ref(2)?.as_str()?,
            };
            f(key, state);
        }
        Ok(())
    }
}
