import type { WidgetConfig } from "../src/config";
import { ChatController, type StorageLike } from "../src/controller";
import type { EventDetails, EventName } from "../src/events";

export const CONFIG: WidgetConfig = {
  apiUrl: "https://api.example.com/chat", fallbackUrl: "https://example.com/contact", position: "bottom-right",
  proactiveDelayMs: 45000, proactiveMessage: "Have a question about AI engineering?", streamTimeoutMs: 10000, preload: "intent",
  privacyUrl: null,
};

export class MemoryStorage implements StorageLike {
  data = new Map<string, string>();
  getItem(k: string) { return this.data.get(k) ?? null; }
  setItem(k: string, v: string) { this.data.set(k, v); }
}

export type Recorded = { name: EventName; detail: EventDetails[EventName] };

/** A controller with recorded events, an in-memory sessionStorage and sequential session ids. */
export function makeController(config: Partial<WidgetConfig> = {}, storage: StorageLike | null = new MemoryStorage(),
  localStore: StorageLike | null = null) {
  const events: Recorded[] = [];
  let n = 0;
  const controller = new ChatController({ ...CONFIG, ...config }, {
    emit: (name, detail) => events.push({ name, detail }),
    storage,
    localStore,
    uuid: () => `00000000-0000-4000-8000-${String(++n).padStart(12, "0")}`,
    now: () => new Date(),
  });
  return { controller, events, names: () => events.map((e) => e.name), storage };
}
