import { describe, expect, it } from "vitest";
import { SseParser } from "../src/sse";

describe("SseParser", () => {
  it("parses the leadchat contract: delta events then done", () => {
    const p = new SseParser();
    const evs = p.feed('event: delta\r\ndata: {"type":"text_delta","content":"Hi"}\r\n\r\nevent: done\r\ndata: {"turn_index":1}\r\n\r\n');
    expect(evs).toEqual([
      { event: "delta", data: '{"type":"text_delta","content":"Hi"}' },
      { event: "done", data: '{"turn_index":1}' },
    ]);
  });

  it("reassembles events split anywhere across chunks, including inside a CRLF", () => {
    const text = 'event: delta\r\ndata: {"content":"a"}\r\n\r\nevent: delta\ndata: {"content":"b"}\n\nevent: done\rdata: {}\r\r';
    for (let cut = 1; cut < text.length; cut++) {
      const p = new SseParser();
      const evs = [...p.feed(text.slice(0, cut)), ...p.feed(text.slice(cut)), ...p.end()];
      expect(evs.map((e) => e.event)).toEqual(["delta", "delta", "done"]);
      expect(evs[1].data).toBe('{"content":"b"}');
    }
  });

  it("ignores comments (pings), unknown fields and a leading BOM; joins multi-line data", () => {
    const p = new SseParser();
    const evs = p.feed("\ufeff: ping\n\nid: 7\nretry: 10\nevent: x\ndata: one\ndata:two\n\n");
    expect(evs).toEqual([{ event: "x", data: "one\ntwo" }]);
  });

  it("defaults the event name to message, drops events without data and a trailing partial event", () => {
    const p = new SseParser();
    expect(p.feed("data: plain\n\nevent: empty\n\nevent: delta\ndata: half")).toEqual([{ event: "message", data: "plain" }]);
    expect(p.end()).toEqual([]);
  });
});
