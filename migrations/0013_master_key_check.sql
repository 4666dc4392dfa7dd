-- A key-check value of the operator's master key: HMAC-SHA256 of a fixed label under the key,
-- written by the first node that starts. A node with another master key would seal webhook
-- secrets that no other node can open, and sign audit digests no other node can check; it
-- compares its own value with this one and refuses to start. (The value reveals nothing of the key.)
CREATE TABLE master_key_check (
    singleton  boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    check_hmac bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
