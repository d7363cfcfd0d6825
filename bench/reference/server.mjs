// The reference server: the seed PRD's own design (its section 4 sketch), built plainly so that
// benchmarks can compare coachwire against it on the same machine.
//
// Deliberately naive: ONE Node process, a Socket.IO server and a Postgres pool. Each
// `message` is validated, inserted in its own transaction (which also assigns the next
// per-conversation `seq`), and only after COMMIT is it acked to the sender, broadcast to
// the room and confirmed with `message_delivered`. No queue, no batching, no other nodes.
//
// It speaks enough of coachwire's Socket.IO protocol (CONTRACT §3, §4, §5, §7) for
// tests/js/load.mjs to drive it unchanged: HS256 tokens in the handshake `auth`,
// `join_conversation`, `leave_conversation`, `message`, `typing`, `sync`, the same ack
// and message shapes, idempotent retries by `clientMessageId`.
//
// Env: DATABASE_URL, PORT (default 3100), COACHWIRE_JWT_SECRET (required),
//      PG_POOL_SIZE (default 10).
import { createServer } from "node:http";
import { randomUUID } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";
import pg from "pg";
import jwt from "jsonwebtoken";
import { Server } from "socket.io";

const PORT = Number(process.env.PORT ?? 3100);
const SECRET = process.env.COACHWIRE_JWT_SECRET;
const DATABASE_URL = process.env.DATABASE_URL ?? "postgres://localhost/coachwire";
const POOL_SIZE = Number(process.env.PG_POOL_SIZE ?? 10);
const MIGRATIONS = fileURLToPath(new URL("../../migrations/", import.meta.url));

if (!SECRET) {
  console.error("reference: COACHWIRE_JWT_SECRET is required");
  process.exit(2);
}

// bigint (int8) columns such as `seq` arrive as numbers, not strings.
pg.types.setTypeParser(pg.types.builtins.INT8, (v) => Number.parseInt(v, 10));
const pool = new pg.Pool({ connectionString: DATABASE_URL, max: POOL_SIZE });
pool.on("error", (err) => console.error("reference: idle pg client error:", err.message));
// A checked-out client whose connection dies emits `error` too: without a listener that
// would crash the process (its current or next query fails instead, as UNAVAILABLE).
pool.on("connect", (client) => client.on("error", (err) => console.error("reference: pg client error:", err.message)));

// ---------------------------------------------------------------- schema

/** Applies migrations/*.sql (sorted by name) when the schema is not there yet. */
async function migrate() {
  const { rows } = await pool.query("SELECT to_regclass('public.messages') AS t");
  if (rows[0].t !== null) return;
  for (const file of readdirSync(MIGRATIONS).filter((f) => f.endsWith(".sql")).sort()) {
    const client = await pool.connect();
    try {
      await client.query("BEGIN");
      await client.query(readFileSync(path.join(MIGRATIONS, file), "utf8"));
      await client.query("COMMIT");
      console.error(`reference: applied migration ${file}`);
    } catch (err) {
      await client.query("ROLLBACK").catch(() => {});
      throw new Error(`migration ${file}: ${err.message}`);
    } finally {
      client.release();
    }
  }
}

// ---------------------------------------------------------------- helpers

/** A failure ack (CONTRACT §4): `{ success: false, error, code }`. */
class Failure extends Error {
  constructor(code, error) {
    super(error);
    this.code = code;
  }
}
const invalid = (what) => new Failure("VALIDATION_FAILED", what);
const forbidden = () => new Failure("FORBIDDEN", "not a participant of this conversation, or not joined");

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const room = (conversationId) => `conversation:${conversationId}`;

function conversationIdOf(data) {
  if (!isObject(data)) throw invalid("payload must be an object");
  if (typeof data.conversationId !== "string" || !UUID.test(data.conversationId)) {
    throw invalid("/conversationId: must be a UUID");
  }
  return data.conversationId.toLowerCase();
}

