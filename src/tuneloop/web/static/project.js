// The project page: counters, people, label distribution and timeline, agreement, models, rounds.
"use strict";

const el = document.getElementById("project");
const name = el.dataset.project;

function agreementHtml(a) {
  const alpha = `<p>Krippendorff's alpha: <b data-testid="alpha">${fmt(a.alpha.value)}</b> <span class="muted">on ${a.alpha.records} records, ${a.annotators} annotators</span></p>`;
  const pairs = a.kappa_pairs.map((p) => `<li>Cohen's kappa ${esc(p.people.join(" / "))}: <b>${fmt(p.value)}</b> <span class="muted">on ${p.records} records</span></li>`).join("");
  const per = Object.entries(a.alpha_per_label).map(([l, v]) => `<tr><td>${esc(l)}</td><td>${fmt(v.value)}</td><td>${v.records}</td></tr>`).join("");
  const spans = a.spans ? `<p data-testid="span-agreement">Spans: exact F1 <b>${fmt(a.spans.exact_f1)}</b>, partial F1 <b>${fmt(a.spans.partial_f1)}</b>, ` +
    `Krippendorff's alpha on words <b>${fmt(a.spans.token_alpha)}</b> <span class="muted">on ${a.spans.records} records, ${a.spans.tokens} words` +
    ` (alpha and kappa above compare whole answers)</span></p>` +
    `<ul>${a.spans.pairs.map((p) => `<li>${esc(p.people.join(" / "))}: exact F1 ${fmt(p.exact_f1)}, partial F1 ${fmt(p.partial_f1)}</li>`).join("")}</ul>` : "";
  return spans + alpha + (pairs ? `<ul>${pairs}</ul>` : "") + (per ? `<table class="grid"><thead><tr><th>label</th><th>alpha</th><th>records</th></tr></thead><tbody>${per}</tbody></table>` : "");
}

function modelsHtml(models) {
  if (!models.length) return '<p class="muted">No model has predicted on records people labelled yet: re-predict with a model below.</p>';
  return models.map((m) => {
    if (m.entity) {  // spans: entity-level scores (seqeval's matching), no confusion matrix
      const perLabel = Object.entries(m.per_label).map(([l, v]) => `<tr><td>${esc(l)}</td><td>${fmt(v.precision)}</td><td>${fmt(v.recall)}</td><td>${fmt(v.f1)}</td><td>${v.support}</td></tr>`).join("");
      return `<h3>${esc(m.model)}</h3><p>entity F1 <b>${fmt(m.entity.f1)}</b>, precision ${fmt(m.entity.precision)}, recall ${fmt(m.entity.recall)}; ` +
        `records exactly right ${fmt(m.accuracy)} <span class="muted">on ${m.records} records, ${m.entity.entities} entities</span></p>` +
        `<table class="grid" data-testid="per-label"><thead><tr><th>label</th><th>precision</th><th>recall</th><th>F1</th><th>entities</th></tr></thead><tbody>${perLabel}</tbody></table>`;
    }
    const head = m.labels.map((l) => `<th>${esc(l)}</th>`).join("");
    const rows = m.confusion.map((row, i) => `<tr><th>${esc(m.labels[i])}</th>${row.slice(0, m.labels.length).map((n) => `<td>${n || ""}</td>`).join("")}</tr>`).join("");
    const perLabel = Object.entries(m.per_label).map(([l, v]) => `<tr><td>${esc(l)}</td><td>${fmt(v.precision)}</td><td>${fmt(v.recall)}</td><td>${fmt(v.f1)}</td><td>${v.support}</td></tr>`).join("");
    return `<h3>${esc(m.model)}</h3><p>accuracy <b>${fmt(m.accuracy)}</b>, macro-F1 ${fmt(m.macro_f1)}, kappa ${fmt(m.kappa.value)} <span class="muted">on ${m.records} records</span></p>` +
      `<table class="grid"><thead><tr><th>people \\ model</th>${head}</tr></thead><tbody>${rows}</tbody></table>` +
      `<table class="grid" data-testid="per-label"><thead><tr><th>label</th><th>precision</th><th>recall</th><th>F1</th><th>records</th></tr></thead><tbody>${perLabel}</tbody></table>`;
  }).join("");
}

function throughputHtml(t) {
  if (!t.people.length) return '<p class="muted">No answers yet.</p>';
  const agreement = t.time_to_agreement === null ? "–" : `${Math.round(t.time_to_agreement)} s`;
  return `<p>Median time to agreement: <b data-testid="time-to-agreement">${agreement}</b> <span class="muted">(first answer to the one that settled the record, over ${t.settled_by_several} records)</span></p>` +
    `<table class="grid"><thead><tr><th>person</th><th>records</th><th>seconds per record</th><th>records per hour</th></tr></thead><tbody>` +
    t.people.map((p) => `<tr data-person="${esc(p.user)}"><td>${esc(p.user)}</td><td>${p.records}</td><td>${p.seconds_per_record ?? "–"}</td><td>${p.records_per_hour ?? "–"}</td></tr>`).join("") +
    "</tbody></table>";
}

