// Meeting slots in the chat (issue 10, calendar hand-off): the SSE `slots` and `meeting` events the
// backend sends before `done`, checked here, and the rule for which offer's buttons can be clicked.
// No UI here: the adapter stores what it reads in the assistant message's metadata.custom, the panel
// renders it.

/** One offered time (the `slots` event); `label` is already in the visitor's time zone. */
export interface Slot {
  slot_id: string;
  label: string;
  rep: string;
}

/** A meeting booked by this turn (the `meeting` event). */
export interface Meeting {
  label: string;
  rep: string;
  /** ISO 8601 UTC, or null when the backend sent none that parses. */
  start: string | null;
}

/** The backend's slot id rule (40_api): what the widget may send back as `slot_id`. */
export const SLOT_ID = /^[A-Za-z0-9_.-]{1,100}$/;
const MAX_SLOTS = 10;
const str = (v: unknown, max: number) => (typeof v === "string" ? v.trim().slice(0, max) : "");

/** `{"slots": [{slot_id, label, rep}, …]}` → the well-formed slots (at most 10), or null if none. */
export function parseSlots(data: Record<string, unknown> | null): Slot[] | null {
  const list = Array.isArray(data?.slots) ? data.slots : [];
  const out: Slot[] = [];
  for (const s of list) {
    if (!s || typeof s !== "object") continue;
    const { slot_id, label, rep } = s as Record<string, unknown>;
    const text = str(label, 200);
    if (typeof slot_id === "string" && SLOT_ID.test(slot_id) && text && !out.some((o) => o.slot_id === slot_id))
      out.push({ slot_id, label: text, rep: str(rep, 100) });
    if (out.length === MAX_SLOTS) break;
  }
  return out.length ? out : null;
}

/** `{label, rep, start}` → a Meeting, or null without a label. */
export function parseMeeting(data: Record<string, unknown> | null): Meeting | null {
  const label = str(data?.label, 200);
  if (!label) return null;
  const t = typeof data?.start === "string" ? Date.parse(data.start) : NaN;
  return { label, rep: str(data?.rep, 100), start: Number.isNaN(t) ? null : new Date(t).toISOString() };
}

interface MessageLike {
  readonly id: string;
  readonly role: string;
  readonly status?: { readonly type: string; readonly reason?: string };
  readonly metadata: { readonly custom: Record<string, unknown> };
}

export const slotsOf = (m: MessageLike | undefined) => (m?.metadata.custom.slots as Slot[] | undefined) ?? null;
export const meetingOf = (m: MessageLike | undefined) => (m?.metadata.custom.meeting as Meeting | undefined) ?? null;
export const pickedSlotOf = (m: MessageLike | undefined) =>
  typeof m?.metadata.custom.slot_id === "string" ? (m.metadata.custom.slot_id as string) : null;

/**
 * The state of the slot buttons on message `id`:
 *   "open"       clickable;
 *   "busy"       a reply is streaming (the message's own, or another): shown, not clickable yet;
 *   "closed"     a newer offer or a booked meeting came after it;
 *   "picked:<slot_id>"  the visitor picked that slot (a pick whose reply failed does not count);
 *   ""           the message offers no slots.
 */
export function offerState(messages: readonly MessageLike[], id: string, running: boolean): string {
  const i = messages.findIndex((m) => m.id === id);
  const offer = slotsOf(messages[i]);
  if (!offer) return "";
  for (let j = i + 1; j < messages.length; j++) {
    const m = messages[j];
    if (m.role === "assistant") {
      if (slotsOf(m) || meetingOf(m)) return "closed";
      continue;
    }
    const picked = pickedSlotOf(m);
    if (m.role !== "user" || !picked || !offer.some((s) => s.slot_id === picked)) continue;
    const reply = messages[j + 1];
    if (!(reply?.status?.type === "incomplete" && reply.status.reason === "error")) return `picked:${picked}`;
  }
  return running ? "busy" : "open";
}
