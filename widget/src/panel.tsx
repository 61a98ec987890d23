// The chat panel bundle (loaded by chat.js when the visitor shows intent, or on open): Preact with
// @preact/signals inside the element's Shadow DOM. It renders the GDPR notice, the message list
// (streamed tokens, typing indicator, Markdown replies, inline errors, meeting slot buttons and booking
// confirmations) and the message input; the launcher (chat.js) owns the header, the fallback view and
// every rule (controller.ts).
import { render, type ComponentChildren } from "preact";
import { useEffect, useLayoutEffect, useMemo, useRef, useState } from "preact/hooks";
import { signal, type Signal } from "@preact/signals";
import { createChatAdapter, type ThreadMessage } from "./adapter";
import { GDPR_NOTICE_TEXT, PANEL_GLOBAL, VERSION } from "./constants";
import type { ChatController, ControllerState } from "./controller";
import { parseMarkdown, type Inline } from "./markdown";
import { PANEL_CSS } from "./panel.css";
import { meetingOf, offerState, slotsOf } from "./slots";
import { adoptStyles } from "./styles";
import { Thread } from "./thread";

export interface PanelHandle {
  /** Move keyboard focus to the first control (the notice's button, or the message input). */
  focus(): void;
  unmount(): void;
}

export interface PanelModule {
  mount(target: HTMLElement, controller: ChatController): PanelHandle;
}

const ENDED_NOTE: Record<string, string> = {
  explicit_close: "You ended the conversation. Send a message to start a new one.",
  inactivity_timeout: "Your previous conversation ended after 15 minutes without a message.",
  session_expiry: "Your previous conversation expired. Send a message to start a new one.",
};

const focusInput = (root: HTMLElement) => root.querySelector<HTMLElement>(".gc-input")?.focus();

// The notice's words "Privacy Policy" link to privacyUrl (config.ts: http(s) only); a notice text without them gets the link at its end.
export function NoticeText({ privacyUrl }: { privacyUrl: string | null }) {
  if (!privacyUrl) return <>{GDPR_NOTICE_TEXT}</>;
  const link = <a class="gc-gdpr-link" href={privacyUrl} target="_blank" rel="noopener noreferrer">Privacy Policy</a>;
  const i = GDPR_NOTICE_TEXT.lastIndexOf("Privacy Policy");
  if (i < 0) return <>{GDPR_NOTICE_TEXT} {link}</>;
  return <>{GDPR_NOTICE_TEXT.slice(0, i)}{link}{GDPR_NOTICE_TEXT.slice(i + "Privacy Policy".length)}</>;
}

function GdprNotice({ privacyUrl, onAcknowledge }: { privacyUrl: string | null; onAcknowledge: () => void }) {
  return (
    <div class="gc-gdpr" role="region" aria-labelledby="gc-gdpr-title">
      <p id="gc-gdpr-title" class="gc-sr-only">Privacy notice</p>
      <p class="gc-gdpr-text"><NoticeText privacyUrl={privacyUrl} /></p>
      <button type="button" class="gc-btn gc-gdpr-ack" onClick={onAcknowledge}>Got it</button>
    </div>
  );
}

function TypingIndicator() {
  return (
    <div class="gc-typing" role="status" aria-label="The assistant is typing">
      <span /><span /><span />
    </div>
  );
}

// Markdown (markdown.ts) → elements: only these tags, text as text nodes, links to http(s)/mailto in a new tab.
function inline(parts: Inline[]): ComponentChildren {
  return parts.map((p) => {
    if (typeof p === "string") return p;
    if (p.tag === "a") return <a href={p.href} target="_blank" rel="noopener noreferrer">{inline(p.children)}</a>;
    const Tag = p.tag;
    return <Tag>{inline(p.children)}</Tag>;
  });
}