function goldHtml(g) {
  if (!g.questions) return '<p class="muted">No gold questions: keep some labelled records as gold when creating the project, or mark settled records as gold in the table.</p>';
  const head = `<p>${g.questions} gold questions, about ${Math.round(g.rate * 100)}% of each person's records; flagged below ${fmt(g.threshold, 2)} (after ${g.min_answers} answers).</p>`;
  if (!g.people.length) return head + '<p class="muted">Nobody has met one yet.</p>';
  return head + `<table class="grid"><thead><tr><th>person</th><th>answered</th><th>right</th><th>accuracy</th><th></th></tr></thead><tbody>` +
    g.people.map((p) => `<tr data-person="${esc(p.user)}"><td>${esc(p.user)}</td><td>${p.answered}</td><td>${p.correct}</td><td>${fmt(p.accuracy, 2)}</td>` +
      `<td>${p.flagged ? '<span class="tag disagree" data-testid="gold-flag">below the threshold</span>' : ""}</td></tr>`).join("") + "</tbody></table>";
}

async function load() {
  const p = await api(`/api/projects/${encodeURIComponent(name)}`);
  const stat = (label, value, id) => `<div class="stat"><b data-testid="${id}">${value}</b>${label}</div>`;
  document.getElementById("counters").innerHTML = stat("records", p.records, "count-records") + stat("open", p.open, "count-open") +
    stat("partly done (open)", p.partly, "count-partly") + stat("done", p.annotated + p.accepted, "count-done") +
    stat("annotated", p.annotated, "count-annotated") + stat("accepted", p.accepted, "count-accepted") +
    stat("held out", p.holdout, "count-holdout") + stat("disagreements", (p.disagreements.people_or_model || 0), "count-disagreements");
  const statuses = ["submitted", "skipped", "accepted", "rejected", "withdrawn"];
  document.getElementById("people").innerHTML = `<thead><tr><th>person</th>${statuses.map((s) => `<th>${s}</th>`).join("")}</tr></thead><tbody>` +
    Object.entries(p.people).map(([who, c]) => `<tr data-person="${esc(who)}"><td>${esc(who)}</td>${statuses.map((s) => `<td>${c[s] || 0}</td>`).join("")}</tr>`).join("") + "</tbody>";
  // one colour and one order per label, in every chart and on every load: the project's label set, else sorted
  const order = p.labels.length ? p.labels : Object.keys(p.label_distribution).sort();
  const rank = (label) => (order.indexOf(label) >= 0 ? order.indexOf(label) : order.length);
  const colorOf = (label) => PALETTE[rank(label) % PALETTE.length];
  const byLabel = (a, b) => rank(a) - rank(b) || String(a).localeCompare(String(b));
  document.getElementById("distribution").innerHTML = barChart(
    Object.entries(p.label_distribution).sort((a, b) => byLabel(a[0], b[0])), { colorOf });
  const keys = [...new Set(p.timeline.flatMap((d) => Object.keys(d).filter((k) => k !== "at")))].sort(byLabel);
  const series = keys.map((k) => ({ name: k, color: colorOf(k), points: p.timeline.map((d) => [d.at, d[k] || 0]) }));
  const when = (t) => new Date(t * 1000).toLocaleString([], { dateStyle: "short", timeStyle: "short" });
  document.getElementById("timeline").innerHTML = p.timeline.length
    ? lineChart(series, { yLabel: "labels so far", xFormat: when }) : '<p class="muted">No labels yet.</p>';
  document.getElementById("agreement").innerHTML = agreementHtml(p.agreement);
  document.getElementById("models").innerHTML = modelsHtml(p.models);
  document.getElementById("gold-card").hidden = !p.gold_questions;
  if (p.gold_questions) document.getElementById("gold").innerHTML = goldHtml(p.gold_questions);
  document.getElementById("throughput").innerHTML = throughputHtml(p.throughput);
  const short = (m) => esc(String(m).split("/").slice(-1)[0]);
  const metric = p.rounds.length ? p.rounds[0].metric : "accuracy";
  document.getElementById("rounds").innerHTML = p.rounds.length ? `<table class="grid" data-testid="rounds"><thead><tr><th>round</th><th>labels used</th><th>model</th><th>records scored</th><th>${esc(metric)}</th><th>macro-F1</th><th>time</th><th>queue</th></tr></thead><tbody>` +
    p.rounds.map((r) => `<tr data-round="${r.round}"><td>${r.round}</td><td>${r.labels_used ?? '<span class="muted" title="trained outside this project">–</span>'}</td><td>${short(r.model)}</td><td>${r.predicted ?? "–"}</td><td>${fmt(r.accuracy)}</td><td>${fmt(r.macro_f1)}</td><td>${r.seconds ? Math.round(r.seconds) + " s" : "–"}</td>` +
      `<td>${r.in_use ? "pre-fills it" : r.below ? `below ${short(r.below.model)}` : ""}</td></tr>`).join("") + "</tbody></table>"
    : '<p class="muted">No rounds yet: train on the reviewed records, then re-predict with the new model.</p>';
  const last = p.rounds[p.rounds.length - 1], warning = document.getElementById("round-warning");
  warning.hidden = !(last && last.below);
  if (last && last.below) {
    warning.innerHTML = `Round ${last.round}'s model <b>${short(last.model)}</b> scores ${fmt(last.accuracy)} on the held-out records, ` +
      `below ${fmt(last.below.accuracy)} of <b>${short(last.below.model)}</b>, which keeps pre-filling the queue.` +
      (el.dataset.role === "admin" ? ` <button type="button" data-prefill="${esc(last.model)}">Use ${short(last.model)} anyway</button>` : "");
  }
  const settings = document.getElementById("settings");
  if (settings && document.activeElement.form !== settings) {
    settings.prefill_model.innerHTML = (p.prefill_model ? "" : '<option value="">none yet</option>') +
      p.prediction_models.map((m) => `<option value="${esc(m)}"${m === p.prefill_model ? " selected" : ""}>${short(m)}</option>`).join("");
    settings.hide_predictions.checked = p.hide_predictions;
  }
  document.getElementById("rounds-chart").innerHTML = p.rounds.length > 1
    ? lineChart([{ name: metric, points: p.rounds.map((r) => [r.round, r.accuracy || 0]) }], { yLabel: `${metric} on held-out records`, xLabel: "round" }) : "";
  if (document.getElementById("jobs")) document.getElementById("jobs").innerHTML = jobsHtml(p.jobs);
  document.getElementById("disagreement-link").textContent = `Disagreement queue (${p.disagreements.people_or_model || 0})`;
  const adjudicate = document.getElementById("adjudication-link");
  if (adjudicate) adjudicate.textContent = `Adjudicate (${p.adjudication.to_adjudicate}, of which ${p.adjudication.ties} ties)`;
  const as = document.querySelector("#export select[name=as]");
  if (as && !as.options.length) {
    as.innerHTML = p.exports.map((k) => `<option>${esc(k)}</option>`).join("");
    exportSummary();
  }
}

