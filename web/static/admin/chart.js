// Small SVG charts for the console, no library: Console.lineChart (values over time, one or more series) and
// Console.barChart (counts by category). Each is a <figure> with an SVG that names itself (<title>, <desc>) and
// a data table under it, so a screen reader, a keyboard user or a test reads the exact numbers.
"use strict";

(() => {
  const SVG = "http://www.w3.org/2000/svg";
  const COLORS = ["#1f5fbf", "#c2410c", "#1b7a3d", "#7c3aed", "#a45c00", "#0e7490"];
  let serial = 0;

  function svg(tag, attrs = {}, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // A round top for the y axis (1, 2, 5 × 10^n), so the gridlines read as plain numbers.
  function niceMax(value) {
    if (value <= 0) return 1;
    const power = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 2, 5, 10]) if (value <= step * power) return step * power;
    return 10 * power;
  }

  function timeOf(value) {
    return typeof value === "number" ? value * 1000 : new Date(value).getTime();
  }

  function shortTime(ms, spanMs, timeZone) {
    const options = spanMs > 2 * 86400e3 ? { month: "short", day: "numeric" } : { hour: "2-digit", minute: "2-digit" };
    try {
      return new Date(ms).toLocaleString(undefined, { ...options, timeZone: timeZone || undefined });
    } catch {
      return new Date(ms).toLocaleString(undefined, options);
    }
  }

  function dataTable(caption, headers, rows) {
    const { el } = window.Console;
    return el("details", { class: "chart-data" },
      el("summary", {}, `Show the numbers (${rows.length} row${rows.length === 1 ? "" : "s"})`),
      el("div", { class: "table-wrap" },
        el("table", {},
          el("caption", { class: "visually-hidden" }, caption),
          el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col" }, h)))),
          el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((c, i) =>
            i === 0 ? el("th", { scope: "row" }, c) : el("td", { "data-value": c }, c))))))));
  }

  // lineChart([{at, count}], {label, height, series: [{key, name}], timeZone, dates})
  // `at` is an ISO time (or a date "YYYY-MM-DD" with dates: true); series default to one, "count".
  // Drawn at the page's own width: the plot is an inner SVG stretched to fit (strokes keep their width), the
  // text sits in the outer SVG in CSS pixels, so it reads the same on a phone and on a laptop.
  function lineChart(points, options = {}) {
    const { el } = window.Console;
    const label = options.label || "Chart";
    const series = options.series || [{ key: "count", name: label }];
    const height = options.height || 200;
    const plotHeight = height - 24;  // room for the time labels under the plot
    const id = `chart-${++serial}`;
    const sorted = [...points].sort((a, b) => timeOf(a.at) - timeOf(b.at));
    const times = sorted.map((p) => timeOf(p.at));
    const top = niceMax(Math.max(0, ...sorted.flatMap((p) => series.map((s) => Number(p[s.key]) || 0))));
    const first = times[0];
    const last = times[times.length - 1];
    const span = Math.max(1, last - first);
    const x = (t) => (sorted.length < 2 ? 50 : ((t - first) / span) * 100);  // percent of the width
    const y = (v) => 4 + (1 - v / top) * (plotHeight - 8);                    // pixels from the top

    const peaks = series.map((s) => Math.max(0, ...sorted.map((p) => Number(p[s.key]) || 0)));
    const timeLabel = (j) => (options.dates ? sorted[j].at : shortTime(times[j], span, options.timeZone));
    const summary = sorted.length
      ? `${series.map((s, i) => `${s.name}: highest ${peaks[i]}`).join("; ")}, from ${timeLabel(0)} to ${timeLabel(sorted.length - 1)}.`
      : "No data yet.";
    const chart = svg("svg", { width: "100%", height, role: "img", "aria-labelledby": `${id}-t ${id}-d`, class: "chart-svg" });
    chart.append(svg("title", { id: `${id}-t` }, label), svg("desc", { id: `${id}-d` }, summary));
    const plot = svg("svg", { x: 0, y: 0, width: "100%", height: plotHeight, viewBox: `0 0 100 ${plotHeight}`,
      preserveAspectRatio: "none", "aria-hidden": "true", overflow: "visible" });
    const labels = svg("g", { class: "chart-grid", "aria-hidden": "true" });
    for (const fraction of [0, 0.5, 1]) {
      const value = top * fraction;
      plot.append(svg("line", { x1: 0, x2: 100, y1: y(value), y2: y(value), class: "gridline", "vector-effect": "non-scaling-stroke" }));
    }
    for (const fraction of [0.5, 1]) {
      const value = top * fraction;
      labels.append(svg("text", { x: 2, y: y(value) + 14 }, Number.isInteger(value) ? value : value.toFixed(1)));
    }
    if (sorted.length) {
      labels.append(svg("text", { x: 0, y: height - 4, "text-anchor": "start" }, timeLabel(0)));
      if (sorted.length > 1) labels.append(svg("text", { x: "100%", y: height - 4, "text-anchor": "end" }, timeLabel(sorted.length - 1)));
    }
    const dots = svg("g", { "aria-hidden": "true" });
    series.forEach((s, i) => {
      const color = COLORS[i % COLORS.length];
      const coords = sorted.map((p, j) => [x(times[j]), y(Number(p[s.key]) || 0)]);
      if (coords.length > 1) {
        plot.append(svg("polyline", { points: coords.map(([cx, cy]) => `${cx.toFixed(3)},${cy.toFixed(1)}`).join(" "),
          fill: "none", stroke: color, "stroke-width": 2.5, "vector-effect": "non-scaling-stroke", "stroke-linejoin": "round" }));
      }
      if (coords.length <= 40) {
        for (const [cx, cy] of coords) dots.append(svg("circle", { cx: `${cx.toFixed(3)}%`, cy: cy.toFixed(1), r: 3, fill: color }));
      }
    });
    chart.append(plot, dots, labels);
    const legend = series.length > 1 ? el("ul", { class: "chart-legend" }, series.map((s, i) =>
      el("li", {}, el("span", { class: "swatch", style: `background:${COLORS[i % COLORS.length]}` }), s.name))) : null;
    const rows = sorted.map((p, j) => [
      options.dates ? p.at : window.Console.when(times[j] / 1000, options.timeZone),
      ...series.map((s) => String(Number(p[s.key]) || 0)),
    ]);
    return el("figure", { class: "chart", "data-chart": label },
      el("figcaption", {}, label),
      sorted.length ? chart : el("p", { class: "muted" }, "No data yet."),
      legend,
      dataTable(label, [options.dates ? "Date" : "Time", ...series.map((s) => s.name)], rows));
  }

  // barChart({desktop: 3, mobile: 1} | [{label, value}], {label, category, valueName})
  // Horizontal bars placed in percent of the width, text in CSS pixels.
  function barChart(data, options = {}) {
    const { el } = window.Console;
    const label = options.label || "Chart";
    const entries = (Array.isArray(data) ? data : Object.entries(data || {}).map(([k, v]) => ({ label: k, value: v })))
      .map((e) => ({ label: String(e.label), value: Number(e.value) || 0 }))
      .sort((a, b) => b.value - a.value);
    const total = entries.reduce((sum, e) => sum + e.value, 0);
    const id = `chart-${++serial}`;
    const rowHeight = 28;
    const labelShare = 34;  // percent of the width for the names
    const barShare = 46;    // the longest bar; the rest is for its number
    const height = Math.max(1, entries.length) * rowHeight + 4;
    const top = Math.max(1, ...entries.map((e) => e.value));
    const chart = svg("svg", { width: "100%", height, role: "img", "aria-labelledby": `${id}-t ${id}-d`, class: "chart-svg bars" });
    chart.append(svg("title", { id: `${id}-t` }, label),
      svg("desc", { id: `${id}-d` }, entries.map((e) => `${e.label}: ${e.value}`).join(", ") || "No data yet."));
    entries.forEach((e, i) => {
      const yTop = 2 + i * rowHeight;
      const share = (barShare * e.value) / top;
      const g = svg("g", { "aria-hidden": "true" });
      g.append(svg("text", { x: `${labelShare - 2}%`, y: yTop + 18, "text-anchor": "end" }, e.label));
      g.append(svg("rect", { x: `${labelShare}%`, y: yTop + 5, width: `${Math.max(share, 0.3)}%`, height: rowHeight - 10, rx: 3,
        fill: COLORS[0] }));
      const percent = total ? ` (${Math.round((100 * e.value) / total)} %)` : "";
      g.append(svg("text", { x: `${labelShare + share}%`, dx: 6, y: yTop + 18 }, `${e.value}${percent}`));
      chart.append(g);
    });
    return el("figure", { class: "chart", "data-chart": label },
      el("figcaption", {}, label),
      entries.length ? chart : el("p", { class: "muted" }, "No data yet."),
      dataTable(label, [options.category || "Kind", options.valueName || "Count"], entries.map((e) => [e.label, String(e.value)])));
  }

  window.Console.lineChart = lineChart;
  window.Console.barChart = barChart;
})();
