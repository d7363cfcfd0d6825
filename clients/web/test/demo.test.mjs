// The web demo in a real browser: Debian's Chromium driven by puppeteer-core, against the
// real binaries (coachwire-harness, with ingest in demo mode) and the AI coach bot.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { mkdir, readFile } from "node:fs/promises";
import path from "node:path";
import puppeteer from "puppeteer-core";
import { Harness } from "../../js/test/harness.mjs";
import { Coach } from "../../js/examples/coach-bot/coach.mjs";
import { answerFor, ruleBasedResponder } from "../../js/examples/coach-bot/responders.mjs";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const PUBLIC = path.resolve(import.meta.dirname, "../public");
const ARTIFACTS = path.resolve(import.meta.dirname, "../test-artifacts");
const WAIT = { timeout: 30_000 };
/** The coach writes a word every this many ms: slow enough to reload and Stop mid-reply. */
const WORD_MS = 200;

/** Serves the page's files from another origin, as a separately hosted web app would. */
async function staticServer() {
  const types = { ".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".map": "application/json" };
  const server = http.createServer(async (req, res) => {
    const file = path.join(PUBLIC, new URL(req.url, "http://x").pathname.replace(/^\/+/, "") || "index.html");
    try {
      const body = await readFile(file.startsWith(PUBLIC) ? file : PUBLIC);
      res.writeHead(200, { "content-type": types[path.extname(file)] ?? "application/octet-stream" });
      res.end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, origin: `http://127.0.0.1:${server.address().port}` };
}

let harness, browser, coach, allowed, foreign, url;

before(async () => {
  await mkdir(ARTIFACTS, { recursive: true });
  [allowed, foreign] = [await staticServer(), await staticServer()];
  harness = await Harness.start([
    "--env", "COACHWIRE_DEMO=true",
    "--env", `COACHWIRE_DEMO_DIR=${PUBLIC}`,
    "--env", `COACHWIRE_CORS_ORIGINS=${allowed.origin}`,
  ]);
  url = harness.urls[0];
  const { users } = await (await fetch(`${url}/demo/api/users`)).json();
  const coachUser = users.find((u) => u.role === "ai");
  const { token } = await (
    await fetch(`${url}/demo/api/token`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ userId: coachUser.userId }),
    })
  ).json();
  coach = new Coach({ url, token, responder: ruleBasedResponder({ wordDelayMs: WORD_MS }), discoverEveryMs: 500, log: () => {} });
  await coach.start();
  browser = await puppeteer.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox"] });
});

after(async () => {
  await browser?.close();
  await coach?.stop();
  await harness?.stop();
  allowed?.server.close();
  foreign?.server.close();
});

/** A fresh browser context (its own storage, like another person's window) on `pageUrl`,
 * logged in as `name`. Page errors and any XSS marker are recorded. */
async function openAs(name, pageUrl = `${url}/demo/`) {
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  page.errors = [];
  page.on("pageerror", (e) => page.errors.push(String(e)));
  page.on("response", (r) => r.status() >= 400 && page.errors.push(`${r.status()} ${r.url()}`));
  page.on("dialog", async (d) => {
    page.errors.push(`dialog: ${d.message()}`);
    await d.dismiss();
  });
  await page.setViewport({ width: 1100, height: 760 });
  await page.goto(pageUrl);
  await page.locator(`#users ::-p-text(${name})`).click();
  await page.waitForSelector("#app:not([hidden])", WAIT);
  page.context = context;
  return page;
}

/** The rendered messages: seq, status and text, in DOM order. */
function rendered(page) {
  return page.$$eval("#messages li.message", (items) =>
    items.map((li) => ({
      seq: li.dataset.seq ? Number(li.dataset.seq) : null,
      status: li.dataset.status ?? null,
      text: li.querySelector(".text")?.textContent,
      ai: li.classList.contains("ai"),
    })),
  );
}