// What the export holds with the chosen format, split and policy, and what it leaves out and why. Only the
// answer to the latest choice is shown: an earlier request that answers late is dropped.
let summaryRequest = 0;
async function exportSummary() {
  const form = document.getElementById("export");
  if (!form) return;
  const params = new URLSearchParams(new FormData(form));
  document.getElementById("export-link").href = `/api/projects/${encodeURIComponent(name)}/export?${params}`;
  const mine = ++summaryRequest;
  try {
    const s = await api(`/api/projects/${encodeURIComponent(name)}/export/summary?${params}`);
    if (mine !== summaryRequest) return;
    const left = Object.entries(s.left_out).map(([why, n]) => `${n} ${esc(why)}`).join(", ");
    document.getElementById("export-summary").innerHTML = `<b>${s.examples}</b> examples` + (left ? `; left out: ${left}` : "; nothing left out");
  } catch (e) { if (mine === summaryRequest) document.getElementById("export-summary").textContent = e.message; }
}
if (document.getElementById("export")) document.getElementById("export").addEventListener("change", exportSummary);

function jobsHtml(jobs) {
  if (!jobs.length) return "";
  return `<h3>Training jobs of this project</h3><table class="grid"><thead><tr><th>job</th><th>status</th><th>examples</th><th>model</th><th></th></tr></thead><tbody>` +
    jobs.map((j) => `<tr><td>${esc(j.id)}</td><td>${esc(j.status)}${j.error ? ` <span class="error">${esc(j.error.message)}</span>` : ""}</td><td>${j.examples}</td><td>${esc(j.fine_tuned_model || j.model)}</td>` +
      `<td>${j.fine_tuned_model ? `<button type="button" data-use="${esc(j.fine_tuned_model)}">Use to re-predict</button>` : ""}</td></tr>`).join("") + "</tbody></table>";
}

