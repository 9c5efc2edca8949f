-- What-if studies (twin.whatif.v1), stored by the twin service when a database is
-- configured. `study` is the whole twin.whatif.v1.Study message as sent (exact);
-- `result` is the same as JSON, for people and ad-hoc SQL.
CREATE TABLE IF NOT EXISTS studies (
    study_id    text PRIMARY KEY,
    site_id     text NOT NULL,
    name        text NOT NULL,
    state       text NOT NULL,
    created_at  timestamptz NOT NULL,
    variants    integer NOT NULL,
    wall_s      double precision,
    study       bytea NOT NULL,
    result      jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS studies_created ON studies (created_at DESC);
