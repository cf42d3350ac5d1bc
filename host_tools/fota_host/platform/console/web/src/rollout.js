// Rollout controls and waves: THE PLACE where staged rollouts (issue #16) plug into the console.
//
// The console asks the platform's OpenAPI document which task actions exist and shows a button
// for each one present, so the rollout work only has to add the API routes:
//   POST /api/tasks/{id}/pause | resume | stop | approve   (body {} ; returns the task)
// and, in GET /api/tasks/{id}: "state" (also "paused" with "reason", "stopped") and
//   "waves": [{"index", "size", "state", "succeeded", "failed", ...}].
// Task creation fields (waves, thresholds, filters, windows) come from the create-task schema's
// properties in the same document: see CREATE_FIELDS.
import { ApiError, apiPaths, post } from "./api.js";
import { h, stateBadge, table } from "./dom.js";

// action -> when it makes sense (by task state); the label is what the button says.
export const ROLLOUT_ACTIONS = [
  { action: "pause", label: "Pause", when: (t) => t.state === "running" },
  { action: "resume", label: "Resume", when: (t) => t.state === "paused" },
  { action: "approve", label: "Approve next wave",
    when: (t) => (t.waves || []).some((w) => w.state === "awaiting_approval") },
  { action: "stop", label: "Stop", when: (t) => ["running", "paused"].includes(t.state),
    confirm: "Stop this task? Devices not yet notified will not be." },
];

// Optional create-task inputs, shown when POST /api/tasks's schema has the property.
// parse(text) -> the JSON value sent.
const list = (s) => s.split(",").map((x) => x.trim()).filter(Boolean);
export const CREATE_FIELDS = [
  { key: "waves", label: "Waves", help: "Comma-separated counts or percentages, e.g. 5, 20%, 100%",
    parse: list },
  { key: "max_failures", label: "Failure threshold", help: "A count or a percentage, e.g. 10%",
    parse: (s) => s.trim() },
  { key: "min_ended", label: "Count failures after", help: "Devices ended before the threshold applies",
    parse: (s) => Number(s) },
  { key: "on_failure", label: "On failure", help: "pause or stop", parse: (s) => s.trim() },
  { key: "from_version", label: "From versions", help: "Comma-separated source versions",
    parse: list },
  { key: "group", label: "Groups", help: "Comma-separated device groups", parse: list },
  { key: "window", label: "Maintenance windows", help: "Comma-separated window specs", parse: list },
];

export async function availableActions(taskId) {
  const paths = await apiPaths();
  return ROLLOUT_ACTIONS.filter((a) => `/api/tasks/{id}/${a.action}` in paths);
}

export async function createFields() {
  const paths = await apiPaths();
  const schema = paths["/api/tasks"]?.post?.requestBody?.content?.["application/json"]?.schema;
  const props = schema?.properties || {};
  return CREATE_FIELDS.filter((f) => f.key in props);
}

// Buttons for the actions the platform offers that fit the task's state now.
export function rolloutButtons(task, actions, onDone, onError) {
  return actions.filter((a) => a.when(task)).map((a) => h("button", {
    type: "button", class: `action-${a.action}`,
    onclick: async () => {
      if (a.confirm && !window.confirm(a.confirm)) return;
      try {
        onDone(await post(`/api/tasks/${task.id}/${a.action}`));
      } catch (err) {
        onError(err instanceof ApiError ? err.message : String(err));
      }
    },
  }, a.label));
}

// The reason a task paused or stopped, when the API gives one.
export function stateLine(task) {
  return h("p", { class: "task-state" }, "State: ", stateBadge(task.state),
    task.reason ? ` — ${task.reason}` : "");
}

// Waves table (only when the API reports waves).
export function wavesView(task) {
  if (!Array.isArray(task.waves) || !task.waves.length) return null;
  return h("section", { "aria-labelledby": "waves-h" }, h("h3", { id: "waves-h" }, "Waves"),
    table("Waves of this task", [
      { label: "Wave", cell: (w) => String((w.index ?? 0) + 1) },
      { label: "Size", cell: (w) => String(w.size ?? "—") },
      { label: "State", cell: (w) => stateBadge(w.state ?? "—") },
      { label: "Succeeded", cell: (w) => String(w.succeeded ?? 0) },
      { label: "Failed", cell: (w) => String(w.failed ?? 0) },
    ], task.waves));
}
