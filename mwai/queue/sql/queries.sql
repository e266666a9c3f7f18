-- Every statement mwai runs, by name. The store loads this file once; nothing
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
WHERE id = (
    SELECT q.id FROM runs AS q INDEXED BY runs_queue
    WHERE q.status = 'queued'
      AND q.available_at <= :now
      AND NOT EXISTS (
          SELECT 1 FROM runs AS r WHERE r.issue_key = q.issue_key AND r.status = 'running')
    ORDER BY q.priority DESC, q.id
    LIMIT 1)
RETURNING id, issue_key, attempts, payload_json, created_at, available_at, priority,
          request_id, branch, pr_url, action;

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

-- name: queued_run_for_issue
SELECT id FROM runs WHERE issue_key = :issue_key AND status = 'queued';

-- name: inherit_into_queued
-- The queued run of the same issue takes over a released run's attempts.
UPDATE runs SET
    attempts     = max(attempts, :attempts),
    available_at = max(available_at, :available_at),
    updated_at   = :now
WHERE id = :run_id;

-- name: close_superseded
UPDATE runs SET
    status           = 'cancelled',
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
    cost_usd      = coalesce(:cost_usd, cost_usd),
    input_tokens  = coalesce(:input_tokens, input_tokens),
    output_tokens = coalesce(:output_tokens, output_tokens),
    updated_at    = :now
WHERE id = :run_id;

-- name: expired_runs
-- Running runs whose lease ran out, except those of the asking process (it
-- knows its own workers are alive, whatever the wall clock says).
SELECT id, issue_key, attempts, locked_by, cancel_requested
FROM runs
WHERE status = 'running'
  AND lease_expires_at < :now
  AND (locked_by IS NULL OR substr(locked_by, 1, length(:process_id)) != :process_id);

-- name: runs_of_process
SELECT id, issue_key, attempts, locked_by, cancel_requested
FROM runs
WHERE status = 'running' AND locked_by >= :prefix_low AND locked_by < :prefix_high;

-- name: fail_lost_run
UPDATE runs SET
    status           = :status,
    last_error       = :last_error,
    updated_at       = :now,
    finished_at      = :now,
    locked_by        = NULL,
    locked_at        = NULL,
    lease_expires_at = NULL
WHERE id = :run_id AND status = 'running';

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

-- name: kv_set
INSERT INTO kv (key, value, updated_at) VALUES (:key, :value, :now)
ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at;

-- mwai bench fixtures: bulk rows and measurements for `mwai bench` only (mwai/bench.py).
-- The fills are single INSERT ... SELECT statements over a generated series, so
-- a million runs load in seconds without a Python round trip per row.

-- name: bench_fill_finished_runs
-- :count finished runs (5% failed, 2% cancelled) spread evenly over the :span_s
-- seconds before :newest, oldest first (lower ids are older, as in a real
-- database), on 5000 distinct issues.
WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i + 1 < :count)
INSERT INTO runs (issue_key, status, attempts, payload_json, created_at, updated_at,
                  available_at, started_at, finished_at, locked_by, last_error, action)
SELECT 'SCALE-' || (i % 5000 + 1),
       CASE WHEN i % 20 = 7 THEN 'failed' WHEN i % 50 = 3 THEN 'cancelled'
            ELSE 'completed' END,
       1, :payload_json, t, t + 2.5 + i % 30, t, t + 0.5, t + 2.5 + i % 30, NULL,
       CASE WHEN i % 20 = 7 THEN 'RuntimeError: bench fixture failure ' || (i % 7) END,
       'noop'
FROM (SELECT i, :newest - :span_s * (:count - 1 - i) / :count AS t FROM seq);

-- name: bench_fill_events
-- Five events for every run with id > :after_id, like a real no-op run leaves.
WITH steps(k, message) AS (VALUES (0, 'Webhook received'), (1, 'Run enqueued'),
                                  (2, 'Run claimed'), (3, 'Processed (noop processor)'),
                                  (4, 'Run finished'))
INSERT INTO events (run_id, ts, level, message, meta_json)
SELECT r.id, r.created_at + s.k * 0.5,
       CASE WHEN s.k = 4 AND r.status = 'failed' THEN 'error' ELSE 'info' END,
       s.message, '{}'
FROM runs AS r CROSS JOIN steps AS s
WHERE r.id > :after_id
ORDER BY r.id, s.k;

