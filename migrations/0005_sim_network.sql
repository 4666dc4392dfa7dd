-- The simulated WhatsApp network's own state.

-- Every engine message id it carried: a second send of the same id is dropped.
CREATE TABLE sim_deliveries (
    engine_message_id text        PRIMARY KEY,
    from_line         text        NOT NULL,
    to_phone          text        NOT NULL,
    delivered_at      timestamptz NOT NULL DEFAULT now()
);

-- The per-line fault switch: sends fail, or hang until the dispatcher's timeout.
CREATE TABLE sim_faults (
    line_id text PRIMARY KEY,
    mode    text NOT NULL CHECK (mode IN ('fail', 'hang'))
);
