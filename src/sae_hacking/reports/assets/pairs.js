"use strict";
// Builds the pairs table from the JSON block. Untrusted text (explanations) only ever goes
// through textContent; links only take http(s) URLs. A pair with a side-by-side view
// (pair_view.js, concatenated in front) opens it from its # button or a click on its row.
(function () {
  const data = JSON.parse(document.getElementById("pairs-data").textContent);
  const PAGE = 500;
  const table = document.getElementById("pairs-table");
  const body = table.tBodies[0];
  const headers = Array.from(table.tHead.rows[0].cells);
  const keys = headers.map((th) => th.dataset.key);
  const types = headers.map((th) => th.dataset.type);
  const formats = headers.map((th) => th.dataset.format);
  const links = headers.map((th) => th.dataset.link);

  // The data's arrays named by its field lists (PAIR_FIELDS, LATENT_FIELDS in reports/pairs.py).
  function named(fields, values) {
    return Object.fromEntries(fields.map((field, j) => [field, values ? values[j] : null]));
  }

  function latent(id) {
    const info = named(data.latent_fields, data.latents[String(id)]);
    info.explanation = info.explanation || "";
    return info;
  }

  // One object per pair, keyed as the header's columns (data-key, COLUMNS in reports/pairs.py).
  const rows = data.pairs.map((p, i) => {
    const row = named(data.pair_fields, p);
    const a = latent(row.latent1);
    const b = latent(row.latent2);
    Object.assign(row, {
      rank: i + 1,
      explanation1: a.explanation, fires1: a.fires, ablated1: a.ablated,
      explanation2: b.explanation, fires2: b.fires, ablated2: b.ablated,
    });
    row.urls = { latent1: a.url, latent2: b.url };
    // Latent ids match exactly ("12" is not 120 or 312); explanations match as substrings.
    row.ids = [String(row.latent1), String(row.latent2)];
    row.search = (a.explanation + "\n" + b.explanation).toLowerCase();
    return row;
  });

  const sideBySide = window.pairView(data.evidence || { n_pairs: 0, pairs: [], latents: {} }, latent);
  const sortState = { key: table.dataset.sortKey, dir: table.dataset.sortDir };
  let shown = PAGE;

  function format(value, kind) {
    if (value === null || value === undefined) return "\u2014";
    if (kind === "cos") return value.toFixed(4);
    if (kind === "sci") return value === 0 ? "0" : (Math.abs(value) < 1e-3 ? value.toExponential(2) : value.toPrecision(3));
    if (kind === "int") return value.toLocaleString("en-US");
    return String(value);
  }

  function numberInput(id) {
    const value = parseFloat(document.getElementById(id).value);
    return Number.isFinite(value) ? value : null;
  }

  function visibleRows() {
    const text = document.getElementById("filter-text").value.trim().toLowerCase();
    const minEffect = numberInput("min-effect");
    const minDecoder = numberInput("min-decoder");
    const maxCooc = numberInput("max-cooc");
    const minExpected = numberInput("min-expected");
    const view = rows.filter((r) =>
      (!text || r.ids.includes(text) || r.search.includes(text)) &&
      (minEffect === null || r.effect_cosine >= minEffect) &&
      (minDecoder === null || r.decoder_cosine >= minDecoder) &&
      (maxCooc === null || r.cooccurrence <= maxCooc) &&
      (minExpected === null || r.expected >= minExpected));
    const { key, dir } = sortState;
    const sign = dir === "asc" ? 1 : -1;
    const numeric = types[keys.indexOf(key)] === "num";
    view.sort((x, y) => {
      const a = x[key], b = y[key];
      if (a === null || a === undefined || b === null || b === undefined) {
        if (a === b || (a == null && b == null)) return x.rank - y.rank;
        return a == null ? 1 : -1;  // missing values last in both directions
      }
      const order = numeric ? a - b : String(a).localeCompare(String(b));
      return order !== 0 ? sign * order : x.rank - y.rank;
    });
    return view;
  }

  // Longer explanations are cut (the whole text in the tooltip) so the table fits the page.
  const SHOWN_CHARS = 120;

  function cell(row, col) {
    const td = document.createElement("td");
    td.className = types[col] === "num" ? "num" : "text";
    let text = format(row[keys[col]], formats[col]);
    const chars = types[col] === "num" ? [] : Array.from(text);  // whole code points
    if (chars.length > SHOWN_CHARS) {
      td.title = text;
      text = chars.slice(0, SHOWN_CHARS - 1).join("") + "\u2026";
    }
    const url = links[col] ? row.urls[keys[col]] : null;
    if (keys[col] === "rank" && sideBySide.has(row.rank - 1)) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "pv-open";
      button.textContent = text;
      button.setAttribute("aria-label", "pair " + text + ": open the side-by-side view");
      button.addEventListener("click", () => sideBySide.open(row.rank - 1, row, button));
      td.appendChild(button);
    } else if (typeof url === "string" && /^https?:\/\//i.test(url)) {
      const a = document.createElement("a");
      a.href = url;
      a.rel = "noopener noreferrer";
      a.target = "_blank";
      a.textContent = text;
      td.appendChild(a);
    } else {
      td.textContent = text;
    }
    return td;
  }

  function render() {
    const view = visibleRows();
    const fragment = document.createDocumentFragment();
    for (const row of view.slice(0, shown)) {
      const tr = document.createElement("tr");
      for (let col = 0; col < headers.length; col++) tr.appendChild(cell(row, col));
      if (sideBySide.has(row.rank - 1)) {
        tr.classList.add("has-view");
        // A click elsewhere on the row opens the view too (links and the button act as themselves).
        tr.addEventListener("click", (event) => {
          if (!event.target.closest("a, button")) sideBySide.open(row.rank - 1, row, tr.querySelector("button.pv-open"));
        });
      }
      fragment.appendChild(tr);
    }
    body.replaceChildren(fragment);
    headers.forEach((th, col) => {
      const state = keys[col] === sortState.key ? (sortState.dir === "asc" ? "ascending" : "descending") : "none";
      th.setAttribute("aria-sort", state);
    });
    const n = Math.min(shown, view.length);
    document.getElementById("count").textContent =
      "showing " + n + " of " + view.length + " matching pairs (" + rows.length + " in this run)";
    document.getElementById("more").hidden = view.length <= shown;
  }

  headers.forEach((th, col) => {
    th.addEventListener("click", () => {
      if (sortState.key === keys[col]) {
        sortState.dir = sortState.dir === "asc" ? "desc" : "asc";
      } else {
        sortState.key = keys[col];
        sortState.dir = "asc";
      }
      render();
    });
  });
  for (const id of ["filter-text", "min-effect", "min-decoder", "max-cooc", "min-expected"]) {
    document.getElementById(id).addEventListener("input", () => { shown = PAGE; render(); });
  }
  document.getElementById("more").addEventListener("click", () => { shown += PAGE; render(); });
  render();
})();
