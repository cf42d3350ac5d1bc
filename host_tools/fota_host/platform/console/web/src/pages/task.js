// One task: its state, the actions that fit it, devices with live progress bars, charts.
import { ApiError, call, post } from "../api.js";
import { countBy, outcomesChart, progressChart, updateOutcomes, updateOutcomesByWave } from "../charts.js";
import { clear, field, fmtTime, h, stateBadge } from "../dom.js";
import { subscribe } from "../live.js";
import { availableActions, rolloutButtons, stateLine, statsView, wavesView } from "../rollout.js";
import { ENDED, FAILED, notice, pct } from "./common.js";

// One row per device, updated in place: focus and scroll survive live updates.
class DeviceRows {
  constructor(taskId, status) {
    this.taskId = taskId;
    this.status = status;
    this.rows = new Map();
    this.body = h("tbody");
    this.el = h("div", { class: "table-wrap" }, h("table", { class: "devices" },
      h("caption", {}, "Devices in this task"),
      h("thead", {}, h("tr", {}, ["Device", "Wave", "State", "Progress", "Message", "Updated", ""]
        .map((c) => h("th", { scope: "col" }, c)))), this.body));
  }

  update(task) {
    for (const d of task.devices) {
      let row = this.rows.get(d.device);
      if (!row) {
        row = {
          wave: h("td", { "data-label": "Wave" }),
          state: h("td", { "data-label": "State" }),
          bar: h("progress", { max: 100, value: 0 }),
          pct: h("span", { class: "pct" }),
          desc: h("td", { "data-label": "Message" }),
          when: h("td", { "data-label": "Updated" }),
          cancel: h("button", { type: "button", class: "small",
            onclick: () => this.cancel(d.device) }, "Cancel"),
        };
        row.bar.setAttribute("aria-label", `Progress of ${d.device}`);
        row.cancel.setAttribute("aria-label", `Cancel ${d.device}`);
        row.tr = h("tr", { "data-device": d.device },
          h("th", { scope: "row", "data-label": "Device" }, d.device), row.wave, row.state,
          h("td", { "data-label": "Progress" }, row.bar, row.pct), row.desc, row.when,
          h("td", {}, row.cancel));
        this.rows.set(d.device, row);
        this.body.append(row.tr);
      }
      const step = d.state === "succeeded" ? 100 : Math.max(0, Math.min(100, d.step ?? 0));
      row.wave.textContent = d.wave ? String(d.wave) : "—";
      row.state.replaceChildren(stateBadge(d.state));
      row.bar.value = step;
      row.pct.textContent = ` ${step} %`;
      row.desc.textContent = d.desc || "";
      row.when.textContent = fmtTime(d.updated);
      row.cancel.hidden = ENDED.includes(d.state) || task.state === "finished";
    }
  }

  async cancel(device) {
    try {
      const res = await post(`/api/tasks/${this.taskId}/cancel`, { devices: [device] });
      this.status.ok(res.map((r) => `${r.device}: ${r.ok ? "cancelled" : r.error}`).join("; "));
    } catch (err) {
      this.status.error(err.message);
    }
  }
}

