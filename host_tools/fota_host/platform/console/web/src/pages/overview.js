import { get } from "../api.js";
import { countBy, updateVersions, versionsChart } from "../charts.js";
import { clear, fmtTime, h, stateBadge, table } from "../dom.js";
import { subscribe } from "../live.js";
import { FAILED } from "./common.js";

export function overviewPage(main) {
  const cards = h("div", { class: "cards" });
  const versions = versionsChart();
  const running = h("div");
  const failures = h("div");
  main.append(h("h2", {}, "Overview"), cards,
    h("div", { class: "grid" },
      h("section", { "aria-labelledby": "ov-v" }, h("h3", { id: "ov-v" }, "Fleet versions"),
        versions.el),
      h("section", { "aria-labelledby": "ov-r" }, h("h3", { id: "ov-r" }, "Running tasks"),
        running)),
    h("section", { "aria-labelledby": "ov-f" }, h("h3", { id: "ov-f" }, "Recent failures"),
      failures));
  let failKey = null;

  async function loadFailures(tasks) {
    const recent = tasks.filter((t) => FAILED.some((s) => t.counts?.[s])).slice(-5);
    const rows = [];
    for (const t of recent) {
      const detail = await get(`/api/tasks/${t.id}`);
      for (const d of detail.devices) {
        if (FAILED.includes(d.state)) rows.push({ task: t, ...d });
      }
    }
    rows.sort((a, b) => (b.updated || 0) - (a.updated || 0));
    clear(failures).append(table("Recent failures", [
      { label: "Device", cell: (r) => r.device },
      { label: "Task", cell: (r) => h("a", { href: `#/tasks/${r.task.id}` }, r.task.name) },
      { label: "State", cell: (r) => stateBadge(r.state) },
      { label: "Reason", cell: (r) => r.desc || "" },
      { label: "When", cell: (r) => fmtTime(r.updated) },
    ], rows.slice(0, 20), "No failures."));
  }

  const off = subscribe((snap) => {
    const online = snap.devices.filter((d) => d.online).length;
    const active = snap.tasks.filter((t) => t.state === "running");
    clear(cards).append(
      h("div", { class: "card" }, h("strong", {}, String(snap.devices.length)), " devices"),
      h("div", { class: "card" }, h("strong", {}, String(online)), " online"),
      h("div", { class: "card" }, h("strong", {}, String(active.length)), " running tasks"),
      h("div", { class: "card" }, h("strong", {}, String(snap.tasks.length)), " tasks"));
    updateVersions(versions, countBy(snap.devices, (d) => d.version));
    clear(running).append(table("Running tasks", [
      { label: "Task", cell: (t) => h("a", { href: `#/tasks/${t.id}` }, t.name) },
      { label: "Devices", cell: (t) => String(Object.values(t.counts || {}).reduce((a, b) => a + b, 0)) },
      { label: "Succeeded", cell: (t) => String(t.counts?.succeeded || 0) },
      { label: "Failed", cell: (t) => String((t.counts?.failed || 0) + (t.counts?.timed_out || 0)) },
    ], active, "No task is running."));
    const key = JSON.stringify(snap.tasks.map((t) => [t.id, t.counts?.failed, t.counts?.timed_out]));
    if (key !== failKey) {
      failKey = key;
      loadFailures(snap.tasks).catch(() => {});
    }
  });
  return () => { off(); versions.destroy(); };
}
