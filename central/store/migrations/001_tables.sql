-- Scans as the agents publish them (scanagent.scan/v1): the fields as
-- columns, the whole event as payload. id is the de-duplication key.
CREATE TABLE scans (
    id            uuid PRIMARY KEY,
    seq           bigint      NOT NULL,
    agent         text        NOT NULL,
    site          text        NOT NULL,
    station       text        NOT NULL,
    event         text,
    scanned_at    timestamptz NOT NULL,
    barcode       text        NOT NULL,
    aim           text,
    kind          text        NOT NULL,
    valid         boolean     NOT NULL,
    reason        text,
    weight_grams  bigint,
    weight_status text,
    received_at   timestamptz NOT NULL,
    payload       jsonb       NOT NULL
);
CREATE INDEX scans_barcode ON scans (barcode);
CREATE INDEX scans_agent_seq ON scans (agent, seq);

-- Messages on a scans topic that are not a valid scan event, kept with
-- why, for a person to look at. agent and seq when they could be read.
CREATE TABLE rejected (
    n           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at timestamptz NOT NULL,
    receiver    text        NOT NULL,
    topic       text        NOT NULL,
    reason      text        NOT NULL,
    agent       text,
    seq         bigint,
    payload     bytea       NOT NULL
);

-- One row per agent (hub), keyed by its topic prefix: the retained
-- P/status and the latest P/health.
CREATE TABLE agents (
    prefix                    text PRIMARY KEY,
    agent                     text,
    site                      text,
    status                    text,        -- online | offline
    status_since              timestamptz, -- the status payload's since
    version                   text,
    status_at                 timestamptz, -- when the receiver got the status
    health                    jsonb,       -- the latest P/health document
    health_at                 timestamptz, -- its time
    buffer_depth              bigint,      -- health buffer.depth
    buffer_oldest_age_seconds double precision, -- health buffer.oldest_age
    buffer_last_seq           bigint,      -- health buffer.last_seq
    updated_at                timestamptz NOT NULL
);

-- The retained P/devices/<station>/<device> states.
CREATE TABLE devices (
    prefix     text        NOT NULL,
    station    text        NOT NULL,
    device     text        NOT NULL, -- scanner | scale
    port       text,
    state      text,                 -- connected | disconnected | error
    reason     text,
    since      timestamptz,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (prefix, station, device)
);