/** Minimal validation of the `message` payload (the seed PRD's section 4.2 schema). */
function validateMessage(data) {
  const conversationId = conversationIdOf(data);
  const { content, type = "user", metadata = {}, clientMessageId = null } = data;
  const chars = typeof content === "string" ? [...content].length : 0;
  if (chars < 1 || chars > 10000 || content.trim() === "") {
    throw invalid("/content: 1 to 10000 characters, not only whitespace");
  }
  if (type !== "user" && type !== "ai") throw invalid('/type: must be "user" or "ai"');
  if (!isObject(metadata)) throw invalid("/metadata: must be an object");
  if (clientMessageId !== null && (typeof clientMessageId !== "string" || !UUID.test(clientMessageId))) {
    throw invalid("/clientMessageId: must be a UUID");
  }
  return { conversationId, content, type, metadata, clientMessageId: clientMessageId?.toLowerCase() ?? null };
}

const COLUMNS = "id, conversation_id, user_id, content, type, metadata, client_message_id, seq, created_at";

/** A `messages` row as the contract's message object. */
const toMessage = (r) => ({
  id: r.id,
  conversationId: r.conversation_id,
  userId: r.user_id,
  content: r.content,
  type: r.type,
  metadata: r.metadata,
  clientMessageId: r.client_message_id,
  seq: r.seq,
  createdAt: r.created_at.toISOString(),
});

async function isParticipant(conversationId, userId) {
  const { rowCount } = await pool.query(
    "SELECT 1 FROM conversation_participants WHERE conversation_id = $1 AND user_id = $2",
    [conversationId, userId],
  );
  return rowCount > 0;
}

// ---------------------------------------------------------------- the write path

/**
 * Stores one message in its own transaction. The advisory lock serializes writers of one
 * conversation, so `MAX(seq) + 1` is the next seq with no gap or repeat. A retry of a
 * (user, clientMessageId) already stored inserts nothing and returns the stored row.
 * A new message comes back with its emit slot, to be settled by the caller.
 */
async function storeMessage(m, userId) {
  const client = await pool.connect();
  let slot = null;
  try {
    await client.query("BEGIN");
    await client.query("SELECT pg_advisory_xact_lock(hashtext($1::text))", [m.conversationId]);
    const inserted = await client.query(
      `INSERT INTO messages (${COLUMNS})
       SELECT $1::uuid, $2::uuid, $3::uuid, $4::text, $5::text, $6::jsonb, $7::uuid,
              COALESCE(MAX(seq), 0) + 1, $8::timestamptz
       FROM messages WHERE conversation_id = $2::uuid
       ON CONFLICT (user_id, client_message_id) DO NOTHING
       RETURNING ${COLUMNS}`,
      [randomUUID(), m.conversationId, userId, m.content, m.type, JSON.stringify(m.metadata),
        m.clientMessageId, new Date()],
    );
    let row = inserted.rows[0];
    const duplicate = !row;
    if (!duplicate) slot = claimSlot(m.conversationId, row.seq);
    else {
      const existing = await client.query(
        `SELECT ${COLUMNS} FROM messages WHERE user_id = $1 AND client_message_id = $2`,
        [userId, m.clientMessageId],
      );
      row = existing.rows[0];
    }
    const message = toMessage(row);
    await client.query("COMMIT");
    client.release();
    return { message, duplicate, slot };
  } catch (err) {
    await client.query("ROLLBACK").catch(() => {});
    if (slot) settleSlot(slot, null);
    client.release(err); // the pool drops it: after an error it may be broken
    throw err;
  }
}

