-- Calibrations (twin.calibration.v1), stored by the twin service and by `twin calibrate
-- --run`: a fit of a site's parameters to a run's measured history. One common file:
-- a handful of rows per run, keyed by id, needs no hypertable. `calibration` is the whole
-- twin.calibration.v1.Calibration message (exact); `result` the same as JSON, for people
-- and ad-hoc SQL. `run_id` is the run fitted on (NULL for series sent with the request).
CREATE TABLE IF NOT EXISTS calibrations (
    calibration_id text PRIMARY KEY,
    site_id        text NOT NULL,
    run_id         text,
    state          text NOT NULL,
    created_at     timestamptz NOT NULL,
    wall_s         double precision,
    calibration    bytea NOT NULL,
    result         jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS calibrations_run ON calibrations (run_id, created_at DESC);
CREATE INDEX IF NOT EXISTS calibrations_created ON calibrations (created_at DESC);
