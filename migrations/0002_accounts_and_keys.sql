-- Inline projections of the account and api_key streams, written in the append transaction.
CREATE TABLE accounts (
    account_id   text        PRIMARY KEY,
    name         text        NOT NULL,
    plan         text        NOT NULL,
    status       text        NOT NULL CHECK (status IN ('active', 'suspended')),
    cycle_anchor timestamptz NOT NULL,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);

CREATE TABLE api_keys (
    key_id      text        PRIMARY KEY,
    account_id  text        NOT NULL REFERENCES accounts (account_id),
    name        text,
    status      text        NOT NULL CHECK (status IN ('active', 'revoked')),
    created_at  timestamptz NOT NULL,
    rotated_at  timestamptz,
    revoked_at  timestamptz
);
CREATE INDEX api_keys_account_idx ON api_keys (account_id);

-- The key index: SHA-256 of each secret that may authenticate. A rotated-out secret stays until
-- the end of its grace period (valid_until); without grace it is removed at once.
CREATE TABLE api_key_secrets (
    key_hash    text        PRIMARY KEY,
    key_id      text        NOT NULL REFERENCES api_keys (key_id) ON DELETE CASCADE,
    valid_until timestamptz
);
CREATE INDEX api_key_secrets_key_idx ON api_key_secrets (key_id);

-- Quota counters per account, billing cycle and metric.
CREATE TABLE usage_counters (
    account_id  text        NOT NULL REFERENCES accounts (account_id),
    cycle_start timestamptz NOT NULL,
    metric      text        NOT NULL,
    used        bigint      NOT NULL DEFAULT 0 CHECK (used >= 0),
    PRIMARY KEY (account_id, cycle_start, metric)
);
