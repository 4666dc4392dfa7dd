-- Inline projection of the `webhook` stream. The signing secret is kept sealed with the master key.
CREATE TABLE webhooks (
    webhook_id      text        PRIMARY KEY,
    account_id      text        NOT NULL REFERENCES accounts (account_id),
    url             text        NOT NULL,
    events          text[]      NOT NULL,
    line_id         text,
    description     text,
    enabled         boolean     NOT NULL DEFAULT true,
    secret_sealed   text        NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX webhooks_account_idx ON webhooks (account_id, webhook_id);
