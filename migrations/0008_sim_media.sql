-- What the simulated network received of a media message.
ALTER TABLE sim_deliveries ADD COLUMN media_bytes integer;
ALTER TABLE sim_deliveries ADD COLUMN media_content_type text;
