// The tuner web UI: plain JS over the REST API (no framework, no CDN). Pages are hash routes:
// #/jobs, #/new, #/job/ID, #/studies, #/study/NAME, #/sweep/ID, #/configs, #/compare?a=ID&b=ID.
"use strict";
const main = document.getElementById("main");
let pollTimer = null;

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
  return el;
}
const fmt = (v, d = 1) => (v === null || v === undefined) ? "–" : (typeof v === "number" ? v.toFixed(d) : String(v));
const when = t => t ? new Date(t).toLocaleString() : "–";
const stateTag = s => h("span", {class: `state state-${s}`}, s);
function setStatus(text) { document.getElementById("status").textContent = text || ""; }

async function api(path, opts = {}) {
  const headers = Object.assign({"Accept": "application/json"}, opts.body ? {"Content-Type": "application/json"} : {});
  const token = localStorage.getItem("tunerToken");
  if (token) headers["Authorization"] = "Bearer " + token;
  const res = await fetch(path, Object.assign({}, opts, {headers}));
  if (res.status === 401) {
    const t = prompt("This service needs its API token (TUNER_API_TOKEN):");
    if (t) { localStorage.setItem("tunerToken", t); return api(path, opts); }
  }
  const data = res.headers.get("content-type")?.includes("json") ? await res.json() : null;
  if (!res.ok) throw new Error((data && (typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail)))
                               || `${res.status} ${res.statusText}`);
  return data;
}

function progressBar(units, total) {
  const ended = (units.done || 0) + (units.failed || 0) + (units.cancelled || 0);
  const pct = total ? Math.round(100 * ended / total) : 0;
  return h("span", {}, h("span", {class: "bar", title: `${pct}%`}, h("span", {style: `width:${pct}%`})),
           ` ${units.done || 0}/${total} done` + (units.claimed ? `, ${units.claimed} running` : "")
           + (units.failed ? `, ${units.failed} failed` : ""));
}

function describeSpec(spec) {
  const parts = [];
  for (const k of ["engine", "model", "tp", "ep", "kernel", "study", "preset", "trials", "slo", "formats", "target"]) {
    if (spec[k] !== undefined && spec[k] !== null && spec[k] !== "") parts.push(`${k}=${spec[k]}`);
  }
  return parts.join(" ");
}

// ------------------------------------------------------------------------------------------------ jobs list
async function pageJobs() {
  main.replaceChildren(h("h1", {}, "Jobs"), h("p", {}, h("a", {class: "button", href: "#/new"}, "New job")),
                       h("div", {id: "jobs"}, "Loading…"));
  const render = async () => {
    const page = await api("/api/jobs?limit=100");
    const rows = page.items.map(j => h("tr", {"data-job": j.id, "data-state": j.state},
      h("td", {}, h("a", {href: `#/job/${j.id}`}, `#${j.id}`)), h("td", {}, j.kind), h("td", {}, describeSpec(j.spec)),
      h("td", {class: "job-state"}, stateTag(j.state)), h("td", {}, progressBar(j.units, j.units_total)),
      h("td", {}, when(j.created_at)), h("td", {}, jobActions(j, render))));
    document.getElementById("jobs").replaceChildren(page.items.length ? h("table", {},
      h("thead", {}, h("tr", {}, ["Job", "Kind", "What", "State", "Progress", "Created", ""].map(t => h("th", {}, t)))),
      h("tbody", {}, rows)) : h("p", {class: "muted"}, "No jobs yet: start one with New job."),
      page.total > page.items.length ? h("p", {class: "muted"}, `${page.total} jobs; newest ${page.items.length} shown`) : "");
  };
  await render();
  pollTimer = setInterval(() => render().catch(e => setStatus(e.message)), 1000);
}

function jobActions(job, after) {
  const out = [];
  if (job.state === "queued" || job.state === "running") {
    out.push(h("button", {class: "secondary cancel", onclick: async () => {
      if (!confirm(`Cancel job #${job.id}?`)) return;
      try { await api(`/api/jobs/${job.id}/cancel`, {method: "POST"}); await after(); } catch (e) { setStatus(e.message); }
    }}, "Cancel"));
  }
  if (job.state === "failed") {
    out.push(h("button", {class: "secondary retry", onclick: async () => {
      try { await api(`/api/jobs/${job.id}/retry`, {method: "POST"}); await after(); } catch (e) { setStatus(e.message); }
    }}, "Retry"));
  }
  return out;
}

