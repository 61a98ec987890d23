import { render } from "preact";
import { afterEach, describe, expect, it } from "vitest";
import { Markdown, NoticeText } from "../src/panel";

afterEach(() => document.body.replaceChildren());

function show(text: string) {
  const root = document.createElement("div");
  document.body.append(root);
  render(<Markdown text={text} />, root);
  return root;
}

describe("a Markdown reply in the panel", () => {
  it("creates only the allowed elements; markup from the reply stays text", () => {
    const hostile = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script><b onclick="x()">b</b>';
    const root = show(`${hostile}\n\n**Bold** [site](https://example.com) [evil](javascript:alert(1))\n\n- a\n- b`);
    const tags = new Set([...root.querySelectorAll("*")].map((e) => e.tagName));
    expect([...tags].sort()).toEqual(["A", "DIV", "LI", "P", "STRONG", "UL"]);
    expect(root.textContent).toContain(hostile);
    const links = [...root.querySelectorAll("a")];
    expect(links.map((a) => [a.getAttribute("href"), a.target, a.rel])).toEqual([["https://example.com/", "_blank", "noopener noreferrer"]]);
    expect(root.textContent).toContain("evil");
    expect((window as unknown as { __pwned?: number }).__pwned).toBeUndefined();
  });
});

describe("the privacy notice's text", () => {
  const notice = (privacyUrl: string | null) => {
    const root = document.createElement("p");
    document.body.append(root);
    render(<NoticeText privacyUrl={privacyUrl} />, root);
    return root;
  };

  it("links the words Privacy Policy to privacy-url in a new tab", () => {
    const root = notice("https://www.example.com/privacy");
    const links = [...root.querySelectorAll("a")];
    expect(links.map((a) => [a.textContent, a.getAttribute("href"), a.target, a.rel]))
      .toEqual([["Privacy Policy", "https://www.example.com/privacy", "_blank", "noopener noreferrer"]]);
    expect(root.textContent).toMatch(/By continuing, you agree to our Privacy Policy\.$/);
  });

  it("without a URL it is text only", () => {
    const root = notice(null);
    expect(root.querySelectorAll("a")).toHaveLength(0);
    expect(root.textContent).toContain("Privacy Policy");
  });
});
