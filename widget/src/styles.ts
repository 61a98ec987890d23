// Styles go into the shadow root as a constructed stylesheet where the browser supports it: unlike a
// <style> element, that works on host pages whose Content-Security-Policy forbids inline styles.
export function adoptStyles(root: ShadowRoot, css: string): () => void {
  try {
    const sheet = new CSSStyleSheet();
    sheet.replaceSync(css);
    root.adoptedStyleSheets = [...root.adoptedStyleSheets, sheet];
    return () => {
      root.adoptedStyleSheets = root.adoptedStyleSheets.filter((s) => s !== sheet);
    };
  } catch {
    const style = document.createElement("style");
    style.textContent = css;
    root.prepend(style);
    return () => style.remove();
  }
}
