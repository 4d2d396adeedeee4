// Attention viewer: translates through POST /translate and shows, for every generated token, its
// probability, the alternatives the model ranked next to it, and the cross-attention over the source.
//
// The page state lives in the URL (?text=…&source=es&target=en&strategy=beam&beam_size=4&layer=…&head=…),
// so a link reproduces a view; opening such a link translates at once. One request fetches every
// decoder layer with every head ("heads"), so switching layer or head never goes back to the server;
// the mean over heads is computed here.
"use strict";

(() => {
  const TOP_K = 5;
  const LANGUAGE_NAMES = { es: "Spanish", en: "English" };
  const SPACE_MARK = "\u2581"; // "▁", the tokenizer's visible word-start marker

  const $ = (id) => document.getElementById(id);
  const form = $("translate-form");
  const ui = {
    text: $("text"),
    direction: $("direction"),
    swap: $("swap"),
    beamSize: $("beam-size"),
    submit: $("submit"),
    status: $("status"),
    error: $("error"),
    result: $("result"),
    translation: $("translation"),
    meta: $("meta"),
    tokens: $("tokens"),
    sourceTokens: $("source-tokens"),
    layer: $("layer"),
    head: $("head"),
    heatmap: $("heatmap"),
    caption: $("heatmap-caption"),
    alignment: $("alignment"),
  };

  // What is on screen: the request that produced it, the translation, its attention as
  // {layer index: {heads: [head][target][source], meanMatrix: [target][source]}}, the selected layer
  // and head ("mean" or a head index), and the token or cell under the pointer or focus.
  const view = { request: null, translation: null, attention: null, layers: [], layer: null, head: "mean", active: null };
  const decoderLayers = new Map(); // "es-en" -> number of decoder layers of the model serving it
  let inflight = null;

  // ---------- URL state ----------

  function readQuery() {
    const q = new URLSearchParams(location.search);
    const source = q.get("source") === "en" ? "en" : "es";
    const target = q.get("target") || (source === "es" ? "en" : "es");
    const head = q.get("head");
    return {
      text: q.get("text") || "",
      source,
      target: target === source ? (source === "es" ? "en" : "es") : target,
      strategy: q.get("strategy") === "greedy" ? "greedy" : "beam",
      beamSize: clampInt(q.get("beam_size"), 1, 64, 4),
      layer: q.has("layer") ? clampInt(q.get("layer"), 0, 1000, null) : null,
      head: head === null || head === "mean" ? "mean" : clampInt(head, 0, 1000, "mean"),
    };
  }

  function formState() {
    const [source, target] = ui.direction.value.split("-");
    return {
      text: ui.text.value.trim(),
      source,
      target,
      strategy: form.elements.strategy.value,
      beamSize: clampInt(ui.beamSize.value, 1, 1000, 4),
    };
  }

  function writeQuery() {
    const t = view.request;
    if (!t) return;
    const q = new URLSearchParams({ text: t.text, source: t.source, target: t.target, strategy: t.strategy });
    if (t.strategy === "beam") q.set("beam_size", String(t.beamSize));
    if (view.layer !== null) q.set("layer", String(view.layer));
    q.set("head", String(view.head));
    history.replaceState(null, "", `${location.pathname}?${q}`);
  }

  function fillForm(s) {
    ui.text.value = s.text;
    ui.direction.value = `${s.source}-${s.target}`;
    form.elements.strategy.value = s.strategy;
    ui.beamSize.value = String(s.beamSize);
    syncFormLanguage();
  }

  function syncFormLanguage() {
    const [source] = ui.direction.value.split("-");
    ui.text.lang = source;
    ui.beamSize.disabled = form.elements.strategy.value !== "beam";
  }

  function clampInt(value, lo, hi, fallback) {
    const n = Number.parseInt(value, 10);
    return Number.isFinite(n) && n >= lo && n <= hi ? n : fallback;
  }

  // ---------- talking to the API ----------

  class ApiError extends Error {}

  async function call(url, init) {
    let response;
    try {
      response = await fetch(url, init);
    } catch (e) {
      if (e.name === "AbortError") throw e;
      throw new ApiError("Could not reach the translation server. Is it running?");
    }
    const raw = await response.text();
    let body = null;
    try {
      body = raw ? JSON.parse(raw) : null;
    } catch {
      body = null;
    }
    if (!response.ok) throw new ApiError(errorText(response, body, raw));
    return body;
  }

  // FastAPI answers {"detail": "…"}; validation errors carry a list of {loc, msg}.
  function errorText(response, body, raw) {
    const detail = body && body.detail;
    let text;
    if (Array.isArray(detail)) {
      text = detail
        .map((d) => {
          if (!d || typeof d !== "object") return String(d);
          const where = Array.isArray(d.loc) ? d.loc.filter((p) => p !== "body").join(".") : "";
          return where ? `${where}: ${d.msg}` : String(d.msg ?? JSON.stringify(d));
        })
        .join("\n");
    } else if (typeof detail === "string") {
      text = detail;
    } else if (detail) {
      text = JSON.stringify(detail);
    } else {
      text = (raw || "").trim().slice(0, 300) || response.statusText || "no details";
    }
    const retry = response.headers.get("Retry-After");
    const again = retry ? `\nTry again in ${retry} s.` : "";
    return `Error ${response.status}: ${text}${again}`;
  }

  // Number of decoder layers of the model serving this direction, from GET /models; null if it does not say.
  async function fetchDecoderLayers(source, target) {
    let body;
    try {
      body = await call("/models");
    } catch {
      return null;
    }
    const models = Array.isArray(body) ? body : [];
    const serves = (m) => (m.directions || []).some((d) => d.source === source && d.target === target);
    const model = models.find(serves) || models[0];
    const n = model && model.config && model.config.decoder_layers;
    return Number.isInteger(n) && n > 0 ? n : null;
  }

  function translateRequest(s, layers) {
    const decoding = { strategy: s.strategy };
    if (s.strategy === "beam") decoding.beam_size = s.beamSize;
    return {
      text: s.text,
      source: s.source,
      target: s.target,
      decoding,
      output: { steps: true, top_k: TOP_K, attention: "heads", attention_layers: layers },
    };
  }

  async function postTranslate(s, layers, signal) {
    const body = await call("/translate", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(translateRequest(s, layers)),
      signal,
    });
    const t = body && Array.isArray(body.translations) ? body.translations[0] : null;
    if (!t) throw new ApiError("The server answered without a translation.");
    return { model: body.model, translation: t };
  }

  async function translate(s, wanted) {
    if (!s.text) {
      showError("Type a text to translate.");
      ui.text.focus();
      return;
    }
    if (inflight) inflight.abort();
    const controller = new AbortController();
    inflight = controller;
    setBusy(true);
    clearError();
    const started = performance.now();
    try {
      const direction = `${s.source}-${s.target}`;
      if (!decoderLayers.get(direction)) decoderLayers.set(direction, await fetchDecoderLayers(s.source, s.target));
      const known = decoderLayers.get(direction);
      let answer = await postTranslate(s, known ? range(known) : null, controller.signal);
      if (!known && answer.translation.attention) {
        // /models did not say; the default is the last layer, so its index gives the count.
        const last = Math.max(...answer.translation.attention.layers);
        decoderLayers.set(direction, last + 1);
        if (last > 0) answer = await postTranslate(s, range(last + 1), controller.signal);
      }
      if (controller !== inflight) return;
      view.request = s;
      render(answer, s, wanted || {});
      writeQuery();
      const ms = Math.round(performance.now() - started);
      const n = answer.translation.tokens.length;
      ui.status.textContent = `Translated: ${n} token${n === 1 ? "" : "s"} in ${ms} ms.`;
      document.body.dataset.state = "done";
    } catch (e) {
      if (e.name === "AbortError") return;
      ui.status.textContent = "";
      ui.result.hidden = true; // what is shown always answers the last request
      showError(e instanceof ApiError ? e.message : `Unexpected error: ${e.message}`);
      document.body.dataset.state = "error";
      if (!(e instanceof ApiError)) console.error(e);
    } finally {
      if (controller === inflight) {
        inflight = null;
        setBusy(false);
      }
    }
  }

  function setBusy(busy) {
    ui.submit.disabled = busy;
    ui.submit.textContent = busy ? "Translating…" : "Translate";
    ui.result.setAttribute("aria-busy", String(busy));
    if (busy) {
      ui.status.textContent = "Translating…";
      document.body.dataset.state = "loading";
    }
  }

  function showError(message) {
    ui.error.textContent = message;
    ui.error.hidden = false;
  }

  function clearError() {
    ui.error.textContent = "";
    ui.error.hidden = true;
  }

  const range = (n) => Array.from({ length: n }, (_, i) => i);

  // ---------- attention shapes ----------

  // One layer's weights as [head][target][source]: a "heads" answer already is; a "mean" answer
  // ([target][source], from a server that ignored the request for heads) becomes a single pseudo-head.
  function asHeads(weights, reduction) {
    return reduction === "mean" ? { heads: [weights], mean: true } : { heads: weights, mean: false };
  }

  function meanOverHeads(heads) {
    const n = heads.length;
    return heads[0].map((row, i) => row.map((_, j) => {
      let s = 0;
      for (let h = 0; h < n; h++) s += heads[h][i][j];
      return s / n;
    }));
  }

  function selectedMatrix() {
    const layer = view.attention[view.layer];
    if (!layer) return null;
    return layer.mean || view.head === "mean" ? layer.meanMatrix : layer.heads[view.head];
  }

  // ---------- rendering ----------

  function render(answer, s, wanted) {
    const t = answer.translation;
    view.translation = t;
    view.active = null;
    view.attention = {};
    view.layers = [];
    if (t.attention && Array.isArray(t.attention.weights)) {
      t.attention.layers.forEach((layer, li) => {
        const shaped = asHeads(t.attention.weights[li], t.attention.reduction);
        shaped.meanMatrix = shaped.mean ? shaped.heads[0] : meanOverHeads(shaped.heads);
        view.attention[layer] = shaped;
        view.layers.push(layer);
      });
    }
    const lastLayer = view.layers.length ? view.layers[view.layers.length - 1] : null;
    view.layer = view.layers.includes(wanted.layer) ? wanted.layer : lastLayer;
    fillLayerSelect();
    const nHeads = view.layer === null || view.attention[view.layer].mean ? 0 : view.attention[view.layer].heads.length;
    view.head = Number.isInteger(wanted.head) && wanted.head < nHeads ? wanted.head : "mean";
    fillHeadSelect();

    ui.translation.textContent = t.text;
    ui.translation.lang = s.target;
    const bits = [];
    if (answer.model) bits.push(`Model ${answer.model}`);
    bits.push(s.strategy === "beam" ? `beam search, ${s.beamSize} beams` : "greedy search");
    if (typeof t.score === "number") bits.push(`score ${t.score.toFixed(3)}`);
    if (t.finish_reason === "length") bits.push("stopped at the token limit before </s>");
    ui.meta.textContent = bits.join(" · ");

    renderTokens(t);
    renderSourceTokens(t, s.source);
    renderHeatmap();
    ui.result.hidden = false;
  }

  function displayToken(token) {
    const frag = document.createDocumentFragment();
    let rest = token;
    while (rest.length) {
      const k = rest.indexOf(SPACE_MARK);
      if (k === -1) {
        frag.append(rest);
        break;
      }
      if (k > 0) frag.append(rest.slice(0, k));
      const mark = document.createElement("span");
      mark.className = "space-mark";
      mark.textContent = SPACE_MARK;
      frag.append(mark);
      rest = rest.slice(k + 1);
    }
    return frag;
  }

  // What a screen reader should say for a token.
  function spokenToken(token) {
    if (token === "</s>") return "end of sentence";
    const tag = /^<2(\w+)>$/.exec(token);
    if (tag) return `${LANGUAGE_NAMES[tag[1]] || tag[1]} tag`;
    const words = token.split(SPACE_MARK).join(" ").trim();
    return words || "space";
  }

  const percent = (p) => (p >= 0.995 ? `${(p * 100).toFixed(0)}%` : p >= 0.001 ? `${(p * 100).toFixed(1)}%` : "<0.1%");
  const probabilityColour = (p) => `hsl(${Math.round(p * 120)} 62% 40%)`;

  function probabilityBar(p) {
    const bar = document.createElement("span");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.style.width = `${Math.max(0, Math.min(1, p)) * 100}%`;
    fill.style.background = probabilityColour(p);
    bar.append(fill);
    return bar;
  }

  function renderTokens(t) {
    ui.tokens.replaceChildren();
    t.tokens.forEach((token, i) => {
      const step = (t.steps || [])[i] || { probability: NaN, top: [] };
      const p = step.probability;
      const item = document.createElement("li");
      item.className = "tok-item";
      item.dataset.index = String(i);

      const button = document.createElement("button");
      button.type = "button";
      button.className = "tok";
      button.dataset.row = String(i);
      button.dataset.token = token;
      button.dataset.probability = String(p);
      button.setAttribute("aria-label", `Token ${i + 1}: ${spokenToken(token)}, probability ${percent(p)}`);
      const text = document.createElement("span");
      text.className = "tok-text";
      text.append(displayToken(token));
      const prob = document.createElement("span");
      prob.className = "tok-prob";
      prob.textContent = percent(p);
      button.append(text, probabilityBar(p), prob);

      const alts = document.createElement("div");
      alts.className = "alts";
      alts.id = `alts-${i}`;
      alts.setAttribute("role", "tooltip");
      const title = document.createElement("p");
      title.className = "alts-title";
      title.textContent = `Top ${step.top.length} at step ${i + 1}`;
      const list = document.createElement("ol");
      for (const alt of step.top || []) {
        const li = document.createElement("li");
        if (alt.token === token) li.className = "chosen";
        const name = document.createElement("span");
        name.className = "alt-token";
        name.append(displayToken(alt.token));
        const value = document.createElement("span");
        value.className = "alt-prob";
        value.textContent = percent(alt.probability);
        li.append(name, probabilityBar(alt.probability), value);
        li.setAttribute("aria-label", `${spokenToken(alt.token)} ${percent(alt.probability)}${alt.token === token ? ", chosen" : ""}`);
        list.append(li);
      }
      alts.append(title, list);
      button.setAttribute("aria-describedby", alts.id);

      item.append(button, alts);
      ui.tokens.append(item);
    });
  }

  function renderSourceTokens(t, source) {
    ui.sourceTokens.replaceChildren();
    ui.sourceTokens.lang = source;
    (t.source_tokens || []).forEach((token, j) => {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "src-tok";
      button.dataset.col = String(j);
      button.dataset.token = token;
      button.setAttribute("aria-label", `Source token ${j + 1}: ${spokenToken(token)}`);
      button.append(displayToken(token));
      li.append(button);
      ui.sourceTokens.append(li);
    });
  }

  function fillLayerSelect() {
    ui.layer.replaceChildren(
      ...view.layers.map((layer, k) => {
        const count = view.request && decoderLayers.get(`${view.request.source}-${view.request.target}`);
        const last = k === view.layers.length - 1 && layer === count - 1;
        return new Option(`Layer ${layer}${last ? " (last)" : ""}`, String(layer), false, layer === view.layer);
      }),
    );
    ui.layer.disabled = view.layers.length < 2;
  }

  function fillHeadSelect() {
    const layer = view.layer === null ? null : view.attention[view.layer];
    const options = [new Option("Mean of heads", "mean", false, view.head === "mean")];
    if (layer && !layer.mean) {
      layer.heads.forEach((_, h) => options.push(new Option(`Head ${h}`, String(h), false, view.head === h)));
    }
    ui.head.replaceChildren(...options);
    ui.head.disabled = options.length < 2;
  }

  function renderHeatmap() {
    const t = view.translation;
    const thead = ui.heatmap.tHead;
    const tbody = ui.heatmap.tBodies[0];
    thead.replaceChildren();
    tbody.replaceChildren();
    const matrix = view.layer === null ? null : selectedMatrix();
    if (!matrix) {
      ui.caption.textContent = "No attention returned.";
      ui.alignment.textContent = "The server returned no attention weights for this translation.";
      return;
    }
    const headName = view.head === "mean" ? "mean of all heads" : `head ${view.head}`;
    ui.caption.textContent =
      `Cross-attention of decoder layer ${view.layer}, ${headName}: rows are generated tokens, ` +
      "columns are source tokens, cells hold the attention weight.";

    const headRow = document.createElement("tr");
    const corner = document.createElement("td");
    corner.className = "corner";
    headRow.append(corner);
    t.source_tokens.forEach((token, j) => {
      const th = document.createElement("th");
      th.scope = "col";
      th.dataset.col = String(j);
      const label = document.createElement("span");
      label.append(displayToken(token));
      th.append(label);
      th.setAttribute("aria-label", spokenToken(token));
      headRow.append(th);
    });
    thead.append(headRow);

    matrix.forEach((row, i) => {
      const tr = document.createElement("tr");
      tr.dataset.row = String(i);
      const th = document.createElement("th");
      th.scope = "row";
      th.dataset.row = String(i);
      th.append(displayToken(t.tokens[i]));
      th.setAttribute("aria-label", spokenToken(t.tokens[i]));
      tr.append(th);
      row.forEach((w, j) => {
        const td = document.createElement("td");
        td.className = "cell";
        td.dataset.row = String(i);
        td.dataset.col = String(j);
        td.dataset.weight = String(w);
        td.style.setProperty("--w", String(Math.max(0, Math.min(1, w))));
        td.title = `${t.tokens[i]} → ${t.source_tokens[j]}: ${w.toFixed(3)}`;
        const value = document.createElement("span");
        value.className = "visually-hidden";
        value.textContent = percent(w);
        td.append(value);
        tr.append(td);
      });
      tbody.append(tr);
    });
    applyHighlight();
  }

  // ---------- alignment highlighting ----------

  // `active` is {row}, {col} or {row, col}: a target token, a source token, or one cell.
  function setActive(active) {
    view.active = active;
    applyHighlight();
  }

  function applyHighlight() {
    const matrix = view.translation && view.layer !== null ? selectedMatrix() : null;
    const a = view.active;
    for (const el of document.querySelectorAll(".is-active, .is-aligned")) {
      el.classList.remove("is-active", "is-aligned");
      el.style.removeProperty("--align");
    }
    if (!matrix || !a) {
      ui.alignment.textContent = matrix ? "Hover or focus a token to see its alignment." : ui.alignment.textContent;
      return;
    }
    const t = view.translation;
    const mark = (selector, cls) => document.querySelectorAll(selector).forEach((el) => el.classList.add(cls));
    if (a.row !== undefined) {
      mark(`.heatmap [data-row="${a.row}"], .tok[data-row="${a.row}"]`, "is-active");
      const row = matrix[a.row];
      alignTo(".src-tok", "col", row);
      alignTo(".heatmap thead th", "col", row);
      ui.alignment.textContent = `“${spokenToken(t.tokens[a.row])}” attends to ` + topList(row, t.source_tokens);
    }
    if (a.col !== undefined) {
      mark(`.heatmap [data-col="${a.col}"], .src-tok[data-col="${a.col}"]`, "is-active");
      if (a.row === undefined) {
        const column = matrix.map((r) => r[a.col]);
        alignTo(".tok", "row", column);
        alignTo(".heatmap tbody th", "row", column);
        ui.alignment.textContent = `“${spokenToken(t.source_tokens[a.col])}” is attended by ` + topList(column, t.tokens);
      } else {
        ui.alignment.textContent =
          `“${spokenToken(t.tokens[a.row])}” → “${spokenToken(t.source_tokens[a.col])}”: ` +
          `${percent(matrix[a.row][a.col])} of its attention`;
      }
    }
  }

  // Shade elements carrying data-<axis> by their weight relative to the largest one.
  function alignTo(selector, axis, weights) {
    const top = Math.max(...weights, 1e-9);
    for (const el of document.querySelectorAll(selector)) {
      const k = Number(el.dataset[axis]);
      if (!Number.isInteger(k) || weights[k] === undefined) continue;
      el.classList.add("is-aligned");
      el.style.setProperty("--align", (weights[k] / top).toFixed(3));
    }
  }

  function topList(weights, tokens) {
    return weights
      .map((w, k) => [w, k])
      .sort((x, y) => y[0] - x[0])
      .slice(0, 3)
      .map(([w, k]) => `“${spokenToken(tokens[k])}” ${percent(w)}`)
      .join(", ");
  }

  function activeFrom(el) {
    const target = el && el.closest("[data-row], [data-col]");
    if (!target || !ui.result.contains(target)) return null;
    const row = target.dataset.row === undefined ? undefined : Number(target.dataset.row);
    const col = target.dataset.col === undefined ? undefined : Number(target.dataset.col);
    if (target.tagName === "TR") return null; // between cells
    return { row, col };
  }

  function onPoint(event) {
    const a = activeFrom(event.target);
    if (a) setActive(a);
  }

  function placeTooltip(item) {
    const alts = item.querySelector(".alts");
    if (!alts) return;
    item.classList.remove("flip");
    const box = item.getBoundingClientRect();
    if (box.left + 240 > document.documentElement.clientWidth) item.classList.add("flip");
  }

  // ---------- wiring ----------

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    translate(formState(), { layer: view.layer, head: view.head });
  });
  form.addEventListener("change", syncFormLanguage);

  ui.swap.addEventListener("click", () => {
    const [source, target] = ui.direction.value.split("-");
    ui.direction.value = `${target}-${source}`;
    if (view.translation && view.request && view.request.source === source) ui.text.value = view.translation.text;
    syncFormLanguage();
    if (ui.text.value.trim()) translate(formState(), { layer: view.layer, head: view.head });
  });

  ui.layer.addEventListener("change", () => {
    view.layer = Number(ui.layer.value);
    const layer = view.attention[view.layer];
    if (view.head !== "mean" && (layer.mean || view.head >= layer.heads.length)) view.head = "mean";
    fillHeadSelect();
    renderHeatmap();
    writeQuery();
  });

  ui.head.addEventListener("change", () => {
    view.head = ui.head.value === "mean" ? "mean" : Number(ui.head.value);
    renderHeatmap();
    writeQuery();
  });

  ui.result.addEventListener("mouseover", onPoint);
  ui.result.addEventListener("focusin", (event) => {
    onPoint(event);
    const item = event.target.closest(".tok-item");
    if (item) placeTooltip(item);
  });
  ui.tokens.addEventListener("mouseover", (event) => {
    const item = event.target.closest(".tok-item");
    if (item) placeTooltip(item);
  });
  ui.result.addEventListener("mouseleave", () => {
    if (!ui.result.contains(document.activeElement)) setActive(null);
  });
  ui.result.addEventListener("focusout", (event) => {
    if (!ui.result.contains(event.relatedTarget)) setActive(null);
    const item = event.target.closest(".tok-item");
    if (item) item.classList.remove("dismissed");
  });
  // Escape hides an open alternatives tooltip without moving focus.
  ui.tokens.addEventListener("keydown", (event) => {
    if (event.key !== "Escape") return;
    const item = event.target.closest(".tok-item");
    if (item) item.classList.add("dismissed");
  });
  // Arrow keys walk along the token strips.
  for (const strip of [ui.tokens, ui.sourceTokens]) {
    strip.addEventListener("keydown", (event) => {
      const step = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1 }[event.key];
      if (!step) return;
      const buttons = [...strip.querySelectorAll("button")];
      const k = buttons.indexOf(document.activeElement);
      if (k === -1) return;
      event.preventDefault();
      buttons[Math.max(0, Math.min(buttons.length - 1, k + step))].focus();
    });
  }

  const initial = readQuery();
  fillForm(initial);
  if (initial.text) translate(initial, { layer: initial.layer, head: initial.head });
  else document.body.dataset.state = "idle";
})();
