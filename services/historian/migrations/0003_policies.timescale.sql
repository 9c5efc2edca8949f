-- migrate: no-transaction
-- TimescaleDB only, each statement in its own implicit transaction (autocommit), as the
-- TimescaleDB docs ask for policies. Plain PostgreSQL has no 0003 file: the version is
-- recorded with nothing to run (the historian keeps the rollup tables itself).
--
-- The policies work relative to now(). Runs whose simulated calendar lies far in the past
-- or future should be refreshed explicitly (refresh_continuous_aggregate over the run's
-- window) when they end; retention drops raw chunks whose *simulated* time is older than
-- drop_after, so keep that in mind when replaying a past year.

SELECT add_compression_policy('site_series', compress_after => INTERVAL '7 days', if_not_exists => true);
SELECT add_compression_policy('cdu_series', compress_after => INTERVAL '7 days', if_not_exists => true);
SELECT add_compression_policy('rack_arrays', compress_after => INTERVAL '7 days', if_not_exists => true);

SELECT add_retention_policy('site_series', drop_after => INTERVAL '90 days', if_not_exists => true);
SELECT add_retention_policy('cdu_series', drop_after => INTERVAL '90 days', if_not_exists => true);
SELECT add_retention_policy('rack_arrays', drop_after => INTERVAL '30 days', if_not_exists => true);

SELECT add_continuous_aggregate_policy('site_series_1m',
    start_offset => INTERVAL '1 day', end_offset => INTERVAL '1 minute',
    schedule_interval => INTERVAL '1 minute', if_not_exists => true);
SELECT add_continuous_aggregate_policy('site_series_1h',
    start_offset => INTERVAL '7 days', end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '30 minutes', if_not_exists => true);
