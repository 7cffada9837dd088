// Admins create users and add them to a project; change roles, set new passwords, disable accounts.
"use strict";

document.getElementById("new-user").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = new FormData(e.target), message = document.getElementById("user-message");
  try {
    const user = await api("/api/users", { method: "POST", body: { username: form.get("username"), password: form.get("password"), role: form.get("role") } });
    if (form.get("project")) await api(`/api/projects/${encodeURIComponent(form.get("project"))}/members`, { method: "POST", body: { username: user.username } });
    message.textContent = `Created ${user.role} ${user.username}.`;
    const roles = ["annotator", "reviewer", "admin"].map((r) => `<option${r === user.role ? " selected" : ""}>${r}</option>`).join("");
    const name = esc(user.username);
    document.querySelector("#users tbody").insertAdjacentHTML("beforeend", `<tr data-user="${name}"><td>${name}</td>` +
      `<td><select class="role" data-testid="role-${name}">${roles}</select></td>` +
      `<td><label><input type="checkbox" class="disabled" data-testid="disabled-${name}"> disabled</label></td>` +
      `<td><button type="button" class="password" data-testid="password-${name}">Set a new password</button></td></tr>`);
    e.target.reset();
  } catch (err) { message.textContent = err.message; }
});

const usersMessage = document.getElementById("users-message");
// A refused change (the only admin, one's own account) puts the control back as it was and says why.
async function change(username, body, done, control = null) {
  try {
    await api(`/api/users/${encodeURIComponent(username)}`, { method: "PATCH", body });
    usersMessage.textContent = done;
    if (control && control.tagName === "SELECT") [...control.options].forEach((o) => { o.defaultSelected = o.selected; });
    if (control && control.type === "checkbox") control.defaultChecked = control.checked;
  } catch (err) {
    usersMessage.textContent = err.message;
    if (control && control.tagName === "SELECT") control.value = [...control.options].find((o) => o.defaultSelected).value;
    if (control && control.type === "checkbox") control.checked = control.defaultChecked;
  }
}
document.querySelector("#users tbody").addEventListener("change", (e) => {
  const username = e.target.closest("tr").dataset.user;
  if (e.target.classList.contains("role")) change(username, { role: e.target.value }, `${username} is now ${e.target.value}.`, e.target);
  if (e.target.classList.contains("disabled")) change(username, { disabled: e.target.checked }, `${username} is ${e.target.checked ? "disabled" : "enabled"}.`, e.target);
});
document.querySelector("#users tbody").addEventListener("click", (e) => {
  if (!e.target.classList.contains("password")) return;
  const username = e.target.closest("tr").dataset.user;
  const password = prompt(`A new password for ${username} (at least 8 characters)`);
  if (password) change(username, { password }, `${username} has a new password.`);
});