// ------------------------------------------------------------------------------------------------ new job
async function pageNew(params) {
  const kinds = await api("/api/kinds");
  const chosen = params.get("kind") || (kinds.find(k => k.name === "flag_search") || kinds[0]).name;
  const kind = kinds.find(k => k.name === chosen) || kinds[0];
  const select = h("select", {id: "kind", onchange: e => { location.hash = `#/new?kind=${e.target.value}`; }},
                   kinds.map(k => h("option", {value: k.name, selected: k.name === kind.name}, k.title)));
  const groups = {};
  for (const f of kind.fields) (groups[f.group || "options"] ||= []).push(f);
  const form = h("form", {class: "job-form", id: "job-form"});
  for (const [group, fields] of Object.entries(groups)) {
    form.append(h("fieldset", {}, h("legend", {}, group), fields.map(fieldInput)));
  }
  const error = h("p", {class: "error", id: "form-error"});
  form.append(error, h("button", {type: "submit", id: "submit-job"}, `Start ${kind.title.toLowerCase()}`));
  form.addEventListener("submit", async ev => {
    ev.preventDefault();
    error.textContent = "";
    const body = {};
    for (const f of kind.fields) {
      const el = form.elements[f.name];
      if (!el) continue;
      if (f.type === "boolean") { if (el.checked) body[f.name] = true; continue; }
      const text = el.value.trim();
      if (text === "") continue;
      if (f.type === "integer") body[f.name] = Number.isInteger(+text) ? +text : text;
      else if (f.type === "number") body[f.name] = text === "inf" ? "inf" : (isNaN(+text) ? text : +text);
      else if (f.type === "list") body[f.name] = text.split(/\n|;/).map(s => s.trim()).filter(Boolean);
      else body[f.name] = text;
    }
    try {
      const job = await api(`/api/jobs/${kind.name}`, {method: "POST", body: JSON.stringify(body)});
      location.hash = `#/job/${job.id}`;
    } catch (e) { error.textContent = e.message; }
  });
  const preset = h("p", {}, kind.name === "flag_search" ? h("button", {class: "secondary", id: "demo-preset",
    type: "button", onclick: () => fillDemo(form)}, "Fill with the demo search (simulated engine)") : "");
  main.replaceChildren(h("h1", {}, "New job"), h("p", {}, "Kind: ", select), preset, form);
}

function fieldInput(f) {
  let input;
  if (f.type === "boolean") input = h("input", {type: "checkbox", name: f.name, checked: f.default === true});
  else if (f.choices.length) input = h("select", {name: f.name}, f.required ? [] : h("option", {value: ""}, "(default)"),
    f.choices.map(c => h("option", {value: c, selected: c === f.default}, c)));
  else if (f.type === "list") input = h("textarea", {name: f.name, rows: 2, placeholder: "one per line"},
    (f.default || []).join("\n"));
  else input = h("input", {name: f.name, placeholder: f.default === null ? "" : String(f.default),
    required: f.required});
  return h("label", {}, h("span", {}, f.name + (f.required ? " *" : "")), input, h("small", {}, f.help));
}

async function fillDemo(form) {
  const demo = await api("/api/demo-request").catch(() => null);
  if (!demo) return;
  for (const [k, v] of Object.entries(demo)) {
    const el = form.elements[k];
    if (!el) continue;
    if (el.type === "checkbox") el.checked = !!v;
    else el.value = Array.isArray(v) ? v.join("\n") : String(v);
  }
}

// ------------------------------------------------------------------------------------------------ job detail
async function pageJob(id) {
  const head = h("div", {id: "job-head"}), body = h("div", {id: "job-body"});
  main.replaceChildren(h("h1", {}, `Job #${id}`), head, body);
  let lastState = null, shown = false;
  const render = async () => {
    const job = await api(`/api/jobs/${id}`);
    head.replaceChildren(h("p", {}, stateTag(job.state), " ", job.kind, " · ", progressBar(job.units, job.units_total),
      " ", jobActions(job, render)), job.error ? h("p", {class: "error"}, job.error) : "",
      h("details", {}, h("summary", {}, "Request"), h("pre", {}, JSON.stringify(job.spec, null, 2))));
    head.querySelector(".job-state-text")?.remove();
    head.prepend(h("span", {class: "job-state-text", "data-state": job.state, hidden: true}, job.state));
    if (job.state !== lastState || job.state === "running" || !shown) {
      lastState = job.state;
      shown = true;
      const result = await api(`/api/jobs/${id}/result`);
      await renderResult(job, result.result, body);
    }
    if (["finished", "failed", "cancelled"].includes(job.state)) { clearInterval(pollTimer); pollTimer = null; }
  };
  await render();
  if (!pollTimer) pollTimer = setInterval(() => render().catch(e => setStatus(e.message)), 1500);
}

