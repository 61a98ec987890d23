// The chat panel bundle (loaded by chat.js on first open or when the browser is idle):
// React + @assistant-ui/react inside the element's Shadow DOM. It renders the GDPR notice, the
// message list (streamed tokens, typing indicator, inline errors, meeting slot buttons and booking
// confirmations) and the message input; the
// launcher (chat.js) owns the header, the fallback view and every rule (controller.ts).
import { useCallback, useLayoutEffect, useMemo, useRef, useSyncExternalStore } from "react";
import { createRoot } from "react-dom/client";
import {
  AssistantRuntimeProvider, ComposerPrimitive, ErrorPrimitive, MessagePartPrimitive, MessagePrimitive, ThreadPrimitive,
  useAui, useAuiState,
} from "@assistant-ui/react";
import { createChatAdapter } from "./adapter";
import { GDPR_NOTICE_TEXT, PANEL_GLOBAL, PRIVACY_POLICY_URL, VERSION } from "./constants";
import type { ChatController, ControllerState } from "./controller";
import { PANEL_CSS } from "./panel.css";
import { useChatRuntime } from "./runtime";
import { meetingOf, offerState, slotsOf } from "./slots";
import { adoptStyles } from "./styles";

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

function useControllerState(controller: ChatController): ControllerState {
  const subscribe = useCallback((fn: () => void) => controller.subscribe(fn), [controller]);
  return useSyncExternalStore(subscribe, () => controller.current);
}

function NoticeText() {
  const i = PRIVACY_POLICY_URL ? GDPR_NOTICE_TEXT.lastIndexOf("Privacy Policy") : -1;
  if (i < 0) return <>{GDPR_NOTICE_TEXT}</>;
  return (
    <>
      {GDPR_NOTICE_TEXT.slice(0, i)}
      <a href={PRIVACY_POLICY_URL} target="_blank" rel="noopener noreferrer">Privacy Policy</a>
      {GDPR_NOTICE_TEXT.slice(i + "Privacy Policy".length)}
    </>
  );
}

function GdprNotice({ onAcknowledge }: { onAcknowledge: () => void }) {
  return (
    <div className="gc-gdpr" role="region" aria-labelledby="gc-gdpr-title">
      <p id="gc-gdpr-title" className="gc-sr-only">Privacy notice</p>
      <p className="gc-gdpr-text"><NoticeText /></p>
      <button type="button" className="gc-btn gc-gdpr-ack" onClick={onAcknowledge}>Got it</button>
    </div>
  );
}

function TypingIndicator() {
  return (
    <div className="gc-typing" role="status" aria-label="The assistant is typing">
      <span /><span /><span />
    </div>
  );
}

// Tokens render as they arrive (spec: no buffering): assistant-ui's "smooth" typing effect is off,
// so the text on screen is always exactly what the backend has streamed so far.
function Text() {
  return <p className="gc-text"><MessagePartPrimitive.Text smooth={false} /></p>;
}
const PARTS = { Text };

function UserMessage() {
  return (
    <MessagePrimitive.Root className="gc-msg gc-msg-user">
      <span className="gc-sr-only">You said: </span>
      <MessagePrimitive.Parts components={PARTS} />
    </MessagePrimitive.Root>
  );
}

// The times a `slots` event offered, as buttons under the message (after its text in the focus order).
// A click sends the slot's label as the visitor's message with its slot_id; the offer then stays on
// screen, disabled, with the pick marked; a newer offer or a booked meeting disables it too.
function SlotButtons() {
  const aui = useAui();
  const slots = useAuiState((s) => slotsOf(s.message));
  const state = useAuiState((s) => (slotsOf(s.message) ? offerState(s.thread.messages, s.message.id, s.thread.isRunning) : ""));
  if (!slots) return null;
  const pick = (e: { currentTarget: HTMLElement }, i: number) => {
    const { slot_id, label } = slots[i];
    aui.thread.append({ content: [{ type: "text", text: label }], metadata: { custom: { slot_id } } });
    // the buttons are disabled next: keep the keyboard in the conversation
    (e.currentTarget.getRootNode() as ParentNode).querySelector<HTMLElement>(".gc-input")?.focus();
  };
  return (
    <div className="gc-slots" role="group" aria-label="Times you can book">
      {slots.map((slot, i) => (
        <button key={slot.slot_id} type="button" className={`gc-slot${state === `picked:${slot.slot_id}` ? " gc-slot-picked" : ""}`}
          disabled={state !== "open"} onClick={(e) => pick(e, i)}>
          {slot.label}{slot.rep && <span className="gc-slot-rep"> with {slot.rep}</span>}
        </button>
      ))}
    </div>
  );
}

function Booked() {
  const meeting = useAuiState((s) => meetingOf(s.message));
  if (!meeting) return null;
  return (
    <p className="gc-booked">
      <svg viewBox="0 0 24 24" width="15" height="15" aria-hidden="true" focusable="false">
        <path fill="currentColor" d="M7 2v2H5a2 2 0 0 0-2 2v14a2 2 0 0 0 2 2h14a2 2 0 0 0 2-2V6a2 2 0 0 0-2-2h-2V2h-2v2H9V2zM5 9h14v11H5zm5.6 9.2-3.3-3.3 1.4-1.4 1.9 1.9 4.7-4.7 1.4 1.4z" />
      </svg>
      Booked: {meeting.label}{meeting.rep && ` with ${meeting.rep}`}
    </p>
  );
}

