-- TimescaleDB only (the plain-PostgreSQL twin is 0002_series.plain.sql): hypertables on
-- the series tables, compression settings, and the continuous aggregates site_series_1m and
-- site_series_1h, created WITH NO DATA (their refresh policies are in 0003, outside any
-- transaction). The aggregates are materialized only, like the plain rollup tables, so
-- both backends answer a rollup query identically once refreshed.

SELECT create_hypertable('site_series', by_range('time', INTERVAL '1 day'), if_not_exists => true);
SELECT create_hypertable('cdu_series', by_range('time', INTERVAL '1 day'), if_not_exists => true);
SELECT create_hypertable('rack_arrays', by_range('time', INTERVAL '7 days'), if_not_exists => true);

ALTER TABLE site_series SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'run_id',
    timescaledb.compress_orderby = 'step, time'
);
ALTER TABLE cdu_series SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'run_id, cdu',
    timescaledb.compress_orderby = 'step, time'
);
ALTER TABLE rack_arrays SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'run_id, quantity',
    timescaledb.compress_orderby = 'step, time'
);

CREATE MATERIALIZED VIEW IF NOT EXISTS site_series_1m
WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS
SELECT
    run_id,
    time_bucket(INTERVAL '1 minute', time) AS bucket,
    count(*) AS samples,
    avg(it_w) AS it_w_avg,
    min(it_w) AS it_w_min,
    max(it_w) AS it_w_max,
    last(it_w, time) AS it_w_last,
    avg(facility_w) AS facility_w_avg,
    min(facility_w) AS facility_w_min,
    max(facility_w) AS facility_w_max,
    last(facility_w, time) AS facility_w_last,
    avg(cooling_w) AS cooling_w_avg,
    min(cooling_w) AS cooling_w_min,
    max(cooling_w) AS cooling_w_max,
    last(cooling_w, time) AS cooling_w_last,
    avg(pue) AS pue_avg,
    min(pue) AS pue_min,
    max(pue) AS pue_max,
    last(pue, time) AS pue_last,
    avg(gpu_temp_max_c) AS gpu_temp_max_c_avg,
    min(gpu_temp_max_c) AS gpu_temp_max_c_min,
    max(gpu_temp_max_c) AS gpu_temp_max_c_max,
    last(gpu_temp_max_c, time) AS gpu_temp_max_c_last,
    avg(tcs_supply_max_c) AS tcs_supply_max_c_avg,
    min(tcs_supply_max_c) AS tcs_supply_max_c_min,
    max(tcs_supply_max_c) AS tcs_supply_max_c_max,
    last(tcs_supply_max_c, time) AS tcs_supply_max_c_last,
    avg(delivered_pflops) AS delivered_pflops_avg,
    min(delivered_pflops) AS delivered_pflops_min,
    max(delivered_pflops) AS delivered_pflops_max,
    last(delivered_pflops, time) AS delivered_pflops_last,
    avg(grid_w) AS grid_w_avg,
    min(grid_w) AS grid_w_min,
    max(grid_w) AS grid_w_max,
    last(grid_w, time) AS grid_w_last,
    avg(battery_w) AS battery_w_avg,
    min(battery_w) AS battery_w_min,
    max(battery_w) AS battery_w_max,
    last(battery_w, time) AS battery_w_last,
    avg(soc) AS soc_avg,
    min(soc) AS soc_min,
    max(soc) AS soc_max,
    last(soc, time) AS soc_last,
    avg(cost_usd_per_s) AS cost_usd_per_s_avg,
    min(cost_usd_per_s) AS cost_usd_per_s_min,
    max(cost_usd_per_s) AS cost_usd_per_s_max,
    last(cost_usd_per_s, time) AS cost_usd_per_s_last,
    avg(emissions_t_per_s) AS emissions_t_per_s_avg,
    min(emissions_t_per_s) AS emissions_t_per_s_min,
    max(emissions_t_per_s) AS emissions_t_per_s_max,
    last(emissions_t_per_s, time) AS emissions_t_per_s_last,
    avg(ambient_c) AS ambient_c_avg,
    min(ambient_c) AS ambient_c_min,
    max(ambient_c) AS ambient_c_max,
    last(ambient_c, time) AS ambient_c_last
FROM site_series
GROUP BY run_id, bucket
WITH NO DATA;

CREATE MATERIALIZED VIEW IF NOT EXISTS site_series_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS
SELECT
    run_id,
    time_bucket(INTERVAL '1 hour', time) AS bucket,
    count(*) AS samples,
    avg(it_w) AS it_w_avg,
    min(it_w) AS it_w_min,
    max(it_w) AS it_w_max,
    last(it_w, time) AS it_w_last,
    avg(facility_w) AS facility_w_avg,
    min(facility_w) AS facility_w_min,
    max(facility_w) AS facility_w_max,
    last(facility_w, time) AS facility_w_last,
    avg(cooling_w) AS cooling_w_avg,
    min(cooling_w) AS cooling_w_min,
    max(cooling_w) AS cooling_w_max,
    last(cooling_w, time) AS cooling_w_last,
    avg(pue) AS pue_avg,
    min(pue) AS pue_min,
    max(pue) AS pue_max,
    last(pue, time) AS pue_last,
    avg(gpu_temp_max_c) AS gpu_temp_max_c_avg,
    min(gpu_temp_max_c) AS gpu_temp_max_c_min,
    max(gpu_temp_max_c) AS gpu_temp_max_c_max,
    last(gpu_temp_max_c, time) AS gpu_temp_max_c_last,
    avg(tcs_supply_max_c) AS tcs_supply_max_c_avg,
    min(tcs_supply_max_c) AS tcs_supply_max_c_min,
    max(tcs_supply_max_c) AS tcs_supply_max_c_max,
    last(tcs_supply_max_c, time) AS tcs_supply_max_c_last,
    avg(delivered_pflops) AS delivered_pflops_avg,
    min(delivered_pflops) AS delivered_pflops_min,
    max(delivered_pflops) AS delivered_pflops_max,
    last(delivered_pflops, time) AS delivered_pflops_last,
    avg(grid_w) AS grid_w_avg,
    min(grid_w) AS grid_w_min,
    max(grid_w) AS grid_w_max,
    last(grid_w, time) AS grid_w_last,
    avg(battery_w) AS battery_w_avg,
    min(battery_w) AS battery_w_min,
    max(battery_w) AS battery_w_max,
    last(battery_w, time) AS battery_w_last,
    avg(soc) AS soc_avg,
    min(soc) AS soc_min,
    max(soc) AS soc_max,
    last(soc, time) AS soc_last,
    avg(cost_usd_per_s) AS cost_usd_per_s_avg,
    min(cost_usd_per_s) AS cost_usd_per_s_min,
    max(cost_usd_per_s) AS cost_usd_per_s_max,
    last(cost_usd_per_s, time) AS cost_usd_per_s_last,
    avg(emissions_t_per_s) AS emissions_t_per_s_avg,
    min(emissions_t_per_s) AS emissions_t_per_s_min,
    max(emissions_t_per_s) AS emissions_t_per_s_max,
    last(emissions_t_per_s, time) AS emissions_t_per_s_last,
    avg(ambient_c) AS ambient_c_avg,
    min(ambient_c) AS ambient_c_min,
    max(ambient_c) AS ambient_c_max,
    last(ambient_c, time) AS ambient_c_last
FROM site_series
GROUP BY run_id, bucket
WITH NO DATA;
