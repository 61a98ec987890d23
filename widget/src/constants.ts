// Build-time constants (spec: "injected by Vite at build time via define") and fixed names.
/** The widget release; versioned assets live under `widget/<VERSION>/`. */
export const VERSION: string = __WIDGET_VERSION__;
/** The content-hashed file name of the chat panel bundle, next to the versioned chat.js. */
export const PANEL_FILE: string = __PANEL_FILE__;

export const DEFAULT_PROACTIVE_MESSAGE: string =
  import.meta.env.VITE_DEFAULT_PROACTIVE_MESSAGE || "Have a question about AI engineering?";
export const GDPR_NOTICE_TEXT: string =
  import.meta.env.VITE_GDPR_NOTICE_TEXT ||
  "This chat is powered by AI. Conversations may be stored for up to 90 days to improve our service. " +
    "By continuing, you agree to our Privacy Policy.";
/** The notice's version: set it, or it is a hash of the text (a changed notice is a new version). */
export const GDPR_NOTICE_VERSION: string = import.meta.env.VITE_GDPR_NOTICE_VERSION ||
  "h" + [...GDPR_NOTICE_TEXT].reduce((h, c) => Math.imul(h ^ c.charCodeAt(0), 16777619) >>> 0, 2166136261).toString(16);
/** When set, the words "Privacy Policy" in the notice link here (new tab). */
export const PRIVACY_POLICY_URL: string = import.meta.env.VITE_PRIVACY_POLICY_URL || "";
/** No first token within this many ms → fallback (first turn) or an inline error (later turns). */
export const STREAM_TIMEOUT_MS: number = Number(import.meta.env.VITE_STREAM_TIMEOUT_MS) > 0 ? Number(import.meta.env.VITE_STREAM_TIMEOUT_MS) : 10_000;

export const DEFAULT_PROACTIVE_DELAY_MS = 45_000;
/** zgc:conversation_ended (inactivity_timeout) after this long without a visitor message. */
export const INACTIVITY_TIMEOUT_MS = 15 * 60 * 1000;

/** sessionStorage keys: per browser session (tab), never localStorage. */
export const GDPR_STORAGE_KEY = "growth_chat_gdpr_acknowledged";
/** When the visitor acknowledged the notice (ISO 8601): sent to the server with the session's first message. */
export const GDPR_AT_STORAGE_KEY = "growth_chat_gdpr_acknowledged_at";
export const FALLBACK_STORAGE_KEY = "growth_chat_fallback";
export const PROACTIVE_STORAGE_KEY = "growth_chat_proactive_shown";
/**
 * localStorage (this site only, first-party): the visitor id that lets a returning visitor be recognised. Written only
 * once the privacy notice is acknowledged (chat_processing consent); a random UUID, never a fingerprint; replaced when
 * the server says the visitor was erased.
 */
export const VISITOR_ID_STORAGE_KEY = "growth_chat_visitor_id";

/** The global the panel bundle registers itself under (a classic script: no CORS needed cross-origin). */
export const PANEL_GLOBAL = "__growthChatPanel";
