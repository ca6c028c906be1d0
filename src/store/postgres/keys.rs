//! Desired and acknowledged state: everything stored about one key, read as
//! plain views, a batch of keys per statement.

use super::*;

/// A key's whole stored state as one row: the one read path behind
/// [`KeyState`], for batches of keys ([`STATES`]) and the queue scan
/// ([`QUEUED`]). Decoded by [`read_state`].
macro_rules! state_columns {
    () => {
        "d.business_unit IS NOT NULL,
    d.first_name, d.last_name, d.email, d.autopay, d.removed, f.path, d.line, f.sha256, f.git_commit, f.git_author,
    a.business_unit IS NOT NULL, a.first_name, a.last_name, a.email, a.unenrolled, a.acked_at,
    q.business_unit IS NOT NULL, q.state, q.attempts, q.next_attempt_at, q.last_error,
    h.cause, s.provider, s.event_id, s.reason,
    pf.first_name, pf.last_name, pf.email, pf.provider, pf.event_id, pf.created_ms, q.version"
    };
}

/// Everything a key's state joins, after the queue (the whole-queue scan, where
/// hash joins are the right plan).
macro_rules! state_joins {
    () => {
        "LEFT JOIN desired d USING (business_unit, account, sub_account)
    LEFT JOIN files f ON f.id = d.file_id
    LEFT JOIN acked a USING (business_unit, account, sub_account)
    LEFT JOIN holds h USING (business_unit, account, sub_account)
    LEFT JOIN stops s USING (business_unit, account, sub_account)
    LEFT JOIN provider_fields pf USING (business_unit, account, sub_account)"
    };
}

/// Everything a key's state holds, looked up for each key of a batch `k`.
/// Lateral lookups with `LIMIT 1` can only be index probes, whatever the
/// statistics say: a generic plan made while a table was empty (and would be
/// hash-joined by a full scan) stays right once it holds millions of rows.
/// The tables that are usually empty (holds, stops, provider fields) are
/// probed only if they hold a row, checked once per statement (an InitPlan).
macro_rules! state_lookups {
    () => {
        "LEFT JOIN LATERAL (SELECT * FROM queue x WHERE x.business_unit = k.business_unit
       AND x.account = k.account AND x.sub_account = k.sub_account LIMIT 1) q ON true
    LEFT JOIN LATERAL (SELECT * FROM desired x WHERE x.business_unit = k.business_unit
       AND x.account = k.account AND x.sub_account = k.sub_account LIMIT 1) d ON true
    LEFT JOIN LATERAL (SELECT * FROM files x WHERE x.id = d.file_id LIMIT 1) f ON true
    LEFT JOIN LATERAL (SELECT * FROM acked x WHERE x.business_unit = k.business_unit
       AND x.account = k.account AND x.sub_account = k.sub_account LIMIT 1) a ON true
    LEFT JOIN LATERAL (SELECT * FROM holds x WHERE (SELECT EXISTS (SELECT 1 FROM holds))
       AND x.business_unit = k.business_unit
       AND x.account = k.account AND x.sub_account = k.sub_account LIMIT 1) h ON true
    LEFT JOIN LATERAL (SELECT * FROM stops x WHERE (SELECT EXISTS (SELECT 1 FROM stops))
       AND x.business_unit = k.business_unit
       AND x.account = k.account AND x.sub_account = k.sub_account LIMIT 1) s ON true
    LEFT JOIN LATERAL (SELECT * FROM provider_fields x WHERE (SELECT EXISTS (SELECT 1 FROM provider_fields))
       AND x.business_unit = k.business_unit
       AND x.account = k.account AND x.sub_account = k.sub_account LIMIT 1) pf ON true"
    };
}

/// Up to this many queued keys are read by key lookups rather than one join.
const SMALL_QUEUE: i64 = 50_000;

/// The states of a batch of keys, in the order given.
const STATES: &str = concat!(
    "SELECT k.ord, ",
    state_columns!(),
    "
     FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS k(business_unit, account, sub_account, ord) ",
    state_lookups!(),
    " ORDER BY k.ord"
);

