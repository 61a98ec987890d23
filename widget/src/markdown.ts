// A small Markdown reader for the assistant's replies: paragraphs, bullet and numbered lists, **bold**,
// *italic*, `code` and [links](https://…). It builds a tree of the few element types below and never
// HTML: the panel turns the tree into elements with text nodes, so markup in a reply shows as text.
// Links keep only http(s) and mailto targets (anything else is plain text); nesting is capped.

export type Inline = string | { tag: "strong" | "em" | "code"; children: Inline[] } | { tag: "a"; href: string; children: Inline[] };
export type Block = { tag: "p"; children: Inline[] } | { tag: "ul" | "ol"; items: Inline[][] };

const MAX_DEPTH = 4;
const LIST = /^\s{0,3}(?:([-*+])|(\d{1,9})[.)])\s+(.*)$/;

/** An absolute http(s) or mailto URL, or null. */
export function safeHref(raw: string): string | null {
  try {
    const u = new URL(raw.trim());
    return ["http:", "https:", "mailto:"].includes(u.protocol) ? u.href : null;
  } catch {
    return null;
  }
}

const STRONG = [/^\*\*(?=\S)([\s\S]*?\S)\*\*/, /^__(?=\S)([\s\S]*?\S)__(?!\w)/];
const EM = [/^\*(?=[^\s*])([^*]*?[^\s*])\*/, /^_(?=[^\s_])([^_]*?[^\s_])_(?!\w)/];
const LINK = /^\[([^\][]+)\]\(\s*<?([^()\s<>]+)>?\s*\)/;
const BARE_URL = /^(?:https?:\/\/|mailto:)[^\s<>()"']*[^\s<>().,;:!?'"]/;
const first = (res: RegExp[], s: string) => res.map((re) => s.match(re)).find(Boolean) ?? null;

/** The inline parts of one paragraph or list item. */
export function parseInline(text: string, depth = 0): Inline[] {
  const out: Inline[] = [];
  const push = (s: string) => {
    if (typeof out[out.length - 1] === "string") out[out.length - 1] += s;
    else out.push(s);
  };
  const nested = depth < MAX_DEPTH;
  let i = 0;
  while (i < text.length) {
    const rest = text.slice(i);
    const wordBefore = /\w/.test(text[i - 1] ?? "");
    let m: RegExpMatchArray | null;
    if (nested && (m = first(STRONG, rest))) out.push({ tag: "strong", children: parseInline(m[1], depth + 1) });
    else if (nested && !(rest[0] === "_" && wordBefore) && (m = first(EM, rest))) out.push({ tag: "em", children: parseInline(m[1], depth + 1) });
    else if ((m = rest.match(/^`([^`\n]+)`/))) out.push({ tag: "code", children: [m[1]] });
    else if (nested && (m = rest.match(LINK))) {
      const href = safeHref(m[2]);
      if (href) out.push({ tag: "a", href, children: parseInline(m[1], depth + 1) });
      else push(m[1]); // a refused target (javascript:, data:, relative …): its text only
    } else if (!wordBefore && (m = rest.match(BARE_URL)) && safeHref(m[0])) out.push({ tag: "a", href: safeHref(m[0])!, children: [m[0]] });
    else {
      // plain text, up to the next character that may start markup
      const next = rest.slice(1).search(/[*_`[hm]/);
      m = [next < 0 ? rest : rest.slice(0, next + 1)] as RegExpMatchArray;
      push(m[0]);
    }
    i += m[0].length;
  }
  return out;
}

/** The blocks of a reply: paragraphs (split on blank lines, single line breaks kept) and lists. */
export function parseMarkdown(text: string): Block[] {
  const blocks: Block[] = [];
  let para: string[] = [];
  let list: { tag: "ul" | "ol"; items: string[] } | null = null;
  const flush = () => {
    if (para.length) blocks.push({ tag: "p", children: parseInline(para.join("\n")) });
    if (list) blocks.push({ tag: list.tag, items: list.items.map((t) => parseInline(t)) });
    para = [];
    list = null;
  };
  for (const line of text.split(/\r\n?|\n/)) {
    const m = line.match(LIST);
    if (m) {
      const tag = m[1] ? "ul" : "ol";
      if (para.length || (list && list.tag !== tag)) flush();
      list ??= { tag, items: [] };
      list.items.push(m[3]);
    } else if (!line.trim()) {
      flush();
    } else if (list && /^\s/.test(line)) {
      list.items[list.items.length - 1] += "\n" + line.trim(); // a continuation of the item
    } else {
      if (list) flush();
      para.push(line);
    }
  }
  flush();
  return blocks;
}
