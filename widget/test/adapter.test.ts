import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { ChatModelRunOptions, ChatModelRunResult, ThreadMessage } from "@assistant-ui/react";
import { createChatAdapter, MESSAGES, TurnError } from "../src/adapter";
import { makeController } from "./helpers";

const enc = new TextEncoder();
const frame = (event: string, data: unknown) => `event: ${event}\r\ndata: ${JSON.stringify(data)}\r\n\r\n`;
const delta = (content: string) => frame("delta", { type: "text_delta", content });
const done = (extra: object = {}) => frame("done", { session_id: "x", turn_index: 1, lead_level: "cold", stage: 2, handoff_reason: null, ...extra });

const failOnAbort = new WeakMap<Response, (e: unknown) => void>();

/** A streamed response whose chunks the test pushes; `close()` ends it. Aborting the request errors it, as fetch does. */
function stream(headers: Record<string, string> = { "content-type": "text/event-stream" }) {
  let ctl!: ReadableStreamDefaultController<Uint8Array>;
  const body = new ReadableStream<Uint8Array>({ start: (c) => { ctl = c; } });
  const response = new Response(body, { status: 200, headers });
  const error = (e: unknown) => { try { ctl.error(e); } catch { /* already closed */ } };
  failOnAbort.set(response, error);
  return { response, push: (s: string) => ctl.enqueue(enc.encode(s)), close: () => ctl.close(), error };
}

function userMessage(text: string): ThreadMessage {
  return { id: "u1", role: "user", content: [{ type: "text", text }], createdAt: new Date(), attachments: [], metadata: { custom: {} } } as unknown as ThreadMessage;
}

function options(text: string, abort = new AbortController()): ChatModelRunOptions {
  return { messages: [userMessage(text)], abortSignal: abort.signal, runConfig: {}, context: {} as never,
    unstable_getMessage: () => userMessage(text) } as unknown as ChatModelRunOptions;
}

/** Run the adapter to the end: the texts it yielded, and what it threw. */
async function drain(gen: AsyncGenerator<ChatModelRunResult, void> | Promise<ChatModelRunResult>, onYield?: (t: string) => void) {
  const texts: string[] = [];
  try {
    for await (const r of gen as AsyncGenerator<ChatModelRunResult, void>) {
      const t = (r.content?.[0] as { text: string }).text;
      texts.push(t);
      onYield?.(t);
    }
    return { texts, error: null as TurnError | Error | null };
  } catch (e) {
    return { texts, error: e as TurnError };
  }
}

function setup(fetchImpl: (url: string, init: RequestInit) => Promise<Response>, config = {}) {
  const r = makeController(config);
  r.controller.open();
  r.controller.acknowledgeGdpr();
  r.events.length = 0;
  const calls: { url: string; init: RequestInit }[] = [];
  const adapter = createChatAdapter(r.controller, {
    fetch: (async (url: string, init: RequestInit) => {
      calls.push({ url, init });
      const res = await fetchImpl(url, init);
      init.signal?.addEventListener("abort", () => failOnAbort.get(res)?.(new DOMException("The operation was aborted.", "AbortError")));
      return res;
    }) as typeof fetch,
  });
  return { ...r, adapter, calls, run: (text: string, abort?: AbortController) => adapter.run(options(text, abort)) };
}

const fallbacks = (names: string[]) => names.filter((n) => n === "zgc:fallback_activated");

beforeEach(() => vi.useFakeTimers());
afterEach(() => vi.useRealTimers());

