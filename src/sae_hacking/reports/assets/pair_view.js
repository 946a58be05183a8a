"use strict";
// The pairs report's side-by-side view: a pair's two latents in two columns (header, top contexts,
// quantile bands, logit lens), then the tokens where each fires and their reader effects compared.
// Its data is the "evidence" of the pairs-data block (reports/pair_view.py; built by
// absorption/pairs/evidence.py). Untrusted text (tokens, explanations) only ever goes through
// textContent, here and in saeTokens (tokens.js, concatenated in front); links only take http(s).
window.pairView = function (evidence, latentInfo) {
  const panel = document.getElementById("pair-view");
  const SIDES = [1, 2];
  let opener = null;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function num(value, digits) {
    if (value === null || value === undefined) return "\u2014";
    return Number(value).toPrecision(digits || 4);
  }

  function signed(value) {
    if (value === null || value === undefined) return "\u2014";
    return (value > 0 ? "+" : "") + num(value, 3);
  }

  function has(index) {
    return index >= 0 && index < evidence.n_pairs && Boolean(evidence.pairs[index]);
  }

  function link(url, text) {
    if (typeof url === "string" && /^https?:\/\//i.test(url)) {
      const a = el("a", "", text);
      a.href = url;
      a.rel = "noopener noreferrer";
      a.target = "_blank";
      return a;
    }
    return el("span", "", text);
  }

  function facts(pairs) {
    const dl = el("dl", "facts");
    for (const [key, value] of pairs) {
      dl.appendChild(el("dt", "", key));
      dl.appendChild(el("dd", "", value));
    }
    return dl;
  }

  // One context per item: its activation, then the tokens coloured by activation / the latent's max.
  function examples(list, max) {
    const ol = el("ol", "pv-examples");
    for (const ex of list) {
      const li = el("li");
      li.appendChild(el("span", "pv-value", num(ex.value, 3)));
      li.appendChild(window.saeTokens.contextLine(ex.tokens, ex.acts, ex.center, max));
      ol.appendChild(li);
    }
    return ol;
  }

  function lens(lensData) {
    const box = el("div", "pv-lens");
    box.appendChild(el("h4", "", "Logit lens"));
    for (const [side, label] of [["up", "promotes"], ["down", "suppresses"]]) {
      const line = el("p", "pv-lens-" + side);
      line.appendChild(el("span", "pv-label", label + ": "));
      for (const [token, value] of lensData[side] || []) {
        const chip = el("span", "ctx pv-chip");
        chip.appendChild(window.saeTokens.tokenSpan(token, 0, 1));
        chip.title = "logit " + num(value, 3);
        line.appendChild(chip);
      }
      box.appendChild(line);
    }
    return box;
  }

  function column(id, side) {
    const info = latentInfo(id);
    const view = evidence.latents[String(id)];
    const section = el("section", "pv-latent");
    section.dataset.side = String(side);
    section.dataset.latent = String(id);
    const h3 = el("h3");
    h3.appendChild(el("span", "pv-side", "Latent " + side + ": "));
    h3.appendChild(link(info.url, String(id)));
    section.appendChild(h3);
    section.appendChild(el("p", "pv-explanation", info.explanation || "(no explanation)"));
    section.appendChild(facts([
      ["fires on", view.count.toLocaleString("en-US") + " tokens"],
      ["density", num(view.density, 3)],
      ["max activation", num(view.max, 4)],
      ["ablated", info.ablated === null || info.ablated === undefined ? "\u2014" : info.ablated.toLocaleString("en-US") + " prompts"],
    ]));
    section.appendChild(el("h4", "", "Top activations"));
    section.appendChild(examples(view.top, view.max));
    const bands = el("details", "pv-bands");
    const count = view.bands.reduce((n, band) => n + band.examples.length, 0);
    bands.appendChild(el("summary", "", "Quantile bands (sampled): " + view.bands.length +
      " bands, " + count + " examples, weakest first"));
    view.bands.forEach((band, b) => {
      bands.appendChild(el("h5", "", "band " + (b + 1) + ": " + num(band.low, 3) + " \u2013 " + num(band.high, 3)));
      bands.appendChild(examples(band.examples, view.max));
    });
    section.appendChild(bands);
    if (view.logit_lens) section.appendChild(lens(view.logit_lens));
    return section;
  }

  function tokenTable(pair, ids) {
    const section = el("section", "pv-tokens");
    section.appendChild(el("h3", "", "Tokens where each fires"));
    section.appendChild(el("p", "pv-sub", "Centre tokens of the top and sampled examples (" +
      pair.totals[0] + " of latent " + ids[0] + ", " + pair.totals[1] + " of latent " + ids[1] +
      "): first the tokens only latent " + ids[0] + " fires on, then only latent " + ids[1] + ", then both."));
    const table = el("table", "pv-token-table");
    const head = table.createTHead().insertRow();
    for (const label of ["token", "latent " + ids[0], "latent " + ids[1], "fires on"]) {
      const th = el("th", label.startsWith("latent") ? "num" : "", label);
      th.scope = "col";
      head.appendChild(th);
    }
    const body = table.createTBody();
    for (const [token, first, second] of pair.tokens) {
      const where = first && second ? "both" : (first ? "only1" : "only2");
      const tr = body.insertRow();
      tr.className = where;
      const cell = el("td", "pv-token");
      const ctx = el("span", "ctx");
      ctx.appendChild(window.saeTokens.tokenSpan(token, 0, 1));
      cell.appendChild(ctx);
      tr.appendChild(cell);
      tr.appendChild(el("td", "num", String(first)));
      tr.appendChild(el("td", "num", String(second)));
      tr.appendChild(el("td", "", where === "both" ? "both" : "only latent " + ids[where === "only1" ? 0 : 1]));
    }
    const wrap = el("div", "pv-table-wrap");
    wrap.appendChild(table);
    section.appendChild(wrap);
    return section;
  }

  function moveList(name, title, entries, ids) {
    const box = el("section", "pv-moves");
    box.dataset.list = name;
    box.appendChild(el("h4", "", title + " (" + entries.length + ")"));
    const ul = el("ul");
    for (const [reader, first, second] of entries) {
      const li = el("li");
      li.dataset.reader = String(reader);
      const own = name === "only2" ? second : first;
      li.className = own > 0 ? "up" : "down";
      li.appendChild(el("span", "pv-reader", "reader " + reader + (own > 0 ? " \u2191" : " \u2193")));
      li.appendChild(el("span", "pv-effects-of", ids[0] + ": " + signed(first) + " \u00b7 " + ids[1] + ": " + signed(second)));
      ul.appendChild(li);
    }
    if (!entries.length) ul.appendChild(el("li", "pv-none", "none"));
    box.appendChild(ul);
    return box;
  }

  function effects(pair, ids) {
    const section = el("section", "pv-effects");
    section.appendChild(el("h3", "", "Reader effects"));
    section.appendChild(el("p", "pv-sub", "Mean ablation effects (summed effect / ablations): the " +
      evidence.top_readers + " reader latents each latent moves most up and down. Shared: the same reader moved the same way, in both lists."));
    const lists = el("div", "pv-lists");
    lists.appendChild(moveList("shared", "Shared", pair.effects.shared, ids));
    lists.appendChild(moveList("only1", "Only latent " + ids[0], pair.effects.only1, ids));
    lists.appendChild(moveList("only2", "Only latent " + ids[1], pair.effects.only2, ids));
    section.appendChild(lists);
    return section;
  }

  function open(index, row, from) {
    if (!has(index)) return;
    const pair = evidence.pairs[index];
    const ids = [row.latent1, row.latent2];
    const box = el("div", "pv-box");
    const header = el("header", "pv-head");
    header.appendChild(el("h2", "", "Pair " + row.rank + ": latents " + ids[0] + " and " + ids[1]));
    header.lastChild.id = "pv-title";
    header.appendChild(el("p", "pv-sub", "effect cosine " + num(row.effect_cosine, 4) +
      " \u00b7 decoder cosine " + num(row.decoder_cosine, 4) + " \u00b7 co-occurrence " + row.cooccurrence));
    const closer = el("button", "pv-close", "Close");
    closer.type = "button";
    closer.setAttribute("aria-label", "close the side-by-side view (Escape)");
    closer.addEventListener("click", close);
    header.appendChild(closer);
    box.appendChild(header);
    const cols = el("div", "pv-cols");
    SIDES.forEach((side, k) => cols.appendChild(column(ids[k], side)));
    box.appendChild(cols);
    box.appendChild(tokenTable(pair, ids));
    box.appendChild(effects(pair, ids));
    panel.replaceChildren(box);
    panel.dataset.pair = String(index);
    panel.hidden = false;
    document.body.classList.add("pv-shown");
    opener = from || null;
    closer.focus();
  }

  function close() {
    if (panel.hidden) return;
    panel.hidden = true;
    panel.replaceChildren();
    document.body.classList.remove("pv-shown");
    if (opener && document.body.contains(opener)) opener.focus();
    opener = null;
  }

  document.addEventListener("keydown", (event) => {
    if (panel.hidden) return;
    if (event.key === "Escape") {
      event.preventDefault();
      close();
    } else if (event.key === "Tab") {
      // Focus stays in the dialog: Tab from its last control goes to its first, and back.
      const stops = Array.from(panel.querySelectorAll("a[href], button, summary"));
      const first = stops[0], last = stops[stops.length - 1];
      if (!panel.contains(document.activeElement)) {
        event.preventDefault();
        first.focus();
      } else if (!event.shiftKey && document.activeElement === last) {
        event.preventDefault();
        first.focus();
      } else if (event.shiftKey && document.activeElement === first) {
        event.preventDefault();
        last.focus();
      }
    }
  });
  // A click on the backdrop (outside the box) closes it too.
  panel.addEventListener("click", (event) => { if (event.target === panel) close(); });
  return { has, open, close };
};
