// The widget's state and rules, without any DOM: session id, GDPR gate, fallback (session-permanent),
// proactive prompt, 15-minute inactivity, and the analytics events they fire. The launcher (chat.js)
// owns one controller per <growth-chat>; the lazily loaded panel drives it through the same object.
import type { WidgetConfig } from "./config";
import {
  FALLBACK_STORAGE_KEY, GDPR_AT_STORAGE_KEY, GDPR_NOTICE_VERSION, GDPR_STORAGE_KEY, INACTIVITY_TIMEOUT_MS, PROACTIVE_STORAGE_KEY,
  VISITOR_ID_STORAGE_KEY,
} from "./constants";
import type { Emit, FallbackReason, LeadLevel, TerminationType } from "./events";
import { UUID_V4, uuidv4 } from "./uuid";

export type FallbackKind = FallbackReason | "configuration";

export interface ControllerState {
  /** The chat panel is open. */
  open: boolean;
  /** Why the widget is in its fallback state, or null. */
  fallback: FallbackKind | null;
  proactiveVisible: boolean;
  gdprAcknowledged: boolean;
  /** The visitor has sent a message in the current conversation. */
  conversationActive: boolean;
  /** Changes when a conversation ends: the panel starts a fresh thread. */
  conversationKey: number;
  /** How the previous conversation ended (shown as a note in the fresh thread). */
  endedBy: TerminationType | null;
}

/** The slice of the done event the widget uses (DESIGN §3). */
export interface DonePayload {
  session_id?: unknown;
  turn_index?: unknown;
  lead_level?: unknown;
  stage?: unknown;
  handoff_reason?: unknown;
  /** "rotate": this visitor id belonged to an erased visitor; draw a new one. */
  visitor?: unknown;
}

export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

export interface ControllerDeps {
  emit: Emit;
  /** sessionStorage, or null when the browser refuses it (private modes, strict cookie settings). */
  storage: StorageLike | null;
  /** localStorage for the first-party visitor id (null or absent: the visitor is not remembered across visits). */
  localStore?: StorageLike | null;
  now?: () => Date;
  uuid?: () => string;
  setTimeout?: (fn: () => void, ms: number) => unknown;
  clearTimeout?: (handle: unknown) => void;
  /** Asked just before the proactive prompt shows (the server's `proactive_prompt` switch, for this session id):
   *  false or a failed request, and it does not show. Absent: it always may. */
  proactiveAllowed?: ((sessionId: string) => Promise<boolean>) | null;
}

