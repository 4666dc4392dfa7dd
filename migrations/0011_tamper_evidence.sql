-- Tamper evidence for the event log.
--
-- 1. Every event carries `prev_hash`, the hash of the previous event of its stream (32 zero bytes
--    for a stream's first event), and `hash` = SHA-256(prev_hash || canonical encoding of the
--    event). Storing the link lets a check tell an edited event (its own hash is off) from a
--    removed or reordered one (the links no longer follow the stream's versions). The canonical
--    encoding is a JSON array of every column, rendered by jsonb (which renders a value one way
--    only). `bridge audit verify` recomputes the chains; the same expression is in
--    src/audit/chain.rs, and the two must change together (they would need a new schema of hash).
-- 2. The server periodically signs a digest of the stream heads that changed since the last one
--    (log_digests, log_digest_heads): an edit that rewrites a whole chain, or removes the newest
--    events of a stream, still contradicts a signed digest.

ALTER TABLE events ADD COLUMN prev_hash bytea, ADD COLUMN hash bytea;

CREATE FUNCTION event_canonical_text(e events) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_array(
        e.global_position, e.transaction_id::text, e.tenant_id, e.stream_type, e.stream_id, e.stream_version,
        e.event_id, e.event_type, e.schema_version, e.payload, e.metadata,
        (extract(epoch FROM e.recorded_at) * 1000000)::bigint
    )::text
$$;

-- Chains each new row to its stream's previous event. A BEFORE ROW trigger sees the rows that
-- earlier rows of the same INSERT wrote, so one statement may append several events of a stream.
CREATE FUNCTION events_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    previous bytea;
BEGIN
    IF NEW.stream_version = 1 THEN
        previous := '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea;
    ELSE
        SELECT hash INTO previous FROM events
         WHERE stream_type = NEW.stream_type AND stream_id = NEW.stream_id AND stream_version = NEW.stream_version - 1;
        IF previous IS NULL THEN
            RAISE EXCEPTION 'stream %/% has no version % to chain version % to',
                NEW.stream_type, NEW.stream_id, NEW.stream_version - 1, NEW.stream_version
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
    END IF;
    NEW.prev_hash := previous;
    NEW.hash := sha256(previous || convert_to(event_canonical_text(NEW), 'UTF8'));
    RETURN NEW;
END $$;

-- Chain the events already in the log (older installations), stream by stream.
ALTER TABLE events DISABLE TRIGGER events_append_only;
DO $$
DECLARE
    e events;
    previous bytea;
    last_stream text := NULL;
BEGIN
    FOR e IN SELECT * FROM events ORDER BY stream_type, stream_id, stream_version LOOP
        IF last_stream IS DISTINCT FROM e.stream_type || '/' || e.stream_id THEN
            previous := '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea;
            last_stream := e.stream_type || '/' || e.stream_id;
        END IF;
        UPDATE events SET prev_hash = previous, hash = sha256(previous || convert_to(event_canonical_text(e), 'UTF8'))
         WHERE global_position = e.global_position
         RETURNING hash INTO previous;
    END LOOP;
END $$;
ALTER TABLE events ENABLE TRIGGER events_append_only;

ALTER TABLE events ALTER COLUMN prev_hash SET NOT NULL, ALTER COLUMN hash SET NOT NULL;

CREATE TRIGGER events_chain BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION events_chain();

-- A signed digest covers every event at or before (transaction_id, global_position) in log order;
-- that position is always below the oldest running transaction, so nothing can later commit
-- inside what a digest covers. root = SHA-256(previous root || the heads that changed), and
-- signature = HMAC-SHA256(a key derived from the master key, root).
CREATE TABLE log_digests (
    digest_id       bigint      PRIMARY KEY,
    transaction_id  xid8        NOT NULL,
    global_position bigint      NOT NULL,
    heads_changed   integer     NOT NULL,
    root            bytea       NOT NULL,
    signature       bytea       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- The newest event of each stream that changed in a digest's range, as it was when signed.
CREATE TABLE log_digest_heads (
    digest_id      bigint NOT NULL REFERENCES log_digests (digest_id),
    stream_type    text   NOT NULL,
    stream_id      text   NOT NULL,
    tenant_id      text   NOT NULL,
    stream_version bigint NOT NULL,
    hash           bytea  NOT NULL,
    PRIMARY KEY (digest_id, stream_type, stream_id)
);
CREATE INDEX log_digest_heads_tenant_idx ON log_digest_heads (tenant_id, digest_id);

CREATE TRIGGER log_digests_append_only BEFORE UPDATE OR DELETE ON log_digests
    FOR EACH ROW EXECUTE FUNCTION events_are_append_only();
CREATE TRIGGER log_digest_heads_append_only BEFORE UPDATE OR DELETE ON log_digest_heads
    FOR EACH ROW EXECUTE FUNCTION events_are_append_only();
