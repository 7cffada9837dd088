// The queue: one record at a time, keyboard first. 1-9 pick, Enter submits, S skips, Ctrl+Z undoes,
// arrows move the selection. Response correction edits the draft and shows the diff as you type. Spans: arrows
// move over the words, Shift+arrows stretch the selection (or drag with the mouse), 1-9 label it.
"use strict";

const root = document.getElementById("queue");
const project = root.dataset.project, order = root.dataset.order;
const adjudicating = root.dataset.mode === "adjudicate";  // reviewers settle records whose people disagree
let after = 0;  // adjudication: records up to this id were skipped
const labels = JSON.parse(root.dataset.labels || "[]"), multi = root.dataset.multi === "true";
const base = `/api/projects/${encodeURIComponent(project)}`;
let record = null, selected = new Set(), focus = 0;
const UNDO = ["Ctrl+Z", "undo the last submit"];

// One widget per way of answering; a task type names the one it uses (TaskType.widget), so a new task type
// that answers like an existing one needs nothing here. Each widget: the keys it adds to the legend, the
// choices 1-9 pick among, how it shows a record (given the line about it), and the answer it sends.
const WIDGETS = {
  labels: {
    keys: () => [["1–9", multi ? "toggle a label" : "pick a label"], ["← →", "move"], ...(multi ? [["Space", "toggle the highlighted label"]] : []), ["Enter", "submit"], ["S", "skip"], UNDO],
    choices: () => labels,
    toggles: multi,
    render(box, answer, meta, prediction, previous) {
      box.innerHTML = `<div class="text" data-testid="record-text">${esc(record.text)}</div>${meta}`;
      const start = previous ? (previous.labels || [previous.label]) : prediction && prediction.label ? [prediction.label] : [];
      start.forEach((l) => selected.add(l));
      focus = Math.max(0, labels.indexOf(start[0]));
      answer.innerHTML = `<div class="labels" role="listbox">${labels.map((l, i) => {
        const p = prediction && prediction.probabilities ? prediction.probabilities[l] : null;
        const key = i < 9 ? `<kbd>${i + 1}</kbd> ` : "";  // keys 1-9 only; the rest by arrows or a click
        return `<button type="button" data-label="${esc(l)}"${i < 9 ? ` data-key="${i + 1}"` : ""}>${key}${esc(l)}${p !== null && p !== undefined ? `<span class="prob">${Math.round(p * 100)}%</span>` : ""}</button>`;
      }).join("")}</div>`;
    },
    value: () => (multi ? { labels: [...selected] } : { label: [...selected][0] }),
  },
  edit: {
    keys: () => [["E", "edit the draft"], ["Esc", "leave the editor"], ["Ctrl+Enter", "submit"], ["Enter", "submit (outside the editor)"], ["S", "skip"], UNDO],
    choices: () => [],
    free: true,
    focusKeys: { e: "editor" },
    render(box, answer, meta, prediction, previous) {
      box.innerHTML = promptHtml(record.prompt) + meta;
      const draft = previous ? previous.text : record.draft;
      answer.innerHTML = `<p class="muted">Draft by <span data-testid="draft-model">${esc(record.draft_model)}</span>; correct it below.</p>` +
        `<textarea class="editor" id="editor" data-testid="editor">${esc(draft)}</textarea><h2>Your changes</h2><div class="diff" id="diff" data-testid="diff"></div>`;
      const editor = document.getElementById("editor");
      const update = () => { document.getElementById("diff").innerHTML = wordDiff(record.draft, editor.value); };
      editor.addEventListener("input", update);
      update();
    },
    value: () => ({ text: document.getElementById("editor").value, draft: record.draft, draft_model: record.draft_model }),
  },
  compare: {
    keys: () => [[record && record.ties ? "1 / 2 / 3" : "1 / 2", record && record.ties ? "prefer A / B, or a tie" : "prefer A / B"], ["← →", "move"], ["R", "rewrite the preferred answer"], ["Enter", "submit"], ["S", "skip"], UNDO],
    choices: () => [...record.options.map((o) => o.key), ...(record.ties ? ["tie"] : [])],
    focusKeys: { r: "editor" },
    render(box, answer, meta, prediction, previous) {
      box.innerHTML = promptHtml(record.prompt) + meta;
      if (previous) selected.add(previous.label);
      answer.innerHTML = `<div class="pair">${record.options.map((o, i) => `<div class="option" data-label="${o.key}" data-testid="option-${"AB"[i]}"><h2>${"AB"[i]} <kbd>${i + 1}</kbd></h2>${esc(o.text)}</div>`).join("")}</div>` +
        (record.ties ? `<div class="labels"><button type="button" data-label="tie" data-testid="option-tie"><kbd>3</kbd> tie: neither is better</button></div>` : "") +
        `<label>Rewrite of the preferred answer (optional) <textarea class="editor" id="editor"></textarea></label>`;
    },
    value: () => ({ preferred: [...selected][0], rewrite: document.getElementById("editor").value || null }),
  },
  spans: {
    keys: () => [["← →", "move over the words"], ["Shift+← →", "stretch the selection (or drag with the mouse)"], ["1–9", "label the selection"], ["X / Delete", "remove the span under the selection"], ["Esc", "select one word again"], ["Enter", "submit (no spans: nothing to mark)"], ["S", "skip"], UNDO],
    choices: () => labels,
    free: true,  // an empty list of spans is an answer: nothing in this text to mark
    hidesLabel: true,  // the model's spans are drawn in the text
    render(box, answer, meta, prediction, previous) {
      const text = record.text, map = codePoints(text);
      // words as on the server (data/spans.py): runs of letters/digits/_, or one other non-space character
      spanState.words = [...text.matchAll(/[\p{L}\p{N}\p{M}_]+|[^\p{L}\p{N}\p{M}_\s]/gu)].map((m) =>
        ({ a: m.index, b: m.index + m[0].length, start: map[m.index], end: map[m.index + m[0].length] }));
      spanState.spans = ((previous ? previous.spans : prediction ? record.draft_spans : []) || []).map((s) => ({ start: s.start, end: s.end, label: s.label }));
      spanState.cursor = spanState.anchor = 0;
      box.innerHTML = `<div class="text spans-text" id="span-text" data-testid="record-text"></div>${meta}`;
      answer.innerHTML = `<div class="labels" role="listbox">${labels.map((l, i) => `<button type="button" data-label="${esc(l)}"${i < 9 ? ` data-key="${i + 1}"` : ""} style="border-left:6px solid ${spanColor(l)}">${i < 9 ? `<kbd>${i + 1}</kbd> ` : ""}${esc(l)}</button>`).join("")}</div>` +
        `<ul class="span-list" data-testid="span-list"></ul>`;
      const el = document.getElementById("span-text");
      // a click selects a word; a drag, the words it covers (the text is redrawn only once the mouse is up)
      let down = null;
      el.addEventListener("mousedown", (e) => { const w = e.target.closest("[data-w]"); down = w ? Number(w.dataset.w) : null; });
      el.addEventListener("mouseup", () => {
        const sel = window.getSelection(), wordOf = (node) => node && (node.nodeType === 1 ? node : node.parentElement).closest("[data-w]");
        const a = wordOf(sel.anchorNode), b = wordOf(sel.focusNode);
        if (a && b && !sel.isCollapsed) { spanState.anchor = Number(a.dataset.w); spanState.cursor = Number(b.dataset.w); }
        else if (down !== null) spanState.anchor = spanState.cursor = down;
        else return;
        sel.removeAllRanges();
        drawSpans();
      });
      drawSpans();
    },
    choose(label) {  // label the selected words: one span, replacing the spans it overlaps
      const [lo, hi] = selectedWords();
      if (lo === null) return;
      const start = spanState.words[lo].start, end = spanState.words[hi].end;
      spanState.spans = spanState.spans.filter((s) => s.end <= start || s.start >= end);
      spanState.spans.push({ start, end, label });
      spanState.spans.sort((x, y) => x.start - y.start);
      drawSpans();
    },
    key(e) {
      const n = spanState.words.length;
      if (!n) return false;
      if (["ArrowRight", "ArrowLeft"].includes(e.key)) {
        spanState.cursor = Math.min(n - 1, Math.max(0, spanState.cursor + (e.key === "ArrowRight" ? 1 : -1)));
        if (!e.shiftKey) spanState.anchor = spanState.cursor;
        drawSpans();
        return true;
      }
      if (["x", "X", "Delete", "Backspace"].includes(e.key)) {
        const [lo, hi] = selectedWords(), start = spanState.words[lo].start, end = spanState.words[hi].end;
        spanState.spans = spanState.spans.filter((s) => s.end <= start || s.start >= end);
        drawSpans();
        return true;
      }
      if (e.key === "Escape") { spanState.anchor = spanState.cursor; drawSpans(); return true; }
      return false;
    },
    value: () => ({ spans: spanState.spans.map((s) => ({ start: s.start, end: s.end, label: s.label })) }),
    describe: (value) => (value.spans || []).map((s) => `${s.label} “${spanText(s)}”`).join(", ") || "(no spans)",
  },
  scale: {
    keys: () => [["1–5", "rate"], ["← →", "move"], ["C", "comment"], ["Enter", "submit"], ["S", "skip"], UNDO],
    choices: () => ["1", "2", "3", "4", "5"],
    focusKeys: { c: "comment" },
    render(box, answer, meta, prediction, previous) {
      box.innerHTML = promptHtml(record.prompt) + `<div class="text">${esc(record.answer)}</div>` + meta;
      if (previous) selected.add(String(previous.rating));
      answer.innerHTML = `<div class="labels">${[1, 2, 3, 4, 5].map((r) => `<button type="button" data-label="${r}"><kbd>${r}</kbd> ${"★".repeat(r)}</button>`).join("")}</div>` +
        `<label>Comment (optional) <input id="comment" style="width:100%"></label>`;
    },
    value: () => ({ rating: Number([...selected][0]), comment: document.getElementById("comment").value }),
  },
};
const spanState = { words: [], spans: [], cursor: 0, anchor: 0 };
const spanColor = (label) => PALETTE[Math.max(0, labels.indexOf(label)) % PALETTE.length];

