// The playground: a prompt to 2-4 hidden models, answers streamed slot by slot (each timed on its own), a blind
// judgement, then the models revealed.
"use strict";

const form = document.getElementById("play-form");
const slotsBox = document.getElementById("slots");
const judgeBox = document.getElementById("judge");
const reveal = document.getElementById("reveal");
const message = document.getElementById("play-message");
let play = null;
const answers = {};

async function loadModels() {
  const box = document.getElementById("model-choices");
  try {
    const list = await api("/v1/models");
    box.innerHTML = "<legend>Models (2 to 4)</legend>" + list.data.map((m) =>
      `<label class="inline"><input type="checkbox" name="model" value="${esc(m.id)}"> ${esc(m.id)}</label>`).join(" ");
  } catch (err) {
    box.innerHTML = `<legend>Models</legend><span class="error">${esc(err.message)}</span>`;
  }
}

async function streamSlot(slot, maxTokens) {
  const box = slotsBox.querySelector(`[data-slot="${slot}"]`);
  const text = box.querySelector(".text"), timing = box.querySelector(".latency");
  answers[slot] = "";
  const started = performance.now();
  let first = null;
  const response = await fetch(`/api/playground/${encodeURIComponent(play.id)}/slots/${slot}/stream`, {
    method: "POST", credentials: "same-origin",
    headers: { "X-CSRF-Token": csrf(), "Content-Type": "application/json" },
    body: JSON.stringify({ max_tokens: maxTokens }),
  });
  if (!response.ok) {
    const data = await response.json().catch(() => ({}));
    throw new Error(data.error ? data.error.message : `${response.status}`);
  }
  const reader = response.body.getReader(), decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const line = buffer.slice(0, cut).replace(/^data: /, "");
      buffer = buffer.slice(cut + 2);
      if (line === "[DONE]") continue;
      const chunk = JSON.parse(line);
      if (chunk.error) throw new Error(chunk.error.message);
      const piece = (chunk.choices[0] && chunk.choices[0].delta.content) || "";
      if (piece && first === null) first = performance.now() - started;
      answers[slot] += piece;
      text.textContent = answers[slot];
    }
  }
  const total = performance.now() - started;
  timing.textContent = `${first === null ? "–" : Math.round(first)} ms to the first token · ${Math.round(total)} ms in all`;
  box.dataset.done = "true";
}

function judgeButtons(slots) {
  judgeBox.innerHTML = slots.map((s, i) => `<button type="button" data-winner="${s}"><kbd>${i + 1}</kbd> ${s} is better</button>`).join("") +
    `<button type="button" data-winner="tie"><kbd>${slots.length + 1}</kbd> tie</button>`;
  judgeBox.hidden = false;
  judgeBox.querySelectorAll("button").forEach((b) => b.addEventListener("click", () => judge(b.dataset.winner)));
}

async function judge(winner) {
  if (!play || judgeBox.hidden) return;
  try {
    const found = await api(`/api/playground/${encodeURIComponent(play.id)}/judgement`, { method: "POST", body: { winner, answers } });
    judgeBox.hidden = true;
    reveal.innerHTML = Object.entries(found.models).map(([s, m]) => `<strong>${esc(s)}</strong>: ${esc(m)}`).join(" · ") +
      ` <span class="muted">(your judgement: ${esc(winner)}; kept in the playground arena)</span>`;
    for (const [s, m] of Object.entries(found.models)) {
      slotsBox.querySelector(`[data-slot="${s}"] .model`).textContent = m;
    }
  } catch (err) {
    message.textContent = err.message;
  }
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  message.textContent = "";
  reveal.textContent = "";
  judgeBox.hidden = true;
  const data = new FormData(form);
  const typed = String(data.get("more_models") || "").split("\n").map((s) => s.trim()).filter(Boolean);
  const body = { models: [...data.getAll("model").map(String), ...typed] };
  const prompt = String(data.get("prompt") || "").trim(), source = String(data.get("data") || "").trim();
  if (source) { body.data = source; body.row = Number(data.get("row") || 0); }
  else { body.prompt = prompt; const system = String(data.get("system") || "").trim(); if (system) body.system = system; }
  try {
    play = await api("/api/playground", { method: "POST", body });
  } catch (err) {
    message.textContent = err.message;
    return;
  }
  slotsBox.innerHTML = play.slots.map((s, i) => `<div class="option" data-slot="${s}" data-testid="slot-${s}">` +
    `<h2>${s} <kbd>${i + 1}</kbd> <small class="model muted"></small> <small class="latency muted"></small></h2><div class="text"></div></div>`).join("");
  try {
    for (const slot of play.slots) await streamSlot(slot, Number(data.get("max_tokens") || 256));  // one at a time: each latency its own
  } catch (err) {
    message.textContent = err.message;
    return;
  }
  judgeButtons(play.slots);
});

document.addEventListener("keydown", (e) => {
  if (judgeBox.hidden || ["INPUT", "TEXTAREA"].includes(document.activeElement.tagName)) return;
  const buttons = [...judgeBox.querySelectorAll("button")];
  const n = Number(e.key);
  if (n >= 1 && n <= buttons.length) { e.preventDefault(); buttons[n - 1].click(); }
});

loadModels();
