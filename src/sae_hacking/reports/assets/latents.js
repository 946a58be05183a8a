"use strict";
// Shared by the index and the pages of `sae-hacking latents-report`: number formats, elements with
// text (textContent only: token strings and explanations are untrusted), and the links between
// the report's files (relative file names, so the folder works opened from disk).
window.saeLatents = (function () {
  const DASH = "\u2014";

  function pageHref(meta, i) {
    const page = String(Math.floor(i / meta.per_page)).padStart(meta.digits, "0");
    return "page-" + page + ".html#latent-" + i;
  }

  // Whether latent i has a section in this report (all latents unless --latents chose some).
  function inReport(meta) {
    const listed = meta.listed ? new Set(meta.listed) : null;
    return (i) => i >= 0 && i < meta.e && (listed === null || listed.has(i));
  }

  function count(value) {
    return value === null || value === undefined ? DASH : value.toLocaleString("en-US");
  }

  function number(value, digits) {
    if (value === null || value === undefined) return DASH;
    if (value === 0) return "0";
    const size = Math.abs(value);
    if (size < 1e-3 || size >= 1e6) return value.toExponential(Math.max(0, (digits || 4) - 2));
    return value.toPrecision(digits || 4);
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function link(href, text, className) {
    const a = el("a", className, text);
    a.href = href;
    return a;
  }

  // Neuronpedia's page for a latent: only an http(s) URL becomes a link.
  function externalLink(url, text) {
    if (typeof url !== "string" || !/^https?:\/\//i.test(url)) return null;
    const a = link(url, text, "external");
    a.rel = "noopener noreferrer";
    a.target = "_blank";
    return a;
  }

  return { DASH, pageHref, inReport, count, number, el, link, externalLink };
})();