-- name: bench_fill_queued_runs
-- :count queued runs of distinct issues, all due now.
WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i + 1 < :count)
INSERT INTO runs (issue_key, status, payload_json, created_at, updated_at, available_at)
SELECT 'FILL-' || (i + 1), 'queued', :payload_json, :now, :now, :now FROM seq;

-- name: bench_fixture_cache
-- A large page cache for the fixture connection only: index builds stay in memory.
PRAGMA cache_size = -262144;

-- name: bench_checkpoint
-- Leave no multi-gigabyte WAL behind a fill: a real database is checkpointed.
PRAGMA wal_checkpoint(TRUNCATE);

-- name: bench_max_run_id
SELECT coalesce(max(id), 0) AS max_id FROM runs;

-- name: bench_run_times
SELECT id, created_at, started_at FROM runs WHERE id > :after_id ORDER BY id;

-- name: bench_progress
SELECT count(*) AS completed, min(started_at) AS first_started_at,
       max(finished_at) AS last_finished_at
FROM runs WHERE status = 'completed';

-- name: bench_old_finished_runs
-- What `mwai prune --older-than` may delete.
SELECT count(*) AS runs FROM runs
WHERE status IN ('completed', 'failed', 'cancelled') AND updated_at < :before;

-- name: bench_table_sizes
SELECT (SELECT count(*) FROM runs) AS runs, (SELECT count(*) FROM events) AS events,
       (SELECT count(*) FROM runs WHERE status IN ('queued', 'running')) AS open_runs;

-- Operator views and actions (mwai/ops.py, mwai/alerts.py)
-- Every query here is answered from an index (tests/integration/test_ops_query_plans.py
-- checks it with EXPLAIN QUERY PLAN): they must stay fast on a million runs.

-- name: ops_runs_recent
-- mwai runs: latest activity first (index runs_updated).
SELECT id, issue_key, status, attempts, created_at, updated_at, started_at, finished_at,
       locked_by, action, pr_url, last_error
FROM runs WHERE updated_at >= :since
ORDER BY updated_at DESC LIMIT :limit;

-- name: ops_runs_by_status
-- mwai runs --status S (index runs_status_updated).
SELECT id, issue_key, status, attempts, created_at, updated_at, started_at, finished_at,
       locked_by, action, pr_url, last_error
FROM runs WHERE status = :status AND updated_at >= :since
ORDER BY updated_at DESC LIMIT :limit;

-- name: ops_runs_by_issue
-- mwai runs --issue KEY [--status S] (index runs_issue).
SELECT id, issue_key, status, attempts, created_at, updated_at, started_at, finished_at,
       locked_by, action, pr_url, last_error
FROM runs
WHERE issue_key = :issue_key AND updated_at >= :since AND (:status IS NULL OR status = :status)
ORDER BY id DESC LIMIT :limit;

-- name: ops_stats_by_status
-- The guide's "average processing time by status" (covering index runs_status_created).
SELECT status, count(*) AS count, avg(updated_at - created_at) AS avg_s,
       max(updated_at - created_at) AS max_s
FROM runs
WHERE status IN ('queued', 'running', 'completed', 'failed', 'cancelled')
  AND created_at >= :since
GROUP BY status;

-- name: ops_slowest_runs
-- The guide's "slowest runs": the ids come from the covering index alone, then the
-- few rows are read.
SELECT r.id, r.issue_key, r.status, r.attempts, r.created_at, r.updated_at,
       s.duration_s, r.last_error
FROM (SELECT id, updated_at - created_at AS duration_s FROM runs
      WHERE status IN ('completed', 'failed', 'cancelled') AND created_at >= :since
      ORDER BY duration_s DESC LIMIT :limit) AS s
JOIN runs AS r ON r.id = s.id
ORDER BY s.duration_s DESC;

-- name: ops_error_counts
-- The guide's "error patterns": failed runs grouped by their exact error (ops.py
-- then merges errors that differ only in numbers and ids).
SELECT last_error, count(*) AS count, max(updated_at) AS last_at
FROM runs WHERE status = 'failed' AND created_at >= :since
GROUP BY last_error ORDER BY count DESC LIMIT :limit;

-- name: ops_count_status_since
SELECT count(*) AS count FROM runs WHERE status = :status AND updated_at >= :since;

