import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { createChatAdapter, MESSAGES, TurnError, visitorTimeZone, type ChatModelRunOptions, type ChatModelRunResult, type ThreadMessage } from "../src/adapter";
import { makeController, MemoryStorage } from "./helpers";

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

function userMessage(text: string, custom: Record<string, unknown> = {}): ThreadMessage {
  return { id: "u1", role: "user", content: [{ type: "text", text }], createdAt: new Date(), attachments: [], metadata: { custom } } as unknown as ThreadMessage;
}

function options(text: string, abort = new AbortController(), custom: Record<string, unknown> = {}): ChatModelRunOptions {
  return { messages: [userMessage(text, custom)], abortSignal: abort.signal, runConfig: {}, context: {} as never,
    unstable_getMessage: () => userMessage(text, custom) } as unknown as ChatModelRunOptions;
}

/** Run the adapter to the end: the texts it yielded, the metadata.custom it yielded, and what it threw. */
async function drain(gen: AsyncGenerator<ChatModelRunResult, void> | Promise<ChatModelRunResult>, onYield?: (t: string) => void) {
  const texts: string[] = [];
  const customs: Record<string, unknown>[] = [];
  try {
    for await (const r of gen as AsyncGenerator<ChatModelRunResult, void>) {
      if (r.metadata?.custom) customs.push(r.metadata.custom);
      if (!r.content) continue;
      const t = (r.content[0] as { text: string }).text;
      texts.push(t);
      onYield?.(t);
    }
    return { texts, customs, error: null as TurnError | Error | null };
  } catch (e) {
    return { texts, customs, error: e as TurnError };
  }
}

function setup(fetchImpl: (url: string, init: RequestInit) => Promise<Response>, config = {},
  timeZone: () => string | null = () => "Europe/Madrid") {
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
    timeZone,
  });
  const body = (i: number) => { const b = JSON.parse(calls[i].init.body as string); delete b.consent; return b; }; // consent: its own test
  return { ...r, adapter, calls, body, run: (text: string, abort?: AbortController, custom?: Record<string, unknown>) =>
    adapter.run(options(text, abort, custom)) };
}

const fallbacks = (names: string[]) => names.filter((n) => n === "zgc:fallback_activated");

beforeEach(() => vi.useFakeTimers());
afterEach(() => vi.useRealTimers());