async function renderResult(job, result, body) {
  const kind = job.kind.split(":")[0];
  const parts = [];
  const study = (result && (result.study || result.study_name)) || job.spec.study;
  if (kind === "flag_search" && study) {
    parts.push(h("div", {id: "study-view"}));
    body.replaceChildren(...parts);
    await renderStudy(study, document.getElementById("study-view"), true).catch(e =>
      document.getElementById("study-view").replaceChildren(h("p", {class: "muted"}, e.message)));
  } else if (kind === "kernel_sweep" && result && result.sweeps) {
    body.replaceChildren(h("h2", {}, "Sweeps"), h("ul", {}, result.sweeps.map(s => h("li", {},
      s.sweep_id ? h("a", {href: `#/sweep/${s.sweep_id}`}, `#${s.sweep_id}`) : "(nothing stored yet)",
      ` ${s.kernel} ${s.shape_key} on ${s.device_name}: ${s.batches.length} batch sizes done`))));
  } else {
    body.replaceChildren();
  }
  if (kind === "export" && job.state === "finished") {
    body.append(h("p", {}, h("a", {class: "button", id: "download-export", href: `/api/jobs/${job.id}/download`},
      "Download the export (zip)")));
  }
  if (result) body.append(h("details", {}, h("summary", {}, "Result"), h("pre", {}, JSON.stringify(result, null, 2))));
  const unitsPage = await api(`/api/jobs/${job.id}/units?limit=200`);
  body.append(h("h2", {}, `Work units (${unitsPage.total})`), h("table", {id: "units"},
    h("thead", {}, h("tr", {}, ["Unit", "State", "Attempts", "Worker", "Error"].map(t => h("th", {}, t)))),
    h("tbody", {}, unitsPage.items.map(u => h("tr", {}, h("td", {}, u.key), h("td", {}, stateTag(u.state)),
      h("td", {class: "num"}, u.attempts), h("td", {}, u.worker_id || ""), h("td", {class: "error"}, u.error || ""))))));
}

// ------------------------------------------------------------------------------------------------ studies
async function pageStudies() {
  const page = await api("/api/studies?limit=100");
  main.replaceChildren(h("h1", {}, "Flag studies"), page.items.length ? h("table", {},
    h("thead", {}, h("tr", {}, ["Study", "Engine", "Model", "GPU", "Status", "Trials", "Best goodput", "Gain"].map(t => h("th", {}, t)))),
    h("tbody", {}, page.items.map(s => {
      const best = (s.result || {}).best, gain = (s.result || {}).gain;
      return h("tr", {}, h("td", {}, h("a", {href: `#/study/${encodeURIComponent(s.name)}`}, s.name)), h("td", {}, s.engine),
        h("td", {}, s.model), h("td", {}, s.gpu || ""), h("td", {}, stateTag(s.status)),
        h("td", {}, Object.entries(s.trials).map(([k, n]) => `${n} ${k}`).join(", ")),
        h("td", {class: "num"}, best ? fmt(best.median) + " tok/s" : "–"),
        h("td", {class: "num"}, gain ? `${(gain.ratio * 100).toFixed(1)}%` : "–"));
    }))) : h("p", {class: "muted"}, "No flag studies yet."));
}

async function pageStudy(name) {
  main.replaceChildren(h("h1", {}, `Study ${name}`), h("div", {id: "study-view"}));
  await renderStudy(name, document.getElementById("study-view"), false);
}