function codePoints(text) {  // UTF-16 index -> code point index (the server's offsets count code points)
  const map = new Array(text.length + 1);
  let cp = 0;
  for (let i = 0; i < text.length; i++) {
    map[i] = cp;
    const c = text.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) map[++i] = cp;
    cp++;
  }
  map[text.length] = cp;
  return map;
}

function spanText(span) {
  return Array.from(record.text).slice(span.start, span.end).join("");
}

function selectedWords() {
  if (!spanState.words.length) return [null, null];
  return [Math.min(spanState.anchor, spanState.cursor), Math.max(spanState.anchor, spanState.cursor)];
}

function drawSpans() {  // the text, word by word, with its spans coloured and the selection marked
  const el = document.getElementById("span-text");
  if (!el) return;
  const text = record.text, [lo, hi] = selectedWords(), spanOf = (w) => spanState.spans.find((s) => s.start < w.end && s.end > w.start);
  let html = "", at = 0;
  spanState.words.forEach((w, i) => {
    const span = spanOf(w), first = span && span.start >= w.start;
    html += esc(text.slice(at, w.a));
    // a span's first word carries its label (drawn by CSS, so the text itself reads and copies as it is)
    const cls = ["w", i >= lo && i <= hi ? "sel" : "", i === spanState.cursor ? "cur" : "", span ? "in-span" : "", first ? "span-start" : ""].filter(Boolean).join(" ");
    html += `<span class="${cls}" data-w="${i}"${span ? ` data-span-label="${esc(span.label)}" style="--span:${spanColor(span.label)};background:${spanColor(span.label)}33;border-bottom:3px solid ${spanColor(span.label)}"` : ""}>` +
      `${esc(text.slice(w.a, w.b))}</span>`;
    at = w.b;
  });
  el.innerHTML = html + esc(text.slice(at));
  document.querySelector("[data-testid=span-list]").innerHTML = spanState.spans.map((s) =>
    `<li data-start="${s.start}" data-end="${s.end}"><b style="color:${spanColor(s.label)}">${esc(s.label)}</b> ${esc(spanText(s))}</li>`).join("") ||
    '<li class="muted">No spans yet: select words and press 1–9, or submit to say there is nothing to mark.</li>';
}