/**
 * Emit order per conversation. The advisory lock orders the commits, not the replies:
 * two transactions of one conversation can reach the event loop in the opposite order to
 * their seqs, and without this about 1 % of room deliveries went out of order at 200 msg/s
 * on this machine (CONTRACT §7.4 wants seq order). So each inserted message holds a slot
 * from its INSERT's reply until its emits; a slot's emits wait for every lower slot.
 * That is enough: a lower seq's INSERT reply was read before this process sent the COMMIT
 * that let the higher seq's transaction take the lock, so its slot already exists.
 */
const slots = new Map(); // conversationId → Set<{ seq, emit }>
function claimSlot(conversationId, seq) {
  if (!slots.has(conversationId)) slots.set(conversationId, new Set());
  const slot = { conversationId, seq, emit: null };
  slots.get(conversationId).add(slot);
  return slot;
}
/** Settles a slot with its emits, or with null when its transaction rolled back. */
function settleSlot(slot, emit) {
  const set = slots.get(slot.conversationId);
  if (emit) slot.emit = emit;
  else set.delete(slot);
  for (;;) {
    let first = null;
    for (const s of set) if (!first || s.seq < first.seq) first = s;
    if (!first?.emit) break;
    set.delete(first);
    first.emit();
  }
  if (set.size === 0) slots.delete(slot.conversationId);
}

// ---------------------------------------------------------------- Socket.IO

const http = createServer((req, res) => {
  if (req.method === "GET" && req.url === "/healthz") {
    res.writeHead(200, { "content-type": "text/plain" }).end("ok");
  } else {
    res.writeHead(404).end();
  }
});
const io = new Server(http, { maxHttpBufferSize: 64 * 1024, serveClient: false });

// Authentication (CONTRACT §3): HS256 token in the handshake `auth` (or a Bearer header).
io.use((socket, next) => {
  const header = socket.handshake.headers.authorization;
  const token = socket.handshake.auth?.token ?? (header?.startsWith("Bearer ") ? header.slice(7) : undefined);
  try {
    if (typeof token !== "string") throw new Error("missing token");
    const claims = jwt.verify(token, SECRET, { algorithms: ["HS256"] });
    if (typeof claims.sub !== "string" || !UUID.test(claims.sub)) throw new Error("sub must be a UUID");
    if (typeof claims.exp !== "number") throw new Error("exp is required");
    const role = claims.role ?? "user";
    if (role !== "user" && role !== "ai") throw new Error("unknown role");
    socket.data.user = { id: claims.sub.toLowerCase(), role, exp: claims.exp };
    next();
  } catch (err) {
    next(new Error(`UNAUTHORIZED: ${err.message}`));
  }
});

/**
 * Registers an event handler: the handler returns the success ack (or throws a Failure);
 * a thrown error becomes the failure ack, or an `error` event when there is no callback.
 * A handler may also send its ack early with `reply(ack)` (the return value is then ignored).
 */
function handle(socket, event, fn) {
  socket.on(event, async (...args) => {
    const callback = typeof args.at(-1) === "function" ? args.pop() : null;
    let replied = false;
    const reply = (r) => {
      if (!replied && callback) callback(r);
      replied = true;
    };
    try {
      if (Date.now() / 1000 >= socket.data.user.exp) {
        setImmediate(() => socket.disconnect(true));
        throw new Failure("UNAUTHORIZED", "token expired");
      }
      reply(await fn(args[0], reply));
    } catch (err) {
      if (!(err instanceof Failure)) console.error(`reference: ${event}:`, err.message);
      // Postgres and socket errors carry a `code` (SQLSTATE, ECONNREFUSED …): nothing was
      // stored, so the client may retry (UNAVAILABLE). Anything else is a bug (INTERNAL).
      const code = err instanceof Failure ? err.code : err.code !== undefined ? "UNAVAILABLE" : "INTERNAL";
      if (!callback) socket.emit("error", { event, error: err.message, code });
      reply({ success: false, error: err.message, code });
    }
  });
}

