-- The console (web UI): its users, an inline projection of the `console_user` stream, and their
-- sessions, a plain table (sessions are not facts worth keeping in the log).

-- One email is one user, whatever its case: the unique index is how an invitation of an email
-- already in use is refused (by name: console_users_email_key).
CREATE TABLE console_users (
    user_id          text        PRIMARY KEY,
    account_id       text        NOT NULL REFERENCES accounts (account_id),
    email            text        NOT NULL,
    role             text        NOT NULL CHECK (role IN ('owner', 'developer')),
    -- argon2id PHC string; null until the invitation is followed.
    password_hash    text,
    -- The one-time link that may still be used (SHA-256 of its token) and until when.
    link_token_hash  text,
    link_expires_at  timestamptz,
    created_at       timestamptz NOT NULL,
    last_sign_in_at  timestamptz,
    removed_at       timestamptz
);
CREATE UNIQUE INDEX console_users_email_key ON console_users (lower(email));
CREATE UNIQUE INDEX console_users_link_key ON console_users (link_token_hash);
CREATE INDEX console_users_account_idx ON console_users (account_id);

-- Keyed by the SHA-256 of the cookie's random token: a stolen copy of this table opens nothing.
CREATE TABLE console_sessions (
    session_hash  text        PRIMARY KEY,
    user_id       text        NOT NULL REFERENCES console_users (user_id) ON DELETE CASCADE,
    account_id    text        NOT NULL REFERENCES accounts (account_id),
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    -- The per-session token every console form carries (hidden `_csrf` input).
    csrf_token    text        NOT NULL
);
CREATE INDEX console_sessions_user_idx ON console_sessions (user_id);
