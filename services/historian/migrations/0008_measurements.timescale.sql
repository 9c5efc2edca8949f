-- migrate: no-transaction
-- TimescaleDB only (the plain-PostgreSQL twin is 0008_measurements.plain.sql): the
-- measurements a site's gateway (or any telemetry publisher) sent on telemetry.<site>.>,
-- as the historian stored them, as a hypertable, and their 1-minute continuous aggregate
-- measurements_1m (materialized only, WITH NO DATA; the historian refreshes what it
-- writes, and the policy below catches up as well: measurement times are wall-clock
-- times, so a policy relative to now() does cover them). No transaction: the policy must
-- be added outside one; every statement can be repeated.
--
-- A measurement is keyed by its own source time (wall clock, UTC), not by a twin tick:
-- MeasurementBatch carries no step. run_id is the run in progress at that time when the
-- historian knows one (NULL otherwise); it is not part of the key.

CREATE TABLE IF NOT EXISTS measurements (
    site_id text NOT NULL,
    source text NOT NULL,
    entity text NOT NULL,
    quantity text NOT NULL,
    time timestamptz NOT NULL,
    value double precision NOT NULL,
    run_id text,
    PRIMARY KEY (site_id, entity, quantity, source, time)
);
CREATE INDEX IF NOT EXISTS measurements_run_idx ON measurements (run_id, time);

SELECT create_hypertable('measurements', by_range('time', INTERVAL '1 day'), if_not_exists => true);

CREATE MATERIALIZED VIEW IF NOT EXISTS measurements_1m
WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS
SELECT
    site_id,
    source,
    entity,
    quantity,
    time_bucket(INTERVAL '1 minute', time) AS bucket,
    avg(value) AS value_avg,
    min(value) AS value_min,
    max(value) AS value_max,
    last(value, time) AS value_last,
    count(*) AS value_count
FROM measurements
GROUP BY site_id, source, entity, quantity, bucket
WITH NO DATA;

SELECT add_continuous_aggregate_policy('measurements_1m',
    start_offset => INTERVAL '1 day', end_offset => INTERVAL '1 minute',
    schedule_interval => INTERVAL '1 minute', if_not_exists => true);
