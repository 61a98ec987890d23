// Styles of the launcher, the prompt bubble and the panel shell. They live in the Shadow DOM, and
// .gc-root resets every inherited property (`all: initial`), so host styles neither leak in nor out.
// Hosts may theme the accent colour with the custom property --growth-chat-accent.
export const LAUNCHER_CSS = `
:host { display: contents; }
.gc-root { all: initial; --gc-accent: var(--growth-chat-accent, #2a6f97); --gc-on-accent: #fff; --gc-ink: #1d2b36;
  --gc-muted: #5b6b78; --gc-soft: #eef2f5; --gc-line: #d5dde3;
  position: fixed; z-index: 2147483000; bottom: 20px; right: 20px; display: flex; flex-direction: column;
  align-items: flex-end; gap: 12px; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--gc-ink); -webkit-font-smoothing: antialiased; text-align: left; }
.gc-root.gc-bottom-left { right: auto; left: 20px; align-items: flex-start; }
.gc-root *, .gc-root *::before, .gc-root *::after { box-sizing: border-box; }
.gc-root button { font: inherit; }
.gc-root [hidden] { display: none !important; }
.gc-launcher { order: 3; width: 58px; height: 58px; border: 0; border-radius: 50%; background: var(--gc-accent);
  color: var(--gc-on-accent); cursor: pointer; display: grid; place-items: center;
  box-shadow: 0 6px 20px rgba(16, 30, 45, .28); transition: transform .15s ease; }
.gc-launcher:hover { transform: scale(1.05); }
.gc-launcher:focus-visible { outline: 3px solid var(--gc-ink); outline-offset: 3px; }
.gc-prompt { order: 1; display: flex; align-items: flex-start; gap: 4px; max-width: 260px; padding: 10px 8px 10px 14px;
  background: #fff; color: var(--gc-ink); border-radius: 14px; box-shadow: 0 6px 24px rgba(16, 30, 45, .2);
  animation: gc-rise .25s ease-out; }
.gc-prompt-open { all: unset; cursor: pointer; font-size: 14.5px; line-height: 1.4; }
.gc-prompt-open:focus-visible, .gc-prompt-close:focus-visible,
.gc-fallback a:focus-visible { outline: 2px solid var(--gc-accent); outline-offset: 2px; }
/* on the accent header: a light ring with a dark edge, visible on any accent (WCAG 2.4.7) */
.gc-close:focus-visible, .gc-end:focus-visible { outline: 2px solid var(--gc-on-accent); outline-offset: 1px;
  box-shadow: 0 0 0 5px var(--gc-ink); }
.gc-prompt-close, .gc-close { flex: none; width: 28px; height: 28px; border: 0; border-radius: 6px; background: transparent;
  color: inherit; cursor: pointer; font-size: 20px; line-height: 1; display: grid; place-items: center; }
.gc-panel { order: 2; width: 370px; height: min(600px, calc(100vh - 110px)); display: flex; flex-direction: column;
  background: #fff; border-radius: 16px; overflow: hidden; box-shadow: 0 12px 40px rgba(16, 30, 45, .3);
  animation: gc-rise .2s ease-out; }
.gc-panel:focus { outline: none; }
.gc-header { flex: none; display: flex; align-items: center; gap: 8px; min-height: 56px; padding: 10px 10px 10px 16px;
  background: var(--gc-accent); color: var(--gc-on-accent); }
.gc-title { all: unset; flex: 1 1 auto; font-weight: 600; font-size: 16px; }
.gc-end { flex: none; border: 1px solid rgba(255, 255, 255, .6); border-radius: 8px; background: transparent;
  color: inherit; padding: 4px 9px; font-size: 13px; cursor: pointer; }
.gc-body { flex: 1 1 auto; min-height: 0; display: flex; flex-direction: column; }
.gc-mount { flex: 1 1 auto; min-height: 0; display: flex; flex-direction: column; }
.gc-loading { margin: auto; color: var(--gc-muted); font-size: 14px; }
.gc-fallback { margin: auto 0; padding: 24px 22px; text-align: center; }
.gc-fallback p { margin: 0 0 16px; font-size: 15px; }
.gc-fallback a { display: inline-block; padding: 10px 18px; border-radius: 10px; background: var(--gc-accent);
  color: var(--gc-on-accent); text-decoration: none; font-weight: 600; }
.gc-sr-only { position: absolute; width: 1px; height: 1px; margin: -1px; padding: 0; overflow: hidden;
  clip: rect(0 0 0 0); white-space: nowrap; border: 0; }
@keyframes gc-rise { from { opacity: 0; transform: translateY(8px); } to { opacity: 1; transform: none; } }
@media (max-width: 480px) {
  .gc-root { bottom: 16px; right: 16px; }
  .gc-root.gc-bottom-left { left: 16px; }
  .gc-panel { position: fixed; inset: 0; width: auto; height: auto; border-radius: 0; }
  .gc-root.gc-open .gc-launcher { display: none; }
}
@media (prefers-reduced-motion: reduce) {
  .gc-root *, .gc-root *::before, .gc-root *::after { animation: none !important; transition: none !important; }
}
`;
