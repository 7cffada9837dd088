// One comparison: follow its job until the table is written; each metric row opens the items behind its difference.
"use strict";

const root = document.getElementById("comparison");
const id = root.dataset.id;

async function follow() {
  try {
    const c = await api(`/api/comparisons/${encodeURIComponent(id)}`);
    if (c.status !== root.dataset.status) { window.location.reload(); return; }
  } catch (err) { /* the server may come back */ }
  setTimeout(follow, 2000);
}
if (["queued", "running"].includes(root.dataset.status)) setTimeout(follow, 2000);

function score(value) {
  return value === undefined || value === null ? "" : (Number.isInteger(value) ? String(value) : Number(value).toFixed(3));
}

function itemsHtml(found) {
  const names = found.candidates;
  return found.groups.map((group) => {
    const head = `<p><strong>${esc(group.candidate)}</strong> against <strong>${esc(group.against)}</strong>: ` +
      `${group.count} item${group.count === 1 ? "" : "s"} differ on ${esc(found.metric)}` +
      (group.count > group.items.length ? ` (the ${group.items.length} largest shown)` : "") + "</p>";
    const rows = group.items.map((item) => {
      const cells = names.map((name) => {
        const mine = item.scores[name] || {};
        const shown = Object.entries(mine).map(([k, v]) => `${k} ${score(v)}`).join(", ");
        const favoured = name === item.favours ? " favoured" : "";
        return `<td class="answer${favoured}"><div>${esc(item.answers[name])}</div><small class="muted">${esc(shown)}</small></td>`;
      }).join("");
      return `<tr data-index="${item.index}"><td>${item.index}</td><td>${esc(item.input)}</td><td>${esc(item.reference)}</td>${cells}</tr>`;
    }).join("");
    return head + `<table class="grid side-by-side"><thead><tr><th>#</th><th>input</th><th>reference</th>` +
      names.map((n) => `<th>${esc(n)}</th>`).join("") + `</tr></thead><tbody>${rows}</tbody></table>`;
  }).join("");
}

for (const link of document.querySelectorAll("a.disagreements")) {
  link.addEventListener("click", async (event) => {
    event.preventDefault();
    const box = link.closest("section").querySelector(".items");
    const query = `metric=${encodeURIComponent(link.dataset.metric)}&candidate=${encodeURIComponent(link.dataset.candidate)}`;
    try {
      box.innerHTML = itemsHtml(await api(`/api/comparisons/${encodeURIComponent(id)}/disagreements?${query}`));
    } catch (err) {
      box.innerHTML = `<p class="error">${esc(err.message)}</p>`;
    }
    box.hidden = false;
  });
}
