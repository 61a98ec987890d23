// One conversation: its messages and whether a reply is streaming, as signals the panel renders.
// `send()` appends the visitor's message and a running assistant reply, then drives the adapter's
// `run()` (adapter.ts): each yield replaces the reply's text or metadata; a thrown TurnError marks the
// reply failed with the error's visitor-facing text.
import { signal } from "@preact/signals";
import { MESSAGES, TurnError, type ChatModelAdapter, type ThreadMessage } from "./adapter";

let ids = 0;
const nextId = () => `m${++ids}`;

export class Thread {
  readonly messages = signal<readonly ThreadMessage[]>([]);
  readonly running = signal(false);
  private abort: AbortController | null = null;

  constructor(private readonly adapter: ChatModelAdapter) {}

  /** Send a visitor message (with metadata, e.g. a slot button's slot_id); false when empty or a reply is streaming. */
  send(text: string, custom: Record<string, unknown> = {}): boolean {
    text = text.trim();
    if (!text || this.running.value) return false;
    const reply: ThreadMessage = { id: nextId(), role: "assistant", content: [], status: { type: "running" }, metadata: { custom: {} } };
    this.messages.value = [...this.messages.value,
      { id: nextId(), role: "user", content: [{ type: "text", text }], metadata: { custom } }, reply];
    this.running.value = true;
    void this.run(reply.id);
    return true;
  }

  /** Stop a streaming reply (the conversation ended or the panel went away). */
  cancel() {
    this.abort?.abort();
  }

  private update(id: string, patch: Partial<ThreadMessage>) {
    this.messages.value = this.messages.value.map((m) => (m.id === id ? { ...m, ...patch } : m));
  }

  private async run(id: string) {
    const abort = (this.abort = new AbortController());
    try {
      const history = this.messages.value.filter((m) => m.id !== id);
      for await (const r of this.adapter.run({ messages: history, abortSignal: abort.signal })) {
        if (abort.signal.aborted) break;
        if (r.content) this.update(id, { content: r.content });
        if (r.metadata) this.update(id, { metadata: r.metadata });
      }
      this.update(id, { status: abort.signal.aborted ? { type: "incomplete", reason: "cancelled" } : { type: "complete" } });
    } catch (e) {
      if (abort.signal.aborted) this.update(id, { status: { type: "incomplete", reason: "cancelled" } });
      else this.update(id, { status: { type: "incomplete", reason: "error" }, error: e instanceof TurnError ? e.message : MESSAGES.retry });
    } finally {
      this.abort = null;
      this.running.value = false;
    }
  }
}
