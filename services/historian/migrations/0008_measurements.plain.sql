-- Plain PostgreSQL only (the TimescaleDB twin is 0008_measurements.timescale.sql): the
-- measurements a site's gateway (or any telemetry publisher) sent on telemetry.<site>.>,
-- as the historian stored them, and their 1-minute rollup table, (re)computed by
-- refresh_measurement_rollups(site, from, to) in the historian's writing transaction.
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

CREATE TABLE IF NOT EXISTS measurements_1m (
    site_id text NOT NULL,
    source text NOT NULL,
    entity text NOT NULL,
    quantity text NOT NULL,
    bucket timestamptz NOT NULL,
    value_avg double precision,
    value_min double precision,
    value_max double precision,
    value_last double precision,
    value_count bigint NOT NULL,
    PRIMARY KEY (site_id, entity, quantity, source, bucket)
);

CREATE OR REPLACE FUNCTION refresh_measurement_rollups(
    p_site_id text, p_from timestamptz, p_to timestamptz
) RETURNS void LANGUAGE sql AS $fn$
    INSERT INTO measurements_1m AS r (site_id, source, entity, quantity, bucket,
        value_avg, value_min, value_max, value_last, value_count)
    SELECT site_id, source, entity, quantity,
        date_bin(INTERVAL '1 minute', time, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
        avg(value), min(value), max(value),
        (array_agg(value ORDER BY time DESC))[1], count(*)
    FROM measurements
    WHERE site_id = p_site_id
      AND time >= date_bin(INTERVAL '1 minute', p_from, TIMESTAMPTZ '2000-01-01 00:00:00+00')
      AND time < date_bin(INTERVAL '1 minute', p_to - INTERVAL '1 microsecond',
                          TIMESTAMPTZ '2000-01-01 00:00:00+00') + INTERVAL '1 minute'
    GROUP BY site_id, source, entity, quantity, bucket
    ON CONFLICT (site_id, entity, quantity, source, bucket) DO UPDATE SET
        value_avg = EXCLUDED.value_avg,
        value_min = EXCLUDED.value_min,
        value_max = EXCLUDED.value_max,
        value_last = EXCLUDED.value_last,
        value_count = EXCLUDED.value_count
$fn$;
