// The <growth-chat> attributes: parsed once on connect, with the spec's defaults and errors.
import { DEFAULT_PROACTIVE_DELAY_MS, DEFAULT_PROACTIVE_MESSAGE, PRIVACY_POLICY_URL, STREAM_TIMEOUT_MS } from "./constants";

/** Logged to the console for a missing or unusable required attribute; the widget degrades, it never throws. */
export class ConfigurationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigurationError";
  }
}

export type Position = "bottom-right" | "bottom-left";
/** When the panel bundle is fetched: on intent (hover/focus on the launcher, the proactive prompt), also when the browser is idle, or only on open. */
export type Preload = "intent" | "idle" | "open";

export interface WidgetConfig {
  /** Absolute Chat API URL, or null when missing/unusable (→ permanent fallback). */
  apiUrl: string | null;
  /** Absolute contact URL for the fallback link, or null (→ fallback without a link). */
  fallbackUrl: string | null;
  position: Position;
  proactiveDelayMs: number;
  proactiveMessage: string;
  streamTimeoutMs: number;
  preload: Preload;
  /** Where the notice's "Privacy Policy" links (http(s)): `privacy-url`, else the build's VITE_PRIVACY_POLICY_URL; null → no link. */
  privacyUrl: string | null;
}

export interface ParsedConfig {
  config: WidgetConfig;
  errors: ConfigurationError[];
  warnings: string[];
}

const EXAMPLE = '<growth-chat api-url="https://api.example.com/chat" fallback-url="https://example.com/contact">';

function absoluteUrl(value: string, base: string, schemes: string[]): string | null {
  try {
    const u = new URL(value, base);
    return schemes.includes(u.protocol) ? u.href : null;
  } catch {
    return null;
  }
}

function nonNegativeInt(raw: string | null, name: string, fallback: number, warnings: string[], min = 0): number {
  if (raw === null || raw.trim() === "") return fallback;
  const n = Number(raw);
  if (Number.isInteger(n) && n >= min && n <= 2_147_483_647) return n;
  warnings.push(`<growth-chat>: ${name}="${raw}" is not a whole number of milliseconds ≥ ${min}; using ${fallback}.`);
  return fallback;
}

/** Read the attributes through `get` (element.getAttribute); relative URLs resolve against `baseUrl`. */
export function parseConfig(get: (name: string) => string | null, baseUrl: string): ParsedConfig {
  const errors: ConfigurationError[] = [];
  const warnings: string[] = [];

  const rawApi = (get("api-url") ?? "").trim();
  let apiUrl: string | null = null;
  if (!rawApi) {
    errors.push(new ConfigurationError(
      `<growth-chat> is missing the required api-url attribute; set it to the Chat API streaming endpoint, e.g. ${EXAMPLE}. ` +
      "Until then the widget stays in its fallback state.",
    ));
  } else if (!(apiUrl = absoluteUrl(rawApi, baseUrl, ["https:", "http:"]))) {
    errors.push(new ConfigurationError(
      `<growth-chat> api-url="${rawApi}" is not an http(s) URL; set it to the Chat API streaming endpoint, e.g. ${EXAMPLE}. ` +
      "Until then the widget stays in its fallback state.",
    ));
  }

  const rawFallback = (get("fallback-url") ?? "").trim();
  let fallbackUrl: string | null = null;
  if (!rawFallback) {
    errors.push(new ConfigurationError(
      `<growth-chat> is missing the required fallback-url attribute; set it to your contact page, e.g. ${EXAMPLE}. ` +
      "If the chat backend is unavailable, the fallback message is shown without a contact link.",
    ));
  } else if (!(fallbackUrl = absoluteUrl(rawFallback, baseUrl, ["https:", "http:", "mailto:"]))) {
    errors.push(new ConfigurationError(
      `<growth-chat> fallback-url="${rawFallback}" is not an http(s) or mailto: URL; set it to your contact page. ` +
      "If the chat backend is unavailable, the fallback message is shown without a contact link.",
    ));
  }

  const rawPosition = get("position");
  let position: Position = "bottom-right";
  if (rawPosition === "bottom-left" || rawPosition === "bottom-right") position = rawPosition;
  else if (rawPosition !== null && rawPosition.trim() !== "")
    warnings.push(`<growth-chat>: position="${rawPosition}" is not "bottom-right" or "bottom-left"; using "bottom-right".`);

  const proactiveDelayMs = nonNegativeInt(get("proactive-delay-ms"), "proactive-delay-ms", DEFAULT_PROACTIVE_DELAY_MS, warnings);
  const proactiveMessage = (get("proactive-message") ?? "").trim() || DEFAULT_PROACTIVE_MESSAGE;
  const streamTimeoutMs = nonNegativeInt(get("stream-timeout-ms"), "stream-timeout-ms", STREAM_TIMEOUT_MS, warnings, 1);

  const rawPreload = get("preload");
  let preload: Preload = "intent";
  if (rawPreload === "intent" || rawPreload === "open" || rawPreload === "idle") preload = rawPreload;
  else if (rawPreload !== null && rawPreload.trim() !== "")
    warnings.push(`<growth-chat>: preload="${rawPreload}" is not "intent", "idle" or "open"; using "intent".`);

  const rawPrivacy = (get("privacy-url") ?? "").trim();
  const privacyTarget = rawPrivacy || PRIVACY_POLICY_URL;
  const privacyUrl = privacyTarget ? absoluteUrl(privacyTarget, baseUrl, ["https:", "http:"]) : null;
  if (rawPrivacy && !privacyUrl)
    warnings.push(`<growth-chat>: privacy-url="${rawPrivacy}" is not an http(s) URL; the privacy notice is shown without a link. ` +
      'Set it to your privacy policy page, e.g. privacy-url="https://www.example.com/privacy".');

  return {
    config: { apiUrl, fallbackUrl, position, proactiveDelayMs, proactiveMessage: proactiveMessage.slice(0, 200), streamTimeoutMs, preload, privacyUrl },
    errors,
    warnings,
  };
}
