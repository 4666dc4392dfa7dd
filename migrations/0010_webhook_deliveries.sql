-- Webhook delivery: why a webhook was disabled (inline projection of `webhook.disabled`), the
-- webhook projector's own tables, the delivery queue and its attempt log, and each webhook's
-- health (how long it has been failing).

ALTER TABLE webhooks ADD COLUMN disabled_reason text;

-- The webhook projector's view of subscriptions, folded from the log in log order, so that an
-- event is matched against the webhooks as they were when it happened.
CREATE TABLE webhook_subscriptions (
    webhook_id  text    PRIMARY KEY,
    account_id  text    NOT NULL,
    events      text[]  NOT NULL,
    line_id     text,
    enabled     boolean NOT NULL
);
CREATE INDEX webhook_subscriptions_account_idx ON webhook_subscriptions (account_id);

-- What the projector knows of each message, for the `data` of its later status events.
CREATE TABLE webhook_message_data (
    message_id  text        PRIMARY KEY,
    line_id     text        NOT NULL,
    whatsapp_id text,
    data        jsonb       NOT NULL,
    recorded_at timestamptz NOT NULL
);
CREATE INDEX webhook_message_data_whatsapp_idx ON webhook_message_data (line_id, whatsapp_id);

-- The phone each line was last linked to, for the `line.status` events that do not carry it.
CREATE TABLE webhook_line_phones (
    line_id text PRIMARY KEY,
    phone   text NOT NULL
);

-- One row per (webhook, event). `seq` is the order the projector created them in, which is the
-- log's order; deliveries of one webhook and line go out in that order unless a retry is pending.
-- state: pending (due at next_attempt_at), held (over quota, checked again at next_attempt_at),
-- in_flight (claimed by `claimed_by` until lease_until), delivered, failed (given up).
CREATE TABLE webhook_deliveries (
    delivery_id      text        PRIMARY KEY,
    seq              bigint      GENERATED ALWAYS AS IDENTITY,
    webhook_id       text        NOT NULL,
    account_id       text        NOT NULL,
    event_id         text        NOT NULL,
    event_type       text        NOT NULL,
    line_key         text        NOT NULL,
    body             text        NOT NULL,
    state            text        NOT NULL CHECK (state IN ('pending', 'held', 'in_flight', 'delivered', 'failed')),
    -- Test events are neither charged nor retried.
    billable         boolean     NOT NULL DEFAULT true,
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz,
    claimed_by       text,
    lease_until      timestamptz,
    charged_cycle    timestamptz,
    last_status_code integer,
    last_error       text,
    last_duration_ms integer,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    delivered_at     timestamptz,
    CONSTRAINT webhook_deliveries_once UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
    WHERE state IN ('pending', 'held');
CREATE INDEX webhook_deliveries_in_flight_idx ON webhook_deliveries (lease_until)
    WHERE state = 'in_flight';
CREATE INDEX webhook_deliveries_order_idx ON webhook_deliveries (webhook_id, line_key, seq)
    WHERE state IN ('pending', 'held', 'in_flight');
CREATE INDEX webhook_deliveries_list_idx ON webhook_deliveries (webhook_id, seq DESC);

CREATE TABLE webhook_attempts (
    delivery_id  text        NOT NULL REFERENCES webhook_deliveries (delivery_id) ON DELETE CASCADE,
    attempt      integer     NOT NULL,
    started_at   timestamptz NOT NULL,
    status_code  integer,
    duration_ms  integer     NOT NULL,
    error        text,
    PRIMARY KEY (delivery_id, attempt)
);

-- Since when a webhook has failed without a success in between (NULL: healthy).
CREATE TABLE webhook_health (
    webhook_id      text        PRIMARY KEY,
    failing_since   timestamptz,
    last_success_at timestamptz,
    last_failure_at timestamptz
);
