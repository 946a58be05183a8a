"use strict";
// The index of `sae-hacking latents-report`: every latent of the report in one table, searched,
// sorted and drawn PAGE rows at a time (65,536 rows stay responsive: filtering and sorting work on
// plain arrays, only the rows shown become elements).
(function () {
  const L = window.saeLatents;
  const data = JSON.parse(document.getElementById("latents-data").textContent);
  const meta = data.meta;
  const PAGE = 200;
  const tokens = Math.max(meta.tokens, 1);
  const table = document.getElementById("latents-table");
  const body = table.tBodies[0];
  // The "ablated" column is the ablate run's (--ablations): without one, there is none.
  if (!meta.has_moves) table.tHead.querySelector('th[data-key="ablated"]').remove();
  const headers = Array.from(table.tHead.rows[0].cells);
  const search = document.getElementById("search");

  // Each row as [index, count, max, [top tokens], explanation, (times ablated, if ever)]
  // (index_row in reports/latents.py).
  const rows = data.rows.map((r) => ({
    index: r[0], count: r[1], density: r[1] / tokens, max: r[2], tops: r[3], explanation: r[4] || "",
    ablated: r.length > 5 ? r[5] : null,
    id: String(r[0]),
    text: ((r[4] || "") + "\n" + r[3].join("\n")).toLowerCase(),
  }));

  const state = { key: table.dataset.sortKey, dir: table.dataset.sortDir, offset: 0 };
  let view = rows;

  function refresh() {
    const query = search.value.trim().toLowerCase();
    // An index matches exactly ("12" is not 120); explanations and tokens match as substrings.
    view = query ? rows.filter((r) => r.id === query || r.text.includes(query)) : rows.slice();
    const { key, dir } = state;
    const sign = dir === "asc" ? 1 : -1;
    view.sort((x, y) => {
      const a = x[key], b = y[key];
      if (a === null || b === null) {
        if (a === b) return x.index - y.index;
        return a === null ? 1 : -1;  // never active (no max), never ablated: last either way
      }
      return a !== b ? sign * (a - b) : x.index - y.index;
    });
    state.offset = 0;
    render();
  }

  function row(r) {
    const tr = document.createElement("tr");
    tr.dataset.latent = r.id;
    const first = L.el("td", "num");
    first.appendChild(L.link(L.pageHref(meta, r.index), r.id));
    tr.appendChild(first);
    tr.appendChild(L.el("td", "num", L.count(r.count)));
    tr.appendChild(L.el("td", "num", L.number(r.density, 3)));
    tr.appendChild(L.el("td", "num", L.number(r.max, 4)));
    if (meta.has_moves) tr.appendChild(L.el("td", "num ablated", r.ablated === null ? "" : L.count(r.ablated)));
    const tops = L.el("td", "tops");
    for (const text of r.tops) {
      const chip = window.saeTokens.tokenSpan(text, 0, 1);
      chip.classList.add("chip");
      tops.appendChild(chip);
    }
    tr.appendChild(tops);
    tr.appendChild(L.el("td", "text", r.explanation));
    return tr;
  }

  function render() {
    const shown = view.slice(state.offset, state.offset + PAGE);
    const fragment = document.createDocumentFragment();
    shown.forEach((r) => fragment.appendChild(row(r)));
    body.replaceChildren(fragment);
    headers.forEach((th) => {
      const sorted = th.dataset.key === state.key;
      if (th.dataset.sort) th.setAttribute("aria-sort", sorted ? (state.dir === "asc" ? "ascending" : "descending") : "none");
    });
    const from = view.length ? state.offset + 1 : 0;
    document.getElementById("count").textContent =
      "latents " + from + "\u2013" + (state.offset + shown.length) + " of " + view.length +
      " matching (" + rows.length + " in the report)";
    document.getElementById("prev").disabled = state.offset === 0;
    document.getElementById("next").disabled = state.offset + PAGE >= view.length;
  }

  headers.forEach((th) => {
    if (!th.dataset.sort) return;
    th.querySelector("button").addEventListener("click", () => {
      if (state.key === th.dataset.key) {
        state.dir = state.dir === "asc" ? "desc" : "asc";
      } else {
        state.key = th.dataset.key;
        state.dir = th.dataset.key === "index" ? "asc" : "desc";  // the largest counts first
      }
      refresh();
    });
  });
  search.addEventListener("input", refresh);
  document.getElementById("prev").addEventListener("click", () => {
    state.offset = Math.max(0, state.offset - PAGE);
    render();
  });
  document.getElementById("next").addEventListener("click", () => {
    if (state.offset + PAGE < view.length) state.offset += PAGE;
    render();
  });
  refresh();
})();
