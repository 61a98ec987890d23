// Styles of the chat panel body (inside the Shadow DOM, so nothing here reaches the host page).
export const PANEL_CSS = `
.gc-thread { display: flex; flex-direction: column; flex: 1 1 auto; min-height: 0; }
.gc-viewport { flex: 1 1 auto; min-height: 0; overflow-y: auto; padding: 14px 14px 6px; display: flex; flex-direction: column; gap: 8px; }
.gc-viewport:focus-visible { outline: 2px solid var(--gc-accent); outline-offset: -2px; }
.gc-welcome { color: var(--gc-muted); font-size: 14px; }
.gc-welcome p { margin: 0 0 6px; }
.gc-note { background: var(--gc-soft); border-radius: 8px; padding: 8px 10px; color: var(--gc-ink); }
.gc-msg { max-width: 86%; padding: 9px 12px; border-radius: 14px; font-size: 14.5px; line-height: 1.45; overflow-wrap: anywhere; }
.gc-msg p { margin: 0; white-space: pre-line; }
.gc-text > * + * { margin-top: 6px; }
.gc-text ul, .gc-text ol { margin: 0; padding-left: 20px; }
.gc-text li + li { margin-top: 2px; }
.gc-text a { color: inherit; text-decoration: underline; }
.gc-text a:focus-visible { outline: 2px solid var(--gc-ink); outline-offset: 1px; border-radius: 2px; }
.gc-text code { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: .92em; background: rgba(16, 30, 45, .07); padding: 0 3px; border-radius: 4px; }
.gc-msg-user { align-self: flex-end; background: var(--gc-accent); color: var(--gc-on-accent); border-bottom-right-radius: 4px; }
.gc-msg-assistant { align-self: flex-start; background: var(--gc-soft); color: var(--gc-ink); border-bottom-left-radius: 4px; }
.gc-msg .gc-inline-error { display: block; color: #8a1c1c; font-size: 13.5px; }
.gc-text + .gc-inline-error { margin-top: 6px; }
.gc-msg-assistant:has(.gc-inline-error) { background: #fbeeee; }
.gc-typing { display: inline-flex; gap: 4px; padding: 4px 2px; }
.gc-typing span { width: 7px; height: 7px; border-radius: 50%; background: var(--gc-muted); animation: gc-blink 1.2s infinite ease-in-out; }
.gc-typing span:nth-child(2) { animation-delay: .2s; }
.gc-typing span:nth-child(3) { animation-delay: .4s; }
@keyframes gc-blink { 0%, 80%, 100% { opacity: .25; } 40% { opacity: 1; } }
.gc-gdpr { margin: 0 12px 8px; padding: 10px 12px; border: 1px solid var(--gc-line); border-radius: 10px; background: #fffbea; font-size: 13px; line-height: 1.45; }
.gc-gdpr-text { margin: 0 0 8px; color: var(--gc-ink); }
.gc-gdpr a { color: var(--gc-ink); font-weight: 600; white-space: nowrap; text-decoration: underline; text-underline-offset: 2px; border-radius: 2px; }
.gc-gdpr a:hover { text-decoration-thickness: 2px; }
.gc-gdpr-ack { min-height: 36px; padding: 7px 18px; border: 0; border-radius: 8px; background: var(--gc-accent); color: var(--gc-on-accent); font: inherit; font-size: 14px; font-weight: 600; line-height: 1.2; cursor: pointer; }
.gc-gdpr-ack:hover { box-shadow: inset 0 0 0 40px rgba(0, 0, 0, .12); }
.gc-gdpr-ack:focus-visible, .gc-gdpr a:focus-visible { outline: 2px solid var(--gc-ink); outline-offset: 2px; }
.gc-composer { display: flex; align-items: flex-end; gap: 8px; padding: 10px 12px 12px; border-top: 1px solid var(--gc-line); }
.gc-input { flex: 1 1 auto; resize: none; min-height: 40px; max-height: 120px; padding: 9px 11px; border: 1px solid #6f7b86; border-radius: 10px; font: inherit; font-size: 15px; color: var(--gc-ink); background: #fff; }
.gc-input:focus { outline: 2px solid var(--gc-accent); outline-offset: 0; border-color: transparent; }
.gc-input:disabled { background: #f1f3f5; color: var(--gc-muted); }
.gc-send { flex: none; width: 40px; height: 40px; display: grid; place-items: center; border: 0; border-radius: 10px; background: var(--gc-accent); color: var(--gc-on-accent); cursor: pointer; }
.gc-send:disabled { opacity: .45; cursor: default; }
.gc-send:focus-visible { outline: 2px solid var(--gc-ink); outline-offset: 2px; }
.gc-slots { display: flex; flex-direction: column; gap: 6px; margin-top: 8px; }
.gc-slot { min-height: 44px; padding: 8px 11px; border: 1px solid var(--gc-accent); border-radius: 10px; background: #fff; color: var(--gc-ink); font: inherit; font-size: 14px; line-height: 1.3; text-align: left; cursor: pointer; transition: background-color .15s, color .15s; }
.gc-slot:hover:not(:disabled) { background: var(--gc-accent); color: var(--gc-on-accent); }
.gc-slot:focus-visible { outline: 2px solid var(--gc-ink); outline-offset: 2px; }
.gc-slot:disabled { cursor: default; opacity: .55; }
.gc-slot.gc-slot-picked { opacity: 1; background: var(--gc-accent); color: var(--gc-on-accent); }
.gc-slot-rep { color: inherit; opacity: .8; }
.gc-booked svg { flex: none; align-self: center; }
.gc-msg .gc-booked { display: flex; gap: 6px; align-items: baseline; margin-top: 8px; padding: 6px 10px; border-radius: 8px; background: #e3f4e8; color: #17522b; font-weight: 600; font-size: 13.5px; }
@media (prefers-reduced-motion: reduce) {
  .gc-typing span { animation: none; opacity: .6; }
  .gc-slot { transition: none; }
}
`;
