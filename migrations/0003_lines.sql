-- Inline projection of the `line` stream: ownership, state and the line limit are decided from it.
CREATE TABLE lines (
    line_id          text        PRIMARY KEY,
    account_id       text        NOT NULL REFERENCES accounts (account_id),
    engine           text        NOT NULL,
    status           text        NOT NULL CHECK (status IN ('pending_qr', 'connected', 'disconnected', 'logged_out')),
    phone            text,
    created_at       timestamptz NOT NULL,
    connected_at     timestamptz,
    disconnected_at  timestamptz,
    logged_out_at    timestamptz,
    updated_at       timestamptz NOT NULL
);
CREATE INDEX lines_account_idx ON lines (account_id, line_id);
