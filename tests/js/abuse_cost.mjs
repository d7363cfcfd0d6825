// What the abuse limits of §6 cost and save, measured on a private stack:
//   node tests/js/abuse_cost.mjs [rooms]       (after cargo build --workspace)
// 1. conversation creation: one user POSTing as fast as 8 requests in flight allow, 5 s;
// 2. ingest RSS per joined room: one coach socket (exempt from the room limit) joins
//    `rooms` conversations (default 5000), then leaves them all; RSS read from /proc.
// Prints one JSON document. A measuring tool, not a test: it asserts nothing.
import { readFile } from "node:fs/promises";
import { io } from "socket.io-client";
import { Harness } from "../../clients/js/test/harness.mjs";

const rooms = Number(process.argv[2] ?? 5000);

async function rssKiB(pid) {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+)/.exec(status)[1]);
}

async function creationRate(url, token, seconds = 5) {
  const counts = { created: 0, limited: 0, other: 0 };
  const until = Date.now() + seconds * 1000;
  const worker = async () => {
    while (Date.now() < until) {
      const response = await fetch(`${url}/api/conversations`, {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: JSON.stringify({ participantIds: [] }),
      });
      await response.arrayBuffer();
      const key = response.status === 201 ? "created" : response.status === 429 ? "limited" : "other";
      counts[key]++;
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
  return { seconds, ...counts, createdPerSecond: counts.created / seconds };
}

function emitAck(socket, event, payload) {
  return new Promise((resolve) => socket.emit(event, payload, resolve));
}

async function roomCost(harness, pid) {
  const coach = await harness.user("ai");
  const ids = [];
  for (let i = 0; i < rooms; i++) ids.push(await harness.conversation(coach));
  const socket = io(harness.urls[0], { auth: { token: coach.token }, transports: ["websocket"] });
  await new Promise((resolve) => socket.on("connect", resolve));
  // In batches: acks past the socket's 1024-packet outgoing queue would be dropped.
  const each = async (event) => {
    const acks = [];
    for (let i = 0; i < ids.length; i += 500) {
      const batch = ids.slice(i, i + 500).map((conversationId) => emitAck(socket, event, { conversationId }));
      acks.push(...(await Promise.all(batch)));
    }
    return acks.filter((a) => a.success).length;
  };
  const joinAll = () => each("join_conversation");
  const leaveAll = () => each("leave_conversation");
  const before = await rssKiB(pid);
  const joined = await joinAll();
  const afterJoin = await rssKiB(pid);
  await leaveAll();
  // Room actors retire on their own task after the last leave: give them a moment.
  await new Promise((resolve) => setTimeout(resolve, 3000));
  const afterLeave = await rssKiB(pid);
  await joinAll();
  const afterSecondJoin = await rssKiB(pid);
  await leaveAll();
  socket.close();
  return {
    rooms: joined,
    rssKiB: { before, afterJoin, afterLeave, afterSecondJoin },
    bytesPerRoom: Math.round(((afterJoin - before) * 1024) / joined),
    returnedToTheOsAfterLeave: `${Math.round((100 * (afterJoin - afterLeave)) / Math.max(1, afterJoin - before))}%`,
    grewOnTheSecondRound: `${Math.round((100 * (afterSecondJoin - afterJoin)) / Math.max(1, afterJoin - before))}%`,
  };
}

const harness = await Harness.start([]);
try {
  const { pid } = await harness.command({ cmd: "pid", service: "ingest" });
  const person = await harness.user();
  const creation = await creationRate(harness.urls[0], person.token);
  const joinedRooms = await roomCost(harness, pid);
  console.log(JSON.stringify({ creation, joinedRooms }, null, 2));
} finally {
  await harness.stop();
}