async function renderStudy(name, into, live) {
  const q = encodeURIComponent(name);
  const study = await api(`/api/studies/${q}`);
  const result = study.result || {}, best = result.best, gain = result.gain, base = result.baseline;
  const cards = h("div", {class: "cards"},
    card("Best goodput", best ? `${fmt(best.median)} tok/s` : "–", best ? `trial ${best.trial}` : "no result yet"),
    card("Baseline", base ? `${fmt(base.median ?? base.goodput_tok_s)} tok/s` : "–", "engine defaults"),
    card("Gain over baseline", gain ? `${(gain.ratio * 100).toFixed(1)}%` : "–", gain ? gainSpread(gain) : ""),
    card("Trials", Object.entries(study.trials).map(([k, n]) => `${n} ${k}`).join(", ") || "none", study.status));
  into.replaceChildren(cards);
  if (best) {
    into.append(h("h2", {}, "Best config"), h("table", {id: "best-config"}, h("tbody", {},
      Object.entries(best.flags || {}).map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, JSON.stringify(v)))))),
      h("p", {}, h("a", {class: "button", id: "study-export", href: `/api/studies/${q}/export.zip`},
        "Export: launch flags, --config YAML, report (zip)")));
  }
  into.append(h("h2", {}, "Pareto: goodput vs p99 latency"), h("div", {id: "pareto"}, "Loading…"));
  api(`/api/studies/${q}/pareto`).then(p => {
    const el = document.getElementById("pareto");
    if (!el) return;
    if (!p.points.length) { el.replaceChildren(h("p", {class: "muted"}, "No load steps measured yet.")); return; }
    el.replaceChildren(scatterChart(p.points.map(pt => ({x: pt.latency_s, y: pt.goodput_tok_s, front: pt.on_front,
      baseline: pt.is_baseline, ok: pt.meets_slo, title: `trial ${pt.trial} step ${pt.step}: load ${fmt(pt.load, 2)}, `
      + `goodput ${fmt(pt.goodput_tok_s)} tok/s, throughput ${fmt(pt.throughput_tok_s)} tok/s, ${p.metric} ${fmt(pt.latency_s, 3)} s`})),
      {xLabel: `${p.metric} (s)`, yLabel: "goodput (tok/s)", id: "pareto-chart"}),
      h("p", {class: "muted"}, "Blue: the front (no other step has more goodput at less latency); orange: baseline; red: missed the SLOs."));
  }).catch(e => setStatus(e.message));
  into.append(h("h2", {}, "Trials"), h("div", {id: "trials"}));
  await trialTable(study, document.getElementById("trials"), {offset: 0, sort: "trial_number"});
}

function card(label, value, note) {
  return h("div", {class: "card"}, h("div", {class: "label"}, label), h("div", {class: "value"}, value),
           h("div", {class: "muted"}, note || ""));
}
function gainSpread(gain) {
  const lo = gain.low ?? gain.ratio_low, hi = gain.high ?? gain.ratio_high;
  if (lo !== undefined && hi !== undefined) return `spread ${(lo * 100).toFixed(1)}% … ${(hi * 100).toFixed(1)}%`;
  return gain.significant === false ? "within the spread" : "";
}

async function trialTable(study, into, state) {
  const q = encodeURIComponent(study.name);
  const page = await api(`/api/studies/${q}/trials?offset=${state.offset}&limit=50&sort=${state.sort}`);
  const sortBy = key => () => { state.sort = state.sort === key ? "-" + key : key; state.offset = 0; trialTable(study, into, state); };
  const th = (label, key) => h("th", {class: "sortable", onclick: sortBy(key)}, label + (state.sort.replace("-", "") === key ? (state.sort.startsWith("-") ? " ▼" : " ▲") : ""));
  const logView = h("pre", {id: "log-tail", hidden: true});
  into.replaceChildren(h("table", {}, h("thead", {}, h("tr", {}, th("#", "trial_number"), h("th", {}, "Kind"),
      th("Status", "status"), th("Goodput tok/s", "goodput_tok_s"), th("Max load", "max_load"), h("th", {}, "Flags"), h("th", {}, "Log"))),
    h("tbody", {}, page.items.map(t => h("tr", {class: "trial"}, h("td", {}, t.trial_number + (t.is_baseline ? " (baseline)" : "")),
      h("td", {}, t.kind + (t.attempt ? ` ${t.attempt}` : "")), h("td", {}, stateTag(t.status), t.error ? h("div", {class: "error"}, t.error.slice(0, 160)) : ""),
      h("td", {class: "num"}, fmt(t.goodput_tok_s)), h("td", {class: "num"}, fmt(t.max_load, 2)),
      h("td", {}, Object.entries(t.params || {}).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(" ")),
      h("td", {}, h("button", {class: "secondary", onclick: async () => {
        const l = await api(`/api/trials/${t.id}/log`);
        logView.hidden = false;
        logView.textContent = `${l.log_path || ""}\n${l.log_tail || "(no log tail stored)"}`;
      }}, "tail")))))),
    h("div", {class: "pager"}, h("button", {class: "secondary", disabled: state.offset === 0,
      onclick: () => { state.offset = Math.max(0, state.offset - 50); trialTable(study, into, state); }}, "‹ prev"),
      `${page.total ? state.offset + 1 : 0}–${state.offset + page.items.length} of ${page.total}`,
      h("button", {class: "secondary", disabled: state.offset + 50 >= page.total,
        onclick: () => { state.offset += 50; trialTable(study, into, state); }}, "next ›")),
    h("h2", {}, "Engine log tail"), logView);
}

