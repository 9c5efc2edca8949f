-- The history schema, identical on plain PostgreSQL and on TimescaleDB.
--
-- Every series key includes `time` (a TimescaleDB hypertable's unique indexes must include
-- its partitioning column); `time` is fixed by (run_id, step), so (run_id, step, time)
-- identifies a sample exactly as (run_id, step) would, and the historian's upserts
-- (ON CONFLICT on the primary key) make a redelivered message a no-op.

CREATE TABLE IF NOT EXISTS runs (
    run_id      text PRIMARY KEY,
    site_id     text NOT NULL,
    scenario    text NOT NULL,
    started_at  timestamptz NOT NULL,
    dt_s        double precision NOT NULL,
    horizon_s   double precision NOT NULL,
    status      text NOT NULL DEFAULT 'running',
    spec        jsonb,          -- the run spec, readable
    spec_pb     bytea           -- the run spec as sent (twin.twin.v1.RunSpec), exact
);

CREATE TABLE IF NOT EXISTS site_series (
    run_id              text NOT NULL,
    step                bigint NOT NULL,
    time                timestamptz NOT NULL,
    it_w                double precision,
    facility_w          double precision,   -- the facility meter
    cooling_w           double precision,
    losses_w            double precision,
    misc_w              double precision,
    pue                 double precision,
    tcs_supply_mean_c   double precision,
    tcs_supply_max_c    double precision,
    facility_supply_c   double precision,
    gpu_temp_max_c      double precision,
    gpu_temp_mean_c     double precision,
    throttled_gpus      integer,
    delivered_pflops    double precision,
    grid_w              double precision,
    battery_w           double precision,
    ppa_w               double precision,
    generation_w        double precision,
    soc                 double precision,
    cost_usd_per_s      double precision,
    emissions_t_per_s   double precision,
    ambient_c           double precision,
    PRIMARY KEY (run_id, step, time)
);
CREATE INDEX IF NOT EXISTS site_series_run_time ON site_series (run_id, time DESC);

CREATE TABLE IF NOT EXISTS cdu_series (
    run_id          text NOT NULL,
    step            bigint NOT NULL,
    time            timestamptz NOT NULL,
    cdu             integer NOT NULL,
    tcs_supply_c    double precision,
    heat_liquid_w   double precision,
    PRIMARY KEY (run_id, step, cdu, time)
);
CREATE INDEX IF NOT EXISTS cdu_series_run_time ON cdu_series (run_id, time DESC);

-- Per-rack arrays (one row per quantity, e.g. 'inlet_c', 'power_w'), at a coarser
-- interval than the site series. `values` is a reserved word: quote it.
CREATE TABLE IF NOT EXISTS rack_arrays (
    run_id      text NOT NULL,
    step        bigint NOT NULL,
    time        timestamptz NOT NULL,
    quantity    text NOT NULL,
    "values"    real[] NOT NULL,
    PRIMARY KEY (run_id, step, quantity, time)
);
CREATE INDEX IF NOT EXISTS rack_arrays_run_time ON rack_arrays (run_id, quantity, time DESC);

-- Events (alarms, commands, phase changes). `event_id` is the producer's unique id (e.g.
-- the NATS message id), so inserting it again does nothing. A plain table on both backends.
CREATE TABLE IF NOT EXISTS events (
    event_id    text PRIMARY KEY,
    run_id      text NOT NULL,
    time        timestamptz NOT NULL,
    kind        text NOT NULL,
    body        jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS events_run_time ON events (run_id, time);
