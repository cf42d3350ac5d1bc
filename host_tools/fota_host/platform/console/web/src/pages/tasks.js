import { get, post } from "../api.js";
import { clear, field, h, stateBadge, table } from "../dom.js";
import { subscribe } from "../live.js";
import { createFields, createInputs } from "../rollout.js";
import { notice } from "./common.js";

export function tasksPage(main) {
  const status = notice();
  const list = h("div");
  const pkg = h("select", { name: "package", required: true });
  const name = h("input", { type: "text", name: "name", required: true, maxLength: 256 });
  const desc = h("input", { type: "text", name: "desc", maxLength: 256 });
  const extra = h("div", { class: "form" });
  let fillRollout = (body) => body;
  const form = h("form", { class: "form", onsubmit: create },
    field("Package", pkg), field("Task name", name), field("Description", desc), extra,
    h("button", { type: "submit" }, "Create task"));
  main.append(h("h2", {}, "Tasks"),
    h("section", { "aria-labelledby": "tk-new" }, h("h3", { id: "tk-new" }, "New task"), form,
      status.el),
    h("section", { "aria-labelledby": "tk-list" }, h("h3", { id: "tk-list" }, "Tasks"), list));

  get("/api/packages").then((packages) => {
    pkg.replaceChildren(...packages.map((p) =>
      h("option", { value: p.id }, `${p.version}${p.name && p.name !== p.version ? ` (${p.name})` : ""}`)));
    if (!packages.length) pkg.append(h("option", { value: "" }, "no package: upload one first"));
  }).catch((err) => status.error(err.message));
  // rollout options, when the platform's API takes them (rollout.js)
  createFields().then((fields) => {
    const { elements, fill } = createInputs(fields);
    if (elements.length) extra.append(h("fieldset", { class: "form" }, h("legend", {}, "Rollout"), elements));
    fillRollout = fill;
  });

  async function create(ev) {
    ev.preventDefault();
    const body = { package: pkg.value, name: name.value };
    if (desc.value) body.desc = desc.value;
    fillRollout(body);
    try {
      const task = await post("/api/tasks", body);
      window.location.hash = `#/tasks/${task.id}`;
    } catch (err) {
      status.error(`Refused: ${err.message}`);
    }
  }

  return subscribe((snap) => {
    clear(list).append(table("Tasks", [
      { label: "Task", cell: (t) => h("a", { href: `#/tasks/${t.id}` }, `#${t.id} ${t.name}`) },
      { label: "State", cell: (t) => stateBadge(t.state) },
      { label: "Counts", cell: (t) => Object.entries(t.counts || {})
        .map(([k, v]) => `${k.replace(/_/g, " ")} ${v}`).join(", ") || "no devices" },
    ], [...snap.tasks].reverse(), "No task yet."));
  });
}
