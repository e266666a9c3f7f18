-- The operator commands' queries, by name (mwai runs | stats | monitor | alert |
-- unlock | prune, and the stuck runs of the health assessment), read through the
-- typed methods of mwai/queue/reads.py. Every query here is answered from an index
-- (tests/integration/test_ops_query_plans.py checks it with EXPLAIN QUERY PLAN):
-- they must stay fast on a million runs.

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
-- The guide's "average processing time by status", in mwai's vocabulary (the same
-- rule as mwai.model.run_times, checked by tests/integration/test_vocabulary.py):
-- queue wait = started - created, run time = finished - started, total = finished -
-- created; "now" for a point not reached yet. Covering index runs_status_times.
SELECT status, count(*) AS count,
       avg(wait_s) AS avg_queue_wait_s, max(wait_s) AS max_queue_wait_s,
       avg(run_s) AS avg_run_time_s, max(run_s) AS max_run_time_s,
       avg(total_s) AS avg_total_s, max(total_s) AS max_total_s
FROM (SELECT status,
             CASE WHEN started_at IS NOT NULL THEN max(0.0, started_at - created_at)
                  WHEN status IN ('completed', 'failed', 'cancelled') THEN NULL
                  ELSE max(0.0, :now - created_at) END AS wait_s,
             CASE WHEN started_at IS NULL THEN NULL
                  ELSE max(0.0, coalesce(finished_at, CASE WHEN status IN
                           ('completed', 'failed', 'cancelled') THEN updated_at ELSE :now END)
                       - started_at) END AS run_s,
             max(0.0, coalesce(finished_at, CASE WHEN status IN
                      ('completed', 'failed', 'cancelled') THEN updated_at ELSE :now END)
                 - created_at) AS total_s
      FROM runs
      WHERE status IN ('queued', 'running', 'completed', 'failed', 'cancelled')
        AND created_at >= :since)
GROUP BY status;

-- name: ops_slowest_runs
-- The guide's "slowest runs", by total (created -> finished): the ids come from the
-- covering index alone, then the few rows are read.
SELECT r.id, r.issue_key, r.status, r.attempts, r.created_at, r.updated_at,
       r.started_at, r.finished_at, r.last_error
FROM (SELECT id, coalesce(finished_at, updated_at) - created_at AS total_s FROM runs
      WHERE status IN ('completed', 'failed', 'cancelled') AND created_at >= :since
      ORDER BY total_s DESC LIMIT :limit) AS s
JOIN runs AS r ON r.id = s.id
ORDER BY s.total_s DESC;

-- name: ops_error_counts
-- The guide's "error patterns": failed runs grouped by their exact error (mwai stats
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

-- name: ops_stuck_runs
-- What the health assessment calls stuck: running, no update since :stuck_before
-- (a range of index runs_status_updated, the longest stuck first).
SELECT id, issue_key, attempts, locked_by, locked_at, started_at, created_at, updated_at,
       cancel_requested
FROM runs WHERE status = 'running' AND updated_at < :stuck_before
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
SELECT id, issue_key, attempts, locked_by, cancel_requested, status, lost_attempts
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

-- name: ops_checkpoint
PRAGMA wal_checkpoint(TRUNCATE);

-- name: ops_schema_version
PRAGMA user_version;

-- What a database holds, read before anything writes to it (Store.identify):
-- another program's file must be recognised without changing a byte of it.
-- name: table_names
SELECT name FROM sqlite_master WHERE type = 'table';
