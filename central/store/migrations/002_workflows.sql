-- Station workflows (docs/WORKFLOWS.md): the scan event's station
-- context, the receptacle and cancel events (buffered and receipted like
-- scans) and the retained dispatch completeness.

-- The receptacle open at the station (open_receptacles), the bag being
-- filled (fill_receptacles) and the operator signed in; NULL when the
-- event has none (and for scans stored before this migration).
ALTER TABLE scans
    ADD COLUMN receptacle  text,
    ADD COLUMN bag_session uuid,
    ADD COLUMN operator    text;
CREATE INDEX scans_receptacle ON scans (receptacle) WHERE receptacle IS NOT NULL;
CREATE INDEX scans_bag_session ON scans (bag_session) WHERE bag_session IS NOT NULL;

-- Receptacles (bags) closed at a station (scanagent.receptacle/v1): the
-- fields as columns, the whole event as payload. id is the
-- de-duplication key.
CREATE TABLE receptacles (
    id              uuid PRIMARY KEY,
    seq             bigint      NOT NULL,
    agent           text        NOT NULL,
    site            text        NOT NULL,
    station         text        NOT NULL,
    workflow        text        NOT NULL, -- open_receptacles | fill_receptacles
    receptacle      text,                 -- the S9 label
    dispatch        text,                 -- its s9.dispatch (S8)
    serial          integer,              -- its s9.serial
    bag_session     uuid,                 -- fill_receptacles
    items           integer     NOT NULL,
    cancelled       integer     NOT NULL,
    first_item_seq  bigint,
    last_item_seq   bigint,
    items_grams     bigint      NOT NULL,
    declared_grams  bigint,
    measured_grams  bigint,
    weight_mismatch boolean,
    operator        text,
    opened_at       timestamptz NOT NULL,
    closed_at       timestamptz NOT NULL,
    closed_by       text        NOT NULL, -- label | control | idle
    clock           text,
    received_at     timestamptz NOT NULL,
    payload         jsonb       NOT NULL
);
CREATE INDEX receptacles_receptacle ON receptacles (receptacle);
CREATE INDEX receptacles_dispatch ON receptacles (dispatch, serial);
CREATE INDEX receptacles_bag_session ON receptacles (bag_session) WHERE bag_session IS NOT NULL;
CREATE INDEX receptacles_agent_seq ON receptacles (agent, seq);

-- Cancel events (scanagent.cancel/v1, on the scans topic): cancels is
-- the id of the scan withdrawn; the scan itself stays in scans.
CREATE TABLE cancels (
    id           uuid PRIMARY KEY,
    seq          bigint      NOT NULL,
    agent        text        NOT NULL,
    site         text        NOT NULL,
    station      text        NOT NULL,
    cancels      uuid        NOT NULL,
    barcode      text        NOT NULL,
    operator     text,
    cancelled_at timestamptz NOT NULL,
    clock        text,
    received_at  timestamptz NOT NULL,
    payload      jsonb       NOT NULL
);
CREATE INDEX cancels_cancels ON cancels (cancels);
CREATE INDEX cancels_agent_seq ON cancels (agent, seq);

-- Scans with their cancellation: cancelled when a cancel event names the
-- scan (in whichever order the two arrived); the first cancel's id, time
-- and operator.
CREATE VIEW scans_with_cancel AS
SELECT s.*, c.id IS NOT NULL AS cancelled, c.id AS cancel_id, c.cancelled_at, c.operator AS cancelled_by
FROM scans s
LEFT JOIN LATERAL (
    SELECT id, cancelled_at, operator FROM cancels WHERE cancels.cancels = s.id ORDER BY cancelled_at, id LIMIT 1
) c ON true;

-- The retained P/dispatches/<S8> (scanagent.dispatch/v1): each agent's
-- latest state of each dispatch. The empty payload the agent publishes
-- when it forgets the dispatch sets expired_at; the row stays.
CREATE TABLE dispatches (
    prefix      text        NOT NULL,
    dispatch    text        NOT NULL,  -- the S8 identifier
    agent       text        NOT NULL,
    site        text        NOT NULL,
    received    integer[]   NOT NULL,  -- receptacle serials, ascending
    missing     integer[]   NOT NULL,
    duplicates  integer[]   NOT NULL,
    highest     integer,               -- NULL until the highest receptacle's label was seen
    complete    boolean     NOT NULL,
    first_seen  timestamptz NOT NULL,
    last_seen   timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,  -- the document's time: an older document does not replace a newer one
    clock       text,
    doc         jsonb       NOT NULL,  -- the whole document
    received_at timestamptz NOT NULL,  -- when the receiver got it
    expired_at  timestamptz,           -- when the receiver got the agent's clearing; NULL while live
    PRIMARY KEY (prefix, dispatch)
);
