import { describe, expect, it } from "vitest";
import { parseInline, parseMarkdown, safeHref, type Block, type Inline } from "../src/markdown";

/** Every tag in a tree, and every link target. */
function walk(blocks: Block[]) {
  const tags = new Set<string>();
  const hrefs: string[] = [];
  const inl = (parts: Inline[]) => parts.forEach((p) => {
    if (typeof p === "string") return;
    tags.add(p.tag);
    if (p.tag === "a") hrefs.push(p.href);
    inl(p.children);
  });
  for (const b of blocks) {
    tags.add(b.tag);
    if (b.tag === "p") inl(b.children);
    else b.items.forEach(inl);
  }
  return { tags, hrefs };
}

const text = (parts: Inline[]): string => parts.map((p) => (typeof p === "string" ? p : text(p.children))).join("");

describe("Markdown replies", () => {
  it("paragraphs, bullet and numbered lists, bold, italic, code and links", () => {
    expect(parseMarkdown("Hi **there**, see [our work](https://example.com/w) or `RAG`.\n\n- one\n- *two*\n\n1. first\n2) second")).toEqual([
      { tag: "p", children: ["Hi ", { tag: "strong", children: ["there"] }, ", see ", { tag: "a", href: "https://example.com/w", children: ["our work"] },
        " or ", { tag: "code", children: ["RAG"] }, "."] },
      { tag: "ul", items: [["one"], [{ tag: "em", children: ["two"] }]] },
      { tag: "ol", items: [["first"], ["second"]] },
    ]);
  });

  it("a single line break stays in its paragraph; a list right after a line is a list", () => {
    expect(parseMarkdown("Times:\n- Tue\n- Wed\nReply with one.")).toEqual([
      { tag: "p", children: ["Times:"] }, { tag: "ul", items: [["Tue"], ["Wed"]] }, { tag: "p", children: ["Reply with one."] }]);
    expect(parseMarkdown("line one\nline two")).toEqual([{ tag: "p", children: ["line one\nline two"] }]);
  });

  it("bare http(s) and mailto URLs become links; snake_case and 2*3*4 stay text", () => {
    expect(walk(parseMarkdown("Mail mailto:hi@example.com or https://example.com/a_b.")).hrefs)
      .toEqual(["mailto:hi@example.com", "https://example.com/a_b"]);
    expect(parseInline("my_var_name and 2 * 3 * 4")).toEqual(["my_var_name and 2 * 3 * 4"]);
  });

  it("hostile HTML is text, never an element", () => {
    const md = '<img src=x onerror="alert(1)"><script>alert(2)</script><a href="javascript:alert(3)">x</a><iframe src="https://evil.example"></iframe>';
    const blocks = parseMarkdown(md);
    expect([...walk(blocks).tags]).toEqual(["p", "a"]);              // only the bare https URL is a link
    expect(walk(blocks).hrefs).toEqual(["https://evil.example/"]);
    expect(text((blocks[0] as { children: Inline[] }).children)).toBe(md);
  });

  it("links only to http(s) and mailto: javascript:, data:, vbscript:, file: and relative targets keep their text only", () => {
    for (const target of ["javascript:alert(1)", "JaVaScRiPt:alert(1)", " javascript:alert(1)", "data:text/html;base64,PHNjcmlwdD4=",
      "vbscript:msgbox(1)", "file:///etc/passwd", "/relative", "//evil.example/x", "java\tscript:alert(1)"]) {
      const blocks = parseMarkdown(`[click](${target}) after`);
      expect(walk(blocks).hrefs).toEqual([]);
      expect(text((blocks[0] as { children: Inline[] }).children)).toMatch(/click/);
    }
    expect(safeHref("https://example.com/x?a=1")).toBe("https://example.com/x?a=1");
    expect(safeHref("mailto:a@example.com")).toBe("mailto:a@example.com");
    expect(safeHref("javascript:alert(1)")).toBeNull();
  });

  it("deep nesting is capped (no stack overflow) and keeps all the text", () => {
    const deep = "**_".repeat(5000) + "x" + "_**".repeat(5000);
    const blocks = parseMarkdown(deep);
    expect(text((blocks[0] as { children: Inline[] }).children).replace(/[*_]/g, "")).toBe("x");
    let depth = 0;
    const measure = (parts: Inline[], d: number) => parts.forEach((p) => {
      if (typeof p === "string") return;
      depth = Math.max(depth, d + 1);
      measure(p.children, d + 1);
    });
    measure((blocks[0] as { children: Inline[] }).children, 0);
    expect(depth).toBeLessThanOrEqual(5);
    const links = "[".repeat(3000) + "a](https://example.com)" + ")".repeat(3000);
    expect(walk(parseMarkdown(links)).hrefs).toEqual(["https://example.com/"]);
    const lists = Array.from({ length: 500 }, (_, i) => `${" ".repeat(i % 4)}- item ${i}`).join("\n");
    expect(parseMarkdown(lists)).toHaveLength(1);
  });
});
