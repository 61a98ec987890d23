import { describe, expect, it } from "vitest";
import { MESSAGES, TurnError, type ChatModelAdapter, type ChatModelRunOptions } from "../src/adapter";
import { Thread } from "../src/thread";

/** An adapter whose runs the test drives: each run waits for `next()` between yields. */
function scripted(script: (opts: ChatModelRunOptions) => AsyncGenerator<never, void> | AsyncGenerator<object, void>) {
  const runs: ChatModelRunOptions[] = [];
  const adapter = { run: (o: ChatModelRunOptions) => { runs.push(o); return script(o); } } as ChatModelAdapter;
  return { adapter, runs };
}
const tick = () => new Promise((r) => setTimeout(r, 0));

describe("the conversation thread", () => {
  it("appends the visitor's message and a running reply, streams its text and metadata, then completes", async () => {
    let release!: () => void;
    const gate = () => new Promise<void>((r) => { release = r; });
    const { adapter, runs } = scripted(async function* () {
      await gate(); yield { content: [{ type: "text", text: "Hel" }] };
      await gate(); yield { content: [{ type: "text", text: "Hello" }] };
      yield { metadata: { custom: { slots: [{ slot_id: "s1", label: "Tue", rep: "" }] } } };
    });
    const t = new Thread(adapter);
    expect(t.send("  hi  ", { slot_id: "x" })).toBe(true);
    expect(t.running.value).toBe(true);
    expect(t.send("again")).toBe(false);                  // one reply at a time
    const [user, reply] = t.messages.value;
    expect(user).toMatchObject({ role: "user", content: [{ type: "text", text: "hi" }], metadata: { custom: { slot_id: "x" } } });
    expect(reply).toMatchObject({ role: "assistant", content: [], status: { type: "running" } });
    expect(runs[0].messages.map((m) => m.role)).toEqual(["user"]);
    release(); await tick();
    expect(t.messages.value[1].content[0].text).toBe("Hel");
    release(); await tick(); await tick();
    expect(t.messages.value[1]).toMatchObject({ content: [{ text: "Hello" }], status: { type: "complete" }, metadata: { custom: { slots: [{ slot_id: "s1" }] } } });
    expect(t.running.value).toBe(false);
    expect(t.send("")).toBe(false);
  });

  it("a failed turn marks the reply with the error's text (a non-TurnError: the generic retry text)", async () => {
    let n = 0;
    const t = new Thread(scripted(async function* () {
      if (n++ === 0) throw new TurnError("That message is too long.", "http_413");
      throw new Error("boom");
    }).adapter);
    t.send("a"); await tick();
    expect(t.messages.value[1]).toMatchObject({ status: { type: "incomplete", reason: "error" }, error: "That message is too long." });
    t.send("b"); await tick();
    expect(t.messages.value[3].error).toBe(MESSAGES.retry);
    expect(t.running.value).toBe(false);
  });

  it("cancel() aborts the run: the reply is cancelled, not an error", async () => {
    const t = new Thread(scripted(async function* (o) {
      await new Promise((_, reject) => o.abortSignal.addEventListener("abort", () => reject(new Error("aborted"))));
    }).adapter);
    t.send("a"); await tick();
    t.cancel(); await tick();
    expect(t.messages.value[1]).toMatchObject({ status: { type: "incomplete", reason: "cancelled" } });
    expect(t.messages.value[1].error).toBeUndefined();
    expect(t.running.value).toBe(false);
  });
});
