-- When each API key last authenticated a request, for the console's key list. Not a fact of the
-- log (it would be an event per request): the authenticator writes it at most once a minute per
-- key, after answering. The api_keys projection never writes this column and cannot be rebuilt
-- from the log (it has no `tables()`), so nothing resets it.
ALTER TABLE api_keys ADD COLUMN last_used_at timestamptz;
