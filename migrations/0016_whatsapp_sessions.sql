-- The session state of the `whatsapp` engine: what the WhatsApp Web client library (wacore's
-- storage traits) keeps for a linked line, one set of tables keyed by `line_id`.
--
-- - Written only by the node that holds the line's lease: every write checks `line_leases`
--   (line_id, owner, epoch) in the same statement (src/engine/whatsapp/store/), so a node that
--   lost the line cannot corrupt its Signal state.
-- - Key material and message content are sealed with the master key (AES-256-GCM; the nonce is
--   stored with the ciphertext; the associated data binds line, table and key, so a sealed value
--   moved to another row does not open). Columns holding sealed bytes are named `*_sealed`. Key
--   columns (addresses, jids, ids) stay clear: lookups need them and an address is not a secret.
-- - Times are the library's own: unix seconds as `bigint`, compared with the cutoffs it passes.
-- - No foreign key to `lines`: that table is a projection and may be rebuilt; logout removes a
--   line's rows here explicitly (PgSessionStore::delete_line).

-- Signal: the identity key of each remote address (user[:device]@server).
CREATE TABLE wa_identities (
    line_id             text  NOT NULL,
    address             text  NOT NULL,
    identity_key_sealed bytea NOT NULL,
    PRIMARY KEY (line_id, address)
);

-- Signal: the session record (ratchet state) of each remote address.
CREATE TABLE wa_sessions (
    line_id       text  NOT NULL,
    address       text  NOT NULL,
    record_sealed bytea NOT NULL,
    PRIMARY KEY (line_id, address)
);

-- Signal: one-time pre-keys (ids are u32), and whether the server has been given each one.
CREATE TABLE wa_prekeys (
    line_id       text    NOT NULL,
    prekey_id     bigint  NOT NULL,
    record_sealed bytea   NOT NULL,
    uploaded      boolean NOT NULL,
    PRIMARY KEY (line_id, prekey_id)
);

-- Signal: signed pre-keys.
CREATE TABLE wa_signed_prekeys (
    line_id       text   NOT NULL,
    prekey_id     bigint NOT NULL,
    record_sealed bytea  NOT NULL,
    PRIMARY KEY (line_id, prekey_id)
);

-- Signal: group sender keys, by sender key name (group and sender address).
CREATE TABLE wa_sender_keys (
    line_id       text  NOT NULL,
    address       text  NOT NULL,
    record_sealed bytea NOT NULL,
    PRIMARY KEY (line_id, address)
);

-- App state: sync keys. `set_order` grows with every set, so the latest key set is the one with
-- the highest value (the library asks for it).
CREATE SEQUENCE wa_app_state_sync_key_order;
CREATE TABLE wa_app_state_sync_keys (
    line_id         text   NOT NULL,
    key_id          bytea  NOT NULL,
    key_data_sealed bytea  NOT NULL,
    fingerprint     bytea  NOT NULL,
    key_timestamp   bigint NOT NULL,
    set_order       bigint NOT NULL DEFAULT nextval('wa_app_state_sync_key_order'),
    PRIMARY KEY (line_id, key_id)
);
CREATE INDEX wa_app_state_sync_keys_latest_idx ON wa_app_state_sync_keys (line_id, set_order);

-- App state: the version and ltHash state of each collection (`index_value_map`: a JSON object of
-- index → base64 value MAC).
CREATE TABLE wa_app_state_versions (
    line_id            text    NOT NULL,
    collection         text    NOT NULL,
    version            bigint  NOT NULL,
    hash               bytea   NOT NULL,
    index_value_map    jsonb   NOT NULL,
    mac_mismatch_fatal boolean NOT NULL,
    PRIMARY KEY (line_id, collection)
);

-- App state: the value MAC of each mutation index, per collection (and the version that wrote it).
CREATE TABLE wa_app_state_mutation_macs (
    line_id    text   NOT NULL,
    collection text   NOT NULL,
    index_mac  bytea  NOT NULL,
    value_mac  bytea  NOT NULL,
    version    bigint NOT NULL,
    PRIMARY KEY (line_id, collection, index_mac)
);

-- Protocol: which devices of a group hold our current sender key.
CREATE TABLE wa_sender_key_devices (
    line_id    text    NOT NULL,
    group_jid  text    NOT NULL,
    device_jid text    NOT NULL,
    has_key    boolean NOT NULL,
    PRIMARY KEY (line_id, group_jid, device_jid)
);
CREATE INDEX wa_sender_key_devices_device_idx ON wa_sender_key_devices (line_id, device_jid);

