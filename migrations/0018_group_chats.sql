-- Group chats (issue 13). A chat is a phone or a group's jid (`…@g.us`): the existing `phone` and
-- `chat_phone` columns hold either, as the API's `phone` field does. A message received in a group
-- also names who wrote it; in a direct chat that is the chat itself, so it stays NULL there.
ALTER TABLE rm_messages ADD COLUMN sender text;
