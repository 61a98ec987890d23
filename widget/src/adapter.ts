// The runtime adapter for leadchat's Chat API (DESIGN §3):
//   POST api-url, header ZGC-Session-ID: <uuid4>, body {"message": str, "timezone"?: IANA zone, "slot_id"?: str,
//   "consent"?: {notice_version, acknowledged_at} (with the first message of a session), "visitor_id"?: the first-party
//   visitor id (localStorage, only once the notice was acknowledged)}
//   → text/event-stream: `delta` {"type":"text_delta","content"} …, optionally `slots` {slots: [{slot_id,
//     label, rep}]} and/or `meeting` {label, rep, start}, then `done` {session_id, turn_index, lead_level,
//     stage, handoff_reason, visitor?: "rotate"} or `error` {code, message}.
// `run()` is an async generator: every delta yields the text so far, so tokens render as they arrive;
// `slots` and `meeting` go into the assistant message's metadata.custom (the panel draws the buttons
// and the confirmation from there). A user message's metadata.custom.slot_id (a slot button) is sent
// as `slot_id`. The visitor's time zone goes with every request, unless the backend refused it once.
// Failures follow the spec's fallback table: on the first turn of a session a connection error, a 5xx
// or no first token within STREAM_TIMEOUT_MS activates the (session-permanent) fallback; on later
// turns the same failures are an inline error for that turn only.
import type { ChatController, DonePayload } from "./controller";
import type { FallbackReason } from "./events";
import { parseMeeting, parseSlots, SLOT_ID } from "./slots";
import { SseParser } from "./sse";

/** One message of the conversation (thread.ts keeps them; slots.ts reads the metadata). */
export interface ThreadMessage {
  readonly id: string;
  readonly role: "user" | "assistant";
  readonly content: readonly { readonly type: "text"; readonly text: string }[];
  /** An assistant reply: running while it streams; incomplete with reason "error" when the turn failed. */
  readonly status?: { readonly type: "running" | "complete" | "incomplete"; readonly reason?: string };
  /** The visitor-facing text of a failed turn. */
  readonly error?: string;
  readonly metadata: { readonly custom: Record<string, unknown> };
}

export interface ChatModelRunOptions {
  messages: readonly ThreadMessage[];
  abortSignal: AbortSignal;
}

/** What a run yields: the reply's text so far, or its metadata (slots, meeting). */
export interface ChatModelRunResult {
  content?: { type: "text"; text: string }[];
  metadata?: { custom: Record<string, unknown> };
}

export interface ChatModelAdapter {
  run(options: ChatModelRunOptions): AsyncGenerator<ChatModelRunResult, void>;
}

export type TurnHost = Pick<ChatController, "config" | "firstTurn" | "beginTurn" | "completeTurn" | "activateFallback"
  | "endConversation" | "meetingBooked" | "consent" | "visitorId">;

/** A failed turn; `message` is what the visitor reads inline. */
export class TurnError extends Error {
  readonly code: string;
  constructor(message: string, code: string) {
    super(message);
    this.name = "TurnError";
    this.code = code;
  }
}

export const MESSAGES = {
  retry: "Sorry, that reply didn't come through. Please send your message again.",
  timeout: "Sorry, the assistant took too long to answer. Please send your message again.",
  interrupted: "The reply was interrupted. Please send your message again.",
  fallback: "Our chat assistant isn't available right now.",
  rateLimited: "You're sending messages quickly. Please wait a few seconds and try again.",
  tooLong: "That message is too long. Please shorten it and try again.",
  busy: "Please wait for the current reply to finish, then try again.",
  rejected: "Sorry, that message couldn't be sent.",
  expired: "This conversation has expired. Send a message to start a new one.",
} as const;

