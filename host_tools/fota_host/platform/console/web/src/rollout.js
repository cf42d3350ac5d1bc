// Staged rollouts (issue #16) in the console: task actions, the create form's rollout fields,
// the state line with its reason, the waves table and the task's statistics.
//
// The console asks the platform's OpenAPI document which task actions exist and shows a button
// for each one present (POST /api/tasks/{id}/pause | resume | stop | approve, body {}), and
// which rollout properties POST /api/tasks takes (CREATE_FIELDS). GET /api/tasks/{id} gives
// "state" (not_started, running, paused, stopped, finished), "reason", "waiting",
// "waves": [{index, amount, size, state, succeeded, failed, success_rate, ...}], "stats".
import { ApiError, apiPaths, post } from "./api.js";
import { field, h, stateBadge, table } from "./dom.js";

const awaiting = (t) => (t.waves || []).some((w) => w.state === "awaiting_approval");

// action -> when it fits the task's state; confirm: asked first.
export const ROLLOUT_ACTIONS = [
  { action: "pause", label: "Pause", when: (t) => t.state === "running" },
  { action: "resume", label: "Resume", when: (t) => t.state === "paused" },
  { action: "approve", label: "Approve next wave", when: (t) => awaiting(t) },
  { action: "stop", label: "Stop", when: (t) => ["running", "paused"].includes(t.state),
    confirm: "Stop this task? Devices not yet notified will not be." },
];

// Optional create-task inputs, shown when POST /api/tasks's schema has the property.
const list = (sep) => (s) => s.split(sep).map((x) => x.trim()).filter(Boolean);
export const CREATE_FIELDS = [
  { key: "waves", label: "Waves", help: "Sizes in order, comma-separated: a count or a "
    + "percentage; the last wave takes the rest (e.g. 5, 20%, rest)", parse: list(/[,\s]+/) },
  { key: "max_failures", label: "Failure threshold", help: "A count or a percentage of the "
    + "ended devices (e.g. 10%)", parse: (s) => s.trim() },
  { key: "min_ended", label: "Count failures after", type: "number",
    help: "Devices that must have ended before failures count", parse: (s) => Number(s) },
  { key: "on_failure", label: "On failure", options: ["pause", "stop"] },
  { key: "approve_waves", label: "Each wave waits for approval", type: "checkbox" },
  { key: "from_versions", label: "Only devices on versions", help: "Comma-separated",
    parse: list(/[,\s]+/) },
  { key: "groups", label: "Only devices in groups", help: "Comma-separated", parse: list(/[,\s]+/) },
  { key: "continuous", label: "Continuous: add matching devices when they come online",
    type: "checkbox" },
  { key: "windows", label: "Maintenance windows", type: "textarea",
    help: "One per line: DAYS HH:MM-HH:MM [ZONE], e.g. mon-fri 22:00-05:00 Europe/Berlin",
    parse: list(/\n/) },
  { key: "allow_downgrade", label: "Allow a downgrade (an older package)", type: "checkbox" },
];

export async function availableActions() {
  const paths = await apiPaths();
  return ROLLOUT_ACTIONS.filter((a) => `/api/tasks/{id}/${a.action}` in paths);
}

export async function createFields() {
  const paths = await apiPaths();
  const schema = paths["/api/tasks"]?.post?.requestBody?.content?.["application/json"]?.schema;
  const props = schema?.properties || {};
  return CREATE_FIELDS.filter((f) => f.key in props);
}

// The inputs of the fields, and a function that adds their values to a create body.
export function createInputs(fields) {
  const inputs = fields.map((f) => {
    let input;
    if (f.type === "checkbox") input = h("input", { type: "checkbox", name: f.key });
    else if (f.options) {
      input = h("select", { name: f.key }, h("option", { value: "" }, "(default)"),
        f.options.map((o) => h("option", { value: o }, o)));
    } else if (f.type === "textarea") input = h("textarea", { name: f.key, rows: 2 });
    else input = h("input", { type: f.type || "text", name: f.key });
    const el = f.type === "checkbox"
      ? h("div", { class: "field check" }, input, h("label", { for: (input.id = `f-${f.key}`) }, f.label))
      : field(f.label, input, f.help);
    return { f, input, el };
  });
  const fill = (body) => {
    for (const { f, input } of inputs) {
      if (f.type === "checkbox") {
        if (input.checked) body[f.key] = true;
      } else if (input.value.trim()) {
        body[f.key] = f.parse ? f.parse(input.value) : input.value.trim();
      }
    }
    return body;
  };
  return { elements: inputs.map((i) => i.el), fill };
}

// Buttons for the actions the platform offers that fit the task's state now.
export function rolloutButtons(task, actions, onDone, onError) {
  return actions.filter((a) => a.when(task)).map((a) => h("button", {
    type: "button", class: `action-${a.action}`,
    onclick: async () => {
      if (a.confirm && !window.confirm(a.confirm)) return;
      try {
        await post(`/api/tasks/${task.id}/${a.action}`);
        onDone(`${a.label}: done`);
      } catch (err) {
        onError(err instanceof ApiError ? err.message : String(err));
      }
    },
  }, a.label));
}

// The task's state, with why it paused or stopped, or what it waits for.
export function stateLine(task) {
  return h("p", { class: "task-state" }, "State: ", stateBadge(task.state),
    task.reason ? ` — ${task.reason}` : "", task.waiting ? ` — ${task.waiting}` : "");
}

const pctText = (rate) => (rate === null || rate === undefined ? "—" : `${Math.round(rate * 100)} %`);
const secs = (s) => (s === null || s === undefined ? "—" : `${s} s`);

// Waves table (only when the API reports waves).
export function wavesView(task) {
  if (!Array.isArray(task.waves) || !task.waves.length) return null;
  return h("section", { "aria-labelledby": "waves-h" }, h("h3", { id: "waves-h" }, "Waves"),
    table("Waves of this task", [
      { label: "Wave", cell: (w) => String(w.index) },
      { label: "Amount", cell: (w) => String(w.amount ?? "—") },
      { label: "Devices", cell: (w) => String(w.size ?? 0) },
      { label: "State", cell: (w) => stateBadge(w.state ?? "—") },
      { label: "Succeeded", cell: (w) => String(w.succeeded ?? 0) },
      { label: "Failed", cell: (w) => String(w.failed ?? 0) },
      { label: "Success rate", cell: (w) => pctText(w.success_rate) },
    ], task.waves));
}

// The task's statistics (success rate, durations, failures by reason), when given.
export function statsView(task) {
  const s = task.stats;
  if (!s) return null;
  return h("section", { "aria-labelledby": "stats-h" }, h("h3", { id: "stats-h" }, "Statistics"),
    h("dl", { class: "stats" },
      h("dt", {}, "Success rate"), h("dd", {}, pctText(s.success_rate)),
      h("dt", {}, "Median update"), h("dd", {}, secs(s.duration_median_s)),
      h("dt", {}, "95th percentile"), h("dd", {}, secs(s.duration_p95_s))),
    s.failures?.length ? table("Failures by reason", [
      { label: "Reason", cell: (f) => f.reason },
      { label: "Devices", cell: (f) => String(f.devices) },
    ], s.failures) : null);
}