export function Markdown({ text }: { text: string }) {
  return (
    <div class="gc-text">
      {parseMarkdown(text).map((b) => (b.tag === "p" ? <p>{inline(b.children)}</p>
        : b.tag === "ul" ? <ul>{b.items.map((it) => <li>{inline(it)}</li>)}</ul>
          : <ol>{b.items.map((it) => <li>{inline(it)}</li>)}</ol>))}
    </div>
  );
}

const textOf = (m: ThreadMessage) => m.content.map((p) => p.text).join("");

// The times a `slots` event offered, as buttons under the message (after its text in the focus order).
// A click sends the slot's label as the visitor's message with its slot_id; the offer then stays on
// screen, disabled, with the pick marked; a newer offer or a booked meeting disables it too.
function SlotButtons({ message, thread, root }: { message: ThreadMessage; thread: Thread; root: HTMLElement }) {
  const slots = slotsOf(message);
  if (!slots) return null;
  const state = offerState(thread.messages.value, message.id, thread.running.value);
  const pick = (i: number) => {
    const { slot_id, label } = slots[i];
    thread.send(label, { slot_id });
    focusInput(root); // the buttons are disabled next: keep the keyboard in the conversation
  };
  return (
    <div class="gc-slots" role="group" aria-label="Times you can book">
      {slots.map((slot, i) => (
        <button key={slot.slot_id} type="button" class={`gc-slot${state === `picked:${slot.slot_id}` ? " gc-slot-picked" : ""}`}
          disabled={state !== "open"} onClick={() => pick(i)}>
          {slot.label}{slot.rep && <span class="gc-slot-rep"> with {slot.rep}</span>}
        </button>
      ))}
    </div>
  );
}

function Booked({ message }: { message: ThreadMessage }) {
  const meeting = meetingOf(message);
  if (!meeting) return null;
  return (
    <p class="gc-booked">
      <svg viewBox="0 0 24 24" width="15" height="15" aria-hidden="true" focusable="false">
        <path fill="currentColor" d="M7 2v2H5a2 2 0 0 0-2 2v14a2 2 0 0 0 2 2h14a2 2 0 0 0 2-2V6a2 2 0 0 0-2-2h-2V2h-2v2H9V2zM5 9h14v11H5zm5.6 9.2-3.3-3.3 1.4-1.4 1.9 1.9 4.7-4.7 1.4 1.4z" />
      </svg>
      Booked: {meeting.label}{meeting.rep && ` with ${meeting.rep}`}
    </p>
  );
}

function Message({ message, thread, root }: { message: ThreadMessage; thread: Thread; root: HTMLElement }) {
  const text = textOf(message);
  if (message.role === "user") {
    return (
      <div class="gc-msg gc-msg-user">
        <span class="gc-sr-only">You said: </span>
        <p class="gc-text">{text}</p>
      </div>
    );
  }
  const waiting = message.status?.type === "running" && !text;
  return (
    <div class={`gc-msg gc-msg-assistant${message.error ? " gc-msg-error" : ""}`}>
      <span class="gc-sr-only">Assistant: </span>
      {waiting ? <TypingIndicator /> : text && <Markdown text={text} />}
      <SlotButtons message={message} thread={thread} root={root} />
      <Booked message={message} />
      {message.error && <p class="gc-inline-error" role="alert">{message.error}</p>}
    </div>
  );
}

function MessageList({ thread, endedBy, root }: { thread: Thread; endedBy: ControllerState["endedBy"]; root: HTMLElement }) {
  const messages = thread.messages.value;
  return (
    // a polite log: screen readers announce a reply once it has finished streaming (aria-busy)
    <div class="gc-viewport" role="log" aria-live="polite" aria-label="Conversation" aria-busy={thread.running.value} tabIndex={0}>
      {messages.length === 0 && (
        <div class="gc-welcome">
          {endedBy && <p class="gc-note">{ENDED_NOTE[endedBy]}</p>}
          <p>Hi! What can we help you with?</p>
        </div>
      )}
      {messages.map((m) => <Message key={m.id} message={m} thread={thread} root={root} />)}
    </div>
  );
}

