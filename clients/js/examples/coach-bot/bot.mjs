#!/usr/bin/env node
// Runs the AI coach against a coachwire deployment until Ctrl-C.
//
//   COACHWIRE_URL=http://127.0.0.1:3000 COACH_TOKEN=<a token with role "ai"> \
//     node clients/js/examples/coach-bot/bot.mjs
//
// Answers come from the built-in rules, or from an OpenAI-compatible chat-completions
// endpoint when COACH_LLM_URL is set (COACH_LLM_MODEL, COACH_LLM_API_KEY or
// OPENAI_API_KEY, COACH_LLM_TIMEOUT_MS). See README.md next to this file.
import { Coach } from "./coach.mjs";
import { responderFromEnv } from "./responders.mjs";

const url = process.env.COACHWIRE_URL ?? "http://127.0.0.1:3000";
const token = process.env.COACH_TOKEN;
if (!token) {
  console.error("coach-bot: set COACH_TOKEN to a token with role \"ai\" (coachwire-ingest token --user <uuid> --role ai)");
  process.exit(2);
}
const responder = responderFromEnv();
const coach = new Coach({ url: url.split(","), token, responder });
await coach.start();
console.error(`coach-bot: answering as ${coach.userId} with the ${responder.name} responder in ${coach.joining.size} conversation(s)`);
const stop = async () => {
  await coach.stop();
  process.exit(0);
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
