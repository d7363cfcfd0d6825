-- Conversations and who may read and write them.
CREATE TABLE conversations (
    id          uuid PRIMARY KEY,
    title       text,
    created_by  uuid NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE conversation_participants (
    conversation_id uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_id         uuid NOT NULL,
    added_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, user_id)
);

-- "My conversations" looks participants up by user.
CREATE INDEX conversation_participants_by_user ON conversation_participants (user_id);

-- The system of record for messages. `seq` is assigned by the persister, 1, 2, 3 … per
-- conversation; the unique constraints are the last word on ordering races and on
-- duplicates (the id of a message with a client_message_id is derived from it).
-- No foreign key to conversations: the log must accept what JetStream already acked.
CREATE TABLE messages (
    id                uuid PRIMARY KEY,
    conversation_id   uuid NOT NULL,
    user_id           uuid NOT NULL,
    content           text NOT NULL,
    type              text NOT NULL CHECK (type IN ('user', 'ai')),
    metadata          jsonb NOT NULL DEFAULT '{}',
    client_message_id uuid NULL,
    seq               bigint NOT NULL CHECK (seq > 0),
    created_at        timestamptz NOT NULL,
    persisted_at      timestamptz NOT NULL DEFAULT now(),
    -- The MESSAGES stream sequence it was stored from, for replay and audits.
    stream_seq        bigint NULL,
    CONSTRAINT messages_conversation_seq UNIQUE (conversation_id, seq),
    CONSTRAINT messages_user_client_message_id UNIQUE (user_id, client_message_id)
);
