import { describe, expect, it } from "vitest";
import { ConfigurationError, parseConfig } from "../src/config";
import { uuidv4, UUID_V4 } from "../src/uuid";

const attrs = (a: Record<string, string>) => (n: string) => (n in a ? a[n] : null);
const BASE = "https://www.example.com/pricing/";

describe("parseConfig", () => {
  it("uses the spec's defaults", () => {
    const { config, errors, warnings } = parseConfig(attrs({ "api-url": "https://api.example.com/chat", "fallback-url": "/contact" }), BASE);
    expect(errors).toEqual([]);
    expect(warnings).toEqual([]);
    expect(config).toEqual({
      apiUrl: "https://api.example.com/chat", fallbackUrl: "https://www.example.com/contact", position: "bottom-right",
      proactiveDelayMs: 45000, proactiveMessage: "Have a question about AI engineering?", streamTimeoutMs: 10000, preload: "intent",
      privacyUrl: null,
    });
  });

  it("reads every attribute", () => {
    const { config } = parseConfig(attrs({
      "api-url": "/chat", "fallback-url": "mailto:hello@example.com", position: "bottom-left", "proactive-delay-ms": "0",
      "proactive-message": "  Need help?  ", "stream-timeout-ms": "2500", preload: "open", "privacy-url": "/privacy#chat",
    }), BASE);
    expect(config).toMatchObject({ apiUrl: "https://www.example.com/chat", fallbackUrl: "mailto:hello@example.com", position: "bottom-left",
      proactiveDelayMs: 0, proactiveMessage: "Need help?", streamTimeoutMs: 2500, preload: "open", privacyUrl: "https://www.example.com/privacy#chat" });
  });

  it("privacy-url: http(s) only; anything else warns and the notice has no link", () => {
    for (const v of ["javascript:alert(1)", "data:text/html,x", "mailto:dpo@example.com", "http://[bad"]) {
      const { config, errors, warnings } = parseConfig(attrs({ "api-url": "/chat", "fallback-url": "/c", "privacy-url": v }), BASE);
      expect(config.privacyUrl).toBeNull();
      expect(errors).toEqual([]);
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatch(/privacy-url/);
    }
    expect(parseConfig(attrs({ "api-url": "/chat", "fallback-url": "/c", "privacy-url": " " }), BASE).warnings).toEqual([]);
  });

  it("a missing or unusable api-url is a ConfigurationError and no API URL (→ permanent fallback)", () => {
    for (const a of [{}, { "api-url": "  " }, { "api-url": "javascript:alert(1)" }, { "api-url": "ftp://x/chat" }] as Record<string, string>[]) {
      const { config, errors } = parseConfig(attrs({ ...a, "fallback-url": "/contact" }), BASE);
      expect(config.apiUrl).toBeNull();
      expect(errors).toHaveLength(1);
      expect(errors[0]).toBeInstanceOf(ConfigurationError);
      expect(errors[0].name).toBe("ConfigurationError");
      expect(errors[0].message).toMatch(/api-url/);
    }
  });

  it("a missing or unsafe fallback-url is a ConfigurationError and no link", () => {
    for (const a of [{}, { "fallback-url": "" }, { "fallback-url": "javascript:alert(1)" }, { "fallback-url": "data:text/html,x" }] as Record<string, string>[]) {
      const { config, errors } = parseConfig(attrs({ ...a, "api-url": "/chat" }), BASE);
      expect(config.fallbackUrl).toBeNull();
      expect(errors.map((e) => e.message).join()).toMatch(/fallback-url/);
    }
  });

  it("bad optional values warn and fall back to the defaults", () => {
    const { config, warnings } = parseConfig(attrs({
      "api-url": "/chat", "fallback-url": "/c", position: "top", "proactive-delay-ms": "-5", "stream-timeout-ms": "0", preload: "eager",
    }), BASE);
    expect(config).toMatchObject({ position: "bottom-right", proactiveDelayMs: 45000, streamTimeoutMs: 10000, preload: "intent" });
    expect(warnings).toHaveLength(4);
    for (const p of ["intent", "idle", "open"] as const)      // the panel: on intent (default), also when idle, or only on open
      expect(parseConfig(attrs({ "api-url": "/chat", "fallback-url": "/c", preload: p }), BASE).config.preload).toBe(p);
    for (const v of ["1.5", "1e3x", "9999999999999"]) {
      expect(parseConfig(attrs({ "api-url": "/chat", "fallback-url": "/c", "proactive-delay-ms": v }), BASE).config.proactiveDelayMs).toBe(45000);
    }
  });
});

describe("uuidv4", () => {
  it("makes RFC 4122 version 4 ids, different each time", () => {
    const ids = new Set(Array.from({ length: 200 }, () => uuidv4()));
    expect(ids.size).toBe(200);
    for (const id of ids) expect(id).toMatch(UUID_V4);
    expect(uuidv4((a) => a.fill(255))).toBe("ffffffff-ffff-4fff-bfff-ffffffffffff");
    expect(uuidv4((a) => a.fill(0))).toBe("00000000-0000-4000-8000-000000000000");
  });
});
