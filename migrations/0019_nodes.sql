-- The nodes sharing this database: what each does and when it last said it was alive. Dispatch
-- nodes share the lines among the live ones (fresh heartbeat, not draining); `bridge nodes list`
-- shows them. A node's row is removed when it stops cleanly; a killed node's row goes stale.
CREATE TABLE nodes (
    node_id      text        PRIMARY KEY,
    roles        text[]      NOT NULL,
    version      text        NOT NULL,
    started_at   timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL,
    -- Set when the node begins to stop: it takes no new work, and its lines go to others.
    draining     boolean     NOT NULL DEFAULT false
);
