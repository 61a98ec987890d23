import { describe, expect, it } from "vitest";
import { offerState, parseMeeting, parseSlots } from "../src/slots";

const A = [{ slot_id: "intro.ana.1", label: "Tue 10:00", rep: "Ana Ruiz" }, { slot_id: "intro.ana.2", label: "Wed 10:00", rep: "Ana Ruiz" }];
const B = [{ slot_id: "intro.ana.3", label: "Thu 10:00", rep: "Ana Ruiz" }];

type Msg = { id: string; role: string; status?: { type: string; reason?: string }; metadata: { custom: Record<string, unknown> } };
const user = (id: string, slot_id?: string): Msg => ({ id, role: "user", metadata: { custom: slot_id ? { slot_id } : {} } });
const bot = (id: string, custom: Record<string, unknown> = {}, status: Msg["status"] = { type: "complete", reason: "unknown" }): Msg =>
  ({ id, role: "assistant", status, metadata: { custom } });

describe("slot events", () => {
  it("parseSlots keeps well-formed, distinct slots (at most 10) and trims long text", () => {
    expect(parseSlots({ slots: A })).toEqual(A);
    expect(parseSlots({ slots: [{ slot_id: "a", label: "  x  " }] })).toEqual([{ slot_id: "a", label: "x", rep: "" }]);
    expect(parseSlots({ slots: [{ slot_id: "a b", label: "x" }, { slot_id: "a", label: "" }, null, 3] })).toBeNull();
    expect(parseSlots({ slots: "x" })).toBeNull();
    expect(parseSlots(null)).toBeNull();
    const many = Array.from({ length: 30 }, (_, i) => ({ slot_id: `s${i}`, label: "l".repeat(500), rep: "r" }));
    const out = parseSlots({ slots: many })!;
    expect(out).toHaveLength(10);
    expect(out[0].label).toHaveLength(200);
  });

  it("parseMeeting needs a label; the start is normalised to ISO UTC or null", () => {
    expect(parseMeeting({ label: "Tue", rep: "Ana", start: "2026-03-24T08:00:00Z" })).toEqual({ label: "Tue", rep: "Ana", start: "2026-03-24T08:00:00.000Z" });
    expect(parseMeeting({ label: "Tue", start: 12 })).toEqual({ label: "Tue", rep: "", start: null });
    expect(parseMeeting({ rep: "Ana" })).toBeNull();
    expect(parseMeeting(null)).toBeNull();
  });
});

describe("which offer's buttons can be clicked", () => {
  it("open when it is the latest offer and nothing runs; busy while a reply streams", () => {
    const msgs = [user("u1"), bot("a1", { slots: A })];
    expect(offerState(msgs, "a1", false)).toBe("open");
    expect(offerState(msgs, "a1", true)).toBe("busy");
    expect(offerState(msgs, "u1", false)).toBe("");               // no slots on that message
    expect(offerState(msgs, "nope", false)).toBe("");
  });

  it("typing something else keeps the offer open", () => {
    expect(offerState([bot("a1", { slots: A }), user("u2"), bot("a2")], "a1", false)).toBe("open");
  });

  it("a pick closes it and marks the picked slot, unless its reply failed", () => {
    expect(offerState([bot("a1", { slots: A }), user("u2", "intro.ana.2"), bot("a2", {}, { type: "running" })], "a1", true)).toBe("picked:intro.ana.2");
    expect(offerState([bot("a1", { slots: A }), user("u2", "intro.ana.2")], "a1", true)).toBe("picked:intro.ana.2");
    const failed = [bot("a1", { slots: A }), user("u2", "intro.ana.2"), bot("a2", {}, { type: "incomplete", reason: "error" })];
    expect(offerState(failed, "a1", false)).toBe("open");
    expect(offerState([...failed, user("u3", "intro.ana.1"), bot("a3")], "a1", false)).toBe("picked:intro.ana.1");
    expect(offerState([bot("a1", { slots: A }), user("u2", "intro.ana.3"), bot("a2")], "a1", false)).toBe("open");   // not from this offer
  });

  it("a newer offer or a booked meeting closes an older offer", () => {
    const msgs = [bot("a1", { slots: A }), user("u2"), bot("a2", { slots: B })];
    expect(offerState(msgs, "a1", false)).toBe("closed");
    expect(offerState(msgs, "a2", false)).toBe("open");
    expect(offerState([bot("a1", { slots: A }), user("u2"), bot("a2", { meeting: { label: "Tue", rep: "", start: null } })], "a1", false)).toBe("closed");
  });
});
