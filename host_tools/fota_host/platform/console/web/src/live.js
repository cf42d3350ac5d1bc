// Live updates: one EventSource on /console/events (server-sent events). Each "snapshot" event
// carries {tasks, devices, task?}; pages subscribe and redraw the parts that changed.
let source = null;
let watched = null;
const listeners = new Set();
let latest = null;

function status(text) {
  const el = document.getElementById("live");
  if (el) el.textContent = text;
}

function open() {
  if (source) source.close();
  const q = watched ? `?task=${encodeURIComponent(watched)}` : "";
  source = new EventSource(`/console/events${q}`);
  source.addEventListener("snapshot", (ev) => {
    latest = JSON.parse(ev.data);
    status("Live: updates arrive without reloading.");
    for (const fn of listeners) fn(latest);
  });
  source.onerror = () => status("Live updates interrupted: reconnecting…");
}

export function watchTask(taskId) {
  const next = taskId ? String(taskId) : null;
  if (source && next === watched) return;
  watched = next;
  latest = null;
  open();
}

export function subscribe(fn) {
  listeners.add(fn);
  if (latest) fn(latest);
  return () => listeners.delete(fn);
}
