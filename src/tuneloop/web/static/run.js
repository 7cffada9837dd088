// A run's loss curve and its events, live while it trains.
"use strict";

const runId = document.getElementById("run").dataset.run;
let after = 0, finished = false;
const steps = [], evals = [];

async function poll() {
  const page = await api(`/api/runs/${encodeURIComponent(runId)}/events?after=${after}`);
  after = page.next;
  const list = document.getElementById("events");
  for (const e of page.data) {
    if (e.type === "step") steps.push([e.step, e.loss]);
    if (e.type === "eval" && e.eval_loss !== undefined) evals.push([e.step, e.eval_loss]);
    const text = e.type === "step" ? `step ${e.step}/${e.total_steps} loss ${fmt(e.loss, 4)} lr ${Number(e.lr).toExponential(2)} ${Math.round(e.tokens_per_second || 0)} tok/s`
      : `${e.type} ${esc(JSON.stringify(Object.fromEntries(Object.entries(e).filter(([k]) => k !== "type"))))}`;
    list.insertAdjacentHTML("afterbegin", `<li>${text}</li>`);
  }
  document.getElementById("run-status").textContent = page.status;  // the server names the status; no mapping here
  finished = page.finished;
  const series = [{ name: "training loss", points: steps }];
  if (evals.length) series.push({ name: "eval loss", points: evals });
  document.getElementById("loss-chart").innerHTML = lineChart(series, { yLabel: "loss", xLabel: "step", fromZero: false });
  if (page.has_more) return poll();
}

poll();
setInterval(() => { if (!finished) poll(); }, 2000);
