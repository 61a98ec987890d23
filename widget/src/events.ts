// The analytics events (spec: "Analytics Events"): CustomEvents on the <growth-chat> element.
// Detail fields are exactly the spec's (plus leadchat's zgc:meeting_booked); none carries visitor text,
// contact data or names (a booked meeting reports its start time, not the label or the rep).

export type LeadLevel = "hot" | "warm" | "cold";
export type FallbackReason = "connection_error" | "http_error" | "stream_timeout";
export type TerminationType = "explicit_close" | "inactivity_timeout" | "session_expiry";

interface Base {
  session_id: string;
  timestamp: string;
}

export interface EventDetails {
  "zgc:chat_opened": Base;
  "zgc:first_message_sent": Base;
  "zgc:qualification_state_changed": Base & { lead_level: LeadLevel };
  "zgc:contact_captured": Base;
  "zgc:escalation_triggered": Base & { handoff_reason: string; lead_level: string };
  "zgc:conversation_ended": Base & { termination_type: TerminationType; turn_count: number };
  "zgc:fallback_activated": Base & { reason: FallbackReason };
  "zgc:gdpr_acknowledged": Base;
  /** A meeting was booked in the chat; `meeting_start` is its start, ISO 8601 UTC (null if the backend sent none). */
  "zgc:meeting_booked": Base & { meeting_start: string | null };
}

export type EventName = keyof EventDetails;

export const EVENT_NAMES: EventName[] = [
  "zgc:chat_opened", "zgc:first_message_sent", "zgc:qualification_state_changed", "zgc:contact_captured",
  "zgc:escalation_triggered", "zgc:conversation_ended", "zgc:fallback_activated", "zgc:gdpr_acknowledged",
  "zgc:meeting_booked",
];

export type Emit = <K extends EventName>(name: K, detail: EventDetails[K]) => void;

/** Dispatch on the element; bubbles so a host can also listen on document. */
export function dispatchOn(el: EventTarget): Emit {
  return (name, detail) => {
    el.dispatchEvent(new CustomEvent(name, { detail, bubbles: true, composed: true }));
  };
}
