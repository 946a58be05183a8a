"use strict";
// Builds the 4-tuples table from the JSON block. Untrusted text (labels) only ever goes through
// textContent; links only take http(s) URLs and open only when clicked.
(function () {
  const data = JSON.parse(document.getElementById("tuples-data").textContent);
  const PAGE = 500;
  const SHOWN_CHARS = 120;  // longer labels are cut, the whole text in the tooltip
  const table = document.getElementById("tuples-table");
  const body = table.tBodies[0];
  const headers = Array.from(table.tHead.rows[0].cells);
  const keys = headers.map((th) => th.dataset.key);
  const types = headers.map((th) => th.dataset.type);
  const LATENTS = ["A", "B", "C", "D"];

  function label(key, id) {
    const side = data.sides[key];
    const entry = (data.labels[side] || {})[String(id)] || ["", "", null];
    return { text: entry[0] || "", source: entry[1] || "", url: entry[2] };
  }

  // One object per tuple, keyed as the header's columns (COLUMNS in reports/tuples.py).
  const rows = data.tuples.map((t, i) => {
    const row = Object.fromEntries(data.fields.map((field, j) => [field, t[j]]));
    row.rank = i + 1;
    row.labels = {};
    row.ids = [];
    const texts = [];
    for (const key of LATENTS) {
      const info = label(key, row[key]);
      row.labels[key] = info;
      row[key + "_label"] = info.text;
      row.ids.push(String(row[key]));
      texts.push(info.text);
    }
    row.search = texts.join("\n").toLowerCase();
    return row;
  });

  // The exact total may pass 2^53: it comes as a string, grouped here by thousands.
  const total = /^\d+$/.test(data.total) ? data.total.replace(/\B(?=(\d{3})+(?!\d))/g, ",") : data.total;
  const sortState = { key: table.dataset.sortKey, dir: table.dataset.sortDir };
  let shown = PAGE;

  function format(value, kind) {
    if (value === null || value === undefined) return "\u2014";
    if (kind === "num" && !Number.isInteger(value)) return value.toPrecision(4);
    return String(value);
  }

  function visibleRows() {
    const text = document.getElementById("filter-text").value.trim().toLowerCase();
    // Latent numbers match exactly ("12" is not 120); label text matches as a substring.
    const view = rows.filter((r) => !text || r.ids.includes(text) || r.search.includes(text));
    const { key, dir } = sortState;
    const sign = dir === "asc" ? 1 : -1;
    const numeric = types[keys.indexOf(key)] !== "text";
    view.sort((x, y) => {
      const a = x[key], b = y[key];
      if (a == null || b == null) {
        if (a == null && b == null) return x.rank - y.rank;
        return a == null ? 1 : -1;  // missing values last in both directions
      }
      const order = numeric ? a - b : String(a).localeCompare(String(b));
      return order !== 0 ? sign * order : x.rank - y.rank;
    });
    return view;
  }

  function latentCell(row, key) {
    const td = document.createElement("td");
    td.className = "latent";
    const url = row.labels[key].url;
    const text = String(row[key]);
    if (typeof url === "string" && /^https?:\/\//i.test(url)) {
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

  function labelCell(row, key) {
    const td = document.createElement("td");
    td.className = "text";
    const info = row.labels[key];
    const chars = Array.from(info.text);  // whole code points
    const span = document.createElement("span");
    if (chars.length > SHOWN_CHARS) {
      td.title = info.text;
      span.textContent = chars.slice(0, SHOWN_CHARS - 1).join("") + "\u2026";
    } else {
      span.textContent = info.text || "\u2014";
    }
    td.appendChild(span);
    if (info.source && info.source !== "explanation" && info.source !== "none") {
      const source = document.createElement("span");
      source.className = "source";
      source.textContent = " (" + info.source + ")";
      td.appendChild(source);
    }
    return td;
  }

  function cell(row, col) {
    const key = keys[col];
    if (types[col] === "latent") return latentCell(row, key);
    if (types[col] === "text") return labelCell(row, key.slice(0, 1));
    const td = document.createElement("td");
    const value = row[key];
    td.className = "num" + (key === "rank" || value == null ? "" : value > 0 ? " pos" : value < 0 ? " neg" : "");
    td.textContent = format(value, types[col]);
    if (typeof value === "number" && !Number.isInteger(value)) td.title = String(value);
    return td;
  }

  function render() {
    const view = visibleRows();
    const fragment = document.createDocumentFragment();
    for (const row of view.slice(0, shown)) {
      const tr = document.createElement("tr");
      for (let col = 0; col < headers.length; col++) tr.appendChild(cell(row, col));
      fragment.appendChild(tr);
    }
    body.replaceChildren(fragment);
    headers.forEach((th, col) => {
      const state = keys[col] === sortState.key ? (sortState.dir === "asc" ? "ascending" : "descending") : "none";
      th.setAttribute("aria-sort", state);
    });
    const n = Math.min(shown, view.length);
    document.getElementById("count").textContent =
      "showing " + n + " of " + view.length + " matching tuples (" + rows.length +
      " kept of " + total + " in all)";
    document.getElementById("more").hidden = view.length <= shown;
  }

  headers.forEach((th, col) => {
    th.addEventListener("click", () => {
      if (sortState.key === keys[col]) {
        sortState.dir = sortState.dir === "asc" ? "desc" : "asc";
      } else {
        sortState.key = keys[col];
        // Effects and strength: largest first; latent numbers, rank and labels: ascending.
        sortState.dir = types[col] === "num" && keys[col] !== "rank" ? "desc" : "asc";
      }
      render();
    });
  });
  document.getElementById("filter-text").addEventListener("input", () => { shown = PAGE; render(); });
  document.getElementById("more").addEventListener("click", () => { shown += PAGE; render(); });
  render();
})();
