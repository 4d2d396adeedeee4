// Attention viewer: "Transformers from top to bottom" for the sentence the user types.
//
// One POST /translate asks for everything the page shows: the steps with their top-k, and the three
// attentions of the Transformer with every head of every layer ("heads"): the encoder's self-attention,
// the decoder's masked self-attention and the cross-attention. Layer counts and d_model come from
// GET /models (the model's config), so nothing here is tied to one architecture; the mean over heads
// and the positional-encoding table (a fixed formula of our own model, model/transformer.py) are
// computed here. Switching layer, head or step never goes back to the server; picking a top-k
// alternative does, with decoding.prefix forcing the start of the translation.
//
// The page state lives in the URL, so a link reproduces a view and opening one translates at once:
//   ?text=…&source=es&target=en&strategy=beam&beam_size=4[&prefix=…]
//    &step=<1-based step>&layer=&head=        (cross-attention)
//    &enc_layer=&enc_head=&dec_layer=&dec_head= (encoder / decoder self-attention); head is a number or "mean".
"use strict";

(() => {
  const TOP_K = 5;
  const PE_DIMS = 64; // dimensions of the positional-encoding table drawn (the first ones)
  const LANGUAGE_NAMES = { es: "Spanish", en: "English" };
  const SPACE_MARK = "\u2581"; // "▁", the tokenizer's visible word-start marker
  const EOS = "</s>";
  const BOS = "<s>";

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
    prefixNote: $("prefix-note"),
    prefixText: $("prefix-text"),
    clearPrefix: $("clear-prefix"),
    compare: $("compare"),
    compareBefore: $("compare-before"),
    compareAfter: $("compare-after"),
    compareBeforeTokens: $("compare-before-tokens"),
    compareAfterTokens: $("compare-after-tokens"),
    vocabSize: $("vocab-size"),
    sourceChips: $("source-chips"),
    peCanvas: $("pe-canvas"),
    peDims: $("pe-dims"),
    peReadout: $("pe-readout"),
    encReadout: $("enc-readout"),
    decReadout: $("dec-readout"),
    step: $("step"),
    stepFirst: $("step-first"),
    stepPrev: $("step-prev"),
    stepNext: $("step-next"),
    stepLast: $("step-last"),
    stepLabel: $("step-label"),
    stepStory: $("step-story"),
    tokens: $("tokens"),
    sourceTokens: $("source-tokens"),
    heatmap: $("heatmap"),
    caption: $("heatmap-caption"),
    alignment: $("alignment"),
    topk: $("topk"),
    topkNote: $("topk-note"),
    topkVocab: $("topk-vocab"),
    crossCard: $("card-cross"),
  };

  // One attention kind on screen: its table and selectors, its maps as
  // {layer index: {heads: [head][query][key], mean: bool, meanMatrix: [query][key]}}, and what is selected.
  function attentionView(kind, table, layer, head, configKey) {
    return { kind, table, layerSelect: $(layer), headSelect: $(head), configKey, maps: {}, layers: [], layer: null, head: "mean" };
  }
  const kinds = {
    encoder: attentionView("encoder", $("enc-heatmap"), "enc-layer", "enc-head", "encoder_layers"),
    decoder: attentionView("decoder", $("dec-heatmap"), "dec-layer", "dec-head", "decoder_layers"),
    cross: attentionView("cross", ui.heatmap, "layer", "head", "decoder_layers"),
  };
  const FIELDS = { cross: "attention", encoder: "encoder_attention", decoder: "decoder_attention" };
  const URL_KEYS = { cross: ["layer", "head"], encoder: ["enc_layer", "enc_head"], decoder: ["dec_layer", "dec_head"] };

  // What is on screen: the request that produced it, the translation, the model's config, the current
  // step (0-based index), the token or cross-attention cell under the pointer or focus, and the
  // translation before the last forced re-translation (to compare).
  const view = { request: null, translation: null, config: null, step: 0, active: null, previous: null, pe: null };
  const configs = new Map(); // "es-en" -> config of the model serving it (null: /models did not say)
  let inflight = null;

  // ---------- URL state ----------

  function readQuery() {
    const q = new URLSearchParams(location.search);
    const source = q.get("source") === "en" ? "en" : "es";
    const target = q.get("target") || (source === "es" ? "en" : "es");
    const wanted = { step: clampInt(q.get("step"), 1, 100000, null) };
    for (const [kind, [layerKey, headKey]] of Object.entries(URL_KEYS)) {
      wanted[kind] = {
        layer: q.has(layerKey) ? clampInt(q.get(layerKey), 0, 1000, null) : null,
        head: parseHead(q.get(headKey)),
      };
    }
    return {
      state: {
        text: q.get("text") || "",
        source,
        target: target === source ? (source === "es" ? "en" : "es") : target,
        strategy: q.get("strategy") === "greedy" ? "greedy" : "beam",
        beamSize: clampInt(q.get("beam_size"), 1, 64, 4),
        prefix: (q.get("prefix") || "").trim() || null,
      },
      wanted,
    };
  }

  function parseHead(value) {
    return value === null || value === "mean" ? "mean" : clampInt(value, 0, 1000, "mean");
  }

  function formState() {
    const [source, target] = ui.direction.value.split("-");
    const s = {
      text: ui.text.value.trim(),
      source,
      target,
      strategy: form.elements.strategy.value,
      beamSize: clampInt(ui.beamSize.value, 1, 1000, 4),
      prefix: null,
    };
    // The forced start belongs to a text and a direction: it stays only while they do.
    const r = view.request;
    if (r && r.prefix && r.text === s.text && r.source === s.source && r.target === s.target) s.prefix = r.prefix;
    return s;
  }

  function writeQuery() {
    const t = view.request;
    if (!t) return;
    const q = new URLSearchParams({ text: t.text, source: t.source, target: t.target, strategy: t.strategy });
    if (t.strategy === "beam") q.set("beam_size", String(t.beamSize));
    if (t.prefix) q.set("prefix", t.prefix);
    if (view.translation) q.set("step", String(view.step + 1));
    for (const [kind, [layerKey, headKey]] of Object.entries(URL_KEYS)) {
      const k = kinds[kind];
      if (k.layer !== null) q.set(layerKey, String(k.layer));
      q.set(headKey, String(k.head));
    }
    history.replaceState(null, "", `${location.pathname}?${q}`);
  }

  function currentWanted() {
    const wanted = { step: view.step + 1 };
    for (const kind of Object.keys(kinds)) wanted[kind] = { layer: kinds[kind].layer, head: kinds[kind].head };
    return wanted;
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

  // The config (layers, heads, d_model, ...) of the model serving this direction, from GET /models.
  async function fetchConfig(source, target) {
    let body;
    try {
      body = await call("/models");
    } catch {
      return null;
    }
    const models = Array.isArray(body) ? body : [];
    const serves = (m) => (m.directions || []).some((d) => d.source === source && d.target === target);
    const model = models.find(serves) || models[0];
    return model && model.config && typeof model.config === "object" ? model.config : null;
  }

  const layerCount = (config, key) => {
    const n = config && config[key];
    return Number.isInteger(n) && n > 0 ? n : null;
  };

  // counts: {encoder_layers, decoder_layers} as known; an unknown count asks for the server's default (the last).
  function translateRequest(s, counts) {
    const decoding = { strategy: s.strategy };
    if (s.strategy === "beam") decoding.beam_size = s.beamSize;
    if (s.prefix) decoding.prefix = s.prefix;
    const output = { steps: true, top_k: TOP_K, attention: "heads", attention_kinds: ["cross", "encoder", "decoder"] };
    if (counts.decoder_layers) {
      output.attention_layers = range(counts.decoder_layers);
      output.decoder_attention_layers = range(counts.decoder_layers);
    }
    if (counts.encoder_layers) output.encoder_attention_layers = range(counts.encoder_layers);
    return { text: s.text, source: s.source, target: s.target, decoding, output };
  }

  async function postTranslate(s, counts, signal) {
    const body = await call("/translate", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(translateRequest(s, counts)),
      signal,
    });
    const t = body && Array.isArray(body.translations) ? body.translations[0] : null;
    if (!t) throw new ApiError("The server answered without a translation.");
    return { model: body.model, translation: t };
  }

  // options.previous: the translation this one re-does with a forced start (shown next to it).
  async function translate(s, wanted, options = {}) {
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
      if (!configs.has(direction)) configs.set(direction, await fetchConfig(s.source, s.target));
      const config = configs.get(direction);
      const counts = { encoder_layers: layerCount(config, "encoder_layers"), decoder_layers: layerCount(config, "decoder_layers") };
      let answer = await postTranslate(s, counts, controller.signal);
      if (!counts.encoder_layers || !counts.decoder_layers) {
        // /models did not say; the default is the last layer, so its index gives the count.
        const last = (a) => (a && Array.isArray(a.layers) && a.layers.length ? Math.max(...a.layers) + 1 : null);
        const t = answer.translation;
        const learnt = {
          encoder_layers: counts.encoder_layers || last(t.encoder_attention),
          decoder_layers: counts.decoder_layers || last(t.attention) || last(t.decoder_attention),
        };
        configs.set(direction, { ...(config || {}), ...learnt });
        if ((learnt.encoder_layers || 1) > 1 || (learnt.decoder_layers || 1) > 1) {
          answer = await postTranslate(s, learnt, controller.signal);
        }
      }
      if (controller !== inflight) return;
      view.request = s;
      view.config = configs.get(direction);
      view.previous = options.previous || null;
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
    for (const b of ui.topk.querySelectorAll("button")) if (busy) b.disabled = true;
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

  // ---------- tokens ----------

  // The text of a token sequence: pieces joined, each word-start mark a space, </s> left out.
  function detokenize(tokens) {
    return tokens.filter((t) => t !== EOS).join("").split(SPACE_MARK).join(" ").trim();
  }

  const isSpecial = (token) => /^<[^<>]+>$/.test(token);

  // The parts decoded on their own: the segments of a text that was split, or the whole translation.
  const parts = (t) => (Array.isArray(t.segments) && t.segments.length ? t.segments : [t]);

  // Where each token sits among the parts decoded on their own. Per generated token: the decoder input
  // it was computed from (<s>, then the tokens before it), its part's first index, and its part; per
  // source token: its position in its own encoder input (each part starts again at 0), and its part.
  function layoutOf(t) {
    const layout = { inputs: [], starts: [], targetPart: [], positions: [], sourcePart: [] };
    let offset = 0;
    parts(t).forEach((seg, p) => {
      seg.tokens.forEach((_, k) => {
        layout.inputs.push(k === 0 ? BOS : seg.tokens[k - 1]);
        layout.starts.push(offset);
        layout.targetPart.push(p);
      });
      offset += seg.tokens.length;
      seg.source_tokens.forEach((_, k) => {
        layout.positions.push(k);
        layout.sourcePart.push(p);
      });
    });
    return layout;
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
    if (token === EOS) return "end of sentence";
    if (token === BOS) return "start of sentence";
    const tag = /^<2(\w+)>$/.exec(token);
    if (tag) return `${LANGUAGE_NAMES[tag[1]] || tag[1]} tag`;
    const words = token.split(SPACE_MARK).join(" ").trim();
    return words || "space";
  }

  const percent = (p) => (p >= 0.995 ? `${(p * 100).toFixed(0)}%` : p >= 0.001 ? `${(p * 100).toFixed(1)}%` : "<0.1%");
  const probabilityColour = (p) => `hsl(${Math.round(p * 120)} 62% 40%)`;
  const quoted = (token) => `“${spokenToken(token)}”`;

  function probabilityBar(p) {
    const bar = document.createElement("span");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.style.width = `${Math.max(0, Math.min(1, p)) * 100}%`;
    fill.style.background = probabilityColour(p);
    bar.append(fill);
    return bar;
  }

  function el(tag, className, text) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // ---------- attention shapes ----------

  function meanOverHeads(heads) {
    const n = heads.length;
    return heads[0].map((row, i) => row.map((_, j) => {
      let s = 0;
      for (let h = 0; h < n; h++) s += heads[h][i][j];
      return s / n;
    }));
  }

  // A "heads" answer is [layer][head][query][key]; a "mean" one ([layer][query][key], from a server that
  // ignored the request for heads) becomes a single pseudo-head.
  function loadKind(k, attention) {
    k.maps = {};
    k.layers = [];
    if (!attention || !Array.isArray(attention.weights)) return;
    attention.layers.forEach((layer, li) => {
      const w = attention.weights[li];
      const mean = attention.reduction === "mean";
      const heads = mean ? [w] : w;
      if (!heads.length || !heads[0].length) return;
      k.maps[layer] = { heads, mean, meanMatrix: mean ? w : meanOverHeads(heads) };
      k.layers.push(layer);
    });
  }

  function selectedMatrix(k) {
    const layer = k.layer === null ? null : k.maps[k.layer];
    if (!layer) return null;
    return layer.mean || k.head === "mean" ? layer.meanMatrix : layer.heads[k.head];
  }

  function chooseSelection(k, wanted) {
    const last = k.layers.length ? k.layers[k.layers.length - 1] : null;
    k.layer = wanted && k.layers.includes(wanted.layer) ? wanted.layer : last;
    const layer = k.layer === null ? null : k.maps[k.layer];
    const nHeads = !layer || layer.mean ? 0 : layer.heads.length;
    k.head = wanted && Number.isInteger(wanted.head) && wanted.head < nHeads ? wanted.head : "mean";
    fillLayerSelect(k);
    fillHeadSelect(k);
  }

  function fillLayerSelect(k) {
    const count = layerCount(view.config, k.configKey);
    k.layerSelect.replaceChildren(
      ...k.layers.map((layer, i) => {
        const last = i === k.layers.length - 1 && layer === count - 1;
        return new Option(`Layer ${layer}${last ? " (last)" : ""}`, String(layer), false, layer === k.layer);
      }),
    );
    k.layerSelect.disabled = k.layers.length < 2;
  }

  function fillHeadSelect(k) {
    const layer = k.layer === null ? null : k.maps[k.layer];
    const options = [new Option("Mean of heads", "mean", false, k.head === "mean")];
    if (layer && !layer.mean) {
      layer.heads.forEach((_, h) => options.push(new Option(`Head ${h}`, String(h), false, k.head === h)));
    }
    k.headSelect.replaceChildren(...options);
    k.headSelect.disabled = options.length < 2;
  }

  // ---------- rendering ----------

  function render(answer, s, wanted) {
    const t = answer.translation;
    view.translation = t;
    view.active = null;
    view.layout = layoutOf(t);
    loadKind(kinds.cross, t.attention);
    loadKind(kinds.encoder, t.encoder_attention);
    loadKind(kinds.decoder, t.decoder_attention);
    for (const kind of Object.keys(kinds)) chooseSelection(kinds[kind], wanted[kind]);
    const n = t.tokens.length;
    view.step = Number.isInteger(wanted.step) ? Math.max(0, Math.min(n - 1, wanted.step - 1)) : 0;

    ui.translation.textContent = t.text;
    ui.translation.lang = s.target;
    const bits = [];
    if (answer.model) bits.push(`Model ${answer.model}`);
    const c = view.config || {};
    if (c.encoder_layers && c.decoder_layers) {
      bits.push(`${c.encoder_layers} encoder + ${c.decoder_layers} decoder layers` +
        (c.n_heads ? `, ${c.n_heads} heads` : "") + (c.d_model ? `, d_model ${c.d_model}` : ""));
    }
    bits.push(s.strategy === "beam" ? `beam search, ${s.beamSize} beams` : "greedy search");
    if (typeof t.score === "number") bits.push(`score ${t.score.toFixed(3)}`);
    if (t.finish_reason === "length") bits.push("stopped at the token limit before </s>");
    if (parts(t).length > 1) bits.push(`${parts(t).length} sentences, each decoded on its own`);
    ui.meta.textContent = bits.join(" · ");
    ui.vocabSize.textContent = c.vocab_size ? `of ${c.vocab_size} tokens` : "";
    ui.topkVocab.textContent = c.vocab_size ? `, ${c.vocab_size} of them` : "";

    ui.result.hidden = false; // before drawing: the positional-encoding table fits its width
    renderPrefix(s, t);
    renderSourceChips(t, s.source);
    renderPositionalEncoding(t);
    renderEncoder();
    renderTokens(t);
    renderSourceTokens(t, s.source);
    renderDecoder();
    renderCross();
    ui.step.max = String(Math.max(1, n));
    ui.step.disabled = n < 2;
    applyStep();
  }

  function renderPrefix(s, t) {
    ui.prefixNote.hidden = !s.prefix;
    ui.prefixText.textContent = s.prefix || "";
    const before = view.previous;
    ui.compare.hidden = !before;
    if (!before) return;
    ui.compareBefore.textContent = before.text;
    ui.compareAfter.textContent = t.text;
    const fill = (list, tokens, steps, other) => {
      list.replaceChildren(...tokens.map((token, i) => {
        const li = el("li", "mini-tok");
        li.dataset.token = token;
        li.dataset.index = String(i);
        const forced = steps && steps[i] && steps[i].forced === true;
        if (forced) li.classList.add("forced");
        if (other && other[i] !== token) li.classList.add("changed");
        li.append(displayToken(token));
        li.setAttribute("aria-label", `${spokenToken(token)}${forced ? ", forced" : ""}${other && other[i] !== token ? ", changed" : ""}`);
        return li;
      }));
    };
    fill(ui.compareBeforeTokens, before.tokens, before.steps, null);
    fill(ui.compareAfterTokens, t.tokens, t.steps, before.tokens);
  }

  // 1. The tokenizer: the encoder's input as chips, with their positions.
  function renderSourceChips(t, source) {
    const positions = view.layout.positions;
    ui.sourceChips.lang = source;
    ui.sourceChips.replaceChildren(...(t.source_tokens || []).map((token, j) => {
      const li = el("li", "chip");
      li.dataset.token = token;
      li.dataset.position = String(positions[j]);
      if (isSpecial(token)) li.classList.add("special");
      const pos = el("span", "chip-pos", String(positions[j]));
      pos.setAttribute("aria-hidden", "true");
      const text = el("span", "chip-text");
      text.append(displayToken(token));
      li.append(pos, text);
      li.setAttribute("aria-label", `Position ${positions[j]}: ${spokenToken(token)}`);
      return li;
    }));
  }

  // ---------- 2. positional encoding ----------

  // PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d)), as PositionalEncoding builds it.
  function positionalEncoding(pos, dim, d) {
    const angle = pos * Math.exp(2 * Math.floor(dim / 2) * (-Math.log(10000) / d));
    return dim % 2 === 0 ? Math.sin(angle) : Math.cos(angle);
  }

  function cssRgb(name, fallback) {
    const v = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    return v || fallback;
  }

  function renderPositionalEncoding(t) {
    const canvas = ui.peCanvas;
    const d = view.config && Number.isInteger(view.config.d_model) ? view.config.d_model : null;
    const wrap = canvas.parentElement;
    if (!d) {
      view.pe = null;
      wrap.hidden = true;
      ui.peReadout.textContent = "The server does not say the model's d_model, so the table cannot be drawn.";
      return;
    }
    wrap.hidden = false;
    const labels = t.source_tokens;
    const positions = view.layout.positions;
    const dims = Math.min(PE_DIMS, d);
    ui.peDims.textContent = dims === d ? `all ${d}` : `the first ${dims} of ${d}`;
    document.querySelectorAll(".d-model").forEach((e) => { e.textContent = String(d); });

    const ctx = canvas.getContext("2d");
    const font = "12px ui-monospace, SFMono-Regular, 'DejaVu Sans Mono', Menlo, Consolas, monospace";
    ctx.font = font;
    const shown = labels.map((token, r) => `${token} ${positions[r]}`);
    const labelWidth = Math.ceil(Math.min(160, Math.max(40, ...shown.map((s) => ctx.measureText(s).width)))) + 12;
    // Cells as wide as the panel allows, within 8..16 px; a narrow screen scrolls the table sideways.
    const room = (wrap.clientWidth || 600) - labelWidth - 8;
    const cw = Math.max(8, Math.min(16, Math.floor(room / dims)));
    const ch = 18;
    const top = 18;
    const width = labelWidth + dims * cw;
    const height = top + labels.length * ch;
    const dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(width * dpr);
    canvas.height = Math.round(height * dpr);
    canvas.style.width = `${width}px`;
    canvas.style.height = `${height}px`;
    Object.assign(canvas.dataset, {
      dModel: String(d), dims: String(dims), rows: String(labels.length), positions: positions.join(","),
      left: String(labelWidth), top: String(top), cellWidth: String(cw), cellHeight: String(ch),
    });
    view.pe = { d, dims, positions, labels, left: labelWidth, top, cw, ch, cursor: view.pe && view.pe.cursor };
    if (view.pe.cursor && (view.pe.cursor.r >= labels.length || view.pe.cursor.k >= dims)) view.pe.cursor = null;
    canvas.setAttribute("aria-label",
      `Positional encoding of ${labels.length} source positions over ${dims} dimensions; ` +
      "use the arrow keys to read single values.");
    drawPositionalEncoding();
    ui.peReadout.textContent = "Hover the table, or focus it and use the arrow keys, to read one value.";
  }

  function drawPositionalEncoding() {
    const pe = view.pe;
    if (!pe) return;
    const canvas = ui.peCanvas;
    const ctx = canvas.getContext("2d");
    const dpr = canvas.width / parseFloat(canvas.style.width);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const panel = cssRgb("--panel", "#ffffff");
    const muted = cssRgb("--muted", "#5b6470");
    const pos = cssRgb("--heat", "36 84 200").split(/\s+/).join(",");
    const neg = cssRgb("--neg", "214 108 36").split(/\s+/).join(",");
    ctx.fillStyle = panel;
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.font = "12px ui-monospace, SFMono-Regular, 'DejaVu Sans Mono', Menlo, Consolas, monospace";
    ctx.textBaseline = "middle";
    // Dimension ticks.
    ctx.fillStyle = muted;
    ctx.textAlign = "center";
    for (let k = 0; k < pe.dims; k += 8) ctx.fillText(String(k), pe.left + k * pe.cw + pe.cw / 2, pe.top / 2);
    pe.labels.forEach((token, r) => {
      const y = pe.top + r * pe.ch;
      ctx.fillStyle = muted;
      ctx.textAlign = "right";
      const label = `${token} ${pe.positions[r]}`;
      ctx.fillText(label, pe.left - 8, y + pe.ch / 2, pe.left - 12);
      for (let k = 0; k < pe.dims; k++) {
        const v = positionalEncoding(pe.positions[r], k, pe.d);
        ctx.fillStyle = `rgba(${v >= 0 ? pos : neg},${Math.min(1, Math.abs(v)).toFixed(4)})`;
        ctx.fillRect(pe.left + k * pe.cw, y, pe.cw, pe.ch);
      }
    });
    if (pe.cursor) {
      ctx.strokeStyle = cssRgb("--focus", "#f5a623");
      ctx.lineWidth = 2;
      ctx.strokeRect(pe.left + pe.cursor.k * pe.cw + 1, pe.top + pe.cursor.r * pe.ch + 1, pe.cw - 2, pe.ch - 2);
    }
  }

  function peRead(r, k) {
    const pe = view.pe;
    const p = pe.positions[r];
    const i2 = 2 * Math.floor(k / 2);
    const v = positionalEncoding(p, k, pe.d);
    ui.peReadout.textContent =
      `Position ${p} (${quoted(pe.labels[r])}), dimension ${k}: ` +
      `${k % 2 === 0 ? "sin" : "cos"}(${p} / 10000^(${i2}/${pe.d})) = ${v.toFixed(4)}`;
    ui.peReadout.dataset.position = String(p);
    ui.peReadout.dataset.dim = String(k);
    ui.peReadout.dataset.value = String(v);
  }

  function peCellAt(event) {
    const pe = view.pe;
    if (!pe) return null;
    const box = ui.peCanvas.getBoundingClientRect();
    const k = Math.floor((event.clientX - box.left - pe.left) / pe.cw);
    const r = Math.floor((event.clientY - box.top - pe.top) / pe.ch);
    return k < 0 || k >= pe.dims || r < 0 || r >= pe.labels.length ? null : { r, k };
  }

  function onPeMove(event) {
    const cell = peCellAt(event);
    if (cell) peRead(cell.r, cell.k);
  }

  // Keyboard: focusing the table puts a cursor on its first cell; the arrow keys (Home, End) move it.
  function peCursor(r, k) {
    const pe = view.pe;
    pe.cursor = { r: Math.max(0, Math.min(pe.labels.length - 1, r)), k: Math.max(0, Math.min(pe.dims - 1, k)) };
    drawPositionalEncoding();
    peRead(pe.cursor.r, pe.cursor.k);
  }

  function onPeKey(event) {
    const pe = view.pe;
    if (!pe) return;
    const move = { ArrowRight: [0, 1], ArrowLeft: [0, -1], ArrowDown: [1, 0], ArrowUp: [-1, 0], Home: [0, -1e6], End: [0, 1e6] }[event.key];
    if (!move) return;
    event.preventDefault();
    const c = pe.cursor || { r: 0, k: 0 };
    peCursor(c.r + move[0], c.k + move[1]);
  }

  // ---------- attention heatmaps ----------

  // Draws matrix [row][col] into k.table; opts.cellState(i, j) may return "masked" or "other" for cells
  // the model could not attend to (the causal mask; another sentence's block).
  function renderMatrix(k, rowLabels, colLabels, caption, opts = {}) {
    const table = k.table;
    const thead = table.tHead;
    const tbody = table.tBodies[0];
    thead.replaceChildren();
    tbody.replaceChildren();
    const matrix = selectedMatrix(k);
    if (!matrix) {
      table.caption.textContent = "No attention returned.";
      return false;
    }
    const headName = k.head === "mean" ? "mean of all heads" : `head ${k.head}`;
    table.caption.textContent = `${caption(k.layer, headName)}`;
    table.dataset.layer = String(k.layer);
    table.dataset.head = String(k.head);

    const headRow = document.createElement("tr");
    const corner = el("td", "corner");
    headRow.append(corner);
    colLabels.forEach((token, j) => {
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
      th.append(displayToken(rowLabels[i]));
      th.setAttribute("aria-label", spokenToken(rowLabels[i]));
      tr.append(th);
      row.forEach((w, j) => {
        const td = el("td", "cell");
        td.dataset.row = String(i);
        td.dataset.col = String(j);
        td.dataset.weight = String(w);
        const state = opts.cellState ? opts.cellState(i, j) : null;
        const value = el("span", "visually-hidden");
        if (state === "masked") {
          td.classList.add("masked");
          td.dataset.masked = "true";
          td.title = `${rowLabels[i]} → ${colLabels[j]}: masked (a future position)`;
          value.textContent = "masked";
        } else {
          if (state === "other") td.classList.add("other");
          td.style.setProperty("--w", String(Math.max(0, Math.min(1, w))));
          td.title = `${rowLabels[i]} → ${colLabels[j]}: ${w.toFixed(3)}`;
          value.textContent = percent(w);
        }
        td.append(value);
        tr.append(td);
      });
      tbody.append(tr);
    });
    return true;
  }

  function renderEncoder() {
    const t = view.translation;
    const k = kinds.encoder;
    const ok = renderMatrix(k, t.source_tokens, t.source_tokens, (layer, head) =>
      `Encoder self-attention of layer ${layer}, ${head}: rows are source tokens (queries), columns are source tokens (keys).`, {
      cellState: (i, j) => (view.layout.sourcePart[i] !== view.layout.sourcePart[j] ? "other" : null),
    });
    ui.encReadout.textContent = ok ? "Hover a cell to read its weight." : "The server returned no encoder attention.";
  }

  function renderDecoder() {
    const t = view.translation;
    const k = kinds.decoder;
    const { inputs, starts } = view.layout;
    const ok = renderMatrix(k, inputs, inputs, (layer, head) =>
      `Masked decoder self-attention of layer ${layer}, ${head}: a row per step, whose query is the decoder input ` +
      "of that step, and a column per decoder input; cells after the row's own position are masked.", {
      cellState: (i, j) => (j > i ? "masked" : j < starts[i] ? "other" : null),
    });
    if (!ok) ui.decReadout.textContent = "The server returned no decoder self-attention.";
    // Row labels: the input read at the step, with the step number and what it predicted.
    for (const th of k.table.querySelectorAll("tbody th")) {
      const i = Number(th.dataset.row);
      th.title = `Step ${i + 1}: reads ${inputs[i]}, predicts ${t.tokens[i]}`;
      th.setAttribute("aria-label", `Step ${i + 1}, input ${spokenToken(inputs[i])}`);
    }
  }

  function renderCross() {
    const t = view.translation;
    const k = kinds.cross;
    const ok = renderMatrix(k, t.tokens, t.source_tokens, (layer, head) =>
      `Cross-attention of decoder layer ${layer}, ${head}: rows are generated tokens, ` +
      "columns are source tokens, cells hold the attention weight.", {
      cellState: (i, j) => (view.layout.targetPart[i] !== view.layout.sourcePart[j] ? "other" : null),
    });
    ui.caption.textContent = k.table.caption.textContent;
    if (!ok) ui.alignment.textContent = "The server returned no attention weights for this translation.";
    applyHighlight();
  }

  // ---------- 4. the generated tokens and the step ----------

  function renderTokens(t) {
    ui.tokens.replaceChildren();
    t.tokens.forEach((token, i) => {
      const step = (t.steps || [])[i] || { probability: NaN, top: [] };
      const p = step.probability;
      const item = el("li", "tok-item");
      item.dataset.index = String(i);

      const button = el("button", "tok");
      button.type = "button";
      button.dataset.row = String(i);
      button.dataset.token = token;
      button.dataset.probability = String(p);
      if (step.forced) {
        button.classList.add("forced");
        button.dataset.forced = "true";
      }
      button.setAttribute("aria-label",
        `Token ${i + 1}: ${spokenToken(token)}, probability ${percent(p)}${step.forced ? ", forced" : ""}`);
      const text = el("span", "tok-text");
      text.append(displayToken(token));
      const prob = el("span", "tok-prob", percent(p));
      button.append(text, probabilityBar(p), prob);
      if (step.forced) {
        const badge = el("span", "badge forced-badge", "forced");
        badge.setAttribute("aria-hidden", "true");
        button.append(badge);
      }

      const alts = el("div", "alts");
      alts.id = `alts-${i}`;
      alts.setAttribute("role", "tooltip");
      const title = el("p", "alts-title", `Top ${(step.top || []).length} at step ${i + 1}`);
      const list = document.createElement("ol");
      for (const alt of step.top || []) {
        const li = document.createElement("li");
        if (alt.token === token) li.className = "chosen";
        const name = el("span", "alt-token");
        name.append(displayToken(alt.token));
        const value = el("span", "alt-prob", percent(alt.probability));
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
      const button = el("button", "src-tok");
      button.type = "button";
      button.dataset.col = String(j);
      button.dataset.token = token;
      button.setAttribute("aria-label", `Source token ${j + 1}: ${spokenToken(token)}`);
      button.append(displayToken(token));
      li.append(button);
      ui.sourceTokens.append(li);
    });
  }

  function setStep(index, { focusSlider = false } = {}) {
    const t = view.translation;
    if (!t) return;
    const n = t.tokens.length;
    const next = Math.max(0, Math.min(n - 1, index));
    if (next === view.step && String(next + 1) === ui.step.value) return;
    view.step = next;
    applyStep();
    writeQuery();
    if (focusSlider) ui.step.focus();
  }

  // Shows view.step everywhere: slider, story line, token strip, the two decoder heatmaps, the top-k.
  function applyStep() {
    const t = view.translation;
    const i = view.step;
    const n = t.tokens.length;
    const step = (t.steps || [])[i] || { probability: NaN, top: [] };
    const { inputs, starts } = view.layout;
    const seen = inputs.slice(starts[i], i + 1);

    ui.step.value = String(i + 1);
    const token = t.tokens[i];
    const label = `Step ${i + 1} of ${n}`;
    ui.stepLabel.textContent = label;
    ui.step.setAttribute("aria-valuetext", `${label}: reads ${spokenToken(inputs[i])}, writes ${spokenToken(token)}`);
    ui.stepFirst.disabled = ui.stepPrev.disabled = i === 0;
    ui.stepNext.disabled = ui.stepLast.disabled = i === n - 1;
    document.body.dataset.step = String(i + 1);

    ui.stepStory.replaceChildren();
    const story = ui.stepStory;
    story.append(`${label}. The decoder reads `);
    seen.forEach((tok, k) => {
      const code = el("code", k === seen.length - 1 ? "now" : "");
      code.append(displayToken(tok));
      story.append(code, k === seen.length - 1 ? "" : " ");
    });
    story.append(seen.length > 1 ? " (its own output so far, behind <s>) and writes " : " and writes ");
    const out = el("strong");
    out.append(displayToken(token));
    story.append(out, ` with ${percent(step.probability)}`);
    if (step.forced) story.append(", forced by the start you chose");
    story.append(token === EOS ? ": the end." : ".");

    // Token strip: done, current, not yet written.
    for (const b of ui.tokens.querySelectorAll(".tok")) {
      const r = Number(b.dataset.row);
      b.classList.toggle("is-step", r === i);
      b.classList.toggle("is-future", r > i);
      if (r === i) b.setAttribute("aria-current", "step");
      else b.removeAttribute("aria-current");
    }
    // Both decoder heatmaps: the step's row, and the rows not computed yet.
    for (const k of [kinds.decoder, kinds.cross]) {
      for (const tr of k.table.tBodies[0].rows) {
        const r = Number(tr.dataset.row);
        tr.classList.toggle("is-step", r === i);
        tr.classList.toggle("is-future", r > i);
      }
      k.table.dataset.step = String(i);
    }
    decoderReadout();
    shadeDecoderColumns();
    renderTopK(t, i);
    applyHighlight();
  }

  function decoderReadout() {
    const k = kinds.decoder;
    const matrix = selectedMatrix(k);
    if (!matrix) return;
    const i = view.step;
    const { inputs, starts } = view.layout;
    const row = matrix[i];
    const visible = row.map((w, j) => [w, j]).filter(([, j]) => j >= starts[i] && j <= i);
    const masked = row.length - 1 - i;
    const best = visible.sort((a, b) => b[0] - a[0]).slice(0, 3).map(([w, j]) => `${quoted(inputs[j])} ${percent(w)}`);
    ui.decReadout.textContent =
      `Step ${i + 1} reads ${quoted(inputs[i])} and attends to ${best.join(", ")}` +
      (masked > 0 ? `; ${masked} later input${masked === 1 ? " is" : "s are"} masked.` : "; nothing is masked at the last step.");
  }

  function shadeDecoderColumns() {
    const k = kinds.decoder;
    const matrix = selectedMatrix(k);
    for (const th of k.table.querySelectorAll("thead th")) {
      th.classList.remove("is-aligned");
      th.style.removeProperty("--align");
    }
    if (matrix) alignTo(k.table.querySelectorAll("thead th"), "col", matrix[view.step]);
  }

  // 4c. The projection + softmax of the step: its top-k as bars, each (but the chosen one) a way to force it.
  function renderTopK(t, i) {
    const step = (t.steps || [])[i];
    ui.topk.replaceChildren();
    ui.topk.dataset.step = String(i);
    if (!step) {
      ui.topkNote.textContent = "The server returned no steps.";
      return;
    }
    const top = [...(step.top || [])];
    if (!top.some((a) => a.token === step.token)) top.push({ token: step.token, id: step.id, probability: step.probability, outside: true });
    top.forEach((alt, rank) => {
      const chosen = alt.token === step.token;
      const li = el("li", "topk-item");
      li.dataset.token = alt.token;
      if (chosen) li.classList.add("chosen");
      const button = el("button", "topk-alt");
      button.type = "button";
      button.dataset.token = alt.token;
      button.dataset.step = String(i);
      button.dataset.probability = String(alt.probability);
      // The forced start: the tokens before this step, then the alternative (a text of several sentences
      // is then decoded whole, as every text with a prefix is).
      const prefix = detokenize([...t.tokens.slice(0, i), alt.token]);
      const forceable = !chosen && !isSpecial(alt.token) && prefix !== "";
      button.disabled = !forceable;
      if (forceable) button.dataset.prefix = prefix;
      const rankEl = el("span", "topk-rank", alt.outside ? "·" : String(rank + 1));
      rankEl.setAttribute("aria-hidden", "true");
      const name = el("span", "topk-token");
      name.append(displayToken(alt.token));
      const value = el("span", "topk-prob", percent(alt.probability));
      button.append(rankEl, name, probabilityBar(alt.probability), value);
      if (chosen) button.append(el("span", "badge", step.forced ? "forced" : "chosen"));
      let said = `${spokenToken(alt.token)}, ${percent(alt.probability)}`;
      if (chosen) said += step.forced ? ", chosen, forced" : ", chosen";
      else if (forceable) said += `: force it at step ${i + 1} and translate the rest`;
      else said += ", cannot be forced";
      button.setAttribute("aria-label", said);
      button.title = forceable ? `Force the start “${prefix}” and let the model write the rest` : "";
      li.append(button);
      ui.topk.append(li);
    });
    const notes = [];
    if (view.request && view.request.strategy === "beam") {
      notes.push("Beam search ranks whole hypotheses, so the chosen token is not always the most probable one here.");
    }
    if (step.forced) notes.push("This token was forced; the bars are still the model's own probabilities.");
    if (parts(t).length > 1) notes.push("With a forced start the whole text is decoded at once, not sentence by sentence.");
    ui.topkNote.textContent = notes.join(" ");
  }

  function forceAlternative(button) {
    const prefix = button.dataset.prefix;
    if (!prefix || !view.request || inflight) return;
    const t = view.translation;
    const previous = { text: t.text, tokens: t.tokens, steps: t.steps };
    const wanted = currentWanted();
    wanted.step = Number(button.dataset.step) + 1;
    translate({ ...view.request, prefix }, wanted, { previous });
  }

  // ---------- cross-attention highlighting ----------

  // `active` is {row}, {col} or {row, col}: a target token, a source token, or one cell. Without one,
  // the source strip follows the current step.
  function setActive(active) {
    view.active = active;
    applyHighlight();
  }

  function applyHighlight() {
    const k = kinds.cross;
    const matrix = view.translation ? selectedMatrix(k) : null;
    const scope = [ui.crossCard, ui.tokens];
    for (const root of scope) {
      for (const e of root.querySelectorAll(".is-active, .is-aligned")) {
        e.classList.remove("is-active", "is-aligned");
        e.style.removeProperty("--align");
      }
    }
    if (!matrix) return;
    const t = view.translation;
    const a = view.active;
    const table = k.table;
    if (!a) {
      const row = matrix[view.step];
      alignTo(ui.sourceTokens.querySelectorAll(".src-tok"), "col", row);
      alignTo(table.querySelectorAll("thead th"), "col", row);
      ui.alignment.textContent = `Step ${view.step + 1}: ${quoted(t.tokens[view.step])} attends to ` + topList(row, t.source_tokens);
      return;
    }
    const mark = (nodes) => nodes.forEach((e) => e.classList.add("is-active"));
    if (a.row !== undefined) {
      mark(table.querySelectorAll(`[data-row="${a.row}"]`));
      mark(ui.tokens.querySelectorAll(`.tok[data-row="${a.row}"]`));
      const row = matrix[a.row];
      alignTo(ui.sourceTokens.querySelectorAll(".src-tok"), "col", row);
      alignTo(table.querySelectorAll("thead th"), "col", row);
      ui.alignment.textContent = `${quoted(t.tokens[a.row])} attends to ` + topList(row, t.source_tokens);
    }
    if (a.col !== undefined) {
      mark(table.querySelectorAll(`[data-col="${a.col}"]`));
      mark(ui.sourceTokens.querySelectorAll(`.src-tok[data-col="${a.col}"]`));
      if (a.row === undefined) {
        const column = matrix.map((r) => r[a.col]);
        alignTo(ui.tokens.querySelectorAll(".tok"), "row", column);
        alignTo(table.querySelectorAll("tbody th"), "row", column);
        ui.alignment.textContent = `${quoted(t.source_tokens[a.col])} is attended by ` + topList(column, t.tokens);
      } else {
        ui.alignment.textContent =
          `${quoted(t.tokens[a.row])} → ${quoted(t.source_tokens[a.col])}: ${percent(matrix[a.row][a.col])} of its attention`;
      }
    }
  }

  // Shade elements carrying data-<axis> by their weight relative to the largest one.
  function alignTo(nodes, axis, weights) {
    const top = Math.max(...weights, 1e-9);
    for (const e of nodes) {
      const k = Number(e.dataset[axis]);
      if (!Number.isInteger(k) || weights[k] === undefined) continue;
      e.classList.add("is-aligned");
      e.style.setProperty("--align", (weights[k] / top).toFixed(3));
    }
  }

  function topList(weights, tokens) {
    return weights
      .map((w, k) => [w, k])
      .sort((x, y) => y[0] - x[0])
      .slice(0, 3)
      .map(([w, k]) => `${quoted(tokens[k])} ${percent(w)}`)
      .join(", ");
  }

  function crossActiveFrom(target) {
    const e = target && target.closest("[data-row], [data-col]");
    if (!e || e.tagName === "TR") return null; // between cells
    const inCross = ui.crossCard.contains(e) || (ui.tokens.contains(e) && e.classList.contains("tok"));
    if (!inCross) return null;
    const row = e.dataset.row === undefined ? undefined : Number(e.dataset.row);
    const col = e.dataset.col === undefined ? undefined : Number(e.dataset.col);
    return { row, col };
  }

  function onPoint(event) {
    const a = crossActiveFrom(event.target);
    if (a) setActive(a);
  }

  function placeTooltip(item) {
    item.classList.remove("flip");
    const box = item.getBoundingClientRect();
    if (box.left + 240 > document.documentElement.clientWidth) item.classList.add("flip");
  }

  // Hovering a cell of the encoder or decoder heatmap reads it out and marks its row and column.
  function hoverReadout(k, readout, rowLabels, colLabels) {
    const table = k.table;
    const clear = () => table.querySelectorAll(".is-hover").forEach((e) => e.classList.remove("is-hover"));
    table.addEventListener("mouseover", (event) => {
      const cell = event.target.closest("td.cell");
      if (!cell) return;
      clear();
      const i = Number(cell.dataset.row);
      const j = Number(cell.dataset.col);
      table.querySelectorAll(`th[data-row="${i}"], th[data-col="${j}"]`).forEach((e) => e.classList.add("is-hover"));
      cell.classList.add("is-hover");
      const rows = rowLabels();
      const cols = colLabels();
      readout.textContent = cell.dataset.masked
        ? `${quoted(rows[i])} → ${quoted(cols[j])}: masked, a future position (weight exactly 0).`
        : `${quoted(rows[i])} → ${quoted(cols[j])}: ${percent(Number(cell.dataset.weight))} of its attention.`;
    });
    table.addEventListener("mouseleave", () => {
      clear();
      if (k === kinds.decoder) decoderReadout();
      else readout.textContent = "Hover a cell to read its weight.";
    });
  }

  // ---------- wiring ----------

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    translate(formState(), currentWanted());
  });
  form.addEventListener("change", syncFormLanguage);

  ui.swap.addEventListener("click", () => {
    const [source, target] = ui.direction.value.split("-");
    ui.direction.value = `${target}-${source}`;
    if (view.translation && view.request && view.request.source === source) ui.text.value = view.translation.text;
    syncFormLanguage();
    if (ui.text.value.trim()) translate(formState(), currentWanted());
  });

  ui.clearPrefix.addEventListener("click", () => {
    if (!view.request) return;
    const t = view.translation;
    translate({ ...view.request, prefix: null }, currentWanted(), { previous: { text: t.text, tokens: t.tokens, steps: t.steps } });
  });

  const renderers = { encoder: renderEncoder, decoder: renderDecoder, cross: renderCross };
  for (const [kind, k] of Object.entries(kinds)) {
    k.layerSelect.addEventListener("change", () => {
      k.layer = Number(k.layerSelect.value);
      const layer = k.maps[k.layer];
      if (k.head !== "mean" && (layer.mean || k.head >= layer.heads.length)) k.head = "mean";
      fillHeadSelect(k);
      renderers[kind]();
      if (kind !== "encoder") applyStep();
      writeQuery();
    });
    k.headSelect.addEventListener("change", () => {
      k.head = k.headSelect.value === "mean" ? "mean" : Number(k.headSelect.value);
      renderers[kind]();
      if (kind !== "encoder") applyStep();
      writeQuery();
    });
  }

  hoverReadout(kinds.encoder, ui.encReadout, () => view.translation.source_tokens, () => view.translation.source_tokens);
  hoverReadout(kinds.decoder, ui.decReadout, () => view.layout.inputs, () => view.layout.inputs);

  // The step: slider (its arrow, Home, End and Page keys are the browser's), buttons, tokens, and the
  // same arrow keys on the stepper's buttons.
  ui.step.addEventListener("input", () => setStep(Number(ui.step.value) - 1));
  ui.stepFirst.addEventListener("click", () => setStep(0));
  ui.stepPrev.addEventListener("click", () => setStep(view.step - 1));
  ui.stepNext.addEventListener("click", () => setStep(view.step + 1));
  ui.stepLast.addEventListener("click", () => setStep(Infinity));
  for (const b of [ui.stepFirst, ui.stepPrev, ui.stepNext, ui.stepLast]) {
    b.addEventListener("keydown", (event) => {
      const move = { ArrowLeft: -1, ArrowRight: 1 }[event.key];
      if (!move) return;
      event.preventDefault();
      setStep(view.step + move);
    });
  }
  ui.tokens.addEventListener("click", (event) => {
    const b = event.target.closest(".tok");
    if (b) setStep(Number(b.dataset.row));
  });
  ui.topk.addEventListener("click", (event) => {
    const b = event.target.closest("button.topk-alt");
    if (b && !b.disabled) forceAlternative(b);
  });

  ui.peCanvas.addEventListener("mousemove", onPeMove);
  ui.peCanvas.addEventListener("click", (event) => {
    const cell = peCellAt(event);
    if (cell) peCursor(cell.r, cell.k);
  });
  ui.peCanvas.addEventListener("keydown", onPeKey);
  ui.peCanvas.addEventListener("focus", () => {
    if (view.pe && !view.pe.cursor) peCursor(0, 0);
  });
  ui.peCanvas.addEventListener("blur", () => {
    if (view.pe && view.pe.cursor) {
      view.pe.cursor = null;
      drawPositionalEncoding();
    }
  });
  matchMedia("(prefers-color-scheme: dark)").addEventListener("change", drawPositionalEncoding);
  let resizing = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => { if (view.translation) renderPositionalEncoding(view.translation); }, 150);
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
  for (const area of [ui.crossCard, ui.tokens]) {
    area.addEventListener("mouseleave", () => {
      if (!ui.crossCard.contains(document.activeElement) && !ui.tokens.contains(document.activeElement)) setActive(null);
    });
  }
  ui.result.addEventListener("focusout", (event) => {
    const to = event.relatedTarget;
    if (!to || !(ui.crossCard.contains(to) || ui.tokens.contains(to))) setActive(null);
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
  fillForm(initial.state);
  if (initial.state.text) translate(initial.state, initial.wanted);
  else document.body.dataset.state = "idle";
})();
