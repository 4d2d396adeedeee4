/* The page's Document tab: drop a file, follow its job's progress (Server-Sent Events), download it.
   The Text tab (viewer.js) is untouched; the tab shown follows the URL's fragment (#documents). */
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const tabs = { text: [$("tab-text"), $("panel-text")], documents: [$("tab-documents"), $("panel-documents")] };
  let chosen = null;
  let job = null;
  let events = null;

  function show(name) {
    for (const [key, [tab, panel]] of Object.entries(tabs)) {
      const on = key === name;
      tab.setAttribute("aria-selected", String(on));
      tab.tabIndex = on ? 0 : -1;
      panel.hidden = !on;
    }
  }

  function choose(file) {
    chosen = file;
    $("doc-name").textContent = file ? `${file.name} (${Math.ceil(file.size / 1024)} KB)` : "Drop a file here, or choose one";
  }

  function say(text) { $("doc-status").textContent = text; }

  function fail(text) {
    const box = $("doc-error");
    box.textContent = text;
    box.hidden = false;
    $("doc-submit").disabled = false;
    $("doc-cancel").hidden = true;
  }

  function detailOf(body, status) {
    const detail = body && body.detail;
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) return detail.map((d) => d.msg).join("; ");
    return `the server answered ${status}`;
  }

  function progress(state) {
    const bar = $("doc-progress");
    bar.hidden = false;
    bar.max = Math.max(state.segments_total, 1);
    bar.value = state.segments_done;
    const eta = state.eta_s === null || state.eta_s === undefined ? "" : ` · about ${Math.ceil(state.eta_s)} s left`;
    say(`${state.filename}: ${state.segments_done} / ${state.segments_total} segments${eta}`);
  }

  function finished(name, state) {
    events.close();
    $("doc-submit").disabled = false;
    $("doc-cancel").hidden = true;
    progress(state);
    document.body.dataset.documentState = name;
    if (name === "done") {
      const link = $("doc-download");
      link.href = state.result_url;
      link.download = state.filename;
      link.hidden = false;
      say(`${state.filename}: translated (${state.segments_total} segments)`);
    } else {
      fail(name === "failed" ? `The translation failed: ${state.error}` : "The translation was cancelled.");
    }
  }

  async function submit(event) {
    event.preventDefault();
    $("doc-error").hidden = true;
    $("doc-download").hidden = true;
    if (!chosen) return fail("Choose a file first.");
    const [source, target] = $("doc-direction").value.split("-");
    const form = new FormData();
    form.append("file", chosen, chosen.name);
    form.append("source", source);
    form.append("target", target);
    $("doc-submit").disabled = true;
    document.body.dataset.documentState = "running";
    say(`Sending ${chosen.name}…`);
    let response;
    try {
      response = await fetch("/documents/jobs", { method: "POST", body: form });
    } catch (e) {
      return fail(`The server could not be reached: ${e.message}`);
    }
    const body = await response.json().catch(() => null);
    if (response.status !== 202) {
      document.body.dataset.documentState = "refused";
      return fail(detailOf(body, response.status));
    }
    job = body;
    progress(job);
    $("doc-cancel").hidden = false;
    events = new EventSource(`/documents/jobs/${job.id}/events`);
    events.addEventListener("progress", (e) => progress(JSON.parse(e.data)));
    for (const name of ["done", "failed", "cancelled"]) {
      events.addEventListener(name, (e) => finished(name, JSON.parse(e.data)));
    }
  }

  async function loadFormats() {
    const response = await fetch("/documents/formats").catch(() => null);
    if (response && response.ok) $("doc-formats").textContent = (await response.json()).join(" ");
  }

  const zone = $("dropzone");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    if (e.dataTransfer.files.length) choose(e.dataTransfer.files[0]);
  });
  $("doc-file").addEventListener("change", (e) => choose(e.target.files[0] || null));
  $("document-form").addEventListener("submit", submit);
  $("doc-cancel").addEventListener("click", () => job && fetch(`/documents/jobs/${job.id}/cancel`, { method: "POST" }));
  $("tab-text").addEventListener("click", () => { history.replaceState(null, "", location.pathname + location.search); show("text"); });
  $("tab-documents").addEventListener("click", () => { history.replaceState(null, "", "#documents"); show("documents"); });
  show(location.hash === "#documents" ? "documents" : "text");
  loadFormats();
})();