// ------------------------------------------------------------------------------------------------ sweeps
async function pageSweep(id) {
  const sweep = await api(`/api/sweeps/${id}`);
  main.replaceChildren(h("h1", {}, `Kernel sweep #${id}: ${sweep.model} TP${sweep.tp} EP${sweep.ep}`),
    h("p", {}, `${sweep.kernel} (${sweep.kernel_source}) on ${sweep.device_name}, ${sweep.dtype}, Triton ${sweep.triton_version}`
      + (sweep.engine_version ? `, engine ${sweep.engine_version}` : "") + ` · `, stateTag(sweep.status)),
    h("div", {class: "cards"}, card("Geomean vs the engine's choice", sweep.geomean_speedup_vs_engine ? fmt(sweep.geomean_speedup_vs_engine, 3) + "x" : "–", "shipped file, else default"),
      card("Geomean vs the engine's default", sweep.geomean_speedup_vs_default ? fmt(sweep.geomean_speedup_vs_default, 3) + "x" : "–", ""),
      card("Batch sizes done", `${sweep.best.length}/${sweep.batch_sizes.length}`, "")),
    h("p", {}, h("a", {class: "button", id: "sweep-export", href: `/api/sweeps/${id}/export.zip`}, "Export SGLang + vLLM files (zip)")),
    h("h2", {}, "Speed-up per batch size"),
    speedupBars(sweep.best.map(b => ({label: String(b.batch_size), values: [
      {name: "vs engine's choice", value: b.speedup_vs_engine, colour: "#2563eb"},
      {name: "vs default", value: b.speedup_vs_default, colour: "#94a3b8"}]})),
      {id: "speedup-chart", legend: "blue: vs the engine's choice (shipped file); grey: vs its default"}),
    h("h2", {}, "Latency by batch size and config"), h("div", {id: "heatmap"}, "Loading…"),
    h("h2", {}, "Best config per batch size"), bestTable(sweep.best));
  const hm = await api(`/api/sweeps/${id}/heatmap`);
  document.getElementById("heatmap").replaceChildren(hm.configs.length ? heatMap(hm.latency_us, hm.configs, hm.batch_sizes,
    hm.best_us, {id: "heatmap-chart", title: "green: the best at that batch size; red: 1.5x or slower; grey: not measured"})
    : h("p", {class: "muted"}, "No measurements yet."));
}

function bestTable(best) {
  return h("table", {id: "best-table"}, h("thead", {}, h("tr", {}, ["M", "Config", "Latency us", "Engine us", "Default us",
    "vs engine", "vs default", "Kept engine's"].map(t => h("th", {}, t)))),
    h("tbody", {}, best.map(b => h("tr", {}, h("td", {class: "num"}, b.batch_size), h("td", {}, b.config_key),
      h("td", {class: "num"}, fmt(b.latency_us, 2)), h("td", {class: "num"}, fmt(b.engine_latency_us, 2)),
      h("td", {class: "num"}, fmt(b.default_latency_us, 2)), h("td", {class: "num"}, fmt(b.speedup_vs_engine, 3)),
      h("td", {class: "num"}, fmt(b.speedup_vs_default, 3)), h("td", {}, b.kept_engine_choice ? "yes" : "")))));
}