const widget = WIDGETS[root.dataset.widget];
const legend = () => { document.getElementById("legend-keys").innerHTML = widget.keys().map(([k, what]) => `<li><kbd>${k}</kbd> ${what}</li>`).join(""); };
legend();  // again for each record: an arena's pairs take a tie key
const options = () => widget.choices();

function showCounts(c) {
  if (!c) return;
  const box = document.getElementById("queue-counters");
  if (adjudicating) {
    box.textContent = `${c.to_adjudicate} to adjudicate (${c.ties} ties) · ${c.adjudicated} adjudicated`;
    return;
  }
  box.textContent = `You: ${c.mine} done, ${c.skipped} skipped` + (c.records === null ? "" :
    ` · project: ${c.done} of ${c.records} done, ${c.partly} partly done, ${c.open - c.partly} not started`);
  box.dataset.mine = c.mine;
}

function showAnswers() {
  const list = document.getElementById("people-answers");
  if (!list) return;
  const say = (a) => (widget.describe ? widget.describe(a.value || {}) : a.labels.join(", ") || "(no label)");
  list.innerHTML = record ? record.answers.map((a) => `<li><b>${esc(a.user)}</b>: ${esc(say(a))}</li>`).join("") : "";
}

function banner(text) {
  const el = document.getElementById("banner");
  el.hidden = !text;
  el.textContent = text || "";
}