export function taskPage(main, taskId) {
  const status = notice();
  const head = h("div");
  const actions = h("div", { class: "actions", role: "group", "aria-label": "Task actions" });
  const waves = h("div");
  const stats = h("div");
  const rows = new DeviceRows(taskId, status);
  const progress = progressChart();
  const outcomes = outcomesChart("Outcomes by wave");
  const ids = h("textarea", { name: "devices", rows: 3,
    placeholder: "device-1, device-2 (commas, spaces or lines)" });
  const csv = h("input", { type: "file", accept: ".csv,text/csv,text/plain" });
  let rolloutActions = [];
  let adding = null; // the add/import forms: gone once the task is finished
  let task = null;
  const samples = { labels: [], done: [], failed: [], step: [] };

  main.append(h("p", {}, h("a", { href: "#/tasks" }, "← All tasks")), head, actions, status.el,
    waves,
    h("div", { class: "grid" }, progress.el, outcomes.el), stats,
    h("section", { "aria-labelledby": "td-h" }, h("h3", { id: "td-h" }, "Devices"), rows.el),
    adding = h("section", { "aria-labelledby": "ta-h" }, h("h3", { id: "ta-h" }, "Add devices"),
      h("form", { class: "form", onsubmit: addDevices },
        field("Device ids", ids), h("button", { type: "submit" }, "Add devices")),
      h("form", { class: "form", onsubmit: importCsv },
        field("Import a CSV file", csv, "A 'device' column, or one id per line"),
        h("button", { type: "submit" }, "Import"))));

  availableActions(taskId).then((a) => {
    rolloutActions = a;
    if (task) drawActions();
  });

  function report(results) {
    const bad = results.filter((r) => !r.ok);
    const good = results.length - bad.length;
    const text = `${good} added` + (bad.length ? `; refused: ${bad.map((r) => `${r.device} (${r.error})`).join(", ")}` : "");
    if (bad.length) status.error(text);
    else status.ok(text);
  }

  async function addDevices(ev) {
    ev.preventDefault();
    const list = ids.value.split(/[\s,;]+/).filter(Boolean);
    if (!list.length) return status.error("Give at least one device id.");
    try {
      report(await post(`/api/tasks/${taskId}/devices`, { devices: list }));
      ids.value = "";
    } catch (err) {
      status.error(err.message);
    }
  }

  async function importCsv(ev) {
    ev.preventDefault();
    const f = csv.files[0];
    if (!f) return status.error("Choose a CSV file.");
    try {
      report(await call("POST", `/api/tasks/${taskId}/import`, await f.text(), "text/csv"));
    } catch (err) {
      status.error(err.message);
    }
  }

  const act = (label, fn) => h("button", { type: "button", onclick: async () => {
    try {
      await fn();
      status.ok(`${label}: done`);
    } catch (err) {
      status.error(err instanceof ApiError ? err.message : String(err));
    }
  } }, label);

  function drawActions() {
    clear(actions);
    if (task.state === "not_started") {
      actions.append(act("Start", () => post(`/api/tasks/${taskId}/start`)));
    }
    actions.append(...rolloutButtons(task, rolloutActions, (msg) => status.ok(msg),
      (msg) => status.error(msg)));
    if (task.state !== "finished" && task.devices.some((d) => !ENDED.includes(d.state))) {
      actions.append(act("Cancel all", () => {
        if (!window.confirm("Cancel every device still pending or upgrading?")) return null;
        return post(`/api/tasks/${taskId}/cancel`, { all: true });
      }));
    }
  }

  function sample(t) {
    const n = t.devices.length;
    if (!n || t.state === "not_started") return;
    const done = t.devices.filter((d) => d.state === "succeeded").length;
    const failed = t.devices.filter((d) => FAILED.includes(d.state)).length;
    const step = t.devices.reduce((s, d) => s + (d.state === "succeeded" ? 100
      : ENDED.includes(d.state) ? 0 : Math.max(0, d.step ?? 0)), 0) / n;
    samples.labels.push(new Date().toLocaleTimeString());
    samples.done.push(pct(done, n));
    samples.failed.push(pct(failed, n));
    samples.step.push(Math.round(step));
    for (const k of Object.keys(samples)) if (samples[k].length > 600) samples[k].shift();
    progress.update(samples.labels, [
      { label: "succeeded %", data: samples.done, borderColor: "#1e8e3e", backgroundColor: "#1e8e3e" },
      { label: "failed %", data: samples.failed, borderColor: "#d93025", backgroundColor: "#d93025" },
      { label: "mean progress %", data: samples.step, borderColor: "#2f6fdf", backgroundColor: "#2f6fdf" },
    ], `succeeded ${samples.done.at(-1)} %, failed ${samples.failed.at(-1)} %, mean progress ${samples.step.at(-1)} %`);
  }

  const off = subscribe((snap) => {
    if (snap.task_error) {
      clear(head).append(h("h2", {}, `Task ${taskId}`), h("p", { class: "error" }, snap.task_error));
      return;
    }
    if (!snap.task) return;
    task = snap.task;
    clear(head).append(h("h2", {}, `Task #${task.id}: `, task.name),
      stateLine(task),
      h("p", {}, `Package ${task.version ?? "?"} (`, h("code", {}, task.package), ")",
        task.desc ? [" — ", task.desc] : ""),
      h("p", { class: "muted" }, `Created ${fmtTime(task.created)}`,
        task.started ? `, started ${fmtTime(task.started)}` : "",
        task.finished ? `, finished ${fmtTime(task.finished)}` : ""));
    drawActions();
    adding.hidden = task.state === "finished";
    clear(waves).append(wavesView(task) || "");
    rows.update(task);
    clear(stats).append(statsView(task) || "");
    if (task.waves?.length > 1) updateOutcomesByWave(outcomes, task.waves);
    else updateOutcomes(outcomes, countBy(task.devices, (d) => d.state));
    sample(task);
  });
  return () => { off(); progress.destroy(); outcomes.destroy(); };
}
