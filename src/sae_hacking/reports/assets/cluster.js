/* The dendrogram of cluster.html (reports/cluster.py) as a collapsible outline.
 *
 * The data block holds scipy's linkage: leaves 0..N-1 (latents[i], labels[i]), and merge k
 * makes node N+k of its two children, so a parent's id is always above its children's. The
 * page keeps the rows flat (a div per visible node, indented by depth) rather than nested: a
 * chained tree can be thousands of levels deep. Rows exist only for visible nodes; expanding a
 * node builds its children's rows then, so a 20,000-leaf tree opens at once. Every label is
 * untrusted text and reaches the page through textContent or a title only. */
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("cluster-data").textContent);
  const latents = data.latents;
  const labels = data.labels;
  const N = latents.length;
  const TOTAL = N > 1 ? 2 * N - 1 : N;
  const ROOT = TOTAL - 1;
  const MAX_INDENT = 40; // deeper rows stop moving right and say their depth instead
  const INDENT_PX = 14;
  const BASE_PX = 10;
  const OPEN_DEPTH = 3; // levels open when the page loads
  const MAX_REVEALED = 50; // matches of one search whose paths are opened
  const BRIEF = 60; // characters of a leaf label in a branch's preview

  const left = new Int32Array(TOTAL).fill(-1);
  const right = new Int32Array(TOTAL).fill(-1);
  const parent = new Int32Array(TOTAL).fill(-1);
  const size = new Int32Array(TOTAL).fill(1);
  const height = new Float64Array(TOTAL);
  const firstLeaf = new Int32Array(TOTAL);
  const depth = new Int32Array(TOTAL);
  for (let i = 0; i < N; i++) firstLeaf[i] = i;
  data.merges.forEach(function (merge, k) {
    const node = N + k;
    const a = merge[0];
    const b = merge[1];
    left[node] = a;
    right[node] = b;
    height[node] = merge[2];
    size[node] = size[a] + size[b];
    parent[a] = node;
    parent[b] = node;
    firstLeaf[node] = firstLeaf[a];
  });
  for (let node = ROOT; node >= N; node--) {
    depth[left[node]] = depth[node] + 1;
    depth[right[node]] = depth[node] + 1;
  }

  const expanded = new Uint8Array(TOTAL);
  const rows = new Map(); // node -> its row, for the nodes on the page
  const matches = new Set();
  const tree = document.getElementById("tree");
  const status = document.getElementById("status");
  const searchBox = document.getElementById("search");

  function span(cls, text) {
    const s = document.createElement("span");
    s.className = cls;
    s.textContent = text;
    return s;
  }

  function labelOf(leaf) {
    return labels[leaf][0] || "(no label)";
  }

  function brief(leaf) {
    const text = labelOf(leaf);
    return latents[leaf] + ": " + (text.length > BRIEF ? text.slice(0, BRIEF - 1) + "\u2026" : text);
  }

  function leafContent(row, leaf) {
    const label = labels[leaf];
    const source = data.sources[label[1]] || "none";
    row.dataset.latent = String(latents[leaf]);
    row.append(span("leaf-mark", "\u2022"), span("index", latents[leaf] + ":"));
    row.append(span(label[0] ? "label" : "label empty", labelOf(leaf)));
    row.append(span("source", source), span("cluster", "cluster " + data.clusters[leaf]));
    if (label[2]) {
      const link = document.createElement("a");
      link.href = label[2];
      link.target = "_blank";
      link.rel = "noopener noreferrer";
      link.textContent = "Neuronpedia";
      row.append(link);
    }
    let title = latents[leaf] + ": " + labelOf(leaf) + "\nlabel: " + source;
    title += "\nflat cluster " + data.clusters[leaf];
    if (data.counts) title += "\nablated in " + data.counts[leaf] + " prompts";
    row.title = title;
  }

  function setToggle(row, node) {
    const open = expanded[node] === 1;
    row.setAttribute("aria-expanded", open ? "true" : "false");
    const toggle = row.firstChild;
    toggle.textContent = open ? "\u25BE" : "\u25B8";
    toggle.setAttribute("aria-label", (open ? "collapse " : "expand ") + size[node] + " latents");
  }

  function branchContent(row, node) {
    const toggle = document.createElement("button");
    toggle.type = "button";
    toggle.className = "toggle";
    row.append(toggle, span("size", size[node] + " latents"));
    row.append(span("height", "height " + height[node].toPrecision(3)));
    if (depth[node] > MAX_INDENT) row.append(span("deep", "depth " + depth[node]));
    row.append(span("preview", brief(firstLeaf[left[node]]) + " \u00B7 " + brief(firstLeaf[right[node]])));
    row.title = size[node] + " latents, merged at cosine distance " + height[node] + " (depth " + depth[node] + ")";
    setToggle(row, node);
  }

  function makeRow(node) {
    const row = document.createElement("div");
    row.className = node < N ? "node leaf" : "node branch";
    row.setAttribute("role", "treeitem");
    row.setAttribute("aria-level", String(depth[node] + 1));
    row.dataset.node = String(node);
    // Set through the CSSOM, which the page's Content-Security-Policy allows.
    row.style.paddingLeft = BASE_PX + Math.min(depth[node], MAX_INDENT) * INDENT_PX + "px";
    if (node < N) leafContent(row, node);
    else branchContent(row, node);
    if (matches.has(node)) row.classList.add("match");
    rows.set(node, row);
    return row;
  }

  // The rows below node that are visible when it is open, in display order (left first).
  function openRows(node) {
    const out = document.createDocumentFragment();
    const stack = [right[node], left[node]];
    while (stack.length) {
      const n = stack.pop();
      out.append(makeRow(n));
      if (n >= N && expanded[n]) stack.push(right[n], left[n]);
    }
    return out;
  }

  function expand(node) {
    if (node < N || expanded[node]) return;
    expanded[node] = 1;
    const row = rows.get(node);
    if (!row) return; // inside a closed branch: its rows appear when that opens
    setToggle(row, node);
    row.after(openRows(node));
  }

  function collapse(node) {
    if (node < N || !expanded[node]) return;
    expanded[node] = 0;
    const row = rows.get(node);
    if (!row) return;
    setToggle(row, node);
    const stack = [left[node], right[node]];
    while (stack.length) {
      const n = stack.pop();
      const r = rows.get(n);
      if (r) {
        r.remove();
        rows.delete(n);
      }
      if (n >= N && expanded[n]) stack.push(left[n], right[n]);
    }
  }

  function render() {
    rows.clear();
    const all = document.createDocumentFragment();
    all.append(makeRow(ROOT));
    if (ROOT >= N && expanded[ROOT]) all.append(openRows(ROOT));
    tree.replaceChildren(all);
  }

  // Leaves in display order: the order of scipy's leaves_list.
  function leafOrder() {
    const out = [];
    const stack = [ROOT];
    while (stack.length) {
      const n = stack.pop();
      if (n < N) out.push(n);
      else stack.push(right[n], left[n]);
    }
    return out;
  }
  const ordered = leafOrder();

  function reveal(leaf) {
    const path = [];
    for (let n = parent[leaf]; n !== -1; n = parent[n]) path.push(n);
    for (let i = path.length - 1; i >= 0; i--) expand(path[i]);
  }

  function search(query) {
    matches.forEach(function (leaf) {
      const row = rows.get(leaf);
      if (row) row.classList.remove("match");
    });
    matches.clear();
    const q = query.trim();
    if (!q) {
      status.textContent = "";
      return;
    }
    const lower = q.toLowerCase();
    const index = /^\d+$/.test(q) ? Number(q) : null; // ids match exactly, labels as text
    const found = ordered.filter(function (leaf) {
      return latents[leaf] === index || labels[leaf][0].toLowerCase().includes(lower);
    });
    const shown = found.slice(0, MAX_REVEALED);
    shown.forEach(function (leaf) {
      matches.add(leaf);
      reveal(leaf);
      const row = rows.get(leaf);
      if (row) row.classList.add("match");
    });
    if (!found.length) status.textContent = "no latent matches";
    else if (found.length > shown.length)
      status.textContent = found.length + " latents match; the first " + shown.length + " in tree order are shown";
    else status.textContent = found.length + (found.length === 1 ? " latent matches" : " latents match");
    if (shown.length) rows.get(shown[0]).scrollIntoView({ block: "center" });
  }

  tree.addEventListener("click", function (event) {
    if (event.target.closest("a")) return; // a Neuronpedia link opens on its own
    const row = event.target.closest(".node");
    if (!row) return;
    const node = Number(row.dataset.node);
    if (node < N) return;
    if (expanded[node]) collapse(node);
    else expand(node);
  });
  let timer = null;
  searchBox.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(function () {
      search(searchBox.value);
    }, 250);
  });
  searchBox.addEventListener("keydown", function (event) {
    if (event.key !== "Enter") return;
    clearTimeout(timer);
    search(searchBox.value);
  });
  document.getElementById("expand-all").addEventListener("click", function () {
    expanded.fill(1, N);
    render();
  });
  document.getElementById("collapse-all").addEventListener("click", function () {
    expanded.fill(0);
    render();
  });

  for (let node = N; node < TOTAL; node++) if (depth[node] < OPEN_DEPTH) expanded[node] = 1;
  render();
})();
