import { afterEach, describe, expect, it, vi } from "vitest";
import { ConfigurationError } from "../src/config";
import { GrowthChatElement, panelUrl, proactiveSwitch } from "../src/launcher";

describe("proactiveSwitch", () => {
  it("GETs <api-url>/flags with the session id; anything but proactive_prompt: true is no", async () => {
    const calls: [string, RequestInit | undefined][] = [];
    const answer = (status: number, body: unknown) => (async (url: string, init?: RequestInit) => {
      calls.push([url, init]);
      return new Response(JSON.stringify(body), { status });
    }) as unknown as typeof fetch;
    const sid = "00000000-0000-4000-8000-000000000001";
    expect(await proactiveSwitch("https://api.example.com/chat/", answer(200, { proactive_prompt: true }))(sid)).toBe(true);
    expect(calls[0][0]).toBe("https://api.example.com/chat/flags");
    expect((calls[0][1]?.headers as Record<string, string>)["ZGC-Session-ID"]).toBe(sid);
    expect(await proactiveSwitch("https://api.example.com/chat", answer(200, { proactive_prompt: false }))(sid)).toBe(false);
    expect(await proactiveSwitch("https://api.example.com/chat", answer(200, { proactive_prompt: "yes" }))(sid)).toBe(false);
    expect(await proactiveSwitch("https://api.example.com/chat", answer(503, { proactive_prompt: true }))(sid)).toBe(false);
  });
});

describe("panelUrl", () => {
  it("finds the panel under widget/<version>/ next to the alias, or beside a versioned chat.js", () => {
    expect(panelUrl("https://api.example.com/chat.js")).toBe("https://api.example.com/widget/0.0.0-test/panel-test.js");
    expect(panelUrl("https://cdn.example.com/leadchat/chat.js?v=2")).toBe("https://cdn.example.com/leadchat/widget/0.0.0-test/panel-test.js");
    expect(panelUrl("https://api.example.com/widget/0.0.0-test/chat.js")).toBe("https://api.example.com/widget/0.0.0-test/panel-test.js");
    expect(panelUrl("/chat.js", "http://127.0.0.1:8000/pricing/")).toBe("http://127.0.0.1:8000/widget/0.0.0-test/panel-test.js");
  });
});

describe("<growth-chat>", () => {
  afterEach(() => {
    document.body.replaceChildren();
    sessionStorage.clear();
  });

  function make(attrs: Record<string, string>) {
    const el = document.createElement("growth-chat") as GrowthChatElement;
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    document.body.append(el);
    return el;
  }

  it("is registered, renders its launcher in an open shadow root, and nothing in the host DOM", () => {
    expect(customElements.get("growth-chat")).toBe(GrowthChatElement);
    const el = make({ "api-url": "https://api.example.com/chat", "fallback-url": "https://example.com/contact", preload: "open" });
    expect(el.shadowRoot?.mode).toBe("open");
    const button = el.shadowRoot!.querySelector(".gc-launcher")!;
    expect(button.getAttribute("aria-label")).toBe("Open chat");
    expect(button.getAttribute("aria-expanded")).toBe("false");
    expect(el.children).toHaveLength(0);
    expect(el.chat?.sessionId).toMatch(/^[0-9a-f-]{36}$/);
  });

  it("a missing api-url logs a ConfigurationError and opens on the fallback without loading the panel", () => {
    const errors: unknown[] = [];
    vi.spyOn(console, "error").mockImplementation((e) => { errors.push(e); });
    const events: string[] = [];
    const el = document.createElement("growth-chat") as GrowthChatElement;
    el.addEventListener("zgc:chat_opened", (e) => events.push(e.type));
    document.body.append(el);
    expect(errors).toHaveLength(2);
    expect(errors.every((e) => e instanceof ConfigurationError)).toBe(true);
    (el.shadowRoot!.querySelector(".gc-launcher") as HTMLButtonElement).click();
    const fallback = el.shadowRoot!.querySelector(".gc-fallback") as HTMLElement;
    expect(fallback.hidden).toBe(false);
    expect(fallback.textContent).toContain("isn’t available right now");
    expect(fallback.querySelector("a")).toBeNull();
    expect(el.shadowRoot!.querySelector("script")).toBeNull();
    expect(events).toEqual(["zgc:chat_opened"]);
  });

  it("events bubble from the element with the spec's detail", () => {
    const el = make({ "api-url": "/chat", "fallback-url": "/contact", preload: "open" });
    const seen: CustomEvent[] = [];
    document.addEventListener("zgc:chat_opened", (e) => seen.push(e as CustomEvent), { once: true });
    el.chat!.open();
    expect(seen[0].target).toBe(el);
    expect(Object.keys(seen[0].detail).sort()).toEqual(["session_id", "timestamp"]);
  });

  it("a new connection starts a new session; leaving the DOM stops the timers", () => {
    const el = make({ "api-url": "/chat", "fallback-url": "/contact", preload: "open", "proactive-delay-ms": "10" });
    const first = el.chat!.sessionId;
    el.remove();
    expect(el.chat).toBeNull();
    document.body.append(el);
    expect(el.chat!.sessionId).not.toBe(first);
    expect(el.shadowRoot!.querySelectorAll(".gc-launcher")).toHaveLength(1);
  });
});

describe("loading the panel on intent", () => {
  afterEach(() => {
    document.body.replaceChildren();
    sessionStorage.clear();
  });

  const panelScripts = (el: Element) => [...el.shadowRoot!.querySelectorAll("script")].filter((s) => s.src.includes("panel-test.js"));

  function make(attrs: Record<string, string>) {
    const el = document.createElement("growth-chat") as GrowthChatElement;
    el.setAttribute("api-url", "https://api.example.com/chat");
    el.setAttribute("fallback-url", "https://example.com/contact");
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    document.body.append(el);
    return el;
  }

  it("by default nothing is fetched until the pointer is over the launcher (or it gets focus)", () => {
    const el = make({});
    expect(panelScripts(el)).toHaveLength(0);
    el.shadowRoot!.querySelector(".gc-launcher")!.dispatchEvent(new Event("pointerenter"));
    expect(panelScripts(el)).toHaveLength(1);
  });

  it("preload=\"open\" waits for the open", () => {
    const other = make({ preload: "open" });
    other.shadowRoot!.querySelector(".gc-launcher")!.dispatchEvent(new Event("pointerenter"));
    expect(panelScripts(other)).toHaveLength(0);
  });
});
