// Charts (Chart.js, only the parts used), each readable without sight:
// The canvas gets role="img" and an aria-label that states the numbers.
import {
  ArcElement, BarController, BarElement, CategoryScale, Chart, DoughnutController, Legend,
  LinearScale, LineController, LineElement, PointElement, Tooltip,
} from "chart.js";
import { h } from "./dom.js";

Chart.register(ArcElement, BarController, BarElement, CategoryScale, DoughnutController, Legend,
  LinearScale, LineController, LineElement, PointElement, Tooltip);

export const STATE_COLORS = {
  pending: "#8a94a6", upgrading: "#2f6fdf", succeeded: "#1e8e3e", failed: "#d93025",
  cancelled: "#b0892b", timed_out: "#9c27b0",
};

function canvasFor(label) {
  return h("canvas", { role: "img", "aria-label": label });
}

// A chart that keeps its Chart.js instance and is updated in place (no flicker on live data).
export class LiveChart {
  constructor(title, config) {
    this.canvas = canvasFor(title);
    this.title = title;
    this.el = h("figure", { class: "chart" }, h("figcaption", {}, title),
      h("div", { class: "chart-box" }, this.canvas));
    this.chart = new Chart(this.canvas, {
      ...config,
      options: { responsive: true, maintainAspectRatio: false, animation: false,
        ...(config.options || {}) },
    });
  }

  update(labels, datasets, summary) {
    this.chart.data.labels = labels;
    datasets.forEach((d, i) => {
      if (this.chart.data.datasets[i]) Object.assign(this.chart.data.datasets[i], d);
      else this.chart.data.datasets.push(d);
    });
    this.chart.data.datasets.length = datasets.length;
    this.chart.update("none");
    this.canvas.setAttribute("aria-label", `${this.title}: ${summary}`);
  }

  destroy() {
    this.chart.destroy();
  }
}

export function outcomesChart(title = "Outcomes") {
  return new LiveChart(title, { type: "bar", data: { labels: [], datasets: [] },
    options: { indexAxis: "y", plugins: { legend: { display: false } },
      scales: { x: { beginAtZero: true, stacked: true, ticks: { precision: 0 } },
        y: { stacked: true } } } });
}

export function versionsChart(title = "Versions across the fleet") {
  return new LiveChart(title, { type: "doughnut", data: { labels: [], datasets: [] },
    options: { plugins: { legend: { position: "right" } } } });
}

export function progressChart(title = "Progress over time") {
  return new LiveChart(title, { type: "line", data: { labels: [], datasets: [] },
    options: { scales: { y: { beginAtZero: true, max: 100, title: { display: true,
      text: "% of devices" } } }, elements: { point: { radius: 0 } } } });
}

export function countBy(items, key) {
  const counts = new Map();
  for (const item of items) {
    const k = key(item) ?? "unknown";
    counts.set(k, (counts.get(k) || 0) + 1);
  }
  return counts;
}

export function summarize(counts) {
  return [...counts].map(([k, v]) => `${k} ${v}`).join(", ") || "none";
}

export function updateOutcomes(chart, counts) {
  const labels = [...counts.keys()];
  chart.chart.options.plugins.legend.display = false;
  chart.update(labels, [{ label: "devices", data: labels.map((k) => counts.get(k)),
    backgroundColor: labels.map((k) => STATE_COLORS[k] || "#666") }], summarize(counts));
}

// One bar per wave, stacked by sub-task state (waves from GET /api/tasks/{id}).
export function updateOutcomesByWave(chart, waves) {
  const states = Object.keys(STATE_COLORS).filter((st) => waves.some((w) => w.counts?.[st]));
  const labels = waves.map((w) => `wave ${w.index}`);
  chart.chart.options.plugins.legend.display = true;
  chart.update(labels, states.map((st) => ({ label: st.replace(/_/g, " "),
    data: waves.map((w) => w.counts?.[st] || 0), backgroundColor: STATE_COLORS[st] })),
  waves.map((w) => `wave ${w.index} ${summarize(new Map(Object.entries(w.counts || {})))}`)
    .join("; "));
}

const PALETTE = ["#2f6fdf", "#1e8e3e", "#f29900", "#d93025", "#9c27b0", "#00897b", "#5f6368"];
export function updateVersions(chart, counts) {
  const labels = [...counts.keys()];
  chart.update(labels, [{ label: "devices", data: labels.map((k) => counts.get(k)),
    backgroundColor: labels.map((_, i) => PALETTE[i % PALETTE.length]) }], summarize(counts));
}
