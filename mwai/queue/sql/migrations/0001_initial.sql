-- mwai schema, version 1.
-- runs and events keep the seed's columns and meaning (times are unix epoch
-- seconds, REAL for sub-second precision, so datetime(x, 'unixepoch') works).

CREATE TABLE runs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    issue_key        TEXT    NOT NULL,
    status           TEXT    NOT NULL
                     CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    payload_json     TEXT    NOT NULL DEFAULT '{}',
    branch           TEXT,
    pr_url           TEXT,
    last_error       TEXT,
    created_at       REAL    NOT NULL,
    updated_at       REAL    NOT NULL,
    locked_by        TEXT,
    locked_at        REAL,
    -- queue bookkeeping
    priority         INTEGER NOT NULL DEFAULT 0,
    available_at     REAL    NOT NULL,
    lease_expires_at REAL,
    started_at       REAL,
    finished_at      REAL,
    delivery_id      TEXT,
    request_id       TEXT,
    action           TEXT,
    duplicates       INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    -- what the run cost, when the agent/LLM reports it
    cost_usd         REAL,
    input_tokens     INTEGER,
    output_tokens    INTEGER
);

-- The invariants: at most one queued and at most one running run per issue.
CREATE UNIQUE INDEX runs_one_queued_per_issue ON runs (issue_key) WHERE status = 'queued';
CREATE UNIQUE INDEX runs_one_running_per_issue ON runs (issue_key) WHERE status = 'running';

-- The claim walks this index in priority order.
CREATE INDEX runs_queue ON runs (priority DESC, id) WHERE status = 'queued';
-- Listings by status and time, stuck runs, failures in a window.
CREATE INDEX runs_status_updated ON runs (status, updated_at);
CREATE INDEX runs_created ON runs (created_at);
CREATE INDEX runs_updated ON runs (updated_at);
CREATE INDEX runs_issue ON runs (issue_key, id);
CREATE INDEX runs_locked_by ON runs (locked_by) WHERE locked_by IS NOT NULL;

CREATE TABLE events (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id    INTEGER NOT NULL,
    ts        REAL    NOT NULL,
    level     TEXT    NOT NULL,
    message   TEXT    NOT NULL,
    meta_json TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX events_run ON events (run_id, id);

-- Jira's X-Atlassian-Webhook-Identifier: a redelivery returns the first run id.
CREATE TABLE deliveries (
    delivery_id TEXT PRIMARY KEY,
    run_id      INTEGER NOT NULL,
    received_at REAL    NOT NULL
) WITHOUT ROWID;
CREATE INDEX deliveries_run ON deliveries (run_id);
CREATE INDEX deliveries_received ON deliveries (received_at);

-- One row per live or past worker process: lets other processes (mwai unlock,
-- lease recovery) tell a dead owner from a busy one.
CREATE TABLE processes (
    process_id   TEXT PRIMARY KEY,
    pid          INTEGER NOT NULL,
    hostname     TEXT    NOT NULL,
    started_at   REAL    NOT NULL,
    heartbeat_at REAL    NOT NULL,
    stopped_at   REAL
) WITHOUT ROWID;

-- Small key/value state (alert cool-downs, ...).
CREATE TABLE kv (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at REAL NOT NULL
) WITHOUT ROWID;
