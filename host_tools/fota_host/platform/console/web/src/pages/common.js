import { h } from "../dom.js";

// A status line for the result of an action (role=status: screen readers hear it).
export function notice() {
  const el = h("p", { class: "notice", role: "status", "aria-live": "polite" });
  return {
    el,
    ok(text) { el.className = "notice ok"; el.textContent = text; },
    error(text) { el.className = "notice error"; el.textContent = text; },
    clear() { el.className = "notice"; el.textContent = ""; },
  };
}

export function pct(n, total) {
  return total ? Math.round((100 * n) / total) : 0;
}

export const ENDED = ["succeeded", "failed", "cancelled", "timed_out"];
export const FAILED = ["failed", "timed_out"];
