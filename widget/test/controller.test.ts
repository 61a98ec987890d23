import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { FALLBACK_STORAGE_KEY, GDPR_STORAGE_KEY, INACTIVITY_TIMEOUT_MS, PROACTIVE_STORAGE_KEY, VISITOR_ID_STORAGE_KEY } from "../src/constants";
import { ChatController } from "../src/controller";
import { CONFIG, makeController, MemoryStorage } from "./helpers";

const SID1 = "00000000-0000-4000-8000-000000000001";
const SID2 = "00000000-0000-4000-8000-000000000002";

beforeEach(() => vi.useFakeTimers());
afterEach(() => vi.useRealTimers());

describe("session and GDPR notice", () => {
  it("one UUID session id per controller (page load), in every event", () => {
    const { controller, events } = makeController();
    expect(controller.sessionId).toBe(SID1);
    controller.open();
    controller.acknowledgeGdpr();
    expect(events.map((e) => e.detail.session_id)).toEqual([SID1, SID1]);
    expect(events[0].detail.timestamp).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  });

  it("nothing can be sent before the notice is acknowledged; the acknowledgement lives in sessionStorage", () => {
    const storage = new MemoryStorage();
    const { controller, names } = makeController({}, storage);
    controller.open();
    expect(controller.current.gdprAcknowledged).toBe(false);
    expect(() => controller.beginTurn("hello")).toThrow(/privacy notice/);
    expect(names()).toEqual(["zgc:chat_opened"]);
    controller.acknowledgeGdpr();
    controller.acknowledgeGdpr();                         // once
    expect(storage.getItem(GDPR_STORAGE_KEY)).toBe("true");
    expect(names()).toEqual(["zgc:chat_opened", "zgc:gdpr_acknowledged"]);
    expect(controller.beginTurn("hello")).toBe(SID1);
    // the next page load in the same browser session does not show it again
    expect(makeController({}, storage).controller.current.gdprAcknowledged).toBe(true);
  });

  it("without sessionStorage the notice is shown again on each open (the spec's accepted degradation)", () => {
    const { controller } = makeController({}, null);
    controller.open();
    controller.acknowledgeGdpr();
    expect(controller.current.gdprAcknowledged).toBe(true);
    controller.close();
    controller.open();
    expect(controller.current.gdprAcknowledged).toBe(false);
  });

  it("a storage that throws behaves as no storage", () => {
    const broken = { getItem: () => { throw new Error("SecurityError"); }, setItem: () => { throw new Error("QuotaExceeded"); } };
    const { controller } = makeController({}, broken);
    controller.open();
    expect(() => controller.acknowledgeGdpr()).not.toThrow();
  });
});

describe("the first-party visitor id (returning visitors)", () => {
  it("exists only once the notice is acknowledged, lives in localStorage and is the same on the next visit", () => {
    const local = new MemoryStorage();
    const { controller } = makeController({}, new MemoryStorage(), local);
    expect(controller.visitorId()).toBeNull();                   // no consent yet: nothing written, nothing sent
    expect(local.data.size).toBe(0);
    controller.acknowledgeGdpr();
    const id = controller.visitorId();
    expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(id).not.toBe(controller.sessionId);                   // not the session id
    expect(local.getItem(VISITOR_ID_STORAGE_KEY)).toBe(id);
    const nextVisit = makeController({}, new MemoryStorage(), local).controller;   // a new browser session, same site
    nextVisit.acknowledgeGdpr();
    expect(nextVisit.visitorId()).toBe(id);
  });

  it("is replaced when the server says the visitor was erased, and a tampered value is replaced too", () => {
    const local = new MemoryStorage();
    const { controller } = makeController({}, new MemoryStorage(), local);
    controller.acknowledgeGdpr();
    const id = controller.visitorId();
    controller.completeTurn(controller.sessionId, { turn_index: 1, lead_level: "cold", visitor: "rotate" });
    const fresh = controller.visitorId();
    expect(fresh).not.toBe(id);
    expect(local.getItem(VISITOR_ID_STORAGE_KEY)).toBe(fresh);
    controller.completeTurn(controller.sessionId, { turn_index: 2, lead_level: "cold", visitor: "keep" });
    expect(controller.visitorId()).toBe(fresh);                  // only "rotate" rotates
    local.setItem(VISITOR_ID_STORAGE_KEY, "<script>fingerprint</script>");
    expect(controller.visitorId()).not.toContain("script");
  });

  it("without localStorage (or one that throws) there is no visitor id and nothing breaks", () => {
    const { controller } = makeController();
    controller.acknowledgeGdpr();
    expect(controller.visitorId()).toBeNull();
    const throwing = { getItem: () => { throw new Error("denied"); }, setItem: () => { throw new Error("denied"); } };
    const t = makeController({}, new MemoryStorage(), throwing).controller;
    t.acknowledgeGdpr();
    expect(t.visitorId()).toBeNull();
    expect(() => t.rotateVisitorId()).not.toThrow();
  });
});

