-- migrate: no-transaction
-- TimescaleDB only. Series are stamped in simulated time from 2000-01-01 (so that buckets
-- start on whole simulated hours), while retention policies drop chunks older than now()
-- minus drop_after: on a real server the first retention job would drop every stored run.
-- Runs are kept until deleted; the compression policies stay (they only compress).
SELECT remove_retention_policy('site_series', if_exists => true);
SELECT remove_retention_policy('cdu_series', if_exists => true);
SELECT remove_retention_policy('rack_arrays', if_exists => true);
