//! Versioned schema migrations, applied in order inside one transaction each.
//! A released migration is never edited; add a new one instead.

pub const MIGRATIONS: &[&str] = &[
    // v1: files, desired state, acknowledged state, queue.
    r#"
CREATE TABLE files (
    id          INTEGER PRIMARY KEY,
    path        TEXT NOT NULL UNIQUE,       -- relative to manifests.dir, '/'-separated
    present     INTEGER NOT NULL,           -- 0 once the file disappeared
    size        INTEGER,
    mtime_ns    INTEGER,
    inode       INTEGER,
    sha256      BLOB,
    clean       INTEGER NOT NULL,           -- 0: read it again on the next scan
    status      TEXT NOT NULL,              -- 'ok' | 'error'
    rows        INTEGER NOT NULL,
    scanned_at  INTEGER NOT NULL            -- unix ms
);

CREATE TABLE file_errors (
    file_id     INTEGER NOT NULL REFERENCES files(id),
    seq         INTEGER NOT NULL,
    line        INTEGER,
    account     TEXT,
    field       TEXT,
    kind        TEXT NOT NULL,              -- 'file' | 'row' | 'duplicate'
    reason      TEXT NOT NULL,
    PRIMARY KEY (file_id, seq)
) WITHOUT ROWID;

-- What the manifests ask for. A key that left every manifest stays as a tombstone
-- (removed = 1) so that on_removal and history can see it.
CREATE TABLE desired (
    business_unit TEXT NOT NULL,
    account       TEXT NOT NULL,
    sub_account   TEXT NOT NULL,
    first_name    TEXT NOT NULL,
    last_name     TEXT NOT NULL,
    email         TEXT NOT NULL,
    autopay       INTEGER,                  -- NULL: no opinion
    removed       INTEGER NOT NULL,
    file_id       INTEGER REFERENCES files(id),
    line          INTEGER,
    fingerprint   INTEGER NOT NULL,         -- of the fields; only to skip unchanged rows
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (business_unit, account, sub_account)
) WITHOUT ROWID;
CREATE INDEX desired_by_file ON desired (file_id, business_unit, account, sub_account, fingerprint, line, removed);

-- What Paystar last accepted with a 2xx.
CREATE TABLE acked (
    business_unit TEXT NOT NULL,
    account       TEXT NOT NULL,
    sub_account   TEXT NOT NULL,
    first_name    TEXT,                     -- NULL until a ManageCustomer is acknowledged
    last_name     TEXT,
    email         TEXT,
    unenrolled    INTEGER NOT NULL,
    acked_at      INTEGER NOT NULL,
    PRIMARY KEY (business_unit, account, sub_account)
) WITHOUT ROWID;

-- Keys whose desired state differs from the acknowledged one. The events are
-- computed from desired vs acked when sent, so a waiting key always sends its newest state.
CREATE TABLE queue (
    business_unit   TEXT NOT NULL,
    account         TEXT NOT NULL,
    sub_account     TEXT NOT NULL,
    state           TEXT NOT NULL,          -- 'pending' | 'retrying' | 'parked'
    attempts        INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,       -- unix ms
    enqueued_at     INTEGER NOT NULL,
    last_error      TEXT,
    last_request    TEXT,
    last_response   TEXT,
    PRIMARY KEY (business_unit, account, sub_account)
) WITHOUT ROWID;
-- Keys the delivery worker may send, soonest first.
CREATE INDEX queue_due ON queue (next_attempt_at) WHERE state <> 'parked';

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
"#,
    // v2: held unenrolls, per-customer history, Git provenance of manifest files.
    r#"
-- Manifest-driven unenrolls held by the mass-change guard until `approve`.
CREATE TABLE holds (
    business_unit TEXT NOT NULL,
    account       TEXT NOT NULL,
    sub_account   TEXT NOT NULL,
    cause         TEXT NOT NULL,            -- e.g. "removed from old.csv"
    held_at       INTEGER NOT NULL,
    PRIMARY KEY (business_unit, account, sub_account)
) WITHOUT ROWID;

-- One customer's story: events sent and Paystar's answers, holds, approvals.
CREATE TABLE history (
    id            INTEGER PRIMARY KEY,
    business_unit TEXT NOT NULL,
    account       TEXT NOT NULL,
    sub_account   TEXT NOT NULL,
    at_ms         INTEGER NOT NULL,
    kind          TEXT NOT NULL,            -- 'delivered' | 'retry' | 'parked' | 'held' | 'approved' | 'released' | 'retried'
    event_type    TEXT,
    detail        TEXT NOT NULL             -- JSON: provenance, request, response
);
CREATE INDEX history_by_key ON history (business_unit, account, sub_account, id);
CREATE INDEX history_by_time ON history (at_ms);

ALTER TABLE files ADD COLUMN git_commit TEXT;
ALTER TABLE files ADD COLUMN git_author TEXT;
"#,
    // v3: provider signals.
    r#"
-- Every inbound provider event, recorded before it is acted on; a duplicate is a no-op.
CREATE TABLE provider_events (
    provider      TEXT NOT NULL,
    event_id      TEXT NOT NULL,
    channel       TEXT NOT NULL,            -- 'poll' | 'webhook'
    received_at   INTEGER NOT NULL,
    event_type    TEXT NOT NULL,
    outcome       TEXT NOT NULL,            -- 'applied' | 'ignored' | 'unmatched'
    reason        TEXT NOT NULL,
    business_unit TEXT,
    account       TEXT,
    sub_account   TEXT,
    raw           TEXT NOT NULL,
    PRIMARY KEY (provider, event_id)
) WITHOUT ROWID;
CREATE INDEX provider_events_unmatched ON provider_events (outcome, received_at);

-- Provider stop signals: sticky, a manifest saying `autopay: true` does not undo them.
CREATE TABLE stops (
    business_unit TEXT NOT NULL,
    account       TEXT NOT NULL,
    sub_account   TEXT NOT NULL,
    provider      TEXT NOT NULL,
    event_id      TEXT NOT NULL,
    reason        TEXT NOT NULL,
    at_ms         INTEGER NOT NULL,
    PRIMARY KEY (business_unit, account, sub_account)
) WITHOUT ROWID;

-- Where each poller got to, and when it last succeeded.
CREATE TABLE poll_cursors (
    provider        TEXT PRIMARY KEY,
    created         INTEGER,
    event_id        TEXT,
    last_success_ms INTEGER
) WITHOUT ROWID;
"#,
    // v4: customer fields reported by providers.
    r#"
-- The newest customer fields a provider reported for a key; '' = never reported.
-- `created_ms` is the event's own time: an older event never overwrites a newer one.
CREATE TABLE provider_fields (
    business_unit TEXT NOT NULL,
    account       TEXT NOT NULL,
    sub_account   TEXT NOT NULL,
    first_name    TEXT NOT NULL,
    last_name     TEXT NOT NULL,
    email         TEXT NOT NULL,
    provider      TEXT NOT NULL,
    event_id      TEXT NOT NULL,
    created_ms    INTEGER NOT NULL,
    at_ms         INTEGER NOT NULL,
    PRIMARY KEY (business_unit, account, sub_account)
) WITHOUT ROWID;

-- The latest status of each merchant-level account (Payroc processing accounts),
-- by the event's own time; pause rules read it.
CREATE TABLE merchant_statuses (
    provider   TEXT NOT NULL,
    account    TEXT NOT NULL,
    status     TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    event_ms   INTEGER NOT NULL,
    at_ms      INTEGER NOT NULL,
    PRIMARY KEY (provider, account)
) WITHOUT ROWID;
"#,
    // v5: retries that are due go out before fresh work.
    r#"
CREATE INDEX queue_retry_due ON queue (next_attempt_at) WHERE state = 'retrying';
"#,
    // v6: each queue entry's version, moved by every writer that queues the key
    // again, so that an outcome removes only the entry its delivery claimed.
    r#"
ALTER TABLE queue ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
"#,
    // v7: a delivery's history line names the manifest version its desired
    // state came from by id, stored once per version (path, SHA-256, Git
    // commit and author), instead of repeating it on every line. Versions are
    // never deleted, so every id a line names stays readable; no foreign key,
    // which would check every history insert. Retention walks history in id
    // order (`prune_history`), so the time index goes.
    r#"
CREATE TABLE manifest_versions (
    id         INTEGER PRIMARY KEY,
    path       TEXT NOT NULL,
    sha256     TEXT,
    git_commit TEXT,
    git_author TEXT
);
CREATE INDEX manifest_versions_by_path ON manifest_versions (path, sha256);
ALTER TABLE history ADD COLUMN manifest_version INTEGER;
DROP INDEX history_by_time;
"#,
    // v8: each file's held rows in one compact value (`store::HeldRows`),
    // written by the scan commit that changes them and dropped where it cannot
    // write them; a scan reads that instead of the file's rows, so the index
    // by file goes (a file without the value is read from `desired` in key order).
    r#"
CREATE TABLE held_rows (
    file_id INTEGER PRIMARY KEY REFERENCES files(id),
    data    BLOB NOT NULL
);
DROP INDEX desired_by_file;
"#,
    // v9: a file's stored held rows record what they were computed from: the
    // file's content hash and its generation, which every write of its rows in
    // `desired` moves in the same statement, whoever writes (these triggers). A
    // value whose stamps no longer match is not used (`stored_held_rows`).
    r#"
ALTER TABLE files ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
-- The change time joins size, mtime and inode: a chmod or a rewrite with the
-- mtime set back moves it. Files stored before have none, and are read once.
ALTER TABLE files ADD COLUMN ctime_ns INTEGER;
-- The value stays the last column: SQLite writes a zeroblob without
-- allocating it only there. Values stored before carry no stamps: they go,
-- and each file's rows are read from `desired` once.
DROP TABLE held_rows;
CREATE TABLE held_rows (
    file_id    INTEGER PRIMARY KEY REFERENCES files(id),
    generation INTEGER,
    sha256     BLOB,
    data       BLOB NOT NULL
);
CREATE TRIGGER desired_moved_insert AFTER INSERT ON desired WHEN NEW.file_id IS NOT NULL BEGIN
    UPDATE files SET generation = generation + 1 WHERE id = NEW.file_id;
END;
CREATE TRIGGER desired_moved_update AFTER UPDATE ON desired BEGIN
    UPDATE files SET generation = generation + 1 WHERE id IN (OLD.file_id, NEW.file_id);
END;
CREATE TRIGGER desired_moved_delete AFTER DELETE ON desired WHEN OLD.file_id IS NOT NULL BEGIN
    UPDATE files SET generation = generation + 1 WHERE id = OLD.file_id;
END;
"#,
];

pub const VERSION: i64 = MIGRATIONS.len() as i64;
