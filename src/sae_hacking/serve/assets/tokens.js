// The one token renderer: a token's text as a span whose background is proportional to an activation,
// shared by the serve page (app.js), the page `sae-hacking highlight` saves, the latent evidence pages
// (`sae-hacking latents-report`) and the pairs report. Text enters only through textContent.
// Loaded before the page's own script (its own <script> on the server; concatenated in front of the page
// script in the self-contained pages). The colour is the page stylesheet's --heat (tokens.css).
"use strict";

window.saeTokens = (function () {
  function heatRgb() {
    const value = getComputedStyle(document.documentElement).getPropertyValue("--heat").trim();
    return value || "234, 88, 12";
  }

  function intensity(value, max) {
    if (!(max > 0) || !(value > 0)) return 0;
    return Math.min(1, value / max);
  }

  function heat(alpha) {
    return `rgba(${heatRgb()}, ${alpha.toFixed(3)})`;
  }

  // A span for one token: class "tok" (+ "nl" when it holds a newline, "blank" when empty), its
  // activation in data-value, its background heat(value / max).
  function tokenSpan(text, value, max) {
    const span = document.createElement("span");
    span.className = "tok";
    if (text.includes("\n")) span.classList.add("nl");
    if (text === "") span.classList.add("blank");
    span.textContent = text;
    span.dataset.value = String(value);
    span.style.backgroundColor = heat(intensity(value, max));
    return span;
  }

  // A context: the tokens in a container, the example's own token marked "center"; max scales colours.
  function contextLine(tokens, acts, center, max) {
    const line = document.createElement("span");
    line.className = "ctx";
    tokens.forEach((text, i) => {
      const span = tokenSpan(text, acts[i], max);
      if (i === center) span.classList.add("center");
      span.title = `activation ${acts[i]}`;
      line.appendChild(span);
    });
    return line;
  }

  return { intensity, heat, tokenSpan, contextLine };
})();
