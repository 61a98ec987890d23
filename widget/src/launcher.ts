// chat.js — the <growth-chat> custom element: launcher button, proactive prompt, panel shell and
// fallback view, in plain DOM, small enough for every page. The chat panel (panel.tsx, Preact) is a
// second bundle, fetched only when the visitor shows intent: the pointer over or focus on the launcher,
// the proactive prompt shown, or the first open (preload="idle" also fetches it when the browser is idle;
// preload="open" only on open). When the panel fills the screen (a phone, or a desktop zoomed in) it is
// modal: aria-modal, Tab kept inside, the host page inert.
import { parseConfig } from "./config";
import { PANEL_FILE, PANEL_GLOBAL, VERSION } from "./constants";
import { ChatController, localStorageOrNull, sessionStorageOrNull, type ControllerState } from "./controller";
import { dispatchOn } from "./events";
import { LAUNCHER_CSS } from "./launcher.css";
import { adoptStyles } from "./styles";
import type { PanelHandle, PanelModule } from "./panel";

// Captured while this script runs: the panel is found relative to it.
const SCRIPT_SRC = (document.currentScript as HTMLScriptElement | null)?.src
  || Array.from(document.scripts).find((s) => /\/chat\.js(\?|#|$)/.test(s.src))?.src
  || "";

/**
 * The panel bundle's URL. Served layout (the API and widget/dist alike):
 *   chat.js                           the alias (short cache)
 *   widget/<version>/chat.js          versioned, immutable
 *   widget/<version>/panel-<hash>.js  versioned, immutable
 */
export function panelUrl(scriptSrc: string, base: string = location.href): string {
  const src = new URL(scriptSrc || "chat.js", base);
  const versioned = src.pathname.endsWith(`/widget/${VERSION}/chat.js`);
  return new URL(versioned ? PANEL_FILE : `widget/${VERSION}/${PANEL_FILE}`, src).href;
}

let loading: Promise<PanelModule> | null = null;

function loadPanel(url: string, parent: Node): Promise<PanelModule> {
  const registered = () => (window as unknown as Record<string, Record<string, PanelModule> | undefined>)[PANEL_GLOBAL]?.[VERSION];
  const ready = registered();
  if (ready) return Promise.resolve(ready);
  if (!loading) {
    loading = new Promise<PanelModule>((resolve, reject) => {
      const s = document.createElement("script");
      s.src = url;
      s.async = true;
      s.onload = () => {
        const m = registered();
        if (m) resolve(m);
        else reject(new Error(`<growth-chat>: ${url} did not register the chat panel (version ${VERSION}); serve the panel built with this chat.js`));
      };
      s.onerror = () => reject(new Error(`<growth-chat>: the chat panel could not be loaded from ${url}`));
      parent.appendChild(s);
    });
    loading.catch(() => { loading = null; });
  }
  return loading;
}

const CHAT_ICON = '<svg viewBox="0 0 24 24" width="28" height="28" aria-hidden="true" focusable="false"><path fill="currentColor" d="M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4H4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2zm3 6.5a1.5 1.5 0 1 0 0 .01zm5 0a1.5 1.5 0 1 0 0 .01zm5 0a1.5 1.5 0 1 0 0 .01z"/></svg>';
const CLOSE_ICON = '<svg viewBox="0 0 24 24" width="26" height="26" aria-hidden="true" focusable="false"><path fill="currentColor" d="M6.4 5 12 10.6 17.6 5 19 6.4 13.4 12l5.6 5.6-1.4 1.4-5.6-5.6L6.4 19 5 17.6l5.6-5.6L5 6.4z"/></svg>';

function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, text?: string): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

// Below this width the panel is full-screen (launcher.css.ts), so it is a modal dialog there.
/** The server's switch for the proactive prompt: GET <api-url>/flags for this session; anything but `true`, no prompt. */
export function proactiveSwitch(apiUrl: string, fetchFn: typeof fetch = (...a) => fetch(...a)) {
  return async (sessionId: string): Promise<boolean> => {
    const r = await fetchFn(`${apiUrl.replace(/\/+$/, "")}/flags`, { headers: { "ZGC-Session-ID": sessionId }, cache: "no-store" });
    if (!r.ok) return false;
    return (await r.json())?.proactive_prompt === true;
  };
}

const FULL_SCREEN = "(max-width: 480px)";
const FOCUSABLE = "button, [href], input, textarea, select, [tabindex]:not([tabindex='-1'])";

export class GrowthChatElement extends HTMLElement {
  private controller: ChatController | null = null;
  private panel: PanelHandle | null = null;
  /** Host elements this widget made inert while its panel is modal (restored afterwards). */
  private inerted: Element[] = [];
  private fullScreen: MediaQueryList | null = null;
  private els!: {
    root: HTMLElement; launcher: HTMLButtonElement; prompt: HTMLElement; panel: HTMLElement; end: HTMLButtonElement;
    loading: HTMLElement; mount: HTMLElement; fallback: HTMLElement;
  };
  private cleanup: (() => void)[] = [];

  /** The controller (session id, state) — for tests and host-page debugging. */
  get chat(): ChatController | null {
    return this.controller;
  }

  connectedCallback() {
    // Shadow DOM, open mode (ADR-005): the panel's styles and events stay inside the shadow tree
    const shadow = this.shadowRoot ?? this.attachShadow({ mode: "open" });
    shadow.replaceChildren();
    try { shadow.adoptedStyleSheets = []; } catch { /* not supported: <style> fallback */ }
    const { config, errors, warnings } = parseConfig((n) => this.getAttribute(n), document.baseURI);
    for (const e of errors) console.error(e);
    for (const w of warnings) console.warn(w);
    const controller = new ChatController(config, {
      emit: dispatchOn(this), storage: sessionStorageOrNull(), localStore: localStorageOrNull(),
      proactiveAllowed: config.apiUrl ? proactiveSwitch(config.apiUrl) : null,
    });
    this.controller = controller;

    const root = h("div", { class: `gc-root gc-${config.position}` });
    const prompt = h("div", { class: "gc-prompt", hidden: "" });
    const promptOpen = h("button", { type: "button", class: "gc-prompt-open" }, config.proactiveMessage);
    const promptClose = h("button", { type: "button", class: "gc-prompt-close", "aria-label": "Dismiss" }, "×");
    prompt.append(promptOpen, promptClose);
    const promptRegion = h("div", { role: "status", "aria-live": "polite" });
    promptRegion.append(prompt);

    const panel = h("section", { class: "gc-panel", id: "gc-panel", role: "dialog", "aria-labelledby": "gc-title", tabindex: "-1", hidden: "" });
    const header = h("div", { class: "gc-header" });
    const title = h("h2", { class: "gc-title", id: "gc-title" }, "Chat with us");
    const end = h("button", { type: "button", class: "gc-end", hidden: "" }, "End chat");
    const close = h("button", { type: "button", class: "gc-close", "aria-label": "Close chat" });
    close.innerHTML = CLOSE_ICON;
    header.append(title, end, close);
    const body = h("div", { class: "gc-body" });
    const loading = h("div", { class: "gc-loading", role: "status" }, "Loading the chat…");
    const mount = h("div", { class: "gc-mount", hidden: "" });
    const fallback = h("div", { class: "gc-fallback", role: "status", hidden: "" });
    body.append(loading, mount, fallback);
    panel.append(header, body);

    const launcher = h("button", { type: "button", class: "gc-launcher", "aria-controls": "gc-panel", "aria-expanded": "false", "aria-label": "Open chat" });
    launcher.innerHTML = CHAT_ICON;
    root.append(promptRegion, panel, launcher);
    shadow.append(root);
    adoptStyles(shadow, LAUNCHER_CSS);
    this.els = { root, launcher, prompt, panel, end, loading, mount, fallback };
    this.renderFallback();

    const on = (t: EventTarget, type: string, fn: (e: Event) => void, opts?: AddEventListenerOptions) => {
      t.addEventListener(type, fn, opts);
      this.cleanup.push(() => t.removeEventListener(type, fn, opts));
    };
    on(launcher, "click", () => (controller.current.open ? this.close() : this.open()));
    on(close, "click", () => this.close());
    on(end, "click", () => {
      controller.endConversation("explicit_close");
      this.panel?.focus();
    });
    on(promptOpen, "click", () => this.open());
    on(promptClose, "click", () => {
      controller.dismissProactive();
      launcher.focus();
    });
    on(prompt, "keydown", (e) => {
      if ((e as KeyboardEvent).key === "Escape") controller.dismissProactive();
    });
    on(panel, "keydown", (e) => {
      const k = e as KeyboardEvent;
      if (k.key === "Escape") {
        e.stopPropagation();
        this.close();
      } else if (k.key === "Tab" && panel.getAttribute("aria-modal") === "true") this.trapTab(k);
    });
    this.fullScreen = window.matchMedia?.(FULL_SCREEN) ?? null;
    if (this.fullScreen) on(this.fullScreen, "change", () => this.render(controller.current));
    // a click anywhere outside the bubble dismisses it (spec: "clicks away from the bubble")
    on(document, "pointerdown", (e) => {
      if (controller.current.proactiveVisible && !e.composedPath().includes(prompt) && !e.composedPath().includes(launcher))
        controller.dismissProactive();
    }, { capture: true });

    this.cleanup.push(controller.subscribe((s) => this.render(s)));
    this.render(controller.current);
    controller.startProactive();
    if (config.preload !== "open" && !controller.current.fallback) {
      const intent = () => void this.ensurePanel(false);
      on(launcher, "pointerenter", intent);
      on(launcher, "focus", intent);
      if (config.preload === "idle") this.preloadWhenIdle();
    }
  }

  disconnectedCallback() {
    for (const fn of this.cleanup.splice(0)) fn();
    this.setHostInert(false);
    this.panel?.unmount();
    this.panel = null;
    this.controller?.destroy();
    this.controller = null;
  }

  open() {
    const c = this.controller;
    if (!c || c.current.open) return;
    c.open();
    if (c.current.fallback) this.els.fallback.querySelector<HTMLElement>("a")?.focus() ?? this.els.panel.focus();
    else if (this.panel) this.panel.focus();
    else {
      this.els.panel.focus();
      this.ensurePanel(true);
    }
  }

  close() {
    if (!this.controller?.current.open) return;
    this.controller.close();
    this.els.launcher.focus();
  }

  /** Keep Tab and Shift+Tab inside the modal panel. */
  private trapTab(e: KeyboardEvent) {
    const items = [...this.els.panel.querySelectorAll<HTMLElement>(FOCUSABLE)]
      .filter((el) => !(el as HTMLButtonElement).disabled && el.getClientRects().length > 0);
    if (!items.length) return;
    const active = this.shadowRoot!.activeElement;
    const first = items[0], last = items[items.length - 1];
    if (e.shiftKey ? active === first || !items.includes(active as HTMLElement) : active === last) {
      e.preventDefault();
      (e.shiftKey ? last : first).focus();
    }
  }

  /** Make the host page inert while the panel covers it (every sibling on the way up to <body>), or undo that. */
  private setHostInert(on: boolean) {
    if (!on) {
      for (const el of this.inerted.splice(0)) el.removeAttribute("inert");
      return;
    }
    if (this.inerted.length) return;
    for (let node: Element = this; node.parentElement && node !== document.body; node = node.parentElement) {
      for (const sib of node.parentElement.children) {
        if (sib === node || sib.hasAttribute("inert") || sib instanceof HTMLScriptElement || sib instanceof HTMLStyleElement) continue;
        sib.setAttribute("inert", "");
        this.inerted.push(sib);
      }
    }
  }

  private preloadWhenIdle() {
    const idle = () => {
      const ric = (window as Window & { requestIdleCallback?: (cb: () => void, o?: { timeout: number }) => number }).requestIdleCallback;
      if (ric) ric(() => this.ensurePanel(false), { timeout: 4000 });
      else setTimeout(() => this.ensurePanel(false), 1500);
    };
    if (document.readyState === "complete") idle();
    else window.addEventListener("load", idle, { once: true });
  }

  private async ensurePanel(opening: boolean) {
    const c = this.controller;
    if (!c || this.panel || c.current.fallback) return;
    try {
      const mod = await loadPanel(panelUrl(SCRIPT_SRC), this.shadowRoot!);
      if (this.controller !== c || this.panel) return;
      this.panel = mod.mount(this.els.mount, c);
      this.render(c.current);
      if (c.current.open) this.panel.focus();
    } catch (e) {
      // preloading failed quietly (the open will try again); failing on open is the fallback
      if (!opening || this.controller !== c) return;
      console.error(e);
      c.activateFallback("connection_error");
    }
  }

  private renderFallback() {
    const url = this.controller?.config.fallbackUrl;
    const f = this.els.fallback;
    f.replaceChildren();
    if (url) {
      f.append(h("p", {}, "Our chat assistant isn’t available right now. You can still reach us using our contact form."));
      f.append(h("a", { href: url, target: "_blank", rel: "noopener noreferrer", class: "gc-fallback-link" }, "Contact us →"));
    } else {
      f.append(h("p", {}, "Our chat assistant isn’t available right now. Please try again later."));
    }
  }

  private render(s: ControllerState) {
    const { root, launcher, prompt, panel, end, loading, mount, fallback } = this.els;
    root.classList.toggle("gc-open", s.open);
    prompt.hidden = !s.proactiveVisible;
    panel.hidden = !s.open;
    launcher.setAttribute("aria-expanded", String(s.open));
    launcher.setAttribute("aria-label", s.open ? "Close chat" : "Open chat");
    launcher.innerHTML = s.open ? CLOSE_ICON : CHAT_ICON;
    const modal = s.open && !!this.fullScreen?.matches;
    if (modal) panel.setAttribute("aria-modal", "true");
    else panel.removeAttribute("aria-modal");
    this.setHostInert(modal);
    // the prompt is an invitation: fetch the panel now, so a click on it opens at once
    if (s.proactiveVisible && this.controller?.config.preload !== "open") void this.ensurePanel(false);
    end.hidden = !s.conversationActive || !!s.fallback;
    const wasFallback = !fallback.hidden;
    fallback.hidden = !s.fallback;
    mount.hidden = !!s.fallback || !this.panel;
    loading.hidden = !!s.fallback || !!this.panel;
    // entering the fallback removes the input the visitor was typing in: hand focus to the contact link,
    // unless the visitor has meanwhile moved focus elsewhere on the host page
    if (s.fallback && !wasFallback && s.open) requestAnimationFrame(() => {
      const active = document.activeElement;
      if (!active || active === this || active === document.body) (fallback.querySelector<HTMLElement>("a") ?? panel).focus();
    });
  }
}

if (!customElements.get("growth-chat")) customElements.define("growth-chat", GrowthChatElement);
