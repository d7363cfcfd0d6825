-- Every message has a status (§4): "complete" for every ordinary message; a streamed reply
-- (§14) is "streaming" from its start until its end makes it "complete", "failed",
-- "cancelled" or "interrupted". Existing rows are all ordinary messages.
ALTER TABLE messages ADD COLUMN status text NOT NULL DEFAULT 'complete';
