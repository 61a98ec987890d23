// Production build of the widget: two Vite library builds (IIFE) and the size budgets.
//   1. the chat panel (Preact + @preact/signals)  → widget/<version>/panel-<hash>.js      ≤ 45 KiB gzipped
//   2. the launcher (custom element, plain DOM)   → chat.js and widget/<version>/chat.js  ≤ 12 KiB gzipped
// dist/ mirrors the served layout, so it can be uploaded to a CDN as is; each file also gets
// precompressed .br and .gz siblings, and dist/manifest.json records version, files and sizes.
// Exits non-zero (and leaves no dist/manifest.json) when a budget is exceeded.
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { brotliCompressSync, constants, gzipSync } from "node:zlib";
import { build } from "vite";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const DIST = join(ROOT, "dist");
const TMP = join(ROOT, "node_modules", ".cache", "growth-chat-build");
const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
const VERSION = pkg.version;
export const BUDGETS = { launcher: 12 * 1024, panel: 45 * 1024 };

const gzip = (buf) => gzipSync(buf, { level: 9 });
const brotli = (buf) => brotliCompressSync(buf, { params: { [constants.BROTLI_PARAM_QUALITY]: 11 } });

async function bundle(entry, panelFile) {
  const out = join(TMP, entry);
  await build({
    configFile: false,
    root: ROOT,
    logLevel: "warn",
    define: {
      __WIDGET_VERSION__: JSON.stringify(VERSION),
      __PANEL_FILE__: JSON.stringify(panelFile ?? ""),
      "process.env.NODE_ENV": JSON.stringify("production"),
    },
    oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
    build: {
      outDir: out,
      emptyOutDir: true,
      target: "es2020",
      minify: true,
      sourcemap: false,
      reportCompressedSize: false,
      lib: { entry: join(ROOT, "src", "entries", `${entry}.ts`), formats: ["iife"], name: "GrowthChat", fileName: () => `${entry}.js` },
      rolldownOptions: { onLog(level, log, handler) { if (log.code !== "MODULE_LEVEL_DIRECTIVE") handler(level, log); } },
    },
  });
  return readFileSync(join(out, `${entry}.js`));
}

function write(rel, buf) {
  const p = join(DIST, rel);
  mkdirSync(dirname(p), { recursive: true });
  writeFileSync(p, buf);
  writeFileSync(`${p}.gz`, gzip(buf));
  writeFileSync(`${p}.br`, brotli(buf));
}

const panel = await bundle("panel");
const panelFile = `panel-${createHash("sha256").update(panel).digest("hex").slice(0, 12)}.js`;
const launcher = await bundle("chat", panelFile);

const sizes = {
  launcher: { raw: launcher.length, gzip: gzip(launcher).length, brotli: brotli(launcher).length },
  panel: { raw: panel.length, gzip: gzip(panel).length, brotli: brotli(panel).length },
};
const kib = (n) => `${(n / 1024).toFixed(1)} KiB`;
let failed = false;
for (const [name, s] of Object.entries(sizes)) {
  const over = s.gzip > BUDGETS[name];
  failed ||= over;
  console.log(`${over ? "✗" : "✓"} ${name.padEnd(8)} ${kib(s.raw).padStart(10)} raw  ${kib(s.gzip).padStart(10)} gzip  ${kib(s.brotli).padStart(10)} brotli   budget ${kib(BUDGETS[name])} gzip`);
}

rmSync(DIST, { recursive: true, force: true });
if (failed) {
  console.error("widget build FAILED: a bundle is over its gzipped size budget (see above); nothing was written to dist/.");
  process.exit(1);
}
write("chat.js", launcher);
write(`widget/${VERSION}/chat.js`, launcher);
write(`widget/${VERSION}/${panelFile}`, panel);
const manifest = { version: VERSION, launcher: "chat.js", panel: panelFile, sizes, budgets: BUDGETS,
  sha256: { launcher: createHash("sha256").update(launcher).digest("hex"), panel: createHash("sha256").update(panel).digest("hex") } };
writeFileSync(join(DIST, "manifest.json"), JSON.stringify(manifest, null, 2) + "\n");
console.log(`dist/: chat.js, widget/${VERSION}/chat.js, widget/${VERSION}/${panelFile} (+ .gz, .br), manifest.json`);
