-- Read-your-writes looks up a tenant's newest event in log order.
CREATE INDEX events_tenant_log_order_idx ON events (tenant_id, transaction_id, global_position);
DROP INDEX events_tenant_idx;

-- Inline: the saved response of each send made with an Idempotency-Key, per account, for 24 hours.
CREATE TABLE idempotency_keys (
    account_id   text        NOT NULL,
    key          text        NOT NULL,
    request_hash text        NOT NULL,
    message_id   text        NOT NULL,
    status_code  integer     NOT NULL,
    response     jsonb       NOT NULL,
    created_at   timestamptz NOT NULL,
    PRIMARY KEY (account_id, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);

-- Inline: messages waiting to be sent, per line, in the order they were accepted.
CREATE TABLE dispatch_queue (
    message_id        text        PRIMARY KEY,
    line_id           text        NOT NULL,
    account_id        text        NOT NULL,
    queued_position   bigint      NOT NULL,
    attempts          integer     NOT NULL DEFAULT 0,
    engine_message_id text,
    enqueued_at       timestamptz NOT NULL
);
CREATE INDEX dispatch_queue_line_idx ON dispatch_queue (line_id, queued_position);

-- Which node owns each line's session. The epoch grows at every change of owner; every write made
-- for the line's session checks it in the same statement.
CREATE TABLE line_leases (
    line_id    text        PRIMARY KEY,
    owner      text        NOT NULL,
    epoch      bigint      NOT NULL,
    expires_at timestamptz NOT NULL
);
