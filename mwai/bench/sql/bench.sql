-- The benchmark's own SQL (`mwai bench` only): fixtures written straight into a
-- mwai database and the counts the sections read back. It lives here, not in
-- mwai/queue/sql/queries.sql, so the production store carries no query that only
-- the benchmark needs. Named like the store's queries: "-- name: X" starts one.
--
-- The fills are single INSERT ... SELECT statements over a generated series, so
-- a million runs load in seconds without a Python round trip per row.

-- name: fill_finished_runs
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

-- name: fill_events
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

-- name: fill_queued_runs
-- :count queued runs of distinct issues, all due now.
WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i + 1 < :count)
INSERT INTO runs (issue_key, status, payload_json, created_at, updated_at, available_at)
SELECT 'FILL-' || (i + 1), 'queued', :payload_json, :now, :now, :now FROM seq;

-- name: fixture_cache
-- A large page cache for the fixture connection only: index builds stay in memory.
PRAGMA cache_size = -262144;

-- name: checkpoint
-- Leave no multi-gigabyte WAL behind a fill: a real database is checkpointed.
PRAGMA wal_checkpoint(TRUNCATE);

-- name: max_run_id
SELECT coalesce(max(id), 0) AS max_id FROM runs;

-- name: run_times
SELECT id, created_at, started_at FROM runs WHERE id > :after_id ORDER BY id;

-- name: progress
SELECT count(*) AS completed, min(started_at) AS first_started_at,
       max(finished_at) AS last_finished_at
FROM runs WHERE status = 'completed';

-- name: old_finished_runs
-- What `mwai prune --older-than` may delete.
SELECT count(*) AS runs FROM runs
WHERE status IN ('completed', 'failed', 'cancelled') AND updated_at < :before;

-- name: table_sizes
SELECT (SELECT count(*) FROM runs) AS runs, (SELECT count(*) FROM events) AS events,
       (SELECT count(*) FROM runs WHERE status IN ('queued', 'running')) AS open_runs;

-- name: run_cursor
-- The dashboard's keyset cursor of one run (its runs page starts after it).
SELECT id, updated_at FROM runs WHERE id = :id;
