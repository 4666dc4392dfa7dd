-- The sim network links what it carried back to the sender's message, for read receipts.
ALTER TABLE sim_deliveries ADD COLUMN message_id text;
