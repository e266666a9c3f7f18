-- mwai schema, version 3: the index behind `mwai stats` in the run-time vocabulary
-- (queue wait, run time, total need started_at and finished_at): it covers
-- ops_stats_by_status and ops_slowest_runs, and replaces runs_status_created.
-- The runs table keeps the seed's columns: only an index changes.
CREATE INDEX runs_status_times ON runs (status, created_at, started_at, finished_at,
                                        updated_at);
DROP INDEX runs_status_created;
