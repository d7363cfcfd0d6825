-- A later version of a message (the end of a streamed reply, §14) is an event of its
-- conversation with its own seq, so it is a row here: one table holds every event, and
-- UNIQUE (conversation_id, seq) stays the last word on ordering races between writers.
-- Such a row's id is derived from the message's (one later version per message), and
-- version_of names the message; the message's own row is updated in place to the new
-- version, so reading it always gives the current one.
ALTER TABLE messages ADD COLUMN version_of uuid NULL;