/// A run of outcomes' writes before the queue's: history lines ($1–$6 and their
/// manifest versions, $15), what Paystar acknowledged ($7–$13) and
/// `acked_version`, at $14; the `WITH` list
/// that both ways of recording outcomes start with. An acknowledgement flagged
/// fresh ($16: the claim saw no acknowledged row) is a plain insert, which
/// costs about half an upsert's server time; a row that appeared meanwhile
/// makes it fail with a unique violation, and the caller records the batch
/// again with no row flagged.
macro_rules! outcome_writes {
    () => {
        "WITH h AS (
       INSERT INTO history (business_unit, account, sub_account, at_ms, kind, event_type, detail, manifest_version)
       SELECT b, a, s, $14, kind, event_type, detail, version
       FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $15::int8[]) WITH ORDINALITY
            AS h(b, a, s, kind, event_type, detail, version, ord)
       ORDER BY ord),
     up AS (
       INSERT INTO acked (business_unit, account, sub_account, first_name, last_name, email, unenrolled, acked_at)
       SELECT b, a, s, fname, lname, email, unenrolled, $14
       FROM unnest($7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::bool[], $16::bool[])
            AS k(b, a, s, fname, lname, email, unenrolled, fresh)
       WHERE NOT fresh
       ON CONFLICT (business_unit, account, sub_account) DO UPDATE SET
         first_name = COALESCE(excluded.first_name, acked.first_name),
         last_name = COALESCE(excluded.last_name, acked.last_name),
         email = COALESCE(excluded.email, acked.email),
         unenrolled = acked.unenrolled OR excluded.unenrolled,
         acked_at = excluded.acked_at),
     fresh AS (
       INSERT INTO acked (business_unit, account, sub_account, first_name, last_name, email, unenrolled, acked_at)
       SELECT b, a, s, fname, lname, email, unenrolled, $14
       FROM unnest($7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::bool[], $16::bool[])
            AS k(b, a, s, fname, lname, email, unenrolled, fresh)
       WHERE fresh),
     m AS (
       INSERT INTO meta (key, value) SELECT 'acked_version', '1' WHERE cardinality($7::text[]) > 0
       ON CONFLICT (key) DO UPDATE SET value = (meta.value::bigint + 1)::text)"
    };
}

/// A batch of delivery outcomes' writes before the queue's (history, what
/// Paystar acknowledged, `acked_version`), and the state of the delivered keys:
/// one statement. The select sees the tables as they were before the writes;
/// the caller applies the acknowledgements it just wrote
/// (`AckedRecord::acknowledge`).
pub(super) const RECORD_AND_READ: &str = concat!(
    outcome_writes!(),
    "     SELECT k.ord, ",
    state_columns!(),
    "
     FROM unnest($17::text[], $18::text[], $19::text[]) WITH ORDINALITY AS k(business_unit, account, sub_account, ord) ",
    state_lookups!(),
    " ORDER BY k.ord"
);

const QUEUED: &str = concat!(
    "SELECT q.business_unit, q.account, q.sub_account, ",
    state_columns!(),
    " FROM queue q ",
    state_joins!(),
    " ORDER BY q.business_unit, q.account, q.sub_account"
);

/// Decodes the state columns, starting at column `at`.
pub(super) fn read_state(r: &::postgres::Row, at: usize) -> KeyState {
    let present = |i: usize| r.get::<_, bool>(at + i);
    KeyState {
        desired: present(0).then(|| {
            let sha: Option<Vec<u8>> = r.get(at + 8);
            DesiredRecord {
                fields: FieldsBuf {
                    first_name: r.get(at + 1),
                    last_name: r.get(at + 2),
                    email: r.get(at + 3),
                },
                autopay: r.get(at + 4),
                removed: r.get(at + 5),
                file: r.get(at + 6),
                line: line(r.get(at + 7)),
                file_sha256: sha.as_deref().map(crate::hex::hex),
                git_commit: r.get(at + 9),
                git_author: r.get(at + 10),
            }
        }),
        acked: present(11).then(|| {
            let first: Option<String> = r.get(at + 12);
            let last: Option<String> = r.get(at + 13);
            let email: Option<String> = r.get(at + 14);
            AckedRecord {
                fields: match (first, last, email) {
                    (Some(first_name), Some(last_name), Some(email)) => Some(FieldsBuf {
                        first_name,
                        last_name,
                        email,
                    }),
                    _ => None,
                },
                unenrolled: r.get(at + 15),
                acked_at: r.get(at + 16),
            }
        }),
        queue: present(17).then(|| QueueRecord {
            state: QueueState::parse(r.get(at + 18)),
            attempts: r.get::<_, i64>(at + 19).clamp(0, u32::MAX as i64) as u32,
            next_attempt_at: r.get(at + 20),
            last_error: r.get(at + 21),
            version: r.get(at + 32),
        }),
        held: r.get(at + 22),
        stop: r
            .get::<_, Option<String>>(at + 23)
            .map(|provider| StopRecord {
                provider,
                event_id: r.get(at + 24),
                reason: r.get(at + 25),
            }),
        provider: r
            .get::<_, Option<i64>>(at + 31)
            .map(|created_ms| ProviderFieldsRecord {
                fields: FieldsBuf {
                    first_name: r.get(at + 26),
                    last_name: r.get(at + 27),
                    email: r.get(at + 28),
                },
                provider: r.get(at + 29),
                event_id: r.get(at + 30),
                created_ms,
            }),
    }
}

