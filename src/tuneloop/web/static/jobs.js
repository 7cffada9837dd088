// Jobs of every kind with their status and progress, refreshed while any of them is not finished.
"use strict";

const LIMIT = 100;

function progressHtml(job) {
  const p = job.progress;
  // no total yet: a moving bar while the job goes on, none once it stopped
  const bar = p.total ? `<progress max="${Number(p.total)}" value="${Number(p.done)}"></progress>` : (job.finished ? "" : "<progress></progress>");
  return `${bar} <span data-testid="progress">${esc(p.done)}/${p.total === null ? "?" : esc(p.total)} ${esc(p.unit)}</span>`;
}

function linksHtml(links) {
  const out = [];
  if (links.run) out.push(`<a data-link="run" href="/runs/${encodeURIComponent(links.run)}">run ${esc(links.run)}</a>`);
  if (links.project) out.push(`<a data-link="project" href="/projects/${encodeURIComponent(links.project)}">project ${esc(links.project)}</a>`);
  if (links.comparison) out.push(`<a data-link="comparison" href="/comparisons/${encodeURIComponent(links.comparison)}">comparison ${esc(links.comparison)}</a>`);
  if (links.search) out.push(`<a data-link="search" href="/searches/${encodeURIComponent(links.search)}">search ${esc(links.search)}</a>`);
  if (links.eval) out.push(`<span data-link="eval">eval ${esc(links.eval)}</span>`);
  if (links.model) out.push(`<a data-link="model" href="/v1/models/${encodeURIComponent(links.model)}">model ${esc(links.model)}</a>`);
  return out.join("<br>");
}

function resultHtml(result) {
  if (!result) return "";
  const parts = Object.entries(result).map(([k, v]) => `${k} ${typeof v === "number" && !Number.isInteger(v) ? fmt(v) : v}`);
  return `<br><small class="muted">${esc(parts.join(" · "))}</small>`;
}

function rowHtml(job) {
  const error = job.error ? `<br><span class="error">${esc(job.error.message || JSON.stringify(job.error))}</span>` : "";
  return `<tr data-id="${esc(job.id)}" data-kind="${esc(job.kind)}" data-status="${esc(job.status)}">` +
    `<td><code>${esc(job.id)}</code></td><td>${esc(job.kind)}</td><td>${esc(job.status)}${error}${resultHtml(job.result)}</td>` +
    `<td>${progressHtml(job)}</td><td>${esc(job.model)}</td><td>${linksHtml(job.links)}</td>` +
    `<td>${esc(new Date(job.created_at * 1000).toLocaleString())}</td></tr>`;
}

async function load() {
  const message = document.getElementById("jobs-message");
  let page;
  try {
    page = await api(`/api/jobs?limit=${LIMIT}`);
  } catch (err) {
    message.textContent = err.message;
    if (!err.status || err.status >= 500) setTimeout(load, 2000);  // the server may come back; a 403 will not change
    return;
  }
  message.textContent = "";
  document.querySelector("#jobs tbody").innerHTML = page.data.map(rowHtml).join("");
  document.getElementById("jobs-empty").hidden = page.data.length > 0;
  const live = page.data.some((job) => !job.finished);  // the server says what is finished; no status mapping here
  document.getElementById("jobs-state").textContent = [live ? "live" : "", page.has_more ? `the newest ${LIMIT}` : ""].filter(Boolean).join(" · ");
  if (live) setTimeout(load, 2000);
}

load();
