-- The session number of the agent's status (docs/schemas/status.json
-- session): an offline status of an older session than the one stored (a
-- Last Will that a broker the agent left published late) is ignored.
ALTER TABLE agents ADD COLUMN status_session bigint;