/// Everything stored about each key, in the order given, one statement per
/// batch of keys: on a client or inside a transaction.
pub(super) fn read_states<'k>(
    client: &mut impl GenericClient,
    statements: &mut HashMap<&'static str, Statement>,
    keys: impl Iterator<Item = KeyRef<'k>>,
    mut each: impl FnMut(KeyState),
) -> std::result::Result<(), ::postgres::Error> {
    let s = prepare(client, statements, STATES)?;
    let mut batch = KeyColumns::default();
    let mut flush = |client: &mut _, batch: &mut KeyColumns<'_>| {
        let rows = GenericClient::query(
            client,
            &s,
            &[&batch.business_unit, &batch.account, &batch.sub_account],
        )?;
        for r in &rows {
            each(read_state(r, 1));
        }
        batch.clear();
        Ok::<_, ::postgres::Error>(())
    };
    for key in keys {
        batch.push(key);
        if batch.len() >= BATCH {
            flush(client, &mut batch)?;
        }
    }
    if batch.len() > 0 {
        flush(client, &mut batch)?;
    }
    Ok(())
}

impl Db {
    pub fn load_states<'k>(
        &self,
        keys: impl ExactSizeIterator<Item = KeyRef<'k>>,
    ) -> Result<Vec<Option<Box<KeyState>>>> {
        // An empty state (a first import) needs no lookups. Once it held rows
        // the check is skipped: reading an empty state only costs a query.
        if keys.len() == 0 || (!self.held_rows.get() && self.is_empty()?) {
            return Ok(keys.map(|_| None).collect());
        }
        self.held_rows.set(true);
        let mut out = Vec::with_capacity(keys.len());
        let mut c = self.conn();
        let Conn { client, statements } = &mut *c;
        read_states(client, statements, keys, |state| {
            out.push((state != KeyState::default()).then(|| Box::new(state)));
        })
        .step("reading customers' state")?;
        Ok(out)
    }

    /// Calls `f` for every queued key with its stored state, in key order. A
    /// queue of up to [`SMALL_QUEUE`] keys is read as batches of key lookups; a
    /// bigger one as one join streamed from the server (the planner's choice
    /// for the join follows table statistics, which lag behind a queue that
    /// just emptied).
    pub fn for_each_queued(&self, mut f: impl FnMut(KeyRef<'_>, KeyState)) -> Result<()> {
        use ::postgres::fallible_iterator::FallibleIterator;
        let step = "reading the queue";
        let mut c = self.conn();
        let Conn { client, statements } = &mut *c;
        let queued: i64 = client
            .query_one("SELECT COUNT(*) FROM queue", &[])
            .step(step)?
            .get(0);
        if queued == 0 {
            return Ok(());
        }
        if queued <= SMALL_QUEUE {
            let keys: Vec<CustomerKey> = client
                .query(
                    "SELECT business_unit, account, sub_account FROM queue
                     ORDER BY business_unit, account, sub_account",
                    &[],
                )
                .step(step)?
                .iter()
                .map(|r| CustomerKey {
                    business_unit: r.get(0),
                    account: r.get(1),
                    sub_account: r.get(2),
                })
                .collect();
            let mut keys_in_order = keys.iter();
            return read_states(
                client,
                statements,
                keys.iter().map(CustomerKey::as_ref),
                |state| {
                    if let Some(key) = keys_in_order.next() {
                        f(key.as_ref(), state);
                    }
                },
            )
            .step(step);
        }
        let s = prepare(client, statements, QUEUED).step(step)?;
        let mut rows = client
            .query_raw(&s, std::iter::empty::<&(dyn ToSql + Sync)>())
            .step(step)?;
        while let Some(r) = rows.next().step(step)? {
            let state = read_state(&r, 3);
            f(
                KeyRef {
                    business_unit: r.get(0),
                    account: r.get(1),
                    sub_account: r.get(2),
                },
                state,
            );
        }
        Ok(())
    }
}
