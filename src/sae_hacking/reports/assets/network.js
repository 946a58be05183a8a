"use strict";
// Draws the effect network from the JSON block (reports/network.py: page_data) as SVG, with
// pan (drag), zoom (wheel, buttons), a tooltip for nodes and edges, and a search box. Labels
// are untrusted: they reach the DOM through textContent only; links take http(s) URLs only.
(function () {
  const data = JSON.parse(document.getElementById("network-data").textContent);
  const SVG = "http://www.w3.org/2000/svg";
  const KINDS = ["ablator", "reader"];
  const MAX_SHOWN = 48; // label characters drawn beside a node; the tooltip has all of it
  const svg = document.getElementById("graph");
  const viewport = document.getElementById("viewport");
  const stage = document.getElementById("stage");
  const tip = document.getElementById("tooltip");

  const nodes = data.nodes.map((n, i) => ({
    i, kind: KINDS[n[0]], index: n[1], x: n[2] || 0, y: n[3] || 0, degree: n[4],
    label: n[5] || "", source: n[6] || "", url: n[7], edges: [],
  }));
  nodes.forEach((n) => { n.name = (n.kind === "ablator" ? "A" : "R") + n.index; });
  const edges = data.edges.map((e, i) => ({ i, a: nodes[e[0]], r: nodes[e[1]], w: e[2] || 0 }));
  const maxAbs = data.max_abs > 0 ? data.max_abs : 1;

  function el(name, attrs, parent) {
    const node = document.createElementNS(SVG, name);
    for (const key in attrs) node.setAttribute(key, attrs[key]);
    if (parent) parent.appendChild(node);
    return node;
  }

  function short(text) {
    return text.length > MAX_SHOWN ? text.slice(0, MAX_SHOWN - 1) + "\u2026" : text;
  }

  // Edges: a visible line, and a wider transparent one on top that takes the pointer.
  const edgeLayer = document.createDocumentFragment();
  const hitLayer = document.createDocumentFragment();
  for (const e of edges) {
    const ends = { x1: e.a.x, y1: e.a.y, x2: e.r.x, y2: e.r.y };
    e.line = el("line", Object.assign({
      class: "edge " + (e.w > 0 ? "pos" : "neg"),
      "stroke-width": (0.6 + 3.4 * Math.abs(e.w) / maxAbs).toFixed(2),
    }, ends), edgeLayer);
    el("line", Object.assign({ class: "hit", "data-e": e.i }, ends), hitLayer);
    e.a.edges.push(e);
    e.r.edges.push(e);
  }
  document.getElementById("edges").appendChild(edgeLayer);
  document.getElementById("hits").appendChild(hitLayer);

  // Nodes: a link to the Neuronpedia page when there is one, else a focusable group.
  const nodeLayer = document.createDocumentFragment();
  for (const n of nodes) {
    const link = typeof n.url === "string" && /^https?:\/\//.test(n.url);
    const g = el(link ? "a" : "g", { class: "node " + n.kind + (link ? "" : " nourl"), "data-n": n.i },
      nodeLayer);
    if (link) {
      g.setAttribute("href", n.url);
      g.setAttribute("target", "_blank");
      g.setAttribute("rel", "noopener noreferrer");
    } else {
      g.setAttribute("tabindex", "0");
    }
    g.setAttribute("aria-label", n.name + (n.label ? ": " + n.label : ""));
    el("circle", { class: "dot " + n.kind, cx: n.x, cy: n.y, r: 5 }, g);
    const text = el("text", { x: n.kind === "ablator" ? n.x - 9 : n.x + 9, y: n.y + 4 }, g);
    text.textContent = n.name + (n.label ? " " + short(n.label) : "");
    n.el = g;
  }
  document.getElementById("nodes").appendChild(nodeLayer);
  if (!edges.length) document.getElementById("empty").hidden = false;

  // The view: screen = translate(tx, ty) scale(k) of the layout's units.
  const view = { k: 1, tx: 0, ty: 0 };
  // Labels smaller than FAR_PX on screen are hidden: unreadable, and the costliest to redraw.
  const FAR_PX = 6;
  function apply() {
    viewport.setAttribute("transform", `translate(${view.tx.toFixed(2)},${view.ty.toFixed(2)}) scale(${view.k.toPrecision(6)})`);
    svg.classList.toggle("far", view.k * 11 < FAR_PX);
  }
  // Wheel and drag events come faster than frames: the view follows each, the SVG is
  // redrawn once a frame.
  let frame = 0;
  function applySoon() {
    if (!frame) frame = requestAnimationFrame(() => { frame = 0; apply(); });
  }
  function zoomAt(px, py, factor, soon) {
    const k = Math.min(40, Math.max(0.005, view.k * factor));
    view.tx = px - (px - view.tx) * (k / view.k);
    view.ty = py - (py - view.ty) * (k / view.k);
    view.k = k;
    (soon ? applySoon : apply)();
  }
  // The drawing's extent, labels included, measured once while every label is shown.
  let extent = null;
  function fit() {
    if (!extent) extent = viewport.getBBox();
    const box = extent;
    const w = svg.clientWidth || 800;
    const h = svg.clientHeight || 600;
    if (!box.width && !box.height) return;
    view.k = Math.min(40, 0.94 * Math.min(w / Math.max(box.width, 1), h / Math.max(box.height, 1)));
    view.tx = (w - box.width * view.k) / 2 - box.x * view.k;
    view.ty = (h - box.height * view.k) / 2 - box.y * view.k;
    apply();
  }
  function centre(n) {
    const w = svg.clientWidth || 800;
    const h = svg.clientHeight || 600;
    view.k = Math.max(view.k, 1);
    view.tx = w / 2 - n.x * view.k;
    view.ty = h / 2 - n.y * view.k;
    apply();
  }
  function local(event) {
    const rect = svg.getBoundingClientRect();
    return [event.clientX - rect.left, event.clientY - rect.top];
  }

  svg.addEventListener("wheel", (event) => {
    event.preventDefault();
    const [px, py] = local(event);
    const delta = event.deltaMode === 1 ? event.deltaY * 16 : event.deltaY;
    zoomAt(px, py, Math.exp(-delta * 0.0015), true);
  }, { passive: false });
  document.getElementById("zoom-in").addEventListener("click", () =>
    zoomAt(svg.clientWidth / 2, svg.clientHeight / 2, 1.4));
  document.getElementById("zoom-out").addEventListener("click", () =>
    zoomAt(svg.clientWidth / 2, svg.clientHeight / 2, 1 / 1.4));
  document.getElementById("zoom-fit").addEventListener("click", fit);

  // Pan: a drag anywhere, nodes included; a drag that moved is not a click on a link.
  let drag = null;
  let dragged = false;
  svg.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) return;
    drag = { x: event.clientX, y: event.clientY, tx: view.tx, ty: view.ty };
    dragged = false;
  });
  window.addEventListener("pointermove", (event) => {
    if (!drag) return;
    const dx = event.clientX - drag.x;
    const dy = event.clientY - drag.y;
    if (!dragged && Math.abs(dx) + Math.abs(dy) < 4) return;
    dragged = true;
    svg.classList.add("panning");
    hideTip();
    view.tx = drag.tx + dx;
    view.ty = drag.ty + dy;
    applySoon();
  });
  function endDrag() {
    if (drag && frame) { cancelAnimationFrame(frame); frame = 0; apply(); } // the view as dropped
    drag = null;
    svg.classList.remove("panning");
  }
  window.addEventListener("pointerup", endDrag);
  window.addEventListener("pointercancel", endDrag);
  svg.addEventListener("dragstart", (event) => event.preventDefault()); // links pan, not drag
  svg.addEventListener("click", (event) => {
    if (dragged) {
      event.preventDefault();
      event.stopPropagation();
      dragged = false;
    }
  }, true);

  // Tooltip: text only.
  function line(cls, text) {
    const div = document.createElement("div");
    div.className = cls;
    div.textContent = text;
    tip.appendChild(div);
  }
  function value(w) {
    return Math.abs(w) >= 1e-3 || w === 0 ? w.toFixed(4) : w.toExponential(3);
  }
  function describeNode(n) {
    line("tt-head", `${n.name} \u00b7 ${n.kind} latent ${n.index}`);
    line("tt-label", n.label || "(no label)");
    line("tt-note", `label: ${n.source || "none"} \u00b7 ${n.degree} edge${n.degree === 1 ? "" : "s"}` +
      (n.url ? " \u00b7 click for Neuronpedia" : ""));
  }
  function describeEdge(e) {
    const verb = e.w > 0 ? "lowers" : "raises";
    line("tt-head", `${e.a.name} \u2192 ${e.r.name}: mean effect ${value(e.w)}`);
    line("tt-note", `ablating ${e.a.name} ${verb} ${e.r.name} by ${value(Math.abs(e.w))} on average`);
    line("tt-label", `${e.a.name}: ${e.a.label || "(no label)"}`);
    line("tt-label", `${e.r.name}: ${e.r.label || "(no label)"}`);
  }
  function showTip(describe, item, x, y) {
    tip.replaceChildren();
    describe(item);
    tip.hidden = false;
    place(x, y);
  }
  // Beside the pointer (x, y in the stage), flipped above it near the bottom, never outside.
  function place(x, y) {
    const h = stage.clientHeight;
    tip.style.left = Math.min(x + 14, Math.max(0, stage.clientWidth - tip.offsetWidth - 4)) + "px";
    tip.style.top = (y + 14 + tip.offsetHeight > h ? Math.max(0, y - tip.offsetHeight - 10) : y + 14) + "px";
  }
  function hideTip() {
    tip.hidden = true;
  }
  function target(event) {
    const nodeEl = event.target.closest("[data-n]");
    if (nodeEl) return [describeNode, nodes[+nodeEl.dataset.n]];
    const hit = event.target.closest("[data-e]");
    if (hit) return [describeEdge, edges[+hit.dataset.e]];
    return null;
  }
  function stagePoint(event) {
    const rect = stage.getBoundingClientRect();
    return [event.clientX - rect.left, event.clientY - rect.top];
  }
  // Edges of the hovered item ("hot") and of the search's matches ("lit"), kept apart so that
  // a hover does not undo a search.
  const marked = { hot: [], lit: [] };
  function mark(cls, list) {
    marked[cls].forEach((e) => e.line.classList.remove(cls));
    marked[cls] = list;
    list.forEach((e) => e.line.classList.add(cls));
  }
  const light = (list) => mark("hot", list);
  svg.addEventListener("mouseover", (event) => {
    if (drag && dragged) return;
    const item = target(event);
    if (!item) return;
    const [x, y] = stagePoint(event);
    showTip(item[0], item[1], x, y);
    light(item[0] === describeNode ? item[1].edges : [item[1]]);
  });
  svg.addEventListener("mousemove", (event) => {
    if (tip.hidden) return;
    place(...stagePoint(event));
  });
  svg.addEventListener("mouseout", (event) => {
    if (target(event) && !(event.relatedTarget && target({ target: event.relatedTarget }))) {
      hideTip();
      light([]);
    }
  });
  svg.addEventListener("focusin", (event) => {
    const item = target(event);
    if (!item) return;
    const rect = item[1].el.getBoundingClientRect();
    const base = stage.getBoundingClientRect();
    showTip(item[0], item[1], rect.right - base.left, rect.top - base.top);
    light(item[1].edges);
  });
  svg.addEventListener("focusout", () => { hideTip(); light([]); });

  // Search: "A12" / "R7" is that node, "12" either side's latent 12, anything else a label
  // substring. Matches are highlighted with their edges; Enter centres on the first.
  const search = document.getElementById("search");
  const matches = document.getElementById("matches");
  let found = [];
  function runSearch() {
    const query = search.value.trim().toLowerCase();
    found.forEach((n) => n.el.classList.remove("hit"));
    nodes.forEach((n) => n.el.classList.remove("near"));
    found = [];
    if (query) {
      const id = /^([ar]?)(\d+)$/.exec(query);
      found = nodes.filter((n) => id
        ? +id[2] === n.index && (!id[1] || id[1] === n.name[0].toLowerCase())
        : n.label.toLowerCase().includes(query));
    }
    found.forEach((n) => {
      n.el.classList.add("hit");
      n.edges.forEach((e) => (e.a === n ? e.r : e.a).el.classList.add("near"));
    });
    svg.classList.toggle("searching", query.length > 0);
    mark("lit", found.flatMap((n) => n.edges));
    matches.textContent = !query ? "" : found.length === 1 ? "1 latent matches" : `${found.length} latents match`;
  }
  search.addEventListener("input", runSearch);
  search.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && found.length) centre(found[0]);
  });

  fit();
  window.addEventListener("resize", fit);
})();