// ------------------------------------------------------------------------------------------------ config database
async function pageConfigs() {
  const rows = await api("/api/configs");
  const picked = new Set();
  const compare = h("button", {id: "compare-picked", disabled: true, onclick: () => {
    const [a, b] = [...picked]; location.hash = `#/compare?a=${a}&b=${b}`; }}, "Compare the two picked");
  main.replaceChildren(h("h1", {}, "Config database"), h("p", {class: "muted"}, "The newest tuned set per GPU, model, "
    + "TP/EP, dtype, kernel and engine version."), rows.length ? h("table", {id: "configs"},
    h("thead", {}, h("tr", {}, ["", "GPU", "Model", "TP", "EP", "dtype", "Kernel", "Engine", "M done", "vs engine", "vs default", ""].map(t => h("th", {}, t)))),
    h("tbody", {}, rows.map(r => h("tr", {}, h("td", {}, h("input", {type: "checkbox", onchange: e => {
        e.target.checked ? picked.add(r.sweep_id) : picked.delete(r.sweep_id); compare.disabled = picked.size !== 2; }})),
      h("td", {}, r.device_name), h("td", {}, h("a", {href: `#/sweep/${r.sweep_id}`}, r.model)), h("td", {class: "num"}, r.tp),
      h("td", {class: "num"}, r.ep), h("td", {}, r.dtype), h("td", {}, `${r.kernel} (${r.kernel_source})`),
      h("td", {}, r.engine_version || "–"), h("td", {class: "num"}, r.best_count),
      h("td", {class: "num"}, fmt(r.geomean_speedup_vs_engine, 3)), h("td", {class: "num"}, fmt(r.geomean_speedup_vs_default, 3)),
      h("td", {}, h("a", {class: "button export", href: `/api/sweeps/${r.sweep_id}/export.zip`}, "Export")))))) :
    h("p", {class: "muted"}, "No tuned kernel configs yet."), h("p", {}, compare));
}

async function pageCompare(params) {
  const a = params.get("a"), b = params.get("b");
  if (!a || !b) {
    main.replaceChildren(h("h1", {}, "Compare"), h("p", {}, "Pick two config sets in the ", h("a", {href: "#/configs"}, "config database"), "."));
    return;
  }
  const [sa, sb] = await Promise.all([api(`/api/sweeps/${a}`), api(`/api/sweeps/${b}`)]);
  const byM = s => Object.fromEntries(s.best.map(x => [x.batch_size, x]));
  const ma = byM(sa), mb = byM(sb);
  const ms = [...new Set([...Object.keys(ma), ...Object.keys(mb)].map(Number))].sort((x, y) => x - y);
  const title = s => `#${s.id} ${s.model} TP${s.tp} EP${s.ep} on ${s.device_name} (${s.kernel_source} ${s.engine_version || ""})`;
  main.replaceChildren(h("h1", {}, "Compare two config sets"), h("div", {class: "side-by-side"}, h("div", {}, h("b", {}, "A: "), title(sa)),
    h("div", {}, h("b", {}, "B: "), title(sb))), h("table", {id: "compare-table"}, h("thead", {}, h("tr", {},
      ["M", "A config", "A us", "B config", "B us", "B / A"].map(t => h("th", {}, t)))),
    h("tbody", {}, ms.map(m => { const x = ma[m], y = mb[m];
      return h("tr", {}, h("td", {class: "num"}, m), h("td", {}, x ? x.config_key : "–"), h("td", {class: "num"}, fmt(x?.latency_us, 2)),
        h("td", {}, y ? y.config_key : "–"), h("td", {class: "num"}, fmt(y?.latency_us, 2)),
        h("td", {class: "num"}, x && y ? fmt(y.latency_us / x.latency_us, 3) : "–")); }))));
}

// ------------------------------------------------------------------------------------------------ router
async function route() {
  if (pollTimer) { clearInterval(pollTimer); pollTimer = null; }
  setStatus("");
  const [path, query] = (location.hash.slice(2) || "jobs").split("?");
  const [page, arg] = path.split("/");
  const params = new URLSearchParams(query || "");
  document.querySelectorAll("header nav a").forEach(a => a.classList.toggle("active", a.dataset.page === page));
  try {
    if (page === "new") await pageNew(params);
    else if (page === "job") await pageJob(arg);
    else if (page === "studies") await pageStudies();
    else if (page === "study") await pageStudy(decodeURIComponent(arg));
    else if (page === "sweep") await pageSweep(arg);
    else if (page === "configs") await pageConfigs();
    else if (page === "compare") await pageCompare(params);
    else await pageJobs();
  } catch (e) {
    main.replaceChildren(h("p", {class: "error"}, e.message));
  }
}
window.addEventListener("hashchange", route);
route();
