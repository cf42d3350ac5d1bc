import { ApiError, get, MAX_UPLOAD, post, uploadPackage } from "../api.js";
import { clear, field, fmtBytes, fmtTime, h, table } from "../dom.js";
import { notice } from "./common.js";

function digests(p) {
  return h("details", {}, h("summary", {}, `md5 ${p.md5.slice(0, 8)}…`),
    h("dl", { class: "digests" },
      h("dt", {}, "md5"), h("dd", {}, h("code", {}, p.md5)),
      h("dt", {}, "sha256"), h("dd", {}, h("code", {}, p.sha256)),
      p.key_digests?.length ? [h("dt", {}, "signing keys"),
        h("dd", {}, p.key_digests.map((k) => h("code", { class: "block" }, k)))] : null));
}

function variants(p) {
  if (!p.variants?.length) return "none";
  return h("ul", { class: "plain" }, p.variants.map((v) => h("li", {},
    v.kind === "delta" ? `delta from ${v.base_version}` : v.kind,
    `: ${fmtBytes(v.size)}`, v.ratio !== null ? ` (${Math.round(v.ratio * 100)} %)` : "")));
}

export function packagesPage(main) {
  const status = notice();
  const list = h("div");
  const file = h("input", { type: "file", name: "firmware", required: true });
  const version = h("input", { type: "text", name: "version", maxLength: 64 });
  const name = h("input", { type: "text", name: "name", maxLength: 256 });
  const desc = h("input", { type: "text", name: "desc", maxLength: 256 });
  const form = h("form", { class: "form", onsubmit: upload },
    field("Firmware file", file, `At most ${fmtBytes(MAX_UPLOAD)}`),
    field("Version", version, "Required unless the image carries its version"),
    field("Name", name), field("Description", desc),
    h("button", { type: "submit" }, "Upload package"));
  main.append(h("h2", {}, "Packages"),
    h("section", { "aria-labelledby": "pk-up" }, h("h3", { id: "pk-up" }, "Upload a package"),
      form, status.el),
    h("section", { "aria-labelledby": "pk-list" }, h("h3", { id: "pk-list" }, "Packages"), list));

  let packages = [];
  async function load() {
    packages = await get("/api/packages");
    clear(list).append(table("Packages", [
      { label: "Version", cell: (p) => p.version },
      { label: "Name", cell: (p) => p.name || "" },
      { label: "Id", cell: (p) => h("code", {}, p.id) },
      { label: "Size", cell: (p) => fmtBytes(p.size) },
      { label: "Signed", cell: (p) => (p.signed ? "yes" : "no") },
      { label: "Digests", cell: digests },
      { label: "Variants", cell: (p) => [variants(p), variantForm(p)] },
      { label: "Added", cell: (p) => fmtTime(p.created) },
      { label: "Source", cell: (p) => p.source || "" },
    ], packages, "No package yet: upload one."));
  }

  function variantForm(p) {
    const others = packages.filter((o) => o.id !== p.id && o.version !== p.version);
    const base = h("select", { "aria-label": `Delta base for ${p.version}` },
      others.map((o) => h("option", { value: o.id }, `from ${o.version}`)));
    const make = (kind) => async () => {
      try {
        await post(`/api/packages/${p.id}/variants`,
          kind === "delta" ? { kind, from: base.value } : { kind });
        status.ok(`${kind} variant of ${p.version} made`);
        await load();
      } catch (err) {
        status.error(err.message);
      }
    };
    return h("div", { class: "inline" },
      h("button", { type: "button", onclick: make("compressed") }, "Compress"),
      others.length ? [base, h("button", { type: "button", onclick: make("delta") }, "Delta")] : null);
  }

  async function upload(ev) {
    ev.preventDefault();
    const f = file.files[0];
    if (!f) return status.error("Choose a firmware file.");
    if (f.size > MAX_UPLOAD) return status.error(`${f.name} is larger than ${fmtBytes(MAX_UPLOAD)}.`);
    status.ok(`Uploading ${f.name}…`);
    try {
      const pkg = await uploadPackage(f, { version: version.value, name: name.value,
        desc: desc.value });
      status.ok(`Package ${pkg.version} added (${pkg.id}).`);
      form.reset();
      await load();
    } catch (err) {
      status.error(err instanceof ApiError ? `Refused: ${err.message}` : String(err));
    }
  }

  load().catch((err) => status.error(err.message));
}
