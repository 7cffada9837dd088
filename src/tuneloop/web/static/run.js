// A run's loss curve and its events, live while it trains.
"use strict";

const runId = document.getElementById("run").dataset.run;
let after = 0, finished = false;
const steps = [], evals = [], rewards = {}, evalRewards = [];
const REWARD_KEYS = ["reward", "rewards/margins", "rewards/accuracies", "accuracy"];  // RL; DPO, KTO, ORPO; reward models

async function poll() {
  const page = await api(`/api/runs/${encodeURIComponent(runId)}/events?after=${after}`);
  after = page.next;
  const list = document.getElementById("events");
  for (const e of page.data) {
    if (e.type === "step") steps.push([e.step, e.loss]);
    if (e.type === "eval" && e.eval_loss !== undefined) evals.push([e.step, e.eval_loss]);
    if (e.type === "step") for (const key of REWARD_KEYS) if (e[key] !== undefined) (rewards[key] ||= []).push([e.step, e[key]]);
    if (e.type === "eval" && e.eval_reward !== undefined) evalRewards.push([e.step, e.eval_reward]);
    const text = e.type === "step" ? `step ${e.step}/${e.total_steps} loss ${fmt(e.loss, 4)} lr ${Number(e.lr).toExponential(2)} ${Math.round(e.tokens_per_second || 0)} tok/s`
      : `${e.type} ${esc(JSON.stringify(Object.fromEntries(Object.entries(e).filter(([k]) => k !== "type"))))}`;
    list.insertAdjacentHTML("afterbegin", `<li>${text}</li>`);
  }
  document.getElementById("run-status").textContent = page.status;  // the server names the status; no mapping here
  finished = page.finished;
  const series = [{ name: "training loss", points: steps }];
  if (evals.length) series.push({ name: "eval loss", points: evals });
  document.getElementById("loss-chart").innerHTML = lineChart(series, { yLabel: "loss", xLabel: "step", fromZero: false });
  const rewardSeries = Object.entries(rewards).map(([name, points]) => ({ name, points }));
  if (evalRewards.length) rewardSeries.push({ name: "held-out reward", points: evalRewards });
  if (rewardSeries.length) {
    document.getElementById("rewards-card").hidden = false;
    document.getElementById("rewards-chart").innerHTML = lineChart(rewardSeries, { yLabel: "reward", xLabel: "step", fromZero: false });
  }
  if (rewards.reward) await showRollouts();
  if (page.has_more) return poll();
}

async function showRollouts() {
  const page = await api(`/api/runs/${encodeURIComponent(runId)}/rollouts?limit=12`);
  if (!page.data.length) return;
  document.getElementById("rollouts-card").hidden = false;
  document.getElementById("rollouts").innerHTML = `<table class="grid"><thead><tr><th>step</th><th>prompt</th><th>completion</th><th>reward</th><th>advantage</th></tr></thead><tbody>` +
    page.data.slice().reverse().map((r) => `<tr><td>${r.step}</td><td>${esc(String(r.prompt).slice(0, 160))}</td><td><pre class="json">${esc(r.completion)}</pre></td>` +
      `<td title="${esc(JSON.stringify(r.rewards))}">${r.reward === null ? "—" : fmt(r.reward, 3)}</td><td>${fmt(r.advantage, 2)}</td></tr>`).join("") + "</tbody></table>";
}

poll();
setInterval(() => { if (!finished) poll(); }, 2000);
