// The comparisons list: a form that queues one (admins), and a reload while any is queued or running.
"use strict";

const form = document.getElementById("new-comparison");
if (form) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const message = document.getElementById("new-comparison-message");
    const data = new FormData(form);
    const body = {
      candidates: String(data.get("candidates")).split("\n").map((s) => s.trim()).filter(Boolean),
      data: String(data.get("data")).trim(),
    };
    const train = String(data.get("train") || "").trim();
    if (train) body.train = train;
    message.textContent = "";
    try {
      const created = await api("/api/comparisons", { method: "POST", body });
      window.location.href = `/comparisons/${encodeURIComponent(created.id)}`;
    } catch (err) {
      message.textContent = err.message;
    }
  });
}

const running = [...document.querySelectorAll("#comparisons tbody tr")].some((row) => ["queued", "running"].includes(row.dataset.status));
document.getElementById("comparisons-state").textContent = running ? "live" : "";
if (running) setTimeout(() => window.location.reload(), 3000);