/** Waits until the page shows every text in `texts`, each as a stored message. */
function showsStored(page, texts) {
  return page.waitForFunction(
    (wanted) => {
      const stored = [...document.querySelectorAll("#messages li[data-seq]")].map((li) => li.querySelector(".text").textContent);
      return wanted.every((t) => stored.includes(t));
    },
    WAIT,
    texts,
  );
}

/** Stored messages in ascending seq, each once (a streamed reply's end takes a seq of its
 * own, §14, so a message's seqs may skip one), and nothing left unstored. */
function assertExactlyOnce(messages) {
  const stored = messages.filter((m) => m.seq !== null);
  const seqs = stored.map((m) => m.seq);
  assert.deepEqual(seqs, [...new Set(seqs)].sort((a, b) => a - b), "ascending seq, each once");
  assert.equal(messages.length, stored.length, "nothing left unstored");
}

/** Starts a conversation with the first person offered and waits until it is open. */
async function startConversation(page) {
  await page.select("#new-with", await page.$eval("#new-with option", (o) => o.value));
  await page.click("#new-conversation button");
  await page.waitForFunction(() => !document.querySelector("#input").disabled, WAIT);
}

async function send(page, text) {
  await page.type("#input", text);
  await page.keyboard.press("Enter");
}

describe("the web demo", () => {
  let alice, bob;

  test("two windows chat, with ticks and typing", async () => {
    alice = await openAs("Alice");
    bob = await openAs("Bob");
    await startConversation(alice);
    await bob.waitForSelector("#conversations button", WAIT);
    await bob.waitForFunction(() => !document.querySelector("#input").disabled, WAIT);

    await alice.type("#input", "thinking…");
    await bob.waitForFunction(() => document.querySelector("#typing").textContent.includes("Alice is typing"), WAIT);
    await alice.$eval("#input", (i) => (i.value = ""));

    const fromAlice = ["Hi Bob, where would you put the stop on this trade?", "And how big a position?"];
    for (const text of fromAlice) await send(alice, text);
    await alice.waitForSelector('#messages li.mine[data-status="acked"] .ticks', WAIT); // the single ✓ is seen
    await send(bob, "Right under the last swing low, I think.");
    const all = [...fromAlice, "Right under the last swing low, I think."];
    await showsStored(alice, all);
    await showsStored(bob, all);
    await alice.waitForFunction(
      () => [...document.querySelectorAll("#messages li.mine")].every((li) => li.dataset.status === "delivered"),
      WAIT,
    );
    const ticks = await alice.$$eval("#messages li.mine .ticks", (t) => t.map((x) => x.textContent));
    assert.ok(ticks.length >= 2 && ticks.every((t) => t === "✓✓"), `two ticks once delivered: ${ticks}`);

    assert.deepEqual((await rendered(bob)).filter((m) => m.ai), [], "in a group the coach answers @coach only");
    assertExactlyOnce(await rendered(alice));
    assertExactlyOnce(await rendered(bob));
    assert.deepEqual(await alice.$$eval("#messages li.day", (d) => d.map((x) => x.textContent)), ["Today"], "a date separator");
    assert.deepEqual([...alice.errors, ...bob.errors], [], "no page errors or failed requests (a favicon included)");
    await alice.screenshot({ path: path.join(ARTIFACTS, "chat-alice.png") });
    await bob.screenshot({ path: path.join(ARTIFACTS, "chat-bob.png") });
    await bob.setViewport({ width: 390, height: 760 });
    await bob.screenshot({ path: path.join(ARTIFACTS, "chat-bob-phone.png") });
    await bob.setViewport({ width: 1100, height: 760 });
  });

  test("the coach's answer streams in, a reload mid-reply shows the text so far, and Stop ends it", async () => {
    const question = "@coach should I hold through earnings?";
    await send(alice, question);
    const full = answerFor(question).answer;
    const lastReply = (page) =>
      page.evaluate(() => {
        const li = [...document.querySelectorAll("#messages li.ai")].at(-1);
        return li ? { reply: li.dataset.reply, text: li.querySelector(".text").textContent } : null;
      });
    const grows = (page, than) =>
      page.waitForFunction(
        (length) => {
          const li = [...document.querySelectorAll("#messages li.ai")].at(-1);
          return li?.dataset.reply === "streaming" && li.querySelector(".text").textContent.length > length;
        },
        WAIT,
        than,
      );
    await grows(bob, 0);
    const early = await lastReply(bob);
    await grows(bob, early.text.length);
    assert.ok(full.startsWith(early.text), "the text so far is the answer's beginning");

    await bob.reload();
    await bob.locator("#users ::-p-text(Bob)").click();
    await grows(bob, 0);
    const afterReload = await lastReply(bob);
    assert.equal(afterReload.reply, "streaming");
    assert.ok(full.startsWith(afterReload.text) && afterReload.text.length >= early.text.length, "the text so far, after a reload");
    await bob.waitForFunction(() => [...document.querySelectorAll("#messages li.ai")].at(-1)?.dataset.reply === "complete", WAIT);
    assert.equal((await lastReply(bob)).text, full);
    assert.equal(await bob.$$eval("#messages li.ai .caret, #messages li.ai .stop", (e) => e.length), 0, "no caret or Stop once complete");

    const stopped = "@coach is 10x leverage too much?";
    await send(alice, stopped);
    await alice.waitForFunction((q) => {
      const li = [...document.querySelectorAll("#messages li.ai")].at(-1);
      const asked = [...document.querySelectorAll("#messages li.mine .text")].some((t) => t.textContent === q);
      return asked && li?.dataset.reply === "streaming" && li.querySelector(".text").textContent.length > 0 && li.dataset.seq > 0;
    }, WAIT, stopped);
    await alice.evaluate(() => [...document.querySelectorAll("#messages li.ai")].at(-1).querySelector(".stop").click());
    for (const page of [alice, bob]) {
      await page.waitForFunction(() => [...document.querySelectorAll("#messages li.ai")].at(-1)?.dataset.reply === "cancelled", WAIT);
      const { text } = await lastReply(page);
      assert.ok(text.length < answerFor(stopped).answer.length && answerFor(stopped).answer.startsWith(text), "stopped part-way");
      const note = await page.evaluate(() => [...document.querySelectorAll("#messages li.ai")].at(-1).querySelector(".reply-note")?.textContent);
      assert.equal(note, "stopped");
    }
    assertExactlyOnce(await rendered(alice));
    assertExactlyOnce(await rendered(bob));
    await alice.screenshot({ path: path.join(ARTIFACTS, "reply-stopped-alice.png") });
  });

  test("more tabs than the old per-IP limit all connect", async () => {
    const tabs = [];
    for (let i = 0; i < 7; i++) tabs.push(await openAs(i % 2 ? "Bob" : "Alice"));
    for (const tab of tabs) {
      await tab.waitForFunction(() => document.body.dataset.connection === "connected", WAIT);
      assert.equal(await tab.$eval("#notice", (n) => n.hidden), true, "no error shown");
      await tab.context.close();
    }
  });

  test("a refused token is shown with its code", async () => {
    const context = await browser.createBrowserContext();
    const page = await context.newPage();
    await page.setRequestInterception(true);
    page.on("request", (request) =>
      request.url().endsWith("/demo/api/token")
        ? request.respond({ status: 200, contentType: "application/json", body: JSON.stringify({ token: "not-a-token" }) })
        : request.continue(),
    );
    await page.goto(`${url}/demo/`);
    await page.locator("#users ::-p-text(Alice)").click();
    await page.waitForSelector("#notice:not([hidden])", WAIT);
    assert.match(await page.$eval("#notice-text", (n) => n.textContent), /^UNAUTHORIZED: /);
    await page.screenshot({ path: path.join(ARTIFACTS, "refused-token.png") });
    await context.close();
  });

  test("a server restart shows the banner on both pages, then every message once", async () => {
    await harness.command({ cmd: "kill", service: "ingest" });
    await alice.waitForSelector("#banner:not([hidden])", WAIT);
    await bob.waitForSelector("#banner:not([hidden])", WAIT);
    await alice.screenshot({ path: path.join(ARTIFACTS, "reconnecting-alice.png") });
    await send(alice, "sent while the server was down");
    await harness.command({ cmd: "restart", service: "ingest" });
    await alice.waitForSelector("#banner[hidden]", WAIT);
    await bob.waitForSelector("#banner[hidden]", WAIT);
    await send(bob, "back again");
    await showsStored(alice, ["sent while the server was down", "back again"]);
    await showsStored(bob, ["sent while the server was down", "back again"]);
    await alice.waitForFunction(() => document.querySelectorAll("#messages li.message:not([data-seq])").length === 0, WAIT);
    assertExactlyOnce(await rendered(alice));
    assertExactlyOnce(await rendered(bob));
    for (const page of [alice, bob]) {
      const texts = (await rendered(page)).map((m) => m.text);
      assert.equal(texts.filter((t) => t === "sent while the server was down").length, 1, "the outbox sent it once");
    }
  });

  test("an XSS corpus is rendered as inert text", async () => {
    const corpus = [
      `<script>window.__xss = "script"</script>`,
      `<img src=x onerror="window.__xss='img'">`,
      `<a href="javascript:window.__xss='link'">click me</a>`,
      `<svg onload="window.__xss='svg'"><circle r="5"/></svg>`,
      `<iframe src="javascript:parent.__xss='iframe'"></iframe>`,
      `\u202Egnp.exe\u202C <b>bold?</b>`,
      `"><style>*{display:none}</style>`,
    ];
    for (const text of corpus) await send(alice, text);
    await showsStored(bob, corpus);
    await showsStored(alice, corpus);
    for (const page of [alice, bob]) {
      assert.equal(await page.evaluate(() => window.__xss), undefined, "no payload ran");
      const tags = await page.$$eval("#messages *", (els) => [...new Set(els.map((e) => e.tagName))]);
      assert.deepEqual(tags.sort(), ["LI", "SPAN"], "no element was injected");
      const texts = (await rendered(page)).map((m) => m.text);
      for (const text of corpus) assert.ok(texts.includes(text), `shown as typed: ${text}`);
      assert.deepEqual(page.errors, [], "no page errors or dialogs");
    }
    await bob.screenshot({ path: path.join(ARTIFACTS, "xss-bob.png") });
  });

  test("the page's CSP forbids inline scripts", async () => {
    const response = await fetch(`${url}/demo/`);
    const csp = response.headers.get("content-security-policy") ?? "";
    assert.match(csp, /script-src 'self'(;|$)/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
    const ran = await alice.evaluate(() => {
      const s = document.createElement("script");
      s.textContent = "window.__inline = true";
      document.body.append(s);
      return window.__inline === true;
    });
    assert.equal(ran, false, "an injected inline script does not run");
  });

  test("a page on an allowed origin chats with the default transports; another origin is refused", async () => {
    const remote = await openAs("Carol", `${allowed.origin}/index.html?server=${encodeURIComponent(url)}`);
    await remote.waitForSelector("#conversations ::-p-text(No conversations yet)", WAIT);
    await startConversation(remote);
    await send(remote, "hello from another origin");
    await remote.waitForFunction(
      () => [...document.querySelectorAll("#messages li.mine")].some((li) => li.dataset.status === "delivered"),
      WAIT,
    );
    const transport = await remote.evaluate(() => performance.getEntriesByType("resource").some((r) => r.name.includes("transport=polling")));
    assert.ok(transport, "socket.io-client started with its default polling transport");

    const context = await browser.createBrowserContext();
    const refused = await context.newPage();
    await refused.goto(`${foreign.origin}/index.html?server=${encodeURIComponent(url)}`);
    await refused.waitForFunction(() => document.querySelector("#login").textContent.includes("Could not start"), WAIT);
    assert.equal(await refused.$$eval("#users button", (b) => b.length), 0, "no demo users from a refused origin");
    await context.close();
  });
});