describe("the SSE runtime adapter", () => {
  it("posts the message with the session header and yields the text as each token arrives", async () => {
    const s = stream();
    const { run, calls, controller, names } = setup(async () => s.response);
    const seen: string[] = [];
    const p = drain(run("  What do you do?  "), (t) => seen.push(t));
    await vi.advanceTimersByTimeAsync(0);
    s.push(": ping\r\n\r\n" + delta("We "));
    await vi.advanceTimersByTimeAsync(0);
    expect(seen).toEqual(["We "]);                        // rendered before the rest exists
    s.push(delta("build") + delta(" AI systems."));
    s.push(done({ lead_level: "warm" }));
    const { texts, error } = await p;
    expect(error).toBeNull();
    expect(texts).toEqual(["We ", "We build", "We build AI systems."]);
    expect(calls[0].url).toBe("https://api.example.com/chat");
    expect(calls[0].init.method).toBe("POST");
    expect(calls[0].init.headers).toEqual({ "Content-Type": "application/json", "ZGC-Session-ID": controller.sessionId });
    expect(JSON.parse(calls[0].init.body as string)).toEqual({ message: "What do you do?" });
    expect(calls[0].init.credentials).toBe("omit");
    expect(names()).toEqual(["zgc:first_message_sent", "zgc:qualification_state_changed"]);
    expect(controller.firstTurn).toBe(false);
  });

  it("escalation: a done event with a handoff reason", async () => {
    const s = stream();
    const { run, events } = setup(async () => s.response);
    const p = drain(run("I'm the CTO..."));
    s.push(delta("Let me connect you.") + done({ lead_level: "hot", stage: 3, handoff_reason: "hot_lead" }));
    s.close();
    expect((await p).error).toBeNull();
    expect(events.at(-1)).toMatchObject({ name: "zgc:escalation_triggered", detail: { handoff_reason: "hot_lead", lead_level: "hot" } });
  });

  describe("first turn: the fallback table", () => {
    it("connection error → fallback immediately", async () => {
      const { run, names, controller } = setup(async () => { throw new TypeError("Failed to fetch"); });
      const { error } = await drain(run("hi"));
      expect(error).toBeInstanceOf(TurnError);
      expect(controller.current.fallback).toBe("connection_error");
      expect(fallbacks(names())).toHaveLength(1);
    });

    it("HTTP 5xx → fallback immediately", async () => {
      for (const code of [500, 502, 503, 504]) {
        const { run, controller } = setup(async () => new Response("oops", { status: code }));
        await drain(run("hi"));
        expect(controller.current.fallback).toBe("http_error");
      }
    });

    it("no first token within STREAM_TIMEOUT_MS → fallback after the timeout (pings do not count)", async () => {
      const s = stream();
      const { run, controller, calls } = setup(async () => s.response);
      const p = drain(run("hi"));
      await vi.advanceTimersByTimeAsync(5000);
      s.push(": ping\r\n\r\n");
      await vi.advanceTimersByTimeAsync(4999);
      expect(controller.current.fallback).toBeNull();
      await vi.advanceTimersByTimeAsync(1);
      const { error } = await p;
      expect((error as TurnError).code).toBe("stream_timeout");
      expect(controller.current.fallback).toBe("stream_timeout");
      expect((calls[0].init.signal as AbortSignal).aborted).toBe(true);   // the request is abandoned
    });

    it("a timeout while connecting counts too; stream-timeout-ms overrides the default", async () => {
      const { run, controller } = setup((_u, init) => new Promise((_, reject) =>
        init.signal!.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError")))), { streamTimeoutMs: 1500 });
      const p = drain(run("hi"));
      await vi.advanceTimersByTimeAsync(1500);
      await p;
      expect(controller.current.fallback).toBe("stream_timeout");
    });

    it("a stream that closes before any token, or a 200 that is not an event stream, is a failed connection", async () => {
      const s = stream();
      const a = setup(async () => s.response);
      const p = drain(a.run("hi"));
      s.close();
      await p;
      expect(a.controller.current.fallback).toBe("connection_error");
      const b = setup(async () => new Response("<html>captive portal</html>", { status: 200, headers: { "content-type": "text/html" } }));
      await drain(b.run("hi"));
      expect(b.controller.current.fallback).toBe("http_error");
    });

    it("a 4xx refusal is inline, never a fallback, and the next turn is still a first turn", async () => {
      const body = JSON.stringify({ error: { code: "rate_limited", message: "too many messages; slow down" } });
      const { run, controller, names } = setup(async () => new Response(body, { status: 429 }));
      const { error } = await drain(run("hi"));
      expect(error?.message).toBe(MESSAGES.rateLimited);
      expect(controller.current.fallback).toBeNull();
      expect(controller.firstTurn).toBe(true);
      expect(fallbacks(names())).toEqual([]);
    });
  });

  describe("later turns: inline errors only", () => {
    async function afterOneTurn(next: (url: string, init: RequestInit) => Promise<Response>, config = {}) {
      let n = 0;
      const first = stream();
      const ctx = setup((u, i) => (n++ === 0 ? Promise.resolve(first.response) : next(u, i)), config);
      const p = drain(ctx.run("first"));
      first.push(delta("ok") + done());
      expect((await p).error).toBeNull();
      return ctx;
    }

    it("connection error, 5xx and timeout on a later turn do not activate the fallback", async () => {
      for (const [next, code, message] of [
        [async () => { throw new TypeError("Failed to fetch"); }, "connection_error", MESSAGES.retry],
        [async () => new Response("x", { status: 503 }), "http_error", MESSAGES.retry],
        [async () => stream().response, "stream_timeout", MESSAGES.timeout],
      ] as const) {
        const ctx = await afterOneTurn(next);
        const p = drain(ctx.run("second"));
        await vi.advanceTimersByTimeAsync(10_000);
        const { error } = await p;
        expect((error as TurnError).code).toBe(code);
        expect(error?.message).toBe(message);
        expect(ctx.controller.current.fallback).toBeNull();
        expect(fallbacks(ctx.names())).toEqual([]);
      }
    });

    it("a stream cut after some tokens keeps the text and says it was interrupted", async () => {
      const s = stream();
      const ctx = await afterOneTurn(async () => s.response);
      const p = drain(ctx.run("second"));
      s.push(delta("Half an ans"));
      await vi.advanceTimersByTimeAsync(0);
      s.error(new TypeError("network error"));
      const { texts, error } = await p;
      expect(texts).toEqual(["Half an ans"]);
      expect(error?.message).toBe(MESSAGES.interrupted);
      expect(ctx.controller.current.fallback).toBeNull();
    });
  });

  it("the backend's error event is inline even on the first turn; session_expired ends the conversation", async () => {
    const s = stream();
    const { run, controller } = setup(async () => s.response);
    const p = drain(run("hi"));
    s.push(frame("error", { code: "turn_failed", message: "the turn could not be completed" }));
    expect((await p).error?.message).toBe(MESSAGES.retry);
    expect(controller.current.fallback).toBeNull();

    const e = stream();
    const ctx = setup(async () => e.response);
    const q = drain(ctx.run("hi"));
    e.push(frame("error", { code: "session_expired", message: "expired" }));
    expect((await q).error?.message).toBe(MESSAGES.expired);
    expect(ctx.events.at(-1)).toMatchObject({ name: "zgc:conversation_ended", detail: { termination_type: "session_expiry" } });
  });

  it("cancelling the run aborts the request and reports an AbortError (assistant-ui marks it cancelled)", async () => {
    const s = stream();
    const { run, calls, controller } = setup(async () => s.response);
    const abort = new AbortController();
    const p = drain(run("hi", abort));
    s.push(delta("Hel"));
    await vi.advanceTimersByTimeAsync(0);
    abort.abort();
    const { error } = await p;
    expect(error?.name).toBe("AbortError");
    expect((calls[0].init.signal as AbortSignal).aborted).toBe(true);
    expect(controller.current.fallback).toBeNull();
  });

  it("never sends before the notice is acknowledged", async () => {
    const r = makeController();
    let fetched = false;
    const adapter = createChatAdapter(r.controller, { fetch: (async () => { fetched = true; return new Response(); }) as typeof fetch });
    const { error } = await drain(adapter.run(options("hi")));
    expect(error?.message).toMatch(/privacy notice/);
    expect(fetched).toBe(false);
  });
});
