import { get } from "../api.js";
import { clear, field, fmtTime, h, stateBadge, table } from "../dom.js";
import { subscribe } from "../live.js";

export function devicesPage(main) {
  const search = h("input", { type: "search", name: "q", placeholder: "id or version" });
  const list = h("div");
  const history = h("section", { "aria-live": "polite" });
  main.append(h("h2", {}, "Devices"), h("div", { class: "form" }, field("Search devices", search)),
    list, history);
  let devices = [];

  function draw() {
    const q = search.value.trim().toLowerCase();
    const shown = devices.filter((d) => !q || d.id.toLowerCase().includes(q)
      || String(d.version).toLowerCase().includes(q));
    clear(list).append(table(`Devices (${shown.length} of ${devices.length})`, [
      { label: "Device", cell: (d) => h("button", { type: "button", class: "link",
        onclick: () => showHistory(d.id) }, d.id) },
      { label: "Version", cell: (d) => d.version || "—" },
      { label: "Module", cell: (d) => d.module || "—" },
      { label: "Online", cell: (d) => (d.online ? "online" : "offline") },
      { label: "Last seen", cell: (d) => fmtTime(d.last_seen) },
    ], shown, q ? "No device matches." : "No device has reported yet."));
  }

  // A device's history: its sub-tasks across every task (newest first).
  async function showHistory(id) {
    clear(history).append(h("h3", { tabindex: -1 }, `History of `, id), h("p", {}, "Loading…"));
    history.querySelector("h3").focus();
    const tasks = await get("/api/tasks");
    const rows = [];
    for (const t of tasks) {
      const detail = await get(`/api/tasks/${t.id}`);
      for (const d of detail.devices) if (d.device === id) rows.push({ task: detail, ...d });
    }
    rows.sort((a, b) => (b.created || 0) - (a.created || 0));
    history.lastChild.replaceWith(table(`Tasks of ${id}`, [
      { label: "Task", cell: (r) => h("a", { href: `#/tasks/${r.task.id}` }, `#${r.task.id} ${r.task.name}`) },
      { label: "Version", cell: (r) => r.task.version || "?" },
      { label: "State", cell: (r) => stateBadge(r.state) },
      { label: "Message", cell: (r) => r.desc || "" },
      { label: "Updated", cell: (r) => fmtTime(r.updated) },
    ], rows, "In no task."));
  }

  search.addEventListener("input", draw);
  return subscribe((snap) => {
    devices = snap.devices;
    draw();
  });
}
