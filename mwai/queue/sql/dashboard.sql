-- The web dashboard's queries (mwai/server/dashboard), read through the typed
-- methods of mwai/queue/reads.py. Pages are keyset-paginated: a page starts
-- after the last row of the previous one (never OFFSET), so page 1000 costs what
-- page 1 does. tests/integration/test_dashboard_query_plans.py checks that each
-- is a range of an index, without a sort, at any table size.

-- name: ui_runs_page
-- Runs page: latest activity first (index runs_updated: (updated_at, rowid) is
-- exactly the order). The cursor is the (updated_at, id) of the last row shown;
-- :until bounds the first page (1e18: no bound). :prefix_low/high (NULL: any)
-- keep the issue keys of some Jira projects (a repository's).
SELECT id, issue_key, status, attempts, created_at, updated_at, started_at, finished_at,
       locked_by, action, pr_url, last_error
FROM runs
WHERE updated_at >= :since AND updated_at <= :before_updated
  AND (updated_at < :before_updated OR id < :before_id)
  AND (:prefix_low IS NULL OR (issue_key >= :prefix_low AND issue_key < :prefix_high))
ORDER BY updated_at DESC, id DESC LIMIT :limit;

-- name: ui_runs_page_status
-- The same for one status (index runs_status_updated).
SELECT id, issue_key, status, attempts, created_at, updated_at, started_at, finished_at,
       locked_by, action, pr_url, last_error
FROM runs
WHERE status = :status AND updated_at >= :since AND updated_at <= :before_updated
  AND (updated_at < :before_updated OR id < :before_id)
  AND (:prefix_low IS NULL OR (issue_key >= :prefix_low AND issue_key < :prefix_high))
ORDER BY updated_at DESC, id DESC LIMIT :limit;

-- name: ui_issue_runs
-- Every run of one issue, newest first (index runs_issue), from before :before_id.
SELECT id, issue_key, status, attempts, created_at, updated_at, started_at, finished_at,
       locked_by, action, pr_url, last_error
FROM runs WHERE issue_key = :issue_key AND id < :before_id
ORDER BY id DESC LIMIT :limit;

-- name: ui_issue_search
-- Issue keys starting with what was typed, in key order (index runs_issue; DISTINCT
-- over an ordered index stops after :limit keys).
SELECT DISTINCT issue_key FROM runs
WHERE issue_key >= :prefix_low AND issue_key < :prefix_high
ORDER BY issue_key LIMIT :limit;

-- name: ui_active_runs
-- Running runs with their stage (the latest event), the longest without an update first.
SELECT r.id, r.issue_key, r.attempts, r.locked_by, r.locked_at, r.started_at, r.created_at,
       r.updated_at, r.cancel_requested,
       (SELECT e.message FROM events AS e WHERE e.run_id = r.id ORDER BY e.id DESC LIMIT 1)
           AS stage
FROM runs AS r WHERE r.status = 'running'
ORDER BY r.updated_at LIMIT :limit;

-- name: ui_daily_runs
-- Runs created per UTC day and status (covering index runs_status_created).
SELECT CAST(created_at / 86400 AS INTEGER) AS day, status, count(*) AS count
FROM runs
WHERE status IN ('queued', 'running', 'completed', 'failed', 'cancelled')
  AND created_at >= :since AND created_at < :until
GROUP BY day, status;

-- name: ui_daily_cost
-- Cost and tokens per UTC day of creation. INDEXED BY: the partial covering index
-- runs_created_cost holds only the runs with a cost; the planner would otherwise
-- walk runs_created and read every run of the month from the table.
SELECT CAST(created_at / 86400 AS INTEGER) AS day, sum(cost_usd) AS cost_usd,
       sum(coalesce(input_tokens, 0)) AS input_tokens,
       sum(coalesce(output_tokens, 0)) AS output_tokens
FROM runs INDEXED BY runs_created_cost
WHERE cost_usd IS NOT NULL AND created_at >= :since AND created_at < :until
GROUP BY day;

-- name: ui_change_mark
-- What changed since the last look: the newest event and the latest run update
-- (each one step of an index). The live views re-render only when it moves.
SELECT (SELECT max(id) FROM events) AS last_event_id,
       (SELECT max(updated_at) FROM runs) AS last_update_at;
