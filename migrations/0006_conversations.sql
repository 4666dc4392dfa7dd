-- Asynchronous read models behind GET /v1/messages and GET /v1/chats.

CREATE TABLE rm_messages (
    message_id        text        PRIMARY KEY,
    account_id        text        NOT NULL,
    line_id           text        NOT NULL,
    chat_phone        text        NOT NULL,
    direction         text        NOT NULL CHECK (direction IN ('outbound', 'inbound')),
    type              text        NOT NULL,
    text              text,
    caption           text,
    media_url         text,
    media_type        text,
    quoted_message_id text,
    engine_message_id text,
    status            text        NOT NULL,
    failure_reason    text,
    reactions         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at        timestamptz NOT NULL,
    sent_at           timestamptz,
    delivered_at      timestamptz,
    read_at           timestamptz,
    failed_at         timestamptz,
    -- The log position of the message's first event: the order of a chat, and the cursor.
    position          bigint      NOT NULL
);
CREATE INDEX rm_messages_chat_idx ON rm_messages (line_id, chat_phone, position DESC);
CREATE UNIQUE INDEX rm_messages_engine_id_idx ON rm_messages (line_id, engine_message_id) WHERE engine_message_id IS NOT NULL;

CREATE TABLE rm_chats (
    line_id              text        NOT NULL,
    phone                text        NOT NULL,
    account_id           text        NOT NULL,
    last_message_id      text        NOT NULL,
    last_message_preview text,
    last_message_at      timestamptz NOT NULL,
    last_direction       text        NOT NULL,
    unread_count         integer     NOT NULL DEFAULT 0,
    archived             boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (line_id, phone)
);
CREATE INDEX rm_chats_recent_idx ON rm_chats (line_id, last_message_at DESC);