function AssistantMessage() {
  const waiting = useAuiState((s) => s.message.status?.type === "running" && s.message.content.length === 0);
  return (
    <MessagePrimitive.Root className="gc-msg gc-msg-assistant">
      <span className="gc-sr-only">Assistant: </span>
      {waiting ? <TypingIndicator /> : <MessagePrimitive.Parts components={PARTS} />}
      <SlotButtons />
      <Booked />
      <MessagePrimitive.Error>
        <ErrorPrimitive.Root className="gc-inline-error" role="alert">
          <ErrorPrimitive.Message />
        </ErrorPrimitive.Root>
      </MessagePrimitive.Error>
    </MessagePrimitive.Root>
  );
}

function MessageList({ endedBy }: { endedBy: ControllerState["endedBy"] }) {
  const running = useAuiState((s) => s.thread.isRunning);
  return (
    // a polite log: screen readers announce a reply once it has finished streaming (aria-busy)
    <ThreadPrimitive.Viewport className="gc-viewport" role="log" aria-live="polite" aria-label="Conversation"
      aria-busy={running} tabIndex={0}>
      <ThreadPrimitive.Empty>
        <div className="gc-welcome">
          {endedBy && <p className="gc-note">{ENDED_NOTE[endedBy]}</p>}
          <p>Hi! What can we help you with?</p>
        </div>
      </ThreadPrimitive.Empty>
      <ThreadPrimitive.Messages>
        {({ message }) => (message.role === "user" ? <UserMessage /> : <AssistantMessage />)}
      </ThreadPrimitive.Messages>
    </ThreadPrimitive.Viewport>
  );
}

function MessageInput({ enabled }: { enabled: boolean }) {
  // A plain <textarea> grown here: assistant-ui's default (react-textarea-autosize) measures with a
  // hidden clone in the host document's <body>, where the host page's CSS would skew it.
  const text = useAuiState((s) => s.composer.text);
  const ref = useRef<HTMLTextAreaElement>(null);
  useLayoutEffect(() => {
    const el = ref.current;
    if (!el) return;
    el.style.height = "auto";
    el.style.height = `${Math.min(el.scrollHeight + 2, 120)}px`;
  }, [text]);
  return (
    <ComposerPrimitive.Root className="gc-composer">
      <label className="gc-sr-only" htmlFor="gc-input">Your message</label>
      <ComposerPrimitive.Input ref={ref} render={<textarea />} id="gc-input" className="gc-input" rows={1} maxLength={4000} disabled={!enabled}
        placeholder={enabled ? "Type your message…" : "Please read the notice above first"}
        cancelOnEscape={false} submitMode="enter" addAttachmentOnPaste={false} />
      <ComposerPrimitive.Send className="gc-send" aria-label="Send message" disabled={!enabled}>
        <svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true" focusable="false">
          <path fill="currentColor" d="M3.4 20.4 21 12 3.4 3.6 3.4 10l12.6 2-12.6 2z" />
        </svg>
      </ComposerPrimitive.Send>
    </ComposerPrimitive.Root>
  );
}

function Conversation({ controller, state, root }: { controller: ChatController; state: ControllerState; root: HTMLElement }) {
  const adapter = useMemo(() => createChatAdapter(controller), [controller]);
  const runtime = useChatRuntime(adapter);
  const acknowledge = useCallback(() => {
    controller.acknowledgeGdpr();
    // the notice disappears with the button that had focus: hand focus to the now-enabled input
    requestAnimationFrame(() => root.querySelector<HTMLElement>(".gc-input")?.focus());
  }, [controller, root]);
  return (
    <AssistantRuntimeProvider runtime={runtime}>
      <ThreadPrimitive.Root className="gc-thread">
        <MessageList endedBy={state.endedBy} />
        {!state.gdprAcknowledged && <GdprNotice onAcknowledge={acknowledge} />}
        <MessageInput enabled={state.gdprAcknowledged} />
      </ThreadPrimitive.Root>
    </AssistantRuntimeProvider>
  );
}

function Panel({ controller, root }: { controller: ChatController; root: HTMLElement }) {
  const state = useControllerState(controller);
  if (state.fallback) return null; // chat.js shows the fallback view
  // a new conversation (after an explicit close, inactivity or expiry) gets a fresh thread
  return <Conversation key={state.conversationKey} controller={controller} state={state} root={root} />;
}

function focusFirst(root: HTMLElement) {
  const el = root.querySelector<HTMLElement>(".gc-gdpr-ack") ?? root.querySelector<HTMLElement>(".gc-input:not(:disabled)");
  el?.focus();
}

export const panel: PanelModule = {
  mount(target, controller) {
    const removeStyles = adoptStyles(target.getRootNode() as ShadowRoot, PANEL_CSS);
    const root = createRoot(target);
    root.render(<Panel controller={controller} root={target} />);
    return {
      focus: () => {
        // React commits asynchronously after the first render: retry on the next frames
        let tries = 0;
        const attempt = () => {
          if (target.querySelector(".gc-gdpr-ack, .gc-input")) focusFirst(target);
          else if (tries++ < 30) requestAnimationFrame(attempt);
        };
        attempt();
      },
      unmount: () => {
        root.unmount();
        removeStyles();
      },
    };
  },
};

// Register under the version, so two widget versions on one page never mix their halves.
const w = window as unknown as Record<string, Record<string, PanelModule> | undefined>;
w[PANEL_GLOBAL] = { ...w[PANEL_GLOBAL], [VERSION]: panel };