io.on("connection", (socket) => {
  const user = socket.data.user;

  handle(socket, "join_conversation", async (data) => {
    const conversationId = conversationIdOf(data);
    if (!(await isParticipant(conversationId, user.id))) throw forbidden();
    const newly = !socket.rooms.has(room(conversationId));
    // Join first, read lastSeq second: a message committed in between is then received
    // live (with seq <= lastSeq, which clients skip) rather than missed.
    socket.join(room(conversationId));
    if (newly) socket.to(room(conversationId)).emit("user_joined", { conversationId, userId: user.id });
    const { rows } = await pool.query(
      "SELECT COALESCE(MAX(seq), 0) AS last FROM messages WHERE conversation_id = $1",
      [conversationId],
    );
    return { success: true, conversationId, lastSeq: rows[0].last };
  });

  handle(socket, "leave_conversation", async (data) => {
    const conversationId = conversationIdOf(data);
    if (socket.rooms.has(room(conversationId))) {
      socket.leave(room(conversationId));
      socket.to(room(conversationId)).emit("user_left", { conversationId, userId: user.id });
    }
    return { success: true, conversationId };
  });

  // The seed PRD's section 4.1 handler: validate, store (commit), then ack and broadcast.
  handle(socket, "message", async (data, reply) => {
    const m = validateMessage(data);
    if (m.type === "ai" && user.role !== "ai") throw new Failure("FORBIDDEN", 'type "ai" needs the ai role');
    if (!socket.rooms.has(room(m.conversationId))) throw forbidden();
    const { message, duplicate, slot } = await storeMessage(m, user.id);
    try {
      reply({ success: true, message, duplicate });
    } finally {
      // Stored exactly once, so told once (a retry's ack is all it gets). Settled even if
      // the ack threw, or every later message of the conversation would wait forever.
      if (slot) {
        settleSlot(slot, () => {
          socket.to(room(m.conversationId)).emit("message", message);
          const { id, clientMessageId, conversationId, seq, createdAt } = message;
          socket.emit("message_delivered", { id, clientMessageId, conversationId, seq, createdAt });
        });
      }
    }
  });

  handle(socket, "typing", async (data) => {
    const conversationId = conversationIdOf(data);
    if (typeof data.isTyping !== "boolean") throw invalid("/isTyping: must be a boolean");
    if (!socket.rooms.has(room(conversationId))) throw forbidden();
    socket.to(room(conversationId)).emit("typing", { conversationId, userId: user.id, isTyping: data.isTyping });
    return { success: true };
  });

  handle(socket, "sync", async (data) => {
    const conversationId = conversationIdOf(data);
    const { afterSeq, limit = 100 } = data;
    if (!Number.isInteger(afterSeq) || afterSeq < 0) throw invalid("/afterSeq: an integer >= 0");
    if (!Number.isInteger(limit) || limit < 1 || limit > 500) throw invalid("/limit: an integer 1..500");
    if (!(await isParticipant(conversationId, user.id))) throw forbidden();
    const { rows } = await pool.query(
      `SELECT ${COLUMNS} FROM messages WHERE conversation_id = $1 AND seq > $2 ORDER BY seq LIMIT $3`,
      [conversationId, afterSeq, limit + 1],
    );
    const hasMore = rows.length > limit;
    return { success: true, messages: rows.slice(0, limit).map(toMessage), hasMore };
  });
});

// ---------------------------------------------------------------- lifecycle

async function shutdown(signal) {
  console.error(`reference: ${signal}, shutting down`);
  io.close(); // disconnects every socket and closes the HTTP server
  await pool.end().catch(() => {});
  process.exit(0);
}
process.once("SIGTERM", () => void shutdown("SIGTERM"));
process.once("SIGINT", () => void shutdown("SIGINT"));

try {
  await migrate();
} catch (err) {
  console.error(`reference: cannot prepare the database: ${err.message}`);
  process.exit(1);
}
http.listen(PORT, "127.0.0.1", () => console.log(`reference listening on http://127.0.0.1:${PORT}`));
