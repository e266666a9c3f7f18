-- mwai schema, version 5: attempts spent by crashes of the service itself (a lost
-- worker: kill -9, OOM, power loss) are counted apart from the run's own failures,
-- so restarts of mwai do not exhaust a healthy run's MWAI_MAX_ATTEMPTS.
ALTER TABLE runs ADD COLUMN lost_attempts INTEGER NOT NULL DEFAULT 0;