describe("the SSE runtime adapter", () => {
  it("sends the first-party visitor id with each message once the notice is acknowledged, and rotates it when told", async () => {
    const local = new MemoryStorage();
    const r = makeController({}, new MemoryStorage(), local);
    r.controller.open();
    r.controller.acknowledgeGdpr();
    const bodies: Record<string, unknown>[] = [];
    let rotate = true;
    const adapter = createChatAdapter(r.controller, {
      fetch: (async (_url: string, init: RequestInit) => {
        bodies.push(JSON.parse(init.body as string));
        const s = stream();
        s.push(delta("Hi.") + done(rotate ? { visitor: "rotate" } : {}));
        s.close();
        return s.response;
      }) as typeof fetch,
      timeZone: () => null,
    });
    expect((await drain(adapter.run(options("hello")))).error).toBeNull();
    rotate = false;
    expect((await drain(adapter.run(options("again")))).error).toBeNull();
    expect(bodies[0].visitor_id).toMatch(/^[0-9a-f-]{36}$/);
    expect(bodies[1].visitor_id).toMatch(/^[0-9a-f-]{36}$/);
    expect(bodies[1].visitor_id).not.toBe(bodies[0].visitor_id);       // the erased visitor's id was replaced
    expect(bodies[1].visitor_id).not.toBe(r.controller.sessionId);
  });

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
    const sent = JSON.parse(calls[0].init.body as string);
    expect(sent).toEqual({ message: "What do you do?", timezone: "Europe/Madrid", consent: controller.consent() });
    expect(sent.consent.notice_version).toMatch(/^h[0-9a-f]+$/);   // the notice acknowledgement reaches the server
    expect(Number.isNaN(Date.parse(sent.consent.acknowledged_at))).toBe(false);
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

describe("meeting slots and the visitor's time zone", () => {
  const SLOTS = [
    { slot_id: "intro.ana.20260324T0800Z", label: "Tue 24 Mar 2026, 04:00–04:30 EDT", rep: "Ana Ruiz" },
    { slot_id: "intro.ana.20260325T1300Z", label: "Wed 25 Mar 2026, 09:00–09:30 EDT", rep: "Ana Ruiz" },
    { slot_id: "intro.ana.20260326T0830Z", label: "Thu 26 Mar 2026, 04:30–05:00 EDT", rep: "Ana Ruiz" },
  ];
  const MEETING = { label: SLOTS[1].label, rep: "Ana Ruiz", start: "2026-03-25T13:00:00Z" };

  it("sends the time zone from Intl, and none when Intl has none or throws", async () => {
    const spy = vi.spyOn(Intl, "DateTimeFormat");
    const withZone = (timeZone: unknown) => spy.mockImplementation(() => ({ resolvedOptions: () => ({ timeZone }) }) as never);
    withZone("America/New_York");
    expect(visitorTimeZone()).toBe("America/New_York");
    for (const bad of ["", undefined, 42, "x".repeat(65), "Europe/Madrid\u0000", "../../etc"]) {
      withZone(bad);
      expect(visitorTimeZone()).toBeNull();
    }
    spy.mockImplementation(() => { throw new RangeError("no Intl data"); });
    expect(visitorTimeZone()).toBeNull();
    spy.mockRestore();

    const s = stream();
    const { run, body } = setup(async () => s.response, {}, () => null);
    const p = drain(run("hi"));
    s.push(delta("Hello.") + done());
    expect((await p).error).toBeNull();
    expect(body(0)).toEqual({ message: "hi" });                       // no timezone key at all
  });

  it("a slot button's message carries its slot_id; a malformed one is not sent", async () => {
    const { run, body } = setup(async () => { const s = stream(); s.push(delta("ok") + done()); return s.response; });
    expect((await drain(run(SLOTS[1].label, undefined, { slot_id: SLOTS[1].slot_id }))).error).toBeNull();
    expect(body(0)).toEqual({ message: SLOTS[1].label, timezone: "Europe/Madrid", slot_id: SLOTS[1].slot_id });
    for (const bad of ["../../etc/passwd", "a".repeat(101), 42, ["x"], ""]) {
      await drain(run("this one", undefined, { slot_id: bad }));
    }
    expect([1, 2, 3, 4, 5].map((i) => body(i))).toEqual(Array(5).fill({ message: "this one", timezone: "Europe/Madrid" }));
  });

  it("a `slots` event goes into the message's metadata (well-formed slots only), before done", async () => {
    const s = stream();
    const { run, names } = setup(async () => s.response);
    const p = drain(run("I'm the CTO..."));
    s.push(delta("Here are 3 times that work for the team…"));
    s.push(frame("slots", { slots: [...SLOTS, { slot_id: "../etc", label: "bad id" }, { slot_id: "no-label" }, "junk", SLOTS[0]] }));
    s.push(done({ lead_level: "hot", handoff_reason: "hot_lead" }));
    const { texts, customs, error } = await p;
    expect(error).toBeNull();
    expect(texts).toEqual(["Here are 3 times that work for the team…"]);
    expect(customs).toEqual([{ slots: SLOTS }]);                      // invalid and duplicate entries dropped
    expect(names()).not.toContain("zgc:meeting_booked");
  });

  it("a `meeting` event: the confirmation in the metadata and zgc:meeting_booked with the start only", async () => {
    const s = stream();
    const { run, events, controller } = setup(async () => s.response);
    const p = drain(run(SLOTS[1].label, undefined, { slot_id: SLOTS[1].slot_id }));
    s.push(delta("You're booked: " + MEETING.label));
    s.push(frame("slots", { slots: SLOTS }) + frame("meeting", MEETING));
    await vi.advanceTimersByTimeAsync(0);
    const booked = events.find((e) => e.name === "zgc:meeting_booked");
    expect(booked?.detail).toEqual({ session_id: controller.sessionId, timestamp: expect.any(String), meeting_start: "2026-03-25T13:00:00.000Z" });
    expect(JSON.stringify(booked?.detail)).not.toMatch(/Ana|Ruiz|EDT|Wed/);    // no names, no visitor-facing text
    s.push(done());
    const { customs, error } = await p;
    expect(error).toBeNull();
    expect(customs.at(-1)).toEqual({ slots: SLOTS, meeting: { ...MEETING, start: "2026-03-25T13:00:00.000Z" } });
    expect(events.filter((e) => e.name === "zgc:meeting_booked")).toHaveLength(1);
  });

  it("malformed `slots`/`meeting` data is ignored; a meeting without a usable start reports null", async () => {
    const s = stream();
    const { run, names, events } = setup(async () => s.response);
    const p = drain(run("hi"));
    s.push(delta("ok") + "event: slots\r\ndata: {not json\r\n\r\n" + frame("slots", { slots: "no" }) + frame("slots", [1, 2]));
    s.push(frame("meeting", { rep: "no label" }) + frame("meeting", { label: "Tue 10:00", start: "soon" }) + done());
    const { customs, error } = await p;
    expect(error).toBeNull();
    expect(customs).toEqual([{ meeting: { label: "Tue 10:00", rep: "", start: null } }]);
    expect(names().filter((n) => n === "zgc:meeting_booked")).toHaveLength(1);
    expect(events.find((e) => e.name === "zgc:meeting_booked")?.detail).toMatchObject({ meeting_start: null });
  });

  it("a meeting that arrives after the conversation ended reports nothing", async () => {
    const s = stream();
    const { run, controller, names } = setup(async () => s.response);
    const p = drain(run("book it"));
    s.push(delta("You're booked"));
    await vi.advanceTimersByTimeAsync(0);
    controller.endConversation("explicit_close");
    s.push(frame("meeting", MEETING) + done());
    await p;
    expect(names()).not.toContain("zgc:meeting_booked");
  });

  it("422 invalid_timezone: the turn is sent again without the zone, and so are later turns", async () => {
    const refusal = () => new Response(JSON.stringify({ error: { code: "invalid_timezone", message: "must be an IANA zone" } }), { status: 422 });
    let n = 0;
    const { run, body, controller } = setup(async (_u, init) => {
      n++;
      if (JSON.parse(init.body as string).timezone) return refusal();
      const s = stream();
      s.push(delta("ok") + done());
      return s.response;
    }, {}, () => "America/Ciudad_Juarez");
    const first = await drain(run("hi"));
    expect(first.error).toBeNull();
    expect(first.texts).toEqual(["ok"]);
    expect([body(0), body(1)]).toEqual([{ message: "hi", timezone: "America/Ciudad_Juarez" }, { message: "hi" }]);
    expect((await drain(run("again"))).error).toBeNull();
    expect(body(2)).toEqual({ message: "again" });
    expect(n).toBe(3);
    expect(controller.current.fallback).toBeNull();
  });

  it("other 422s are inline errors and are not retried", async () => {
    const { run, calls } = setup(async () => new Response(JSON.stringify({ error: { code: "invalid_slot_id", message: "x" } }), { status: 422 }));
    const { error } = await drain(run("this one", undefined, { slot_id: "intro.x.1" }));
    expect((error as TurnError).code).toBe("invalid_slot_id");
    expect(error?.message).toBe(MESSAGES.rejected);
    expect(calls).toHaveLength(1);
  });
});