-- Protocol: LID ↔ phone number mappings, by LID.
CREATE TABLE wa_lid_mappings (
    line_id         text   NOT NULL,
    lid             text   NOT NULL,
    phone_number    text   NOT NULL,
    created_at      bigint NOT NULL,
    updated_at      bigint NOT NULL,
    learning_source text   NOT NULL,
    PRIMARY KEY (line_id, lid)
);

-- Protocol: the reverse index, phone number → the LID last mapped to it. Kept as its own table
-- (not derived from wa_lid_mappings) because the library's reference store keeps it so: a LID that
-- moves to another number drops its old number's entry.
CREATE TABLE wa_pn_lids (
    line_id      text NOT NULL,
    phone_number text NOT NULL,
    lid          text NOT NULL,
    PRIMARY KEY (line_id, phone_number)
);

-- Protocol: base keys saved for retry-collision detection (public keys, kept clear).
CREATE TABLE wa_base_keys (
    line_id    text  NOT NULL,
    address    text  NOT NULL,
    message_id text  NOT NULL,
    base_key   bytea NOT NULL,
    PRIMARY KEY (line_id, address, message_id)
);

-- Protocol: the known devices of each user (`devices`: the library's JSON list of DeviceInfo).
CREATE TABLE wa_device_lists (
    line_id        text   NOT NULL,
    user_id        text   NOT NULL,
    devices        jsonb  NOT NULL,
    list_timestamp bigint NOT NULL,
    phash          text,
    raw_id         bigint,
    PRIMARY KEY (line_id, user_id)
);

-- Protocol: the cached, opaque group metadata blob of each group.
CREATE TABLE wa_group_metadata (
    line_id   text  NOT NULL,
    group_jid text  NOT NULL,
    metadata  bytea NOT NULL,
    PRIMARY KEY (line_id, group_jid)
);

-- Protocol: trusted-contact tokens. An empty `token` is a placeholder row that only carries our
-- own `sender_timestamp`.
CREATE TABLE wa_tc_tokens (
    line_id          text   NOT NULL,
    jid              text   NOT NULL,
    token            bytea  NOT NULL,
    token_timestamp  bigint NOT NULL,
    sender_timestamp bigint,
    PRIMARY KEY (line_id, jid)
);

-- Protocol: sent messages kept for retry receipts (the encoded message, with its secrets).
CREATE TABLE wa_sent_messages (
    line_id        text   NOT NULL,
    chat_jid       text   NOT NULL,
    message_id     text   NOT NULL,
    payload_sealed bytea  NOT NULL,
    stored_at      bigint NOT NULL,
    PRIMARY KEY (line_id, chat_jid, message_id)
);
CREATE INDEX wa_sent_messages_expiry_idx ON wa_sent_messages (line_id, stored_at);

-- Protocol: decrypted inbound messages buffered until our commit acknowledges them (the
-- library's inbound durability hook).
CREATE TABLE wa_pending_inbound (
    line_id        text   NOT NULL,
    chat_jid       text   NOT NULL,
    sender_jid     text   NOT NULL,
    message_id     text   NOT NULL,
    message_sealed bytea  NOT NULL,
    stored_at      bigint NOT NULL,
    PRIMARY KEY (line_id, chat_jid, sender_jid, message_id)
);

-- Message secrets (decrypt reactions, poll votes and edits to a message). `expires_at` 0 = never.
CREATE TABLE wa_msg_secrets (
    line_id       text   NOT NULL,
    chat_jid      text   NOT NULL,
    sender_jid    text   NOT NULL,
    message_id    text   NOT NULL,
    secret_sealed bytea  NOT NULL,
    expires_at    bigint NOT NULL,
    message_ts    bigint NOT NULL,
    PRIMARY KEY (line_id, chat_jid, sender_jid, message_id)
);
CREATE INDEX wa_msg_secrets_expiry_idx ON wa_msg_secrets (line_id, expires_at) WHERE expires_at <> 0;

-- The device record of the line (this companion's own keys and account): one per line.
-- `device_props` (clear protobuf) is the part of the record the library does not serialize.
CREATE TABLE wa_devices (
    line_id       text  PRIMARY KEY,
    device_sealed bytea NOT NULL,
    device_props  bytea NOT NULL
);
