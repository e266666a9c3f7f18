-- The service's statements, by name: intake, claims, leases, recovery, the
-- journal, processes and its health. mwai/queue/schema.py loads every file of
-- this folder once (operator.sql holds the operator commands' queries); nothing
-- else in mwai builds SQL. Parameters are named (:name).

-- name: find_delivery
SELECT run_id FROM deliveries WHERE delivery_id = :delivery_id;

-- name: insert_delivery
INSERT OR IGNORE INTO deliveries (delivery_id, run_id, received_at)
VALUES (:delivery_id, :run_id, :now);

-- name: enqueue
-- A trigger for an issue that already has a queued run coalesces into it:
-- the latest payload wins and the duplicate is counted.
INSERT INTO runs (issue_key, status, payload_json, created_at, updated_at, available_at,
                  priority, delivery_id, request_id)
VALUES (:issue_key, 'queued', :payload_json, :now, :now, :now,
        :priority, :delivery_id, :request_id)
ON CONFLICT (issue_key) WHERE status = 'queued' DO UPDATE SET
    payload_json = excluded.payload_json,
    updated_at   = excluded.updated_at,
    priority     = max(runs.priority, excluded.priority),
    duplicates   = runs.duplicates + 1
RETURNING id, duplicates;

-- name: insert_events
-- :rows is a JSON array of [run_id, ts, level, message, meta_json] arrays: a
-- whole batch of events in one call into SQLite rather than one call per row
-- (every call gives the GIL away and must win it back from the event loop).
-- json_each yields the rows in array order, so ids follow the journal's order.
INSERT INTO events (run_id, ts, level, message, meta_json)
SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4
FROM json_each(:rows);

-- name: claim
-- One atomic statement: the best queued run that is due and whose issue has
-- no running run becomes running, owned by :worker. INDEXED BY: walking the
-- queue index in order stops at the first match; any other plan sorts the
-- whole queue on every claim.
UPDATE runs SET
    status           = 'running',
    attempts         = attempts + 1,
    locked_by        = :worker,
    locked_at        = :now,
    lease_expires_at = :lease_expires_at,
    started_at       = coalesce(started_at, :now),
    updated_at       = :now
-- `mwai pause` stops every claim of every process (kv 'claims.paused'); intake goes on.
WHERE NOT EXISTS (SELECT 1 FROM kv WHERE key = 'claims.paused')
  AND id = (
    SELECT q.id FROM runs AS q INDEXED BY runs_queue
    WHERE q.status = 'queued'
      AND q.available_at <= :now
      AND NOT EXISTS (
          SELECT 1 FROM runs AS r WHERE r.issue_key = q.issue_key AND r.status = 'running')
    ORDER BY q.priority DESC, q.id
    LIMIT 1)
-- attempts: the run's own ones; those its lost workers spent (lost_attempts) do not count.
RETURNING id, issue_key, attempts - lost_attempts, payload_json, created_at, available_at,
          priority, request_id, branch, pr_url, action;

-- name: renew_lease
UPDATE runs SET lease_expires_at = :lease_expires_at, updated_at = :now
WHERE id = :run_id AND status = 'running' AND locked_by = :worker;

-- name: finish_run
-- A completed run keeps the error of its last failed attempt (history).
UPDATE runs SET
    status           = :status,
    last_error       = coalesce(:last_error, last_error),
    updated_at       = :now,
    finished_at      = :now,
    locked_by        = NULL,
    locked_at        = NULL,
    lease_expires_at = NULL
WHERE id = :run_id AND status = 'running' AND locked_by = :worker;

-- name: requeue_running
-- A running run goes back to the queue (retry after a transient error, or
-- shutdown); :attempt_delta is -1 when the attempt is given back.
UPDATE runs SET
    status           = 'queued',
    available_at     = :available_at,
    last_error       = coalesce(:last_error, last_error),
    attempts         = max(0, attempts + :attempt_delta),
    updated_at       = :now,
    locked_by        = NULL,
    locked_at        = NULL,
    lease_expires_at = NULL
WHERE id = :run_id AND status = 'running';

-- name: count_lost_attempt
-- The attempt of a lost worker was spent by a crash of mwai, not by the run.
UPDATE runs SET lost_attempts = lost_attempts + 1 WHERE id = :run_id;

-- name: queued_run_for_issue
SELECT id FROM runs WHERE issue_key = :issue_key AND status = 'queued';

-- name: inherit_into_queued
-- The queued run of the same issue takes over a released run's attempts.
UPDATE runs SET
    attempts     = max(attempts, :attempts),
    available_at = max(available_at, :available_at),
    updated_at   = :now
WHERE id = :run_id;

-- name: close_run
-- A running run ends without its worker finishing it: superseded by the queued
-- run of its issue (cancelled), or lost for good (failed, or cancelled as asked).
-- Its callers hold the run or have just read it as running in this transaction.
UPDATE runs SET
    status           = :status,
    last_error       = :last_error,
    updated_at       = :now,
    finished_at      = :now,
    locked_by        = NULL,
    locked_at        = NULL,
    lease_expires_at = NULL
WHERE id = :run_id;

-- name: update_run_result
UPDATE runs SET
    action        = coalesce(:action, action),
    branch        = coalesce(:branch, branch),
    pr_url        = coalesce(:pr_url, pr_url),
    updated_at    = :now
WHERE id = :run_id;

-- name: add_run_usage
-- What one attempt of a run spent, added to the earlier attempts' (a NULL adds nothing):
-- runs.cost_usd and the tokens are the run's totals, as the metrics count them.
UPDATE runs SET
    cost_usd      = CASE WHEN :cost_usd IS NULL THEN cost_usd
                         ELSE coalesce(cost_usd, 0.0) + :cost_usd END,
    input_tokens  = CASE WHEN :input_tokens IS NULL THEN input_tokens
                         ELSE coalesce(input_tokens, 0) + :input_tokens END,
    output_tokens = CASE WHEN :output_tokens IS NULL THEN output_tokens
                         ELSE coalesce(output_tokens, 0) + :output_tokens END,
    updated_at    = :now
WHERE id = :run_id;

-- name: expired_runs
-- Running runs whose lease ran out, except those of the asking process (it
-- knows its own workers are alive, whatever the wall clock says).
SELECT id, issue_key, attempts, locked_by, cancel_requested, lost_attempts
FROM runs
WHERE status = 'running'
  AND lease_expires_at < :now
  AND (locked_by IS NULL OR substr(locked_by, 1, length(:process_id)) != :process_id);

-- name: runs_of_process
SELECT id, issue_key, attempts, locked_by, cancel_requested, lost_attempts
FROM runs
WHERE status = 'running' AND locked_by >= :prefix_low AND locked_by < :prefix_high;

-- name: upsert_process
INSERT INTO processes (process_id, pid, hostname, started_at, heartbeat_at)
VALUES (:process_id, :pid, :hostname, :now, :now)
ON CONFLICT (process_id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at,
                                       stopped_at = NULL;

-- name: stop_process
UPDATE processes SET stopped_at = :now, heartbeat_at = :now WHERE process_id = :process_id;

-- name: live_processes
SELECT process_id, pid, hostname, started_at, heartbeat_at
FROM processes WHERE stopped_at IS NULL ORDER BY started_at;

-- name: forget_old_processes
DELETE FROM processes WHERE stopped_at IS NOT NULL AND stopped_at < :before;

-- name: request_cancel
UPDATE runs SET cancel_requested = 1, updated_at = :now
WHERE id = :run_id AND status = 'running';

-- name: cancel_queued
UPDATE runs SET
    status      = 'cancelled',
    last_error  = :last_error,
    updated_at  = :now,
    finished_at = :now
WHERE id = :run_id AND status = 'queued';

-- name: cancel_requester
-- Who asked to cancel a running run (the latest request), for its final event.
SELECT json_extract(meta_json, '$.by') AS by FROM events
WHERE run_id = :run_id AND message LIKE 'Cancel requested%'
ORDER BY id DESC LIMIT 1;

-- name: cancel_requests
SELECT id FROM runs
WHERE status = 'running' AND cancel_requested = 1
  AND locked_by >= :prefix_low AND locked_by < :prefix_high;

-- name: requeue_finished
UPDATE runs SET
    status           = 'queued',
    attempts         = 0,
    available_at     = :now,
    updated_at       = :now,
    -- A requeued run starts afresh: its queue wait and run time count from now on
    -- (mwai.model.run_times); its events keep the earlier attempts.
    started_at       = NULL,
    finished_at      = NULL,
    cancel_requested = 0
WHERE id = :run_id AND status IN ('completed', 'failed', 'cancelled');

-- name: get_run
SELECT * FROM runs WHERE id = :run_id;

-- name: run_status
SELECT status FROM runs WHERE id = :run_id;

-- name: events_of_run
SELECT id, run_id, ts, level, message, meta_json
FROM events WHERE run_id = :run_id AND id > :after_id ORDER BY id LIMIT :limit;

-- name: events_since
-- Every event after :after_id with its run's issue key (mwai demo's timeline).
SELECT e.id, e.run_id, r.issue_key, e.ts, e.level, e.message, e.meta_json
FROM events AS e JOIN runs AS r ON r.id = e.run_id
WHERE e.id > :after_id ORDER BY e.id LIMIT :limit;

-- name: health_counts
SELECT
    (SELECT count(*) FROM runs WHERE status = 'queued')                         AS queued,
    (SELECT count(*) FROM runs WHERE status = 'running')                        AS running,
    (SELECT count(*) FROM runs WHERE status = 'running' AND updated_at < :stuck_before)
                                                                                AS stuck,
    (SELECT min(created_at) FROM runs WHERE status = 'queued')                  AS oldest_queued_at;

-- name: kv_get
SELECT value, updated_at FROM kv WHERE key = :key;

-- name: kv_delete
DELETE FROM kv WHERE key = :key;

-- name: kv_set
INSERT INTO kv (key, value, updated_at) VALUES (:key, :value, :now)
ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at;

-- name: wal_checkpoint
-- The background checkpoint of a running service: PASSIVE never takes the
-- write lock, so commits go on while it copies.
PRAGMA wal_checkpoint(PASSIVE);

-- name: wal_backstop
-- The writer connection's own checkpoint only as a far backstop (about 40 MB of
-- WAL): the background checkpoint normally comes long before.
PRAGMA wal_autocheckpoint = 10000;
