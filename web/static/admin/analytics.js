// Analytics: #/analytics is the organization over its last 7, 30 or 90 days; #/analytics/ID one service: viewers
// over time, unique viewers, watch time, devices and browsers, chat and reactions, prayer requests. Both offer
// the report as a CSV download; a service on air refreshes every 5 s.
"use strict";

(() => {
  const C = window.Console;
  const { el } = C;
  const PERIODS = [7, 30, 90];
  const ON_AIR = ["STARTING", "LIVE", "ENDING"];

  function figure(label, value, id) {
    return el("div", { class: "figure" }, el("dt", {}, label), el("dd", { id, "data-figure": id || label }, value));
  }

  function figures(items) {
    return el("dl", { class: "figures" }, items.map(([label, value, id]) => figure(label, value, id)));
  }

  function csvLink(href, label) {
    // A plain link: the download goes with the console's cookie, and no token is ever in the address.
    return el("a", { class: "button", href, download: "", "aria-label": label }, "Download CSV");
  }

  // Re-rendering keeps which data tables the volunteer opened.
  function replaceKeepingOpen(box, nodes) {
    const open = new Set([...box.querySelectorAll("figure.chart")].filter((f) => f.querySelector("details")?.open)
      .map((f) => f.dataset.chart));
    box.replaceChildren(...nodes.filter(Boolean));
    for (const f of box.querySelectorAll("figure.chart")) if (open.has(f.dataset.chart)) f.querySelector("details").open = true;
  }

  async function renderOrg(main) {
    const org = C.org();
    if (!org) { main.append(el("p", { class: "notice" }, "No organization.")); return; }
    const chosen = Number(sessionStorage.getItem("console.analytics_days")) || 30;
    let days = PERIODS.includes(chosen) ? chosen : 30;
    const body = el("div", {});
    const tabs = el("div", { class: "tabs periods", role: "group", "aria-label": "Period" });
    const csvBox = el("span", {});

    async function load() {
      for (const b of tabs.children) b.setAttribute("aria-pressed", String(Number(b.dataset.days) === days));
      const base = `/api/orgs/${encodeURIComponent(org.id)}/analytics?days=${days}`;
      const data = await C.api("GET", base);
      csvBox.replaceChildren(csvLink(`${base}&format=csv`, `Download the last ${days} days as CSV`));
      const tz = org.timezone;
      replaceKeepingOpen(body, [
        figures([
          ["Services", String(data.streams_count)], ["Peak viewers", String(data.peak_viewers)],
          ["Unique viewers", String(data.unique_viewers), "org-unique"], ["Total watch time", C.duration(data.total_watch_seconds)],
          ["Average per viewer", C.duration(data.average_watch_seconds)], ["Chat messages", String(data.messages_total)],
          ["Prayer requests", String(data.prayer_requests)],
        ]),
        el("div", { class: "panel" }, C.lineChart(data.daily.map((d) => ({ at: d.date, unique_viewers: d.unique_viewers, messages: d.messages })),
          { label: "Unique viewers and chat messages by day", dates: true, height: 200, timeZone: tz,
            series: [{ key: "unique_viewers", name: "Unique viewers" }, { key: "messages", name: "Chat messages" }] })),
        el("div", { class: "grid" },
          el("div", { class: "panel" }, C.barChart(data.devices, { label: "Devices", category: "Device", valueName: "Viewers" })),
          el("div", { class: "panel" }, C.barChart(data.browsers, { label: "Browsers", category: "Browser", valueName: "Viewers" }))),
        el("h2", {}, "Services"),
        data.streams.length ? el("div", { class: "table-wrap" }, el("table", {},
          el("thead", {}, el("tr", {}, ["Service", "Started", "Peak", "Unique viewers", "Watch time", "Messages"]
            .map((h) => el("th", { scope: "col" }, h)))),
          el("tbody", {}, data.streams.slice().reverse().map((s) => el("tr", {},
            el("td", {}, el("a", { href: `#/analytics/${encodeURIComponent(s.stream_id)}` }, s.title)),
            el("td", {}, C.when(s.started_at, tz)), el("td", {}, String(s.peak_viewers)),
            el("td", {}, String(s.unique_viewers)), el("td", {}, C.duration(s.total_watch_seconds)),
            el("td", {}, String(s.messages_total)))))))
          : el("p", { class: "muted" }, "No services went on air in this period."),
      ]);
    }

    for (const n of PERIODS) {
      tabs.append(el("button", { type: "button", "data-days": String(n), "aria-pressed": String(n === days),
        on: { click: () => { days = n; sessionStorage.setItem("console.analytics_days", String(n)); C.attempt(load); } } },
      `${n} days`));
    }
    main.append(el("h1", {}, "Analytics"),
      el("div", { class: "row analytics-head" }, tabs, csvBox), body);
    await load();
  }

  async function renderStream(main, streamId) {
    const path = `/api/streams/${encodeURIComponent(streamId)}/analytics`;
    const tz = C.org()?.timezone;
    const title = el("h1", {}, "Analytics");
    const status = el("span", { class: "badge" });
    const body = el("div", {});
    main.append(el("p", {}, el("a", { href: "#/analytics" }, "← All services")), title,
      el("div", { class: "row analytics-head" }, status,
        csvLink(`${path}?format=csv`, "Download this service's analytics as CSV")), body);
    let timer = null;

    async function load() {
      const data = await C.api("GET", path);
      title.textContent = `Analytics: ${data.title}`;
      status.textContent = data.status;
      status.className = `badge ${data.status}`;
      const live = ON_AIR.includes(data.status);
      const reactions = Object.values(data.reactions_total || {}).reduce((a, b) => a + b, 0);
      replaceKeepingOpen(body, [
        figures([
          ...(live ? [["Watching now", String(data.current_viewers), "current-viewers"]] : []),
          ["Peak viewers", String(data.peak_viewers), "peak-viewers"],
          ["Unique viewers", String(data.unique_viewers), "unique-viewers"],
          ["Total watch time", C.duration(data.total_watch_seconds)],
          ["Average per viewer", C.duration(data.average_watch_seconds)],
          ["Chat messages", String(data.messages_total)], ["Reactions", String(reactions)],
          ["Prayer requests", String(data.prayer_requests)], ["Questions", String(data.questions)],
        ]),
        el("div", { class: "panel" }, C.lineChart(data.viewers, { label: "Viewers over time", height: 220, timeZone: tz })),
        el("div", { class: "panel" }, C.lineChart(data.chat, { label: "Chat messages and reactions per minute", height: 180,
          timeZone: tz, series: [{ key: "messages", name: "Messages" }, { key: "reactions", name: "Reactions" }] })),
        el("div", { class: "grid" },
          el("div", { class: "panel" }, C.barChart(data.devices, { label: "Devices", category: "Device", valueName: "Viewers" })),
          el("div", { class: "panel" }, C.barChart(data.browsers, { label: "Browsers", category: "Browser", valueName: "Viewers" })),
          el("div", { class: "panel" }, C.barChart({ "Built-in player": data.players.built_in, "Other players": data.players.other },
            { label: "Players", category: "Player", valueName: "Viewers" })),
          el("div", { class: "panel" }, C.barChart(data.reactions_total, { label: "Reactions", category: "Reaction", valueName: "Count" }))),
        live ? el("p", { class: "hint" }, "On air: this page updates every 5 seconds.") : null,
      ]);
      if (live && !timer) timer = C.every(5000, () => C.attempt(load));
      if (!live && timer) { clearInterval(timer); timer = null; }
    }
    await load();
  }

  C.page("analytics", {
    nav: "Analytics",
    title: "Analytics",
    render: async (main, params) => (params[0] ? renderStream(main, params[0]) : renderOrg(main)),
  });
})();
