-- True run records: the historian fills `runs` from the clock's START and STOP messages
-- (published on `twin.<site>.events`): dt, horizon and status were set before from the
-- state messages alone (dt guessed, horizon 0, status always 'running', started_at the
-- series epoch). These columns complete the record; `status` is one of running,
-- completed, stopped, failed.

ALTER TABLE runs ADD COLUMN IF NOT EXISTS real_time_factor double precision;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS ended_at timestamptz;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS last_step bigint;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS end_reason text;