describe("turns and analytics events", () => {
  function ready() {
    const r = makeController();
    r.controller.open();
    r.controller.acknowledgeGdpr();
    r.events.length = 0;
    return r;
  }

  it("first message, contact captured without the address, lead level changes, escalation", () => {
    const { controller, events, names } = ready();
    expect(controller.firstTurn).toBe(true);
    const sid = controller.beginTurn("hi");
    controller.completeTurn(sid, { lead_level: "cold", handoff_reason: null });   // cold is the starting level: no change
    expect(controller.firstTurn).toBe(false);
    controller.beginTurn("I'm the CTO, write to maria.lopez@acme.example");
    controller.completeTurn(sid, { lead_level: "hot", handoff_reason: "hot_lead", stage: 3 });
    controller.beginTurn("and again: maria@acme.example");                         // captured once per conversation
    controller.completeTurn(sid, { lead_level: "hot", handoff_reason: null });
    expect(names()).toEqual(["zgc:first_message_sent", "zgc:contact_captured", "zgc:qualification_state_changed",
      "zgc:escalation_triggered"]);
    expect(events[2].detail).toMatchObject({ lead_level: "hot" });
    expect(events[3].detail).toMatchObject({ handoff_reason: "hot_lead", lead_level: "hot" });
    expect(JSON.stringify(events)).not.toMatch(/maria|acme|CTO/);
  });

  it("ignores malformed done payloads and turns of an ended conversation", () => {
    const { controller, names } = ready();
    const sid = controller.beginTurn("hi");
    controller.completeTurn(sid, { lead_level: "boiling", handoff_reason: 42 });
    controller.completeTurn("someone-else", { lead_level: "hot", handoff_reason: "hot_lead" });
    expect(names()).toEqual(["zgc:first_message_sent"]);
    expect(controller.turnCount).toBe(1);
  });

  it("fallback is entered once, remembered for the browser session, and stops sending", () => {
    const storage = new MemoryStorage();
    const { controller, events, names } = makeController({}, storage);
    controller.open();
    controller.acknowledgeGdpr();
    controller.activateFallback("http_error");
    controller.activateFallback("stream_timeout");
    expect(names().filter((n) => n === "zgc:fallback_activated")).toHaveLength(1);
    expect(events.at(-1)?.detail).toMatchObject({ reason: "http_error" });
    expect(() => controller.beginTurn("hello")).toThrow(/fallback/);
    expect(storage.getItem(FALLBACK_STORAGE_KEY)).toBe("https://api.example.com/chat");
    // a reload in the same tab: still in fallback, without a second event; another api-url is not affected
    const again = makeController({}, storage);
    expect(again.controller.current.fallback).toBe("connection_error");
    expect(again.events).toEqual([]);
    expect(makeController({ apiUrl: "https://other.example.com/chat" }, storage).controller.current.fallback).toBeNull();
  });

  it("a missing api-url is a permanent fallback without an event", () => {
    const { controller, events } = makeController({ apiUrl: null });
    expect(controller.current.fallback).toBe("configuration");
    controller.startProactive();
    vi.advanceTimersByTime(60_000);
    expect(controller.current.proactiveVisible).toBe(false);
    expect(events).toEqual([]);
  });
});

