import { apiPaths, get, post } from "../api.js";
import { clear, field, fmtTime, h, stateBadge, table } from "../dom.js";
import { subscribe } from "../live.js";
import { notice } from "./common.js";

const ids = (s) => s.split(/[\s,;]+/).filter(Boolean);

// Groups (tags) of devices, when the platform has them: a form to add or remove one.
function tagForm(onChange) {
  const status = notice();
  const devices = h("input", { type: "text", name: "tag-devices" });
  const group = h("input", { type: "text", name: "group", maxLength: 64 });
  const change = (op) => async () => {
    try {
      const res = await post("/api/devices/tags", { devices: ids(devices.value), [op]: group.value });
      const bad = res.filter((r) => r.ok === false);
      const text = `${op === "add" ? "Tagged" : "Untagged"} ${res.length - bad.length}`
        + (bad.length ? `; refused: ${bad.map((r) => `${r.device} (${r.error})`).join(", ")}` : "");
      if (bad.length) status.error(text);
      else status.ok(text);
      onChange();
    } catch (err) {
      status.error(err.message);
    }
  };
  return h("section", { "aria-labelledby": "dv-tag" }, h("h3", { id: "dv-tag" }, "Groups"),
    h("div", { class: "form" }, field("Devices to tag", devices, "Comma-separated ids"),
      field("Group", group),
      h("div", { class: "inline" },
        h("button", { type: "button", onclick: change("add") }, "Add to group"),
        h("button", { type: "button", onclick: change("remove") }, "Remove from group"))),
    status.el);
}

export function devicesPage(main) {
  const search = h("input", { type: "search", name: "q", placeholder: "id, version or group" });
  const list = h("div");
  const history = h("section", { "aria-live": "polite" });
  main.append(h("h2", {}, "Devices"), h("div", { class: "form" }, field("Search devices", search)),
    list, history);
  let devices = [];
  let tags = {};
  let hasTags = false;
  const loadTags = async () => {
    tags = await get("/api/devices/tags");
    draw();
  };
  apiPaths().then((paths) => {
    if (!("/api/devices/tags" in paths)) return;
    hasTags = true;
    main.insertBefore(tagForm(loadTags), history);
    loadTags().catch(() => {});
  });

  function draw() {
    const q = search.value.trim().toLowerCase();
    const groups = (d) => (hasTags && tags[d.id]) || [];
    const shown = devices.filter((d) => !q || d.id.toLowerCase().includes(q)
      || String(d.version).toLowerCase().includes(q)
      || groups(d).some((g) => g.toLowerCase().includes(q)));
    clear(list).append(table(`Devices (${shown.length} of ${devices.length})`, [
      { label: "Device", cell: (d) => h("button", { type: "button", class: "link",
        onclick: () => showHistory(d.id) }, d.id) },
      { label: "Version", cell: (d) => d.version || "—" },
      { label: "Module", cell: (d) => d.module || "—" },
      { label: "Groups", cell: (d) => groups(d).join(", ") || "—" },
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
