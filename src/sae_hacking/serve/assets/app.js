// The prompt-highlighting page. Every piece of data (tokens, explanations, error messages) enters the
// DOM through textContent or attribute setters, never as markup, so a prompt cannot inject anything.
// The same script shows a page saved by `sae-hacking highlight` (serve/page.py): that page carries
// one answer in a JSON block and has no server to ask (showSaved).
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  // Tokens are drawn by the shared renderer (tokens.js), as on the latent evidence pages.
  const { intensity, tokenSpan } = window.saeTokens;

  // ---- pure helpers ----

  function fmt(value) {
    if (value === null || value === undefined || Number.isNaN(value)) return "–";
    return Math.abs(value) >= 1000 ? value.toFixed(0) : value.toFixed(3);
  }

  function stateFromQuery(search) {
    const q = new URLSearchParams(search);
    return {
      prompt: q.get("prompt") || "",
      release: q.get("release") || "",
      id: q.get("id") || "",
      feature: q.get("feature") || "",
    };
  }

  function queryFromState(state) {
    const q = new URLSearchParams();
    for (const key of ["prompt", "release", "id", "feature"]) {
      if (state[key] !== "") q.set(key, state[key]);
    }
    return "?" + q.toString();
  }

  // FastAPI answers {"detail": "sentence"} for our errors and {"detail": [{loc, msg}, ...]} for validation.
  function errorMessage(status, body) {
    const detail = body && body.detail;
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail) && detail.length) {
      return detail
        .map((d) => {
          const loc = Array.isArray(d.loc) ? d.loc.filter((p) => p !== "body").join(".") : "";
          return loc ? `${loc}: ${d.msg}` : String(d.msg);
        })
        .join("; ");
    }
    return `The server answered ${status} without an explanation.`;
  }

  function safeUrl(url) {
    return typeof url === "string" && /^https?:\/\//i.test(url) ? url : null;
  }

  // The server's evidence pages (serve --evidence): a path below its root; a saved page links
  // to the server that answered.
  let server = "";
  function evidenceUrl(url) {
    if (typeof url !== "string" || !/^evidence\/\d+\/page-\d+\.html#latent-\d+$/.test(url)) return null;
    return server ? `${server.replace(/\/+$/, "")}/${url}` : url;
  }

  // ---- state and requests ----
  let controller = null;
  let last = null; // the last successful response
  let current = null; // the token shown in the panel
  let pinned = false; // a clicked token keeps the panel while the mouse crosses other tokens
  let reinspect = null; // after highlighting by a latent from the panel, show the same token again
  let saved = false; // a saved page: one answer, no server, latents are not buttons

  function readForm() {
    return {
      prompt: $("prompt").value,
      release: $("release").value.trim(),
      id: $("sae-id").value.trim(),
      feature: $("feature").value.trim(),
    };
  }

  function writeForm(state) {
    $("prompt").value = state.prompt;
    $("release").value = state.release;
    $("sae-id").value = state.id;
    $("feature").value = state.feature;
  }

  function showError(message) {
    const box = $("error");
    box.textContent = message;
    box.hidden = !message;
  }

  async function run(state, push) {
    if (!state.prompt || !state.release) {
      showError(!state.prompt ? "Type a prompt first." : "Choose an SAE release (or path) first.");
      return;
    }
    let feature = null;
    if (state.feature !== "") {
      feature = Number(state.feature);
      if (!Number.isInteger(feature) || feature < 0) {
        showError(`The latent index must be a whole number ≥ 0, got "${state.feature}".`);
        return;
      }
    }
    const query = queryFromState(state);
    if (push && query !== location.search) history.pushState(null, "", query);
    if (controller) controller.abort();
    controller = new AbortController();
    const mine = controller;
    $("highlight").disabled = true;
    $("busy").hidden = false;
    const body = {
      prompt: state.prompt,
      sae_release: state.release,
      sae_id: state.id === "" ? null : state.id,
      feature_idx: feature,
      top_k: 5,
    };
    try {
      const response = await fetch("api/activations", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
        signal: mine.signal,
      });
      let data = null;
      try {
        data = await response.json();
      } catch (e) {
        data = null;
      }
      if (mine !== controller) return;
      if (!response.ok) {
        showError(errorMessage(response.status, data));
        return;
      }
      showError("");
      last = data;
      render(data);
      loadSaes();
    } catch (err) {
      if (err.name === "AbortError") return;
      showError(`Could not reach the server: ${err.message}`);
    } finally {
      if (mine === controller) {
        $("highlight").disabled = false;
        $("busy").hidden = true;
        controller = null;
      }
    }
  }

  function highlightBy(index) {
    reinspect = current;
    $("feature").value = String(index);
    run(readForm(), true);
  }

  // ---- rendering ----
  function latentButton(index, value, chosen) {
    // A saved page cannot ask for another latent: the same label, as text.
    const button = document.createElement(saved ? "span" : "button");
    button.className = "latent" + (chosen ? " chosen" : "");
    button.dataset.latent = String(index);
    button.textContent = value === undefined ? `#${index}` : `#${index}  ${fmt(value)}`;
    if (saved) return button;
    button.type = "button";
    button.title = `highlight by latent ${index}`;
    button.addEventListener("click", () => highlightBy(index));
    return button;
  }

  function tokenValue(data, i) {
    if (data.activations) return data.activations[i];
    const top = data.top_per_token[i];
    return top && top.length ? top[0].value : 0;
  }

  // A link opening in a new tab, or a dash when there is no (safe) target.
  function linkInto(td, url, text, cls) {
    if (!url) {
      td.textContent = "—";
      return;
    }
    const a = document.createElement("a");
    a.href = url;
    a.target = "_blank";
    a.rel = "noopener noreferrer";
    if (cls) a.className = cls;
    a.textContent = text;
    td.appendChild(a);
  }

  function render(data) {
    $("result").hidden = false;
    const sae = data.sae;
    const where = sae.sae_id ? `${sae.release} / ${sae.sae_id}` : sae.release;
    $("summary").textContent =
      `${where} — hook ${sae.hook}, ${sae.d_sae} latents, ${data.tokens.length} tokens`;
    const label = $("legend-label");
    // Nothing fires: a colour scale from 0 to 0 would say nothing, so the legend says so.
    const quiet = !(data.max_activation > 0);
    if (data.feature) {
      const f = data.feature;
      const about = f.explanation ? (quiet ? ` (${f.explanation})` : ` — ${f.explanation}`) : "";
      label.textContent = `latent #${f.index}` + (quiet ? " does not fire on this prompt" : "") + about;
    } else {
      label.textContent = quiet ? "no latent fires on this prompt" : "strongest latent at each token";
    }
    $("legend-scale").hidden = quiet;
    $("legend-max").textContent = fmt(data.max_activation);

    const box = $("tokens");
    box.replaceChildren();
    data.tokens.forEach((token, i) => {
      const value = tokenValue(data, i);
      const span = tokenSpan(token, value, data.max_activation);
      span.tabIndex = 0;
      span.dataset.index = String(i);
      span.addEventListener("mouseenter", () => pinned || inspect(i));
      span.addEventListener("focus", () => pinned || inspect(i));
      span.addEventListener("click", () => {
        pinned = !(pinned && current === i);
        inspect(i);
      });
      span.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          pinned = true;
          inspect(i);
          const first = document.querySelector("#panel-latents .latent");
          if (first) first.focus();
        } else if (event.key === "Escape") {
          pinned = false;
        }
      });
      box.appendChild(span);
    });

    const rows = document.querySelector("#top-latents tbody");
    rows.replaceChildren();
    const chosen = data.feature ? data.feature.index : null;
    for (const latent of data.top_latents) {
      const tr = document.createElement("tr");
      const cell = (cls) => {
        const td = document.createElement("td");
        if (cls) td.className = cls;
        tr.appendChild(td);
        return td;
      };
      cell().appendChild(latentButton(latent.index, undefined, latent.index === chosen));
      cell("num").textContent = fmt(latent.max);
      cell("explanation").textContent = latent.explanation || "—";
      linkInto(cell(), safeUrl(latent.url), "open", "");
      linkInto(cell(), evidenceUrl(latent.evidence_url), "contexts", "evidence");
      rows.appendChild(tr);
    }
    const keep = reinspect;
    reinspect = null;
    current = null;
    if (keep !== null && keep < data.tokens.length) {
      inspect(keep);
    } else {
      pinned = false;
      $("panel-hint").hidden = false;
      $("panel-body").hidden = true;
    }
  }

  function inspect(i) {
    const data = last;
    if (!data) return;
    current = i;
    for (const el of document.querySelectorAll(".tok.current")) el.classList.remove("current", "pinned");
    const span = document.querySelector(`.tok[data-index="${i}"]`);
    if (span) span.classList.add("current");
    if (span && pinned) span.classList.add("pinned");
    $("panel-pinned").hidden = !pinned;
    $("panel-hint").hidden = true;
    $("panel-body").hidden = false;
    // JSON quoting makes spaces, tabs and newlines in the token visible.
    $("panel-token").textContent = JSON.stringify(data.tokens[i]);
    $("panel-pos").textContent = `position ${i}`;
    const top = data.top_per_token[i] || [];
    if (data.feature) {
      $("panel-value-label").textContent = `latent #${data.feature.index}`;
      $("panel-value").textContent = fmt(data.activations[i]);
    } else {
      $("panel-value-label").textContent = top.length ? `strongest, latent #${top[0].index}` : "strongest";
      $("panel-value").textContent = fmt(top.length ? top[0].value : 0);
    }
    const list = $("panel-latents");
    list.replaceChildren();
    const chosen = data.feature ? data.feature.index : null;
    for (const entry of top) {
      const li = document.createElement("li");
      li.appendChild(latentButton(entry.index, entry.value, entry.index === chosen));
      list.appendChild(li);
    }
    if (!top.length) {
      const li = document.createElement("li");
      li.className = "muted";
      li.textContent = "no latent fires here";
      list.appendChild(li);
    }
  }

  // ---- SAE choices ----
  let saes = [];

  async function loadSaes() {
    let data;
    try {
      const response = await fetch("api/saes");
      if (!response.ok) return;
      data = await response.json();
    } catch (e) {
      return;
    }
    saes = data.loaded || [];
    const select = $("loaded");
    const first = document.createElement("option");
    first.value = "";
    first.textContent = saes.length ? `choose one of ${saes.length} loaded` : "(none loaded yet)";
    select.replaceChildren(first);
    const releases = new Set();
    const ids = new Set();
    saes.forEach((sae, n) => {
      const option = document.createElement("option");
      option.value = String(n);
      option.textContent = sae.sae_id ? `${sae.release} / ${sae.sae_id}` : sae.release;
      select.appendChild(option);
      releases.add(sae.release);
      if (sae.sae_id) ids.add(sae.sae_id);
    });
    const fill = (list, values) => {
      list.replaceChildren(
        ...[...values].map((v) => {
          const option = document.createElement("option");
          option.value = v;
          return option;
        }),
      );
    };
    fill($("release-choices"), releases);
    fill($("id-choices"), ids);
  }

  async function loadHealth() {
    try {
      const response = await fetch("api/health");
      if (!response.ok) return;
      const data = await response.json();
      $("model").textContent = `model: ${data.model}`;
    } catch (e) {
      // The page still works; the header just stays blank.
    }
  }

  // ---- a saved page ----
  function showSaved(block) {
    const data = JSON.parse(block.textContent);
    saved = true;
    server = safeUrl(data.server) || "";
    $("query").hidden = true;
    $("latents-hint").textContent = "top latents here";
    $("model").textContent = `saved by sae-hacking highlight from ${data.server}`;
    document.title = `${data.prompt.slice(0, 60)} — SAE prompt highlighting`;
    last = data.answer;
    render(data.answer);
  }

  // ---- wiring ----
  function start() {
    const block = $("saved-answer");
    if (block) return showSaved(block);
    $("query").addEventListener("submit", (event) => {
      event.preventDefault();
      run(readForm(), true);
    });
    $("loaded").addEventListener("change", (event) => {
      const sae = saes[Number(event.target.value)];
      if (!sae) return;
      $("release").value = sae.release;
      $("sae-id").value = sae.sae_id || "";
    });
    for (const id of ["release", "sae-id"]) {
      $(id).addEventListener("input", () => ($("loaded").value = ""));
    }
    $("prompt").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        run(readForm(), true);
      }
    });
    window.addEventListener("popstate", () => {
      const state = stateFromQuery(location.search);
      writeForm(state);
      if (state.prompt && state.release) run(state, false);
    });
    loadHealth();
    loadSaes();
    const state = stateFromQuery(location.search);
    writeForm(state);
    if (state.prompt && state.release) run(state, false);
  }

  window.saeHighlight = { intensity, fmt, stateFromQuery, queryFromState, errorMessage };
  start();
})();