/** The visitor's last message: its text, and the slot it picked (a slot button) if any. */
function lastUser(messages: readonly ThreadMessage[]): { text: string; slotId: string | null } {
  for (let i = messages.length - 1; i >= 0; i--) {
    const m = messages[i];
    if (m.role !== "user") continue;
    const slot = m.metadata?.custom?.slot_id;
    return { text: m.content.map((p) => (p.type === "text" ? p.text : "")).join("").trim(),
      slotId: typeof slot === "string" && SLOT_ID.test(slot) ? slot : null };
  }
  return { text: "", slotId: null };
}

/** The browser's IANA time zone (e.g. Europe/Madrid), or null when Intl has none; never throws. */
export function visitorTimeZone(): string | null {
  try {
    const tz = Intl.DateTimeFormat().resolvedOptions().timeZone;
    return typeof tz === "string" && /^[A-Za-z0-9_+\-/]{1,64}$/.test(tz) ? tz : null;
  } catch {
    return null;
  }
}

function json(data: string): Record<string, unknown> | null {
  try {
    const v = JSON.parse(data);
    return v && typeof v === "object" && !Array.isArray(v) ? v : null;
  } catch {
    return null;
  }
}

function abortError(): Error {
  const e = new Error("The turn was cancelled.");
  e.name = "AbortError";
  return e;
}

function errorCode(body: string): string | null {
  const err = json(body)?.error as { code?: unknown } | undefined;
  return typeof err?.code === "string" ? err.code : null;
}

export interface AdapterOptions {
  fetch?: typeof fetch;
  /** The visitor's time zone (default: from Intl). */
  timeZone?: () => string | null;
}

