-- History for the benchmark: :conversations conversations of two participants with
-- :per messages each, as if the stack had run for a while. Run with
--   psql -v conversations=10000 -v per=100 -f bench/history.sql
-- Then ANALYZE, as autovacuum would after such growth.
CREATE TEMP TABLE history AS
SELECT gen_random_uuid() AS conversation, gen_random_uuid() AS a, gen_random_uuid() AS b
FROM generate_series(1, :conversations);

INSERT INTO conversations (id, created_by, created_at)
SELECT conversation, a, now() - interval '2 days' FROM history;

INSERT INTO conversation_participants (conversation_id, user_id, last_activity_at)
SELECT conversation, a, now() - interval '1 day' FROM history
UNION ALL
SELECT conversation, b, now() - interval '1 day' FROM history;

INSERT INTO messages (id, conversation_id, user_id, content, type, client_message_id, seq, created_at)
SELECT gen_random_uuid(), conversation, CASE WHEN s % 2 = 0 THEN a ELSE b END,
       'history message ' || s, 'user', gen_random_uuid(), s,
       now() - interval '2 days' + s * interval '1 second'
FROM history, generate_series(1, :per) AS s;

ANALYZE conversations;
ANALYZE conversation_participants;
ANALYZE messages;
