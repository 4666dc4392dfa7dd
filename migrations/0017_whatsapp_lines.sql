-- Lines on the `whatsapp` engine (issue 13): the pairing state any node can read, and the two
-- mappings a session needs between WhatsApp's ids and ours. The session state itself (Signal,
-- app state, device) is in 0016.

-- A pairing run whose QR codes all went unscanned leaves its line `qr_expired`.
ALTER TABLE lines DROP CONSTRAINT lines_status_check;
ALTER TABLE lines ADD CONSTRAINT lines_status_check
    CHECK (status IN ('pending_qr', 'qr_expired', 'connected', 'disconnected', 'logged_out'));

-- The QR code a pairing line shows now, written by the node running its session (fenced by the
-- lease epoch in the same statement) and read by whichever node answers GET /v1/lines/{id}/qr.
CREATE TABLE whatsapp_qr_codes (
    line_id     text        PRIMARY KEY,
    code        text        NOT NULL,
    expires_at  timestamptz NOT NULL,
    epoch       bigint      NOT NULL
);

-- Which of our messages a sent WhatsApp id is: receipts name only WhatsApp's id, and arrive
-- before the asynchronous read models have caught up.
CREATE TABLE whatsapp_outbound (
    line_id            text NOT NULL,
    engine_message_id  text NOT NULL,
    message_id         text NOT NULL,
    PRIMARY KEY (line_id, engine_message_id)
);

-- Inbound messages already recorded: WhatsApp redelivers what it did not see acknowledged (a
-- crash between our commit and the ack), and a stanza id is unique only within a chat and sender.
CREATE TABLE whatsapp_inbound_seen (
    line_id            text NOT NULL,
    chat               text NOT NULL,
    sender             text NOT NULL,
    engine_message_id  text NOT NULL,
    message_id         text NOT NULL,
    PRIMARY KEY (line_id, chat, sender, engine_message_id)
);

-- What is needed to download an inbound file from WhatsApp when the tenant asks for it (its
-- direct path, key and hashes: the file itself stays on WhatsApp's servers).
CREATE TABLE whatsapp_inbound_media (
    message_id  text  PRIMARY KEY,
    line_id     text  NOT NULL,
    mime_type   text  NOT NULL,
    media       jsonb NOT NULL
);
