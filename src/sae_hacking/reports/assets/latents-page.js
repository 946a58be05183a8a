"use strict";
// One page of `sae-hacking latents-report`: a section per latent, drawn from the page's JSON block
// (LATENT_SCHEMA of absorption/evidence/read.py plus explanation, url, neighbours and moves). Contexts go
// through the shared token renderer (tokens.js), coloured by activation / the latent's max; a
// quantile band's examples are drawn when the band list is first opened.
(function () {
  const L = window.saeLatents;
  const T = window.saeTokens;
  const SVG = "http://www.w3.org/2000/svg";
  const data = JSON.parse(document.getElementById("page-data").textContent);
  const meta = data.meta;
  const inReport = L.inReport(meta);

  function example(ex, max) {
    const li = L.el("li", "example");
    li.appendChild(L.el("span", "value", L.number(ex.value, 4)));
    li.appendChild(T.contextLine(ex.tokens, ex.acts, ex.center, max));
    li.appendChild(L.el("span", "where", "prompt " + ex.prompt + " \u00b7 token " + ex.position));
    return li;
  }

  function examples(list, max, className) {
    const ol = L.el("ol", "examples " + className);
    list.forEach((ex) => ol.appendChild(example(ex, max)));
    return ol;
  }

  function edgeText(value) {
    if (value === null) return "\u221e";
    if (value === 0) return "0";
    const power = Math.log10(value);
    if (Math.abs(power - Math.round(power)) < 1e-9) {
      const k = Math.round(power);
      return k >= 0 && k <= 3 ? String(10 ** k) : "1e" + k;
    }
    return String(Number(value.toPrecision(2)));
  }

  function svg(tag, attributes, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // Bins are log-spaced (10 a decade), so equal widths make a log-x axis; edges at whole decades
  // are labelled (and the first and last edge when no decade is near them).
  function histogram(h) {
    const n = h.counts.length;
    if (!n) return L.el("p", "muted", "no activations");
    const width = 380, height = 130, left = 40, right = 8, top = 10, bottom = 34;
    const step = (width - left - right) / n;
    const tallest = Math.max(...h.counts);
    const plot = svg("svg", { class: "hist", viewBox: `0 0 ${width} ${height}`, width, height, role: "img" });
    plot.setAttribute("aria-label", "histogram of activations, log-spaced bins");
    h.counts.forEach((c, b) => {
      const tall = (height - top - bottom) * c / tallest;
      const bar = svg("rect", {
        class: "bar", x: left + b * step, y: height - bottom - tall, width: Math.max(step - 1, 0.5), height: tall,
      });
      bar.appendChild(svg("title", {}, `${edgeText(h.edges[b])} \u2013 ${edgeText(h.edges[b + 1])}: ${c} tokens`));
      plot.appendChild(bar);
    });
    const base = height - bottom;
    plot.appendChild(svg("line", { class: "axis", x1: left, y1: base, x2: width - right, y2: base }));
    plot.appendChild(svg("line", { class: "axis", x1: left, y1: top, x2: left, y2: base }));
    plot.appendChild(svg("text", { class: "ylabel", x: left - 4, y: top + 8, "text-anchor": "end" }, L.count(tallest)));
    plot.appendChild(svg("text", { class: "ylabel", x: left - 4, y: base, "text-anchor": "end" }, "0"));
    const decades = [];
    h.edges.forEach((edge, k) => {
      if (edge !== null && edge > 0 && Math.abs(Math.log10(edge) - Math.round(Math.log10(edge))) < 1e-9) decades.push(k);
    });
    const labelled = new Set(decades);
    for (const k of [0, n]) {
      if (!decades.some((d) => Math.abs(d - k) < 4)) labelled.add(k);
    }
    for (const k of [...labelled].sort((a, b) => a - b)) {
      const x = left + k * step;
      plot.appendChild(svg("line", { class: "tick", x1: x, y1: base, x2: x, y2: base + 4 }));
      plot.appendChild(svg("text", { class: "xlabel", x, y: base + 15, "text-anchor": "middle" }, edgeText(h.edges[k])));
    }
    plot.appendChild(svg("text", { class: "xtitle", x: (left + width) / 2, y: height - 3, "text-anchor": "middle" },
      "activation (log scale); tokens per bin"));
    return plot;
  }

  function lens(logitLens) {
    const box = L.el("div", "lens");
    for (const [side, title] of [["up", "promotes"], ["down", "suppresses"]]) {
      const column = L.el("div", "lens-side");
      column.appendChild(L.el("h4", null, title));
      const ol = L.el("ol", side);
      for (const [token, value] of logitLens[side]) {
        const li = L.el("li");
        li.appendChild(T.tokenSpan(token, 0, 1));
        li.appendChild(L.el("span", "num", value.toFixed(3)));
        ol.appendChild(li);
      }
      column.appendChild(ol);
      box.appendChild(column);
    }
    return box;
  }

  function neighbours(list) {
    if (!list.length) return L.el("p", "muted", "never active together with another latent");
    const table = L.el("table", "neighbours");
    const head = table.createTHead().insertRow();
    for (const title of ["latent", "observed", "expected", "obs / exp", "explanation"]) {
      head.appendChild(L.el("th", null, title));
    }
    const body = table.createTBody();
    for (const [j, observed, expected, explanation] of list) {
      const tr = body.insertRow();
      const cell = L.el("td", "num");
      cell.appendChild(inReport(j) ? L.link(L.pageHref(meta, j), String(j)) : L.el("span", null, String(j)));
      tr.appendChild(cell);
      tr.appendChild(L.el("td", "num", L.count(observed)));
      tr.appendChild(L.el("td", "num", L.number(expected, 3)));
      tr.appendChild(L.el("td", "num", expected > 0 ? L.number(observed / expected, 3) : L.DASH));
      tr.appendChild(L.el("td", "text", explanation || ""));
    }
    return table;
  }

  // A reader latent's label: its own evidence (count, density, the tokens its top examples fire
  // on) or the tokens its logit lens promotes, as meta.reader_labels says; token texts as chips.
  function readerLabel(label) {
    const box = L.el("span", "label");
    if (label.tops) {
      box.appendChild(L.el("span", "stat", L.count(label.count) + " \u00b7 " + L.number(label.density, 3)));
    }
    const tokens = label.tops || label.lens || [];
    if (label.lens) box.appendChild(L.el("span", "stat", "promotes"));
    for (const text of tokens) {
      const chip = T.tokenSpan(text, 0, 1);
      chip.classList.add("chip");
      box.appendChild(chip);
    }
    return box;
  }

  function moves(m) {
    const box = L.el("div", "moves");
    const labels = meta.reader_labels === "evidence"
      ? "readers labelled by their evidence: count \u00b7 density, the tokens their top examples fire on"
      : "readers labelled by their logit lens: the tokens they promote most";
    box.appendChild(L.el("p", "muted", "ablated in " + L.count(m.ablations) +
      " prompts; mean effect on each reader latent (summed effect / ablations); " + labels));
    const sides = L.el("div", "moves-sides");
    for (const [side, title] of [["up", "raises"], ["down", "lowers"]]) {
      const column = L.el("div", "moves-side");
      column.appendChild(L.el("h4", null, title));
      if (!m[side].length) column.appendChild(L.el("p", "muted", "no reader latent"));
      const ol = L.el("ol", "moves-list " + side);
      for (const [reader, value] of m[side]) {
        const label = m.readers[String(reader)] || {};
        const li = L.el("li", "move");
        li.dataset.reader = String(reader);
        const name = "reader " + reader;
        const link = L.externalLink(label.url, name);
        if (link) link.classList.add("reader");
        li.appendChild(link || L.el("span", "reader", name));
        li.appendChild(L.el("span", "num effect", L.number(value, 3)));
        li.appendChild(readerLabel(label));
        ol.appendChild(li);
      }
      if (m[side].length) column.appendChild(ol);
      sides.appendChild(column);
    }
    box.appendChild(sides);
    return box;
  }

  function bands(latent) {
    const details = L.el("details", "bands");
    const sampled = latent.bands.reduce((n, band) => n + band.examples.length, 0);
    details.appendChild(L.el("summary", null,
      `Quantile bands: ${sampled} sampled examples in ${latent.bands.length} bands, strongest first`));
    details.addEventListener("toggle", () => {
      if (!details.open || details.dataset.drawn) return;
      details.dataset.drawn = "1";
      for (let b = latent.bands.length - 1; b >= 0; b--) {
        const band = latent.bands[b];
        const box = L.el("div", "band");
        box.dataset.band = String(b);
        box.appendChild(L.el("h4", null,
          `band ${b + 1} of ${latent.bands.length}: ${L.number(band.low, 4)} \u2013 ${L.number(band.high, 4)}`));
        box.appendChild(examples(band.examples.slice().reverse(), latent.max, "sampled"));
        details.appendChild(box);
      }
    });
    return details;
  }

  function block(title, content) {
    const box = L.el("div", "block");
    box.appendChild(L.el("h3", null, title));
    box.appendChild(content);
    return box;
  }

  function section(latent) {
    const box = L.el("section", "latent");
    box.id = "latent-" + latent.index;
    const heading = L.el("h2", null, "Latent " + latent.index + " ");
    heading.appendChild(L.link("#" + box.id, "#", "anchor"));
    box.appendChild(heading);
    const stats = "active on " + L.count(latent.count) + " tokens \u00b7 density " +
      L.number(latent.density, 3) + " \u00b7 max " + L.number(latent.max, 4);
    box.appendChild(L.el("p", "stats", stats));
    const about = L.el("p", "explanation");
    if (latent.explanation) about.appendChild(L.el("span", "text", latent.explanation));
    const np = L.externalLink(latent.url, "Neuronpedia");
    if (np) about.appendChild(np);
    if (about.childNodes.length) box.appendChild(about);
    if (!latent.count) {
      box.appendChild(L.el("p", "muted", "never active on the tokens counted"));
      if (latent.moves) box.appendChild(block("What ablating it moves", moves(latent.moves)));
      return box;
    }
    const grid = L.el("div", "grid");
    const left = L.el("div", "main-col");
    left.appendChild(block("Top activations", examples(latent.top, latent.max, "top")));
    left.appendChild(bands(latent));
    if (latent.moves) left.appendChild(block("What ablating it moves", moves(latent.moves)));
    const right = L.el("div", "side-col");
    right.appendChild(block("Activations", histogram(latent.histogram)));
    if (latent.logit_lens) right.appendChild(block("Logit lens", lens(latent.logit_lens)));
    if (latent.neighbours) right.appendChild(block("Co-occurring latents", neighbours(latent.neighbours)));
    grid.appendChild(left);
    grid.appendChild(right);
    box.appendChild(grid);
    return box;
  }

  const main = document.getElementById("latents");
  const toc = document.getElementById("toc");
  const fragment = document.createDocumentFragment();
  for (const latent of data.latents) {
    fragment.appendChild(section(latent));
    toc.appendChild(L.link("#latent-" + latent.index, String(latent.index)));
  }
  main.appendChild(fragment);
  // The sections did not exist when the browser looked for the URL's #latent-I: go there now.
  const target = location.hash ? document.getElementById(decodeURIComponent(location.hash.slice(1))) : null;
  if (target) {
    target.scrollIntoView();
    // Sections near the view are laid out in the next frames (content-visibility: auto), which
    // can move the target: go there again once they are.
    requestAnimationFrame(() => requestAnimationFrame(() => target.scrollIntoView()));
  }
})();
