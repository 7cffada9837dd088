// Shared helpers for the pages: the API with the CSRF token, escaping, and small SVG charts.
"use strict";

const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

async function api(path, options = {}) {
  const init = { method: options.method || "GET", headers: { "X-CSRF-Token": csrf() }, credentials: "same-origin" };
  if (options.body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(options.body);
  }
  const response = await fetch(path, init);
  const type = response.headers.get("content-type") || "";
  const data = type.includes("json") && !type.includes("jsonl") ? await response.json() : await response.text();
  if (!response.ok) {
    const message = data && data.error ? data.error.message : `${response.status}`;
    throw Object.assign(new Error(message), { status: response.status });
  }
  return data;
}

function esc(text) {
  return String(text ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

const PALETTE = ["#2f5bea", "#e4572e", "#17a398", "#f3a712", "#8e44ad", "#6b7280", "#c2185b", "#2e7d32", "#0288d1"];

// Line chart: series = [{name, points: [[x, y], ...], color?}]. Returns an SVG string.
function lineChart(series, { width = 900, height = 240, yLabel = "", xLabel = "", xFormat = (x) => x, fromZero = true } = {}) {
  const all = series.flatMap((s) => s.points);
  if (!all.length) return '<p class="muted">No data yet.</p>';
  const pad = { l: 48, r: 12, t: 24, b: 32 };
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs) || 1;
  const low = Math.min(...ys), high = Math.max(...ys), margin = (high - low) * 0.05 || Math.abs(high) * 0.05 || 1;
  const y0 = fromZero ? Math.min(0, low) : low - margin, y1 = fromZero ? high || 1 : high + margin;
  const sx = (x) => pad.l + ((x - x0) / ((x1 - x0) || 1)) * (width - pad.l - pad.r);
  const sy = (y) => height - pad.b - ((y - y0) / ((y1 - y0) || 1)) * (height - pad.t - pad.b);
  let svg = `<svg viewBox="0 0 ${width} ${height}" role="img">`;
  for (let i = 0; i <= 4; i++) {
    const y = y0 + ((y1 - y0) * i) / 4;
    svg += `<line x1="${pad.l}" x2="${width - pad.r}" y1="${sy(y)}" y2="${sy(y)}" stroke="#eee"/><text x="${pad.l - 6}" y="${sy(y) + 4}" text-anchor="end">${+y.toFixed(3)}</text>`;
  }
  svg += `<text x="${pad.l}" y="${height - 6}">${esc(xFormat(x0))}</text><text x="${width - pad.r}" y="${height - 6}" text-anchor="end">${esc(xFormat(x1))} ${esc(xLabel)}</text>`;
  series.forEach((s, i) => {
    const color = s.color || PALETTE[i % PALETTE.length];
    const d = s.points.map((p, j) => `${j ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join("");
    svg += `<path d="${d}" fill="none" stroke="${color}" stroke-width="2"/>`;
    if (s.points.length < 30) s.points.forEach((p) => { svg += `<circle cx="${sx(p[0])}" cy="${sy(p[1])}" r="3" fill="${color}"/>`; });
    svg += `<text x="${width - pad.r - (series.length - i) * 110}" y="12" style="fill:${color}" data-series="${esc(s.name)}">■ ${esc(s.name)}</text>`;
  });
  return svg + `<text x="4" y="12">${esc(yLabel)}</text></svg>`;
}

// Horizontal bars: items = [[label, value], ...]; colorOf(label) keeps a label's colour the same in every chart.
function barChart(items, { width = 520, colorOf = null } = {}) {
  if (!items.length) return '<p class="muted">No labels yet.</p>';
  const row = 24, left = 130, max = Math.max(...items.map((i) => i[1])) || 1;
  let svg = `<svg viewBox="0 0 ${width} ${items.length * row + 8}" role="img">`;
  items.forEach(([label, value], i) => {
    const w = ((width - left - 50) * value) / max;
    svg += `<text x="${left - 8}" y="${i * row + 17}" text-anchor="end">${esc(label)}</text>` +
      `<rect x="${left}" y="${i * row + 4}" width="${w}" height="${row - 8}" rx="3" fill="${colorOf ? colorOf(label) : PALETTE[i % PALETTE.length]}" data-bar="${esc(label)}"/>` +
      `<text x="${left + w + 6}" y="${i * row + 17}">${value}</text>`;
  });
  return svg + "</svg>";
}

const fmt = (value, digits = 3) => (value === null || value === undefined ? "–" : Number(value).toFixed(digits));
