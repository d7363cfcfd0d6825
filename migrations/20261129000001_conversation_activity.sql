-- GET /api/conversations lists a user's conversations, newest activity first, in pages.
-- The AI coach takes part in every conversation, so the listing must stay a short index
-- scan at millions: the activity time is kept on each participant row, where one index
-- (user, activity, conversation) serves the order and the keyset cursor together. The
-- persister moves it forward in the transaction that stores a conversation's messages.
ALTER TABLE conversation_participants ADD COLUMN last_activity_at timestamptz;

UPDATE conversation_participants p
SET last_activity_at = COALESCE(
    (SELECT max(m.created_at) FROM messages m WHERE m.conversation_id = p.conversation_id),
    (SELECT c.created_at FROM conversations c WHERE c.id = p.conversation_id));

ALTER TABLE conversation_participants
    ALTER COLUMN last_activity_at SET DEFAULT now(),
    ALTER COLUMN last_activity_at SET NOT NULL;

CREATE INDEX conversation_participants_by_activity
    ON conversation_participants (user_id, last_activity_at DESC, conversation_id DESC);

-- Superseded: its leading column is the new index's.
DROP INDEX conversation_participants_by_user;
