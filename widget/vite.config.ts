// Vitest configuration (the production build is scripts/build.mjs: two Vite library builds + size budgets).
import { defineConfig } from "vitest/config";

export default defineConfig({
  define: { __WIDGET_VERSION__: JSON.stringify("0.0.0-test"), __PANEL_FILE__: JSON.stringify("panel-test.js") },
  oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
  test: { environment: "happy-dom", include: ["test/**/*.test.ts", "test/**/*.test.tsx"], restoreMocks: true },
});