export function createChatAdapter(host: TurnHost, opts: AdapterOptions = {}): ChatModelAdapter {
  const doFetch = opts.fetch ?? ((input, init) => fetch(input, init));
  const timeZone = opts.timeZone ?? visitorTimeZone;
  // a zone this browser knows but the server's tz database does not (422 invalid_timezone): the turn is
  // sent again without it, and so is every later one of this conversation
  let timeZoneRefused = false;

  async function* run({ messages, abortSignal }: ChatModelRunOptions): AsyncGenerator<ChatModelRunResult, void> {
    const { text: message, slotId } = lastUser(messages);
    if (!message) throw new TurnError(MESSAGES.rejected, "empty_message");
    const apiUrl = host.config.apiUrl;
    if (!apiUrl) throw new TurnError(MESSAGES.fallback, "configuration");
    const first = host.firstTurn;
    const sessionId = host.beginTurn(message);

    const fail = (reason: FallbackReason, inline: string): never => {
      if (first) {
        host.activateFallback(reason);
        throw new TurnError(MESSAGES.fallback, reason);
      }
      throw new TurnError(inline, reason);
    };

    const request = new AbortController();
    const onAbort = () => request.abort();
    abortSignal.addEventListener("abort", onAbort);
    let timedOut = false;
    let timer: ReturnType<typeof setTimeout> | null = setTimeout(() => {
      timedOut = true;
      request.abort();
    }, host.config.streamTimeoutMs);
    const firstToken = () => {
      if (timer !== null) clearTimeout(timer);
      timer = null;
    };

    const payload: Record<string, unknown> = { message };
    const consent = first ? host.consent() : null; // the notice acknowledgement reaches the server with the first message
    if (consent) payload.consent = consent;
    const visitorId = host.visitorId(); // first-party, only after the notice was acknowledged (12_privacy)
    if (visitorId) payload.visitor_id = visitorId;
    const tz = timeZoneRefused ? null : timeZone();
    if (tz) payload.timezone = tz;
    if (slotId) payload.slot_id = slotId;
    const post = () => doFetch(apiUrl, {
      method: "POST",
      headers: { "Content-Type": "application/json", "ZGC-Session-ID": sessionId },
      body: JSON.stringify(payload),
      signal: request.signal,
      credentials: "omit",
      cache: "no-store",
    });

    let reader: ReadableStreamDefaultReader<Uint8Array> | null = null;
    try {
      let res: Response;
      let refusal: string | null = null; // a 4xx body already read
      try {
        res = await post();
        if (res.status === 422 && payload.timezone) {
          refusal = await res.text();
          if (errorCode(refusal) === "invalid_timezone") {
            timeZoneRefused = true;
            delete payload.timezone;
            refusal = null;
            res = await post();
          }
        }
      } catch {
        if (abortSignal.aborted) throw abortError();
        return fail(timedOut ? "stream_timeout" : "connection_error", timedOut ? MESSAGES.timeout : MESSAGES.retry);
      }

      if (res.status >= 500) return fail("http_error", MESSAGES.retry);
      if (!res.ok) {
        firstToken(); // the backend answered: a refusal is not a timeout
        const code = errorCode(refusal ?? await res.text().catch(() => "")) ?? `http_${res.status}`;
        if (code === "session_expired") {
          host.endConversation("session_expiry");
          throw new TurnError(MESSAGES.expired, code);
        }
        const text = res.status === 429 ? MESSAGES.rateLimited : res.status === 413 ? MESSAGES.tooLong
          : res.status === 409 ? MESSAGES.busy : MESSAGES.rejected;
        throw new TurnError(text, code);
      }
      if (!(res.headers.get("content-type") ?? "").includes("text/event-stream") || !res.body)
        return fail("http_error", MESSAGES.retry);

      reader = res.body.getReader();
      const decoder = new TextDecoder();
      const parser = new SseParser();
      let text = "";
      let custom: Record<string, unknown> = {}; // the thread replaces metadata.custom on each yield: send all of it
      let done: DonePayload | null = null;
      let streamError: Record<string, unknown> | null = null;
      try {
        read: for (;;) {
          const chunk = await reader.read();
          const events = chunk.done ? parser.feed(decoder.decode()).concat(parser.end())
            : parser.feed(decoder.decode(chunk.value, { stream: true }));
          for (const ev of events) {
            const data = json(ev.data);
            if (ev.event === "delta") {
              if (data?.type !== "text_delta" || typeof data.content !== "string" || !data.content) continue;
              firstToken();
              text += data.content;
              yield { content: [{ type: "text", text }] };
            } else if (ev.event === "slots") {
              const slots = parseSlots(data);
              if (!slots) continue;
              custom = { ...custom, slots };
              yield { metadata: { custom } };
            } else if (ev.event === "meeting") {
              const meeting = parseMeeting(data);
              if (!meeting) continue;
              host.meetingBooked(sessionId, meeting.start);
              custom = { ...custom, meeting };
              yield { metadata: { custom } };
            } else if (ev.event === "done") {
              done = data ?? {};
              break read;
            } else if (ev.event === "error") {
              streamError = data ?? {};
              break read;
            }
          }
          if (chunk.done) break;
        }
      } catch {
        if (abortSignal.aborted) throw abortError();
        if (timer !== null) return fail(timedOut ? "stream_timeout" : "connection_error", timedOut ? MESSAGES.timeout : MESSAGES.retry);
        throw new TurnError(MESSAGES.interrupted, "interrupted");
      }

      if (done) {
        firstToken();
        host.completeTurn(sessionId, done);
        return;
      }
      if (streamError) {
        firstToken();
        if (streamError.code === "session_expired") {
          host.endConversation("session_expiry");
          throw new TurnError(MESSAGES.expired, "session_expired");
        }
        // the backend is up and said why: never a fallback, the visitor can try again
        throw new TurnError(MESSAGES.retry, typeof streamError.code === "string" ? streamError.code : "stream_error");
      }
      // the stream closed without `done`
      if (timer !== null) return fail("connection_error", MESSAGES.retry);
      throw new TurnError(MESSAGES.interrupted, "interrupted");
    } finally {
      if (timer !== null) clearTimeout(timer);
      abortSignal.removeEventListener("abort", onAbort);
      if (reader) reader.cancel().catch(() => {});
      else request.abort();
    }
  }

  return { run };
}
