// Injected by the build (scripts/build.mjs) through Vite's `define`.
declare const __WIDGET_VERSION__: string;
declare const __PANEL_FILE__: string;

interface ImportMetaEnv {
  readonly VITE_DEFAULT_PROACTIVE_MESSAGE?: string;
  readonly VITE_GDPR_NOTICE_TEXT?: string;
  readonly VITE_PRIVACY_POLICY_URL?: string;
  readonly VITE_STREAM_TIMEOUT_MS?: string;
}
