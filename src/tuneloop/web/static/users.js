// Admins create users and add them to a project.
"use strict";

document.getElementById("new-user").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = new FormData(e.target), message = document.getElementById("user-message");
  try {
    const user = await api("/api/users", { method: "POST", body: { username: form.get("username"), password: form.get("password"), role: form.get("role") } });
    if (form.get("project")) await api(`/api/projects/${encodeURIComponent(form.get("project"))}/members`, { method: "POST", body: { username: user.username } });
    message.textContent = `Created ${user.role} ${user.username}.`;
    document.querySelector("#users tbody").insertAdjacentHTML("beforeend", `<tr><td>${esc(user.username)}</td><td>${esc(user.role)}</td></tr>`);
    e.target.reset();
  } catch (err) { message.textContent = err.message; }
});