async function changeSettings(body) {
  await post(`/api/projects/${encodeURIComponent(name)}`, body, "PATCH");
  load();
}
if (document.getElementById("settings")) {
  const settings = document.getElementById("settings");
  settings.prefill_model.addEventListener("change", () => { if (settings.prefill_model.value) changeSettings({ prefill_model: settings.prefill_model.value }); });
  settings.hide_predictions.addEventListener("change", () => changeSettings({ hide_predictions: settings.hide_predictions.checked }));
}
document.getElementById("round-warning").addEventListener("click", (e) => {
  if (e.target.dataset.prefill) changeSettings({ prefill_model: e.target.dataset.prefill });
});

// Admins: settings, and who works on the project.
const settingsForm = document.getElementById("project-settings");
if (settingsForm) {
  settingsForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    const form = new FormData(settingsForm), body = { guidelines: form.get("guidelines"), overlap: Number(form.get("overlap")),
      gold_rate: Number(form.get("gold_rate")), gold_threshold: Number(form.get("gold_threshold")) };
    if (form.has("labels")) body.labels = form.get("labels").split(",").map((l) => l.trim()).filter(Boolean);
    const message = document.getElementById("settings-message");
    message.textContent = "Saving…";
    try {
      await api(`/api/projects/${encodeURIComponent(name)}`, { method: "PATCH", body });
      message.textContent = "Saved.";
      load();
    } catch (err) { message.textContent = err.message; }
  });
  document.getElementById("add-member").addEventListener("submit", async (e) => {
    e.preventDefault();
    const username = new FormData(e.target).get("username");
    try { await api(`/api/projects/${encodeURIComponent(name)}/members`, { method: "POST", body: { username } }); }
    catch (err) { document.getElementById("settings-message").textContent = err.message; }
    loadMembers();
  });
  document.getElementById("members").addEventListener("click", async (e) => {
    if (!e.target.dataset.remove) return;
    await api(`/api/projects/${encodeURIComponent(name)}/members/${encodeURIComponent(e.target.dataset.remove)}`, { method: "DELETE" });
    loadMembers();
  });
  loadMembers();
}

async function loadMembers() {
  const [p, users] = await Promise.all([api(`/api/projects/${encodeURIComponent(name)}`), api("/api/users")]);
  document.getElementById("members").innerHTML = p.members.map((m) =>
    `<li data-member="${esc(m)}">${esc(m)} <button type="button" class="link" data-remove="${esc(m)}">remove</button></li>`).join("") || '<li class="muted">nobody yet</li>';
  const others = users.data.filter((u) => !p.members.includes(u.username) && !u.disabled && u.role !== "admin");
  document.querySelector("#add-member select").innerHTML = others.map((u) => `<option value="${esc(u.username)}">${esc(u.username)} (${esc(u.role)})</option>`).join("");
}

let running = false;
async function loadTasks() {
  const box = document.getElementById("tasks");
  if (!box) return;
  const { data } = await api(`/api/projects/${encodeURIComponent(name)}/tasks`);
  const wasRunning = running;
  running = data.some((t) => !t.finished);  // queued or running, as the server says
  box.innerHTML = data.slice(0, 3).map((t) => `<p data-status="${t.status}">${esc(t.kind)} ${esc(t.status)}: ` +
    `<progress max="${t.total || 1}" value="${t.done}"></progress> ${t.done}${t.total ? ` / ${t.total}` : ""} records` +
    (t.result ? ` · scored ${t.result.predicted ?? "?"} records · round ${t.result.round}, accuracy ${fmt(t.result.accuracy)}` : "") + (t.error ? ` <span class="error">${esc(t.error)}</span>` : "") + "</p>").join("");
  if (wasRunning && !running) load();
}

async function post(path, body, method = "POST") {
  const message = document.getElementById("loop-message");
  try { return await api(path, { method, body }); } catch (e) { if (message) message.textContent = e.message; return null; }
}

const trainForm = document.getElementById("train");
if (trainForm) {
  trainForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    const form = new FormData(trainForm);
    const body = { model: form.get("model") };
    if (form.get("epochs")) body.epochs = Number(form.get("epochs"));
    if (form.get("classifier")) body.classifier = form.get("classifier");
    if (form.get("method")) body.method = form.get("method");
    const job = await post(`/api/projects/${encodeURIComponent(name)}/train`, body);
    if (job) { document.getElementById("loop-message").textContent = `Created ${job.id} on ${job.examples} reviewed examples; a worker trains it.`; load(); }
  });
  const repredictForm = document.getElementById("repredict");
  repredictForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    const task = await post(`/api/projects/${encodeURIComponent(name)}/repredict`, { model: new FormData(repredictForm).get("model") });
    if (task) { document.getElementById("loop-message").textContent = "Re-predicting…"; loadTasks(); }
  });
  document.getElementById("jobs").addEventListener("click", (e) => {
    if (e.target.dataset.use) { repredictForm.model.value = e.target.dataset.use; }
  });
}

load();
loadTasks();
setInterval(load, 10000);
setInterval(() => { if (running) loadTasks(); }, 1500);