function MessageInput({ thread, enabled }: { thread: Thread; enabled: boolean }) {
  const [text, setText] = useState("");
  const ref = useRef<HTMLTextAreaElement>(null);
  useLayoutEffect(() => { // grown here, in the shadow tree, so the host page's CSS cannot skew it
    const el = ref.current!;
    el.style.height = "auto";
    el.style.height = `${Math.min(el.scrollHeight + 2, 120)}px`;
  }, [text]);
  const canSend = enabled && !!text.trim() && !thread.running.value;
  const send = () => {
    if (canSend && thread.send(text)) setText("");
  };
  return (
    <form class="gc-composer" onSubmit={(e) => { e.preventDefault(); send(); }}>
      <label class="gc-sr-only" for="gc-input">Your message</label>
      <textarea ref={ref} id="gc-input" class="gc-input" rows={1} maxLength={4000} disabled={!enabled} value={text}
        placeholder={enabled ? "Type your message…" : "Please read the notice above first"}
        onInput={(e) => setText(e.currentTarget.value)}
        onKeyDown={(e) => {
          if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
            e.preventDefault();
            send();
          }
        }} />
      <button type="submit" class="gc-send" aria-label="Send message" disabled={!canSend}>
        <svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true" focusable="false">
          <path fill="currentColor" d="M3.4 20.4 21 12 3.4 3.6 3.4 10l12.6 2-12.6 2z" />
        </svg>
      </button>
    </form>
  );
}

function Panel({ controller, state, root }: { controller: ChatController; state: Signal<ControllerState>; root: HTMLElement }) {
  const s = state.value;
  // a new conversation (after an explicit close, inactivity or expiry) gets a fresh thread
  const thread = useMemo(() => new Thread(createChatAdapter(controller)), [controller, s.conversationKey]);
  useEffect(() => () => thread.cancel(), [thread]);
  if (s.fallback) return null; // chat.js shows the fallback view
  const acknowledge = () => {
    controller.acknowledgeGdpr();
    // the notice disappears with the button that had focus: hand focus to the now-enabled input
    requestAnimationFrame(() => focusInput(root));
  };
  return (
    <div class="gc-thread">
      <MessageList thread={thread} endedBy={s.endedBy} root={root} />
      {!s.gdprAcknowledged && <GdprNotice privacyUrl={controller.config.privacyUrl} onAcknowledge={acknowledge} />}
      <MessageInput thread={thread} enabled={s.gdprAcknowledged} />
    </div>
  );
}

function focusFirst(root: HTMLElement) {
  const el = root.querySelector<HTMLElement>(".gc-gdpr-ack") ?? root.querySelector<HTMLElement>(".gc-input:not(:disabled)");
  el?.focus();
}

export const panel: PanelModule = {
  mount(target, controller) {
    const removeStyles = adoptStyles(target.getRootNode() as ShadowRoot, PANEL_CSS);
    const state = signal(controller.current);
    const unsubscribe = controller.subscribe((s) => { state.value = s; });
    render(<Panel controller={controller} state={state} root={target} />, target);
    return {
      focus: () => {
        // a state change re-renders on the next microtask: retry on the next frames
        let tries = 0;
        const attempt = () => {
          if (target.querySelector(".gc-gdpr-ack, .gc-input")) focusFirst(target);
          else if (tries++ < 30) requestAnimationFrame(attempt);
        };
        attempt();
      },
      unmount: () => {
        unsubscribe();
        render(null, target);
        removeStyles();
      },
    };
  },
};

// Register under the version, so two widget versions on one page never mix their halves.
const w = window as unknown as Record<string, Record<string, PanelModule> | undefined>;
w[PANEL_GLOBAL] = { ...w[PANEL_GLOBAL], [VERSION]: panel };