describe("conversation end", () => {
  it("15 minutes without a visitor message end the conversation; each message resets the timer", () => {
    const { controller, events, names } = makeController();
    controller.open();
    controller.acknowledgeGdpr();
    controller.completeTurn(controller.beginTurn("one"), {});
    vi.advanceTimersByTime(INACTIVITY_TIMEOUT_MS - 1000);
    controller.completeTurn(controller.beginTurn("two"), {});
    vi.advanceTimersByTime(INACTIVITY_TIMEOUT_MS - 1);
    expect(names()).not.toContain("zgc:conversation_ended");
    vi.advanceTimersByTime(1);
    expect(events.at(-1)).toMatchObject({ name: "zgc:conversation_ended",
      detail: { session_id: SID1, termination_type: "inactivity_timeout", turn_count: 2 } });
    // the next message belongs to a new session, with its own first_message_sent
    expect(controller.current).toMatchObject({ conversationActive: false, conversationKey: 1, endedBy: "inactivity_timeout" });
    expect(controller.beginTurn("three")).toBe(SID2);
    expect(names().filter((n) => n === "zgc:first_message_sent")).toHaveLength(2);
    expect(controller.current.endedBy).toBeNull();
  });

  it("an explicit close ends only a started conversation", () => {
    const { controller, events } = makeController();
    expect(controller.endConversation("explicit_close")).toBe(false);
    controller.acknowledgeGdpr();
    controller.beginTurn("hi");
    expect(controller.endConversation("explicit_close")).toBe(true);
    expect(events.at(-1)?.detail).toMatchObject({ termination_type: "explicit_close", turn_count: 0 });
    vi.advanceTimersByTime(INACTIVITY_TIMEOUT_MS * 2);   // its inactivity timer is gone
    expect(events.filter((e) => e.name === "zgc:conversation_ended")).toHaveLength(1);
  });
});

describe("proactive prompt", () => {
  it("appears after proactive-delay-ms, once per browser session, never over an opened chat", () => {
    const storage = new MemoryStorage();
    const a = makeController({ proactiveDelayMs: 5000 }, storage).controller;
    a.startProactive();
    vi.advanceTimersByTime(4999);
    expect(a.current.proactiveVisible).toBe(false);
    vi.advanceTimersByTime(1);
    expect(a.current.proactiveVisible).toBe(true);
    expect(storage.getItem(PROACTIVE_STORAGE_KEY)).toBe("true");
    a.dismissProactive();
    expect(a.current.proactiveVisible).toBe(false);
    const b = makeController({ proactiveDelayMs: 5000 }, storage).controller;   // next page, same session
    b.startProactive();
    vi.advanceTimersByTime(60_000);
    expect(b.current.proactiveVisible).toBe(false);
  });

  it("asks the server's switch just before showing, with the session id: only a true shows it", async () => {
    const asked: string[] = [];
    const make = (answer: () => Promise<boolean>) => new ChatController({ ...CONFIG, proactiveDelayMs: 100 }, {
      emit: () => {}, storage: new MemoryStorage(), uuid: () => SID1,
      proactiveAllowed: (sid) => { asked.push(sid); return answer(); },
    });
    const on = make(() => Promise.resolve(true)), off = make(() => Promise.resolve(false));
    const down = make(() => Promise.reject(new Error("network")));
    for (const c of [on, off, down]) c.startProactive();
    expect(asked).toEqual([]);                          // not before the delay
    await vi.advanceTimersByTimeAsync(100);
    expect(asked).toEqual([SID1, SID1, SID1]);
    expect([on, off, down].map((c) => c.current.proactiveVisible)).toEqual([true, false, false]);
  });

  it("opening the chat first cancels it; opening hides a visible one", () => {
    const c = makeController({ proactiveDelayMs: 5000 }).controller;
    c.startProactive();
    c.open();
    vi.advanceTimersByTime(10_000);
    expect(c.current.proactiveVisible).toBe(false);
    const d = makeController({ proactiveDelayMs: 0 }).controller;
    d.startProactive();
    vi.advanceTimersByTime(0);
    expect(d.current.proactiveVisible).toBe(true);
    d.open();
    expect(d.current.proactiveVisible).toBe(false);
  });
});