const LEAD_LEVELS: readonly string[] = ["hot", "warm", "cold"];
// An address typed by the visitor: only the fact is reported, never the address.
const EMAIL = /[^\s@<>()[\]{},;:"']+@[^\s@<>()[\]{},;:"']+\.[a-z]{2,}/i;

/** Web storage of this kind if this browser lets us use it, else null (reading the property can throw). */
function storageOrNull(kind: "localStorage" | "sessionStorage"): StorageLike | null {
  try {
    const s = window[kind];
    const probe = "__growth_chat_probe__";
    s.setItem(probe, "1");
    s.removeItem(probe);
    return s;
  } catch {
    return null;
  }
}

/** localStorage if this browser lets us use it, else null. */
export const localStorageOrNull = (): StorageLike | null => storageOrNull("localStorage");
/** sessionStorage if this browser lets us use it, else null. */
export const sessionStorageOrNull = (): StorageLike | null => storageOrNull("sessionStorage");

export class ChatController {
  readonly config: WidgetConfig;
  sessionId: string;
  /** Turns the backend completed (done events) in this conversation. */
  turnCount = 0;
  /** Visitor messages sent in this conversation. */
  messagesSent = 0;
  leadLevel: LeadLevel = "cold"; // the backend's initial level (SessionState.lead_level)
  private contactCaptured = false;
  private opened = false;
  private gdprInMemory = false;
  private gdprAtInMemory: string | null = null;
  private state: ControllerState;
  private listeners = new Set<(s: ControllerState) => void>();
  private proactiveTimer: unknown = null;
  private inactivityTimer: unknown = null;
  private readonly deps: Required<ControllerDeps>;

  constructor(config: WidgetConfig, deps: ControllerDeps) {
    this.config = config;
    this.deps = {
      now: () => new Date(),
      uuid: uuidv4,
      setTimeout: (fn, ms) => setTimeout(fn, ms),
      clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
      localStore: null,
      proactiveAllowed: null,
      ...deps,
    };
    this.sessionId = this.deps.uuid();
    let fallback: FallbackKind | null = config.apiUrl ? null : "configuration";
    if (!fallback && this.read(FALLBACK_STORAGE_KEY) === config.apiUrl) fallback = "connection_error";
    this.state = {
      open: false, fallback, proactiveVisible: false, gdprAcknowledged: this.read(GDPR_STORAGE_KEY) === "true",
      conversationActive: false, conversationKey: 0, endedBy: null,
    };
  }

  // --- state and subscriptions
  get current(): ControllerState {
    return this.state;
  }

  subscribe(fn: (s: ControllerState) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private set(patch: Partial<ControllerState>) {
    this.state = { ...this.state, ...patch };
    for (const fn of [...this.listeners]) fn(this.state);
  }

  private read(key: string): string | null {
    try {
      return this.deps.storage?.getItem(key) ?? null;
    } catch {
      return null;
    }
  }

  private write(key: string, value: string): boolean {
    try {
      if (!this.deps.storage) return false;
      this.deps.storage.setItem(key, value);
      return true;
    } catch {
      return false;
    }
  }

  private base() {
    return { session_id: this.sessionId, timestamp: this.deps.now().toISOString() };
  }

  // --- panel open / close
  open() {
    if (this.state.open) return;
    this.opened = true;
    this.cancelProactive();
    // no sessionStorage: the notice re-displays on each open (the spec's acceptable degradation)
    if (!this.deps.storage) this.gdprInMemory = false;
    this.set({ open: true, proactiveVisible: false, gdprAcknowledged: this.gdprAcknowledged });
    this.deps.emit("zgc:chat_opened", this.base());
  }

  close() {
    if (this.state.open) this.set({ open: false });
  }

  // --- GDPR notice
  get gdprAcknowledged(): boolean {
    return this.read(GDPR_STORAGE_KEY) === "true" || (!this.deps.storage && this.gdprInMemory);
  }

  acknowledgeGdpr() {
    if (this.gdprAcknowledged) return;
    const at = this.deps.now().toISOString();
    if (!this.write(GDPR_STORAGE_KEY, "true")) this.gdprInMemory = true;
    if (!this.write(GDPR_AT_STORAGE_KEY, at)) this.gdprAtInMemory = at;
    this.set({ gdprAcknowledged: true });
    this.deps.emit("zgc:gdpr_acknowledged", this.base());
  }

  /** The acknowledgement the server stores (scope chat_processing): sent with the session's first message. */
  consent(): { notice_version: string; acknowledged_at: string } | null {
    if (!this.gdprAcknowledged) return null;
    const at = this.read(GDPR_AT_STORAGE_KEY) ?? this.gdprAtInMemory ?? this.deps.now().toISOString();
    return { notice_version: GDPR_NOTICE_VERSION, acknowledged_at: at };
  }

  /**
   * The first-party visitor id sent with each message: only after the notice is acknowledged (the server also links
   * it only with chat_processing consent); created on first use, kept in localStorage for this site.
   */
  visitorId(): string | null {
    if (!this.gdprAcknowledged || !this.deps.localStore) return null;
    try {
      const id = this.deps.localStore.getItem(VISITOR_ID_STORAGE_KEY);
      if (id && UUID_V4.test(id)) return id;
      const fresh = this.deps.uuid();
      this.deps.localStore.setItem(VISITOR_ID_STORAGE_KEY, fresh);
      return fresh;
    } catch {
      return null;
    }
  }

  /** The server erased this visitor: a new id, never linked to the old one. */
  rotateVisitorId() {
    try {
      this.deps.localStore?.setItem(VISITOR_ID_STORAGE_KEY, this.deps.uuid());
    } catch {
      // storage refused: the next message simply has no id
    }
  }

  // --- proactive prompt (S1)
  /** Start the timer on connect: shown once per browser session, never over an opened or active chat. */
  startProactive() {
    if (this.read(PROACTIVE_STORAGE_KEY) || this.state.fallback) return;
    this.proactiveTimer = this.deps.setTimeout(() => {
      this.proactiveTimer = null;
      const show = () => {
        if (this.opened || this.state.conversationActive || this.state.fallback || this.state.open) return;
        this.write(PROACTIVE_STORAGE_KEY, "true");
        this.set({ proactiveVisible: true });
      };
      const allowed = this.deps.proactiveAllowed;
      if (!allowed) return show();
      if (this.opened || this.state.conversationActive || this.state.fallback || this.state.open) return;   // nothing to ask
      allowed(this.sessionId).then((ok) => { if (ok === true) show(); }, () => { /* switched off or unreachable: no prompt */ });
    }, this.config.proactiveDelayMs);
  }

  dismissProactive() {
    if (this.state.proactiveVisible) this.set({ proactiveVisible: false });
  }

  private cancelProactive() {
    if (this.proactiveTimer !== null) this.deps.clearTimeout(this.proactiveTimer);
    this.proactiveTimer = null;
  }

  // --- turns
  /** No turn of this session has completed: failures here activate the fallback (spec table). */
  get firstTurn(): boolean {
    return this.turnCount === 0;
  }

  /** A visitor message is about to be sent; returns the session id to send it under. */
  beginTurn(text: string): string {
    if (!this.gdprAcknowledged) throw new Error("the privacy notice has not been acknowledged; nothing is sent before it is");
    if (this.state.fallback) throw new Error("the chat is in its fallback state; no message is sent");
    if (this.messagesSent === 0) this.deps.emit("zgc:first_message_sent", this.base());
    this.messagesSent++;
    if (!this.contactCaptured && EMAIL.test(text)) {
      this.contactCaptured = true;
      this.deps.emit("zgc:contact_captured", this.base());
    }
    this.armInactivity();
    if (!this.state.conversationActive || this.state.endedBy) this.set({ conversationActive: true, endedBy: null });
    return this.sessionId;
  }

  /** The backend's done event for a turn sent under `sessionId`. */
  completeTurn(sessionId: string, done: DonePayload) {
    if (done.visitor === "rotate") this.rotateVisitorId();
    if (sessionId !== this.sessionId) return; // the conversation ended meanwhile
    this.turnCount++;
    const level = typeof done.lead_level === "string" && LEAD_LEVELS.includes(done.lead_level)
      ? (done.lead_level as LeadLevel) : null;
    if (level && level !== this.leadLevel) {
      this.leadLevel = level;
      this.deps.emit("zgc:qualification_state_changed", { ...this.base(), lead_level: level });
    }
    if (typeof done.handoff_reason === "string" && done.handoff_reason) {
      this.deps.emit("zgc:escalation_triggered", {
        ...this.base(), handoff_reason: done.handoff_reason.slice(0, 64), lead_level: this.leadLevel,
      });
    }
  }

  /** The backend booked a meeting in a turn sent under `sessionId` (its SSE `meeting` event). */
  meetingBooked(sessionId: string, start: string | null) {
    if (sessionId !== this.sessionId) return; // the conversation ended meanwhile
    this.deps.emit("zgc:meeting_booked", { ...this.base(), meeting_start: start });
  }

  // --- fallback (EC-07)
  /** Enter the fallback state for the rest of the browser session; no retries. */
  activateFallback(reason: FallbackReason) {
    if (this.state.fallback) return;
    if (this.config.apiUrl) this.write(FALLBACK_STORAGE_KEY, this.config.apiUrl);
    this.clearInactivity();
    this.cancelProactive();
    this.set({ fallback: reason, proactiveVisible: false });
    this.deps.emit("zgc:fallback_activated", { ...this.base(), reason });
  }

  // --- conversation end
  /** End the current conversation (if the visitor sent anything); the next message starts a new session. */
  endConversation(type: TerminationType): boolean {
    this.clearInactivity();
    if (this.messagesSent === 0) return false;
    this.deps.emit("zgc:conversation_ended", { ...this.base(), termination_type: type, turn_count: this.turnCount });
    this.sessionId = this.deps.uuid();
    this.turnCount = 0;
    this.messagesSent = 0;
    this.leadLevel = "cold";
    this.contactCaptured = false;
    this.set({ conversationActive: false, conversationKey: this.state.conversationKey + 1, endedBy: type });
    return true;
  }

  private armInactivity() {
    this.clearInactivity();
    this.inactivityTimer = this.deps.setTimeout(() => {
      this.inactivityTimer = null;
      this.endConversation("inactivity_timeout");
    }, INACTIVITY_TIMEOUT_MS);
  }

  private clearInactivity() {
    if (this.inactivityTimer !== null) this.deps.clearTimeout(this.inactivityTimer);
    this.inactivityTimer = null;
  }

  /** The element left the DOM: stop every timer. */
  destroy() {
    this.cancelProactive();
    this.clearInactivity();
    this.listeners.clear();
  }
}
