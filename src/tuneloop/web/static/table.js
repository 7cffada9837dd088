// The table view: filters, sort, search, pages; bulk-accept the model's label; reviewers accept or reject.
"use strict";

const view = document.getElementById("table-view");
const project = view.dataset.project, role = view.dataset.role;
const base = `/api/projects/${encodeURIComponent(project)}`;
const form = document.getElementById("filters");
let offset = 0, limit = 50, total = 0;

function query() {
  const params = new URLSearchParams();
  for (const [k, v] of new FormData(form)) if (v !== "") params.set(k, v);
  params.set("offset", offset);
  params.set("limit", limit);
  return params;
}

// Who gave an answer: a person; a model whose label a person accepted; or a person's adjudication.
function byWhom(a) {
  if (a.source === "model") return `model ${a.model || "?"} (accepted by ${a.user})`;
  if (a.source === "adjudication") return `${a.user} (adjudicated)`;
  return a.user;
}

function workHtml(row) {
  return row.work.map((a) => {
    const buttons = role !== "annotator" && a.status === "submitted" && a.source === "person"
      ? ` <button class="link" data-accept="${a.id}">accept</button> <button class="link" data-reject="${a.id}">reject</button>` : "";
    return `<span class="tag ${a.status} source-${a.source}" data-source="${a.source}" title="${esc(a.comment || "")}">${esc(byWhom(a))}: ${esc(a.label ?? (a.edited ? "edited" : "kept draft"))} · ${a.status}</span>${buttons}`;
  }).join("<br>");
}

const SOURCES = { model: "model's label", tie: "tie", majority: "majority", adjudicated: "adjudicated" };

async function load() {
  const params = query();
  // the view lives in the address: a reload, a bookmark or a link shows the same filters, sort and page
  const shown = new URLSearchParams(params);
  if (shown.get("offset") === "0") shown.delete("offset");
  shown.delete("limit");
  history.replaceState(null, "", `${location.pathname}${shown.toString() ? `?${shown}` : ""}`);
  const data = await api(`${base}/records?${params}`);
  total = data.total;
  document.getElementById("total").textContent = `${total} records`;
  document.getElementById("page").textContent = total ? `${offset + 1}–${Math.min(offset + limit, total)}` : "";
  document.getElementById("prev").disabled = offset === 0;
  document.getElementById("next").disabled = offset + limit >= total;
  document.querySelector("#records tbody").innerHTML = data.data.map((r) => `<tr data-id="${r.id}">
    <td><input type="checkbox" class="pick" value="${r.id}"></td>
    <td>${role === "annotator" ? r.id : `<a href="/projects/${encodeURIComponent(project)}/records/${r.id}">${r.id}</a>`}</td>
    <td>${esc(r.text)}</td>
    <td>${r.status}${r.split === "holdout" ? " · held out" : r.split === "gold" ? " · gold" : ""}</td>
    <td>${esc(r.answer_text ?? r.human_label ?? (r.human_labels || []).join(", "))}${SOURCES[r.answer_source] ? ` <span class="tag" data-testid="answer-source">${SOURCES[r.answer_source]}</span>` : ""}${r.disagreement && role !== "annotator" ? ' <span class="tag disagree">disagree</span>' : ""}</td>
    <td>${esc(r.prediction_text ?? r.pred_label ?? "")}</td>
    <td>${fmt(r.confidence, 2)}</td>
    <td>${workHtml(r)}</td></tr>`).join("");
}

// filters, sort and page come from the address (the project page links to ?disagreement=true)
for (const [k, v] of new URLSearchParams(location.search)) {
  const field = form.elements.namedItem(k);
  if (k === "offset") offset = Math.max(0, Number(v) || 0);
  else if (field && field.type === "checkbox") field.checked = v === "true";
  else if (field) field.value = v;
}

form.addEventListener("submit", (e) => { e.preventDefault(); offset = 0; load(); });
document.getElementById("prev").addEventListener("click", () => { offset = Math.max(0, offset - limit); load(); });
document.getElementById("next").addEventListener("click", () => { offset += limit; load(); });
document.getElementById("select-all").addEventListener("change", (e) => {
  document.querySelectorAll(".pick").forEach((box) => { box.checked = e.target.checked; });
});
const bulk = document.getElementById("bulk-accept");
if (bulk) bulk.addEventListener("click", async () => {
  const ids = [...document.querySelectorAll(".pick:checked")].map((box) => Number(box.value));
  if (!ids.length) return alert("Select rows first.");
  try {
    const data = await api(`${base}/bulk-accept`, { method: "POST", body: { record_ids: ids } });
    const left = Object.entries(data.left).map(([why, n]) => `${n} ${why}`).join(", ");
    document.getElementById("bulk-message").textContent =
      `Accepted the model's label on ${data.accepted} record(s)${left ? `; left as they were: ${left}` : ""}.`;
  } catch (err) { document.getElementById("bulk-message").textContent = err.message; }
  load();
});
const markGold = document.getElementById("mark-gold");
if (markGold) markGold.addEventListener("click", async () => {
  const ids = [...document.querySelectorAll(".pick:checked")].map((box) => Number(box.value));
  if (!ids.length) return alert("Select rows first.");
  try {
    const data = await api(`${base}/gold`, { method: "POST", body: { record_ids: ids } });
    const left = Object.entries(data.left).map(([why, n]) => `${n} ${why}`).join(", ");
    document.getElementById("bulk-message").textContent =
      `${data.gold} record(s) are gold questions now (about ${Math.round(data.rate * 100)}% of each person's records)${left ? `; left as they were: ${left}` : ""}.`;
  } catch (err) { document.getElementById("bulk-message").textContent = err.message; }
  load();
});
document.querySelector("#records tbody").addEventListener("click", async (e) => {
  const accept = e.target.dataset.accept, reject = e.target.dataset.reject;
  if (!accept && !reject) return;
  const comment = reject ? prompt("Why is it rejected? (the annotator sees this)") : "";
  if (reject && !comment) return;
  try {
    await api(`${base}/annotations/${accept || reject}/review`, { method: "POST", body: { accept: Boolean(accept), comment } });
  } catch (err) { alert(err.message); }
  load();
});
load();