function wordDiff(before, after) {
  let a = before.split(/(\s+)/), b = after.split(/(\s+)/);
  if (a.length * b.length > 4e6) { a = before.split(/(\n)/); b = after.split(/(\n)/); }  // long texts: by line
  const n = a.length, m = b.length, dp = Array.from({ length: n + 1 }, () => new Uint16Array(m + 1));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) dp[i][j] = a[i] === b[j] ? dp[i + 1][j + 1] + 1 : Math.max(dp[i + 1][j], dp[i][j + 1]);
  const ops = [];  // [kind, text] with kind "=", "-" or "+"; runs of one kind are merged
  const push = (kind, text) => { if (ops.length && ops[ops.length - 1][0] === kind) ops[ops.length - 1][1] += text; else ops.push([kind, text]); };
  let i = 0, j = 0;
  while (i < n && j < m) {
    if (a[i] === b[j]) { push("=", a[i]); i++; j++; }
    else if (dp[i + 1][j] >= dp[i][j + 1]) push("-", a[i++]);
    else push("+", b[j++]);
  }
  while (i < n) push("-", a[i++]);
  while (j < m) push("+", b[j++]);
  return ops.map(([kind, text]) => (kind === "=" ? esc(text) : kind === "-" ? `<del>${esc(text)}</del>` : `<ins>${esc(text)}</ins>`)).join("");
}

function promptHtml(messages) {
  return (messages || []).map((m) => `<div class="prompt"><b>${esc(m.role)}:</b> ${esc(m.content)}</div>`).join("");
}

function render(previous) {
  const box = document.getElementById("record"), answer = document.getElementById("answer");
  box.dataset.recordId = record ? record.id : "";
  document.getElementById("submit").disabled = !record;
  document.getElementById("skip").disabled = !record;
  if (!record) {
    box.innerHTML = '<p data-testid="queue-empty">Nothing left for you in this queue. Thank you!</p>';
    answer.innerHTML = "";
    return;
  }
  const prediction = record.prediction;
  const meta = `<p class="muted">#${record.id} · ${esc(record.source)} line ${record.source_index}${record.split === "holdout" ? " · held out" : ""}` +
    (prediction && prediction.label && !widget.hidesLabel ? ` · model says <b data-testid="prelabel">${esc(prediction.label)}</b> (${fmt(prediction.confidence, 2)})` : "") + "</p>";
  banner(record.rejected ? `A reviewer rejected your earlier answer: ${record.rejected.comment}` : "");
  selected = new Set();
  widget.render(box, answer, meta, adjudicating ? null : prediction, previous);
  answer.querySelectorAll("[data-label]").forEach((el) => el.addEventListener("click", () => choose(el.dataset.label)));
  paint();
  box.focus();
}

