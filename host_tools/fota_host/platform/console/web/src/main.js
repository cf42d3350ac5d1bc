// The console's entry: a hash router over the pages; one live event stream shared by all.
import { signOut } from "./api.js";
import { clear, h } from "./dom.js";
import { watchTask } from "./live.js";
import { devicesPage } from "./pages/devices.js";
import { overviewPage } from "./pages/overview.js";
import { packagesPage } from "./pages/packages.js";
import { taskPage } from "./pages/task.js";
import { tasksPage } from "./pages/tasks.js";

const main = document.getElementById("main");
let cleanup = null;
let first = true;

function route() {
  const parts = (window.location.hash.replace(/^#\/?/, "") || "overview").split("/");
  const [page, id] = parts;
  if (cleanup) cleanup();
  cleanup = null;
  clear(main);
  for (const a of document.querySelectorAll("nav a")) {
    const current = a.getAttribute("href") === `#/${page}`;
    if (current) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  watchTask(page === "tasks" && id ? id : null);
  const pages = { overview: overviewPage, packages: packagesPage, devices: devicesPage,
    tasks: id ? (el) => taskPage(el, id) : tasksPage };
  const render = pages[page];
  if (!render) {
    main.append(h("h2", {}, "Not found"), h("p", {}, "No such page."));
    return;
  }
  cleanup = render(main) || null;
  if (!first) main.focus({ preventScroll: true }); // a page change: keyboard focus follows
  first = false;
}

// The skip link jumps to the content without touching the hash (the router's).
document.querySelector(".skip").addEventListener("click", (ev) => {
  ev.preventDefault();
  main.focus();
});
document.getElementById("signout").addEventListener("click", signOut);
window.addEventListener("hashchange", route);
route();
