// A Server-Sent Events parser for a fetch() body (EventSource cannot POST or send headers).
// Follows the WHATWG event-stream rules: CR, LF or CRLF line ends, `:` comments (sse-starlette's
// pings), multi-line data joined with "\n", a blank line dispatches, a trailing partial event is dropped.

export interface SseEvent {
  event: string;
  data: string;
}

export class SseParser {
  private buf = "";
  private event = "";
  private data: string[] = [];
  private started = false;

  /** Feed decoded text; returns the events completed by it. */
  feed(chunk: string): SseEvent[] {
    if (!this.started && chunk.length) {
      this.started = true;
      if (chunk.charCodeAt(0) === 0xfeff) chunk = chunk.slice(1);
    }
    this.buf += chunk;
    const out: SseEvent[] = [];
    let start = 0;
    for (let i = 0; i < this.buf.length; i++) {
      const c = this.buf[i];
      if (c !== "\n" && c !== "\r") continue;
      // a CR at the very end may be the first half of a CRLF split across chunks: wait for more
      if (c === "\r" && i === this.buf.length - 1) break;
      this.line(this.buf.slice(start, i), out);
      if (c === "\r" && this.buf[i + 1] === "\n") i++;
      start = i + 1;
    }
    this.buf = this.buf.slice(start);
    return out;
  }

  /** The stream ended: a final lone CR still ends its line; an unterminated event is dropped. */
  end(): SseEvent[] {
    const out: SseEvent[] = [];
    if (this.buf === "\r") this.line("", out);
    this.buf = "";
    return out;
  }

  private line(line: string, out: SseEvent[]) {
    if (line === "") {
      if (this.data.length) out.push({ event: this.event || "message", data: this.data.join("\n") });
      this.event = "";
      this.data = [];
      return;
    }
    if (line[0] === ":") return;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value[0] === " ") value = value.slice(1);
    if (field === "event") this.event = value;
    else if (field === "data") this.data.push(value);
    // `id` and `retry` carry nothing for a one-shot POST stream
  }
}
