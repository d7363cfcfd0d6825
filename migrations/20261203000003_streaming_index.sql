-- Replies in progress (§14): a room looks up its conversation's, and every ingest node
-- periodically looks for ones a dead node left. Only a handful are ever `streaming`, so
-- a partial index keeps both lookups tiny however large `messages` grows.
CREATE INDEX messages_streaming ON messages (conversation_id, created_at)
    WHERE status = 'streaming';