function paint() {
  document.querySelectorAll("#answer [data-label]").forEach((el, i) => {
    el.classList.toggle("selected", selected.has(el.dataset.label));
    el.classList.toggle("focused", i === focus);
  });
}

function choose(label) {
  if (widget.choose) { widget.choose(label); return; }
  const i = options().indexOf(label);
  if (i < 0) return;
  focus = i;
  if (widget.toggles) selected.has(label) ? selected.delete(label) : selected.add(label);
  else selected = new Set([label]);
  paint();
}

// Actions run one after another, in the order the keys were pressed.
let chain = Promise.resolve();
function act(fn) {
  chain = chain.then(fn).catch((e) => banner(e.message));
  return chain;
}

const nextUrl = () => (adjudicating ? `${base}/adjudication/next?after=${after}` : `${base}/next?order=${encodeURIComponent(order)}`);

async function fetchNext() {
  const data = await api(nextUrl());
  record = data.record;
  legend();
  showCounts(data.counts);
  render();
  showAnswers();
}

const load = () => act(fetchNext);

const submit = () => act(async () => {
  if (!record) return;
  if (!widget.free && !selected.size) { banner("Pick an answer first (1–9), or skip with S."); return; }
  const path = adjudicating ? `${base}/records/${record.id}/adjudicate` : `${base}/records/${record.id}/annotations`;
  try {
    await api(path, { method: "POST", body: { value: widget.value() } });
  } catch (e) {
    if (e.status !== 409) throw e;
    // settled meanwhile (another tab, another person): say so and move on rather than stay on it
    const gone = record.id;
    await fetchNext();
    banner(`Record #${gone} was settled meanwhile (${e.message}); here is the next one.`);
    return;
  }
  banner("");
  await fetchNext();
});

const skip = () => act(async () => {
  if (!record) return;
  if (adjudicating) { after = record.id; banner(""); await fetchNext(); return; }
  const data = await api(`${base}/records/${record.id}/skip`, { method: "POST" });
  showCounts(data.counts);
  banner("");
  await fetchNext();
});

const undo = () => act(async () => {
  if (adjudicating) return;
  const data = await api(`${base}/undo`, { method: "POST" });
  record = data.record;
  legend();
  showCounts(data.counts);
  render(record.previous && Object.keys(record.previous).length ? record.previous : null);
  banner(`Undone: record #${record.id} is back; your earlier answer is selected.`);
});

document.getElementById("submit").addEventListener("click", (e) => { if (e.detail <= 1) submit(); });  // a double-click submits once
document.getElementById("skip").addEventListener("click", skip);
if (document.getElementById("undo")) document.getElementById("undo").addEventListener("click", undo);

document.addEventListener("keydown", (e) => {
  const typing = ["TEXTAREA", "INPUT", "SELECT"].includes(document.activeElement.tagName);
  if ((e.ctrlKey || e.metaKey) && e.key === "Enter") { e.preventDefault(); submit(); return; }
  if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "z" && !typing) { e.preventDefault(); undo(); return; }
  if (typing) { if (e.key === "Escape") document.activeElement.blur(); return; }
  if (e.ctrlKey || e.metaKey || e.altKey || !record) return;
  if (widget.key && widget.key(e)) { e.preventDefault(); return; }
  const choices = options();
  if (/^[1-9]$/.test(e.key) && Number(e.key) <= choices.length) { e.preventDefault(); choose(choices[Number(e.key) - 1]); }
  else if (e.key === "Enter") { e.preventDefault(); submit(); }
  else if (e.key.toLowerCase() === "s") { e.preventDefault(); skip(); }
  else if (["ArrowRight", "ArrowDown", "ArrowLeft", "ArrowUp"].includes(e.key) && choices.length) {
    e.preventDefault();
    focus = (focus + (["ArrowRight", "ArrowDown"].includes(e.key) ? 1 : -1) + choices.length) % choices.length;
    if (!widget.toggles) selected = new Set([choices[focus]]);
    paint();
  } else if (e.key === " " && widget.toggles) { e.preventDefault(); choose(choices[focus]); }
  else if ((widget.focusKeys || {})[e.key.toLowerCase()]) { e.preventDefault(); document.getElementById(widget.focusKeys[e.key.toLowerCase()]).focus(); }
});

load();
