-- mwai schema, version 2: indexes for the operator views (mwai stats, mwai runs).
-- Covers the guide's "processing time by status" and "slowest runs" for a time
-- window from the index alone (no table lookups), so mwai stats stays fast on a
-- million runs.
CREATE INDEX runs_status_created ON runs (status, created_at, updated_at);
