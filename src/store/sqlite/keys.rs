//! Desired and acknowledged state: everything stored about one key, read as
//! plain views (what a key wants is decided by `reconcile`).

use super::*;

const STATE_COLUMNS: &str = "d.business_unit IS NOT NULL,
    d.first_name, d.last_name, d.email, d.autopay, d.removed, f.path, d.line, f.sha256, f.git_commit, f.git_author,
    a.business_unit IS NOT NULL, a.first_name, a.last_name, a.email, a.unenrolled, a.acked_at,
    q.business_unit IS NOT NULL, q.state, q.attempts, q.next_attempt_at, q.last_error,
    h.cause, s.provider, s.event_id, s.reason,
    pf.first_name, pf.last_name, pf.email, pf.provider, pf.event_id, pf.created_ms, q.version";

/// Everything a key's state joins, after the table the key comes from.
const STATE_JOINS: &str = "LEFT JOIN desired d USING (business_unit, account, sub_account)
    LEFT JOIN files f ON f.id = d.file_id
    LEFT JOIN acked a USING (business_unit, account, sub_account)
    LEFT JOIN holds h USING (business_unit, account, sub_account)
    LEFT JOIN stops s USING (business_unit, account, sub_account)
    LEFT JOIN provider_fields pf USING (business_unit, account, sub_account)";

/// Decodes [`STATE_COLUMNS`], starting at column `at`.
fn read_state(r: &rusqlite::Row<'_>, at: usize) -> DbResult<KeyState> {
    let present = |i: usize| r.get::<_, bool>(at + i);
    Ok(KeyState {
        desired: if present(0)? {
            Some(read_desired_at(r, at + 1)?)
        } else {
            None
        },
        acked: if present(11)? {
            Some(read_acked_at(r, at + 12)?)
        } else {
            None
        },
        queue: if present(17)? {
            Some(QueueRecord {
                version: r.get(at + 32)?,
                ..read_queue_at(r, at + 18)?
            })
        } else {
            None
        },
        held: r.get(at + 22)?,
        stop: match r.get::<_, Option<String>>(at + 23)? {
            Some(provider) => Some(StopRecord {
                provider,
                event_id: r.get(at + 24)?,
                reason: r.get(at + 25)?,
            }),
            None => None,
        },
        provider: if r.get_ref(at + 31)?.data_type() == rusqlite::types::Type::Null {
            None
        } else {
            Some(read_provider_fields_at(r, at + 26)?)
        },
    })
}

/// Reads one key's state at a time, the statement prepared once per batch.
pub(super) struct StateQueries<'c> {
    point: rusqlite::CachedStatement<'c>,
}

impl<'c> StateQueries<'c> {
    pub(super) fn new(conn: &'c Connection) -> DbResult<Self> {
        Ok(Self {
            point: conn.prepare_cached(&format!(
                "SELECT {STATE_COLUMNS}
                 FROM (SELECT ?1 AS business_unit, ?2 AS account, ?3 AS sub_account) k
                 LEFT JOIN queue q USING (business_unit, account, sub_account)
                 {STATE_JOINS}"
            ))?,
        })
    }

    /// Everything stored about one key.
    pub(super) fn read(&mut self, key: KeyRef<'_>) -> DbResult<KeyState> {
        let p = params![key.business_unit, key.account, key.sub_account];
        self.point.query_row(p, |r| read_state(r, 0))
    }
}

fn read_desired_at(r: &rusqlite::Row<'_>, at: usize) -> DbResult<DesiredRecord> {
    let sha: Option<Vec<u8>> = r.get(at + 7)?;
    Ok(DesiredRecord {
        file_sha256: sha.as_deref().map(crate::hex::hex),
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

fn read_queue_at(r: &rusqlite::Row<'_>, at: usize) -> DbResult<QueueRecord> {
    Ok(QueueRecord {
        state: QueueState::parse(r.get_ref(at)?.as_str()?),
        attempts: r.get(at + 1)?,
        next_attempt_at: r.get(at + 2)?,
        last_error: r.get(at + 3)?,
        version: 0,
    })
}

impl Db {
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
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT q.business_unit, q.account, q.sub_account, {STATE_COLUMNS}
             FROM queue q {STATE_JOINS}
             ORDER BY q.business_unit, q.account, q.sub_account"
        ))?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let state = read_state(r, 3)?;
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
