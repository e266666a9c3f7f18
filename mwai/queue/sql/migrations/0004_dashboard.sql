-- mwai schema, version 4: the dashboard's cost chart (mwai/queue/sql/dashboard.sql).
-- Partial and covering: only runs that reported a cost are in it, so the intake
-- (runs are inserted without a cost) never writes to it, and the per-day sums of
-- the last 30 days are read from the index alone.
CREATE INDEX runs_created_cost ON runs (created_at, cost_usd, input_tokens, output_tokens)
    WHERE cost_usd IS NOT NULL;