-- name: ops_failed_since
SELECT id, issue_key, attempts, last_error, created_at, updated_at
FROM runs WHERE status = 'failed' AND updated_at >= :since
ORDER BY updated_at DESC LIMIT :limit;

-- name: ops_running_runs
SELECT id, issue_key, attempts, locked_by, locked_at, started_at, created_at, updated_at,
       cancel_requested
FROM runs WHERE status = 'running'
ORDER BY updated_at LIMIT :limit;

-- name: ops_processes
SELECT process_id, pid, hostname, started_at, heartbeat_at, stopped_at
FROM processes WHERE stopped_at IS NULL OR heartbeat_at >= :since
ORDER BY started_at;

-- name: ops_process
SELECT process_id, pid, hostname, started_at, heartbeat_at, stopped_at
FROM processes WHERE process_id = :process_id;

-- name: ops_locked_runs
-- The guide's "stale locks" query, oldest lock first (partial index runs_locked_by).
SELECT id, issue_key, status, attempts, locked_by, locked_at, lease_expires_at,
       cancel_requested
FROM runs WHERE locked_by IS NOT NULL AND locked_by >= '' LIMIT :limit;

-- name: ops_lock_of_run
SELECT id, issue_key, attempts, locked_by, cancel_requested, status
FROM runs WHERE id = :run_id AND locked_by = :locked_by;

-- name: ops_clear_lock
UPDATE runs SET locked_by = NULL, locked_at = NULL, lease_expires_at = NULL,
                updated_at = :now
WHERE id = :run_id AND locked_by = :locked_by AND status != 'running';

-- name: ops_prune_count
SELECT count(*) AS runs, min(updated_at) AS oldest_at FROM runs
WHERE status IN ('completed', 'failed', 'cancelled') AND updated_at < :before;

-- name: ops_prune_events_count
SELECT count(*) AS events FROM events
WHERE run_id IN (SELECT id FROM runs
                 WHERE status IN ('completed', 'failed', 'cancelled') AND updated_at < :before);

-- name: ops_prune_candidates
-- The next batch in id order (the primary key; the unary + keeps the planner off
-- the status indexes): consecutive runs keep their rows and events on few pages,
-- so a batch's delete touches few pages, and old runs sit at the low ids.
SELECT id FROM runs
WHERE id > :after_id
  AND +status IN ('completed', 'failed', 'cancelled') AND +updated_at < :before
ORDER BY id LIMIT :limit;

-- name: ops_runs_by_ids
-- CROSS JOIN fixes the loop order: the few ids outside, runs by primary key inside.
SELECT r.* FROM json_each(:ids) AS j CROSS JOIN runs AS r ON r.id = j.value;

-- name: ops_events_by_run_ids
SELECT * FROM events WHERE run_id IN (SELECT value FROM json_each(:ids)) ORDER BY run_id, id;

-- name: ops_prune_events
-- Per run of the batch (executemany), events first, and only while the run is
-- still finished and old: re-checked in the deleting transaction, so a run
-- requeued meanwhile keeps its history. Each statement is a primary-key lookup.
DELETE FROM events WHERE run_id = (
    SELECT id FROM runs WHERE id = :run_id
      AND status IN ('completed', 'failed', 'cancelled') AND updated_at < :before);

-- name: ops_prune_deliveries
DELETE FROM deliveries WHERE run_id = (
    SELECT id FROM runs WHERE id = :run_id
      AND status IN ('completed', 'failed', 'cancelled') AND updated_at < :before);

-- name: ops_prune_run
DELETE FROM runs WHERE id = :run_id
  AND status IN ('completed', 'failed', 'cancelled') AND updated_at < :before;

-- name: ops_page_counts
SELECT (SELECT freelist_count FROM pragma_freelist_count()) AS free_pages,
       (SELECT page_count FROM pragma_page_count()) AS pages;

-- name: ops_vacuum
VACUUM;

-- name: wal_checkpoint
-- The background checkpoint of a running service: PASSIVE never takes the
-- write lock, so commits go on while it copies.
PRAGMA wal_checkpoint(PASSIVE);

-- name: wal_backstop
-- The writer connection's own checkpoint only as a far backstop (about 40 MB of
-- WAL): the background checkpoint normally comes long before.
PRAGMA wal_autocheckpoint = 10000;

-- name: ops_checkpoint
PRAGMA wal_checkpoint(TRUNCATE);

-- name: ops_schema_version
PRAGMA user_version;
