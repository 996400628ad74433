// Streams page: live / upcoming / past, creating and editing a stream, scheduling a recurring series (an RRULE
// builder for "weekly on a day, at a time, in a time zone"), cancelling and deleting. Also StreamsUI, the few
// helpers the go-live panel and the recordings library share (time zones, inline confirmation, key notices).
"use strict";

(() => {
  const C = window.Console;
  const { el } = C;
  const LIVE = ["STARTING", "LIVE", "ENDING"];
  const PLATFORM_NAMES = { mux: "Mux", ivs: "AWS IVS" };  // a row's badge (GET /api/backends has the long texts)
  const DAYS = [["SU", "Sunday"], ["MO", "Monday"], ["TU", "Tuesday"], ["WE", "Wednesday"], ["TH", "Thursday"],
    ["FR", "Friday"], ["SA", "Saturday"]];
  // Stream keys the volunteer was just given, kept in this page's memory only (never a URL or storage), so the
  // go-live panel can show the key right after "Create" without it being sent again.
  const freshKeys = new Map();

  // -- time zones: a wall-clock time in a named zone <-> an instant --------------------------------------------
  function zoneParts(ms, timeZone) {
    const parts = new Intl.DateTimeFormat("en-US", {
      timeZone, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit",
      minute: "2-digit", second: "2-digit",
    }).formatToParts(new Date(ms));
    const get = (type) => Number(parts.find((p) => p.type === type).value);
    return { year: get("year"), month: get("month"), day: get("day"), hour: get("hour"), minute: get("minute"),
      second: get("second") };
  }

  function offsetMs(ms, timeZone) {
    const p = zoneParts(ms, timeZone);
    return Date.UTC(p.year, p.month - 1, p.day, p.hour, p.minute, p.second) - Math.floor(ms / 1000) * 1000;
  }

  // "2026-12-06T10:30" in America/Chicago -> "2026-12-06T16:30:00.000Z". Two passes settle DST edges.
  function zonedToUtc(local, timeZone) {
    const [date, time] = local.split("T");
    const [y, m, d] = date.split("-").map(Number);
    const [hh, mm] = time.split(":").map(Number);
    const wall = Date.UTC(y, m - 1, d, hh, mm);
    let utc = wall - offsetMs(wall, timeZone);
    utc = wall - offsetMs(utc, timeZone);
    return new Date(utc).toISOString();
  }

  function utcToZoned(iso, timeZone) {
    if (!iso) return "";
    const p = zoneParts(new Date(iso).getTime(), timeZone);
    const two = (n) => String(n).padStart(2, "0");
    return `${p.year}-${two(p.month)}-${two(p.day)}T${two(p.hour)}:${two(p.minute)}`;
  }

  function todayIn(timeZone) {
    return utcToZoned(new Date().toISOString(), timeZone).slice(0, 10);
  }

  function zoneNames() {
    try { return Intl.supportedValuesOf("timeZone"); } catch { return ["UTC", "America/Chicago", "America/New_York"]; }
  }

  function zoneSelect(id, selected) {
    const names = zoneNames();
    if (selected && !names.includes(selected)) names.unshift(selected);
    if (!names.includes("UTC")) names.unshift("UTC");
    const select = el("select", { id, name: "timezone" }, names.map((z) => el("option", { value: z }, z)));
    select.value = selected || "UTC";
    return select;
  }

  function orgZone() {
    const org = C.org();
    return (org && org.timezone) || Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  }

  // -- small shared pieces --------------------------------------------------------------------------------------
  // A destructive action asks once more in place (a browser confirm() is easy to dismiss by accident and
  // can't be styled for a phone).
  function confirmInline(anchor, question, actionLabel, action, extra) {
    const existing = anchor.parentElement && anchor.parentElement.querySelector(".confirm");
    if (existing) { existing.remove(); return; }
    const box = el("div", { class: "confirm notice", role: "group", "aria-label": question },
      el("p", {}, question), extra || null,
      el("div", { class: "row" },
        el("button", { type: "button", class: "danger", on: { click: async () => { box.remove(); await action(); } } },
          actionLabel),
        el("button", { type: "button", on: { click: () => { box.remove(); anchor.focus(); } } }, "Keep it")));
    anchor.after(box);
    box.querySelector("button").focus();
  }

  function copyRow(label, value, id) {
    const field = el("input", { id, readonly: true, value, "aria-label": label });
    return el("div", {}, el("label", { for: id }, label),
      el("div", { class: "copyable" }, field, C.copyButton(() => field.value, `Copy ${label}`)));
  }

  // The key as the API just answered it: shown once, with a warning.
  function keyNotice(key, stream) {
    return el("section", { class: "panel key-notice", id: "new-key", "aria-label": "Stream key" },
      el("h2", {}, "Stream key"),
      el("p", { class: "notice", role: "alert" },
        "Keep this key private: anyone who has it can broadcast as your church. It is shown only now; " +
        "paste it into OBS (Settings → Stream → Stream Key). If it leaks, rotate it."),
      stream.rtmp_url ? copyRow("Server", stream.rtmp_url, "key-server") : null,
      copyRow("Stream key", key, "key-value"),
      stream.srt_url ? copyRow("SRT URL (includes the key)", stream.srt_url, "key-srt") : null);
  }

  function statusBadge(status) {
    return el("span", { class: `badge ${status}` }, status.charAt(0) + status.slice(1).toLowerCase());
  }

  function rruleWords(rrule) {
    const parts = Object.fromEntries(rrule.split(";").map((p) => p.split("=")));
    const days = (parts.BYDAY || "").split(",").filter(Boolean)
      .map((code) => (DAYS.find(([c]) => c === code.slice(-2)) || [code, code])[1]);
    const every = Number(parts.INTERVAL || 1);
    if (parts.FREQ === "WEEKLY") {
      const when = days.length ? `on ${days.join(", ")}` : "";
      return every === 1 ? `Every week ${when}` : `Every ${every} weeks ${when}`;
    }
    if (parts.FREQ === "DAILY") return every === 1 ? "Every day" : `Every ${every} days`;
    if (parts.FREQ === "MONTHLY") return `Monthly (${rrule})`;
    return rrule;
  }

  // -- the video platform (builtin / Mux / AWS IVS): GET /api/backends says which are configured here ------------
  function platforms() {
    const org = C.org();
    return C.api("GET", `/api/backends${org ? `?org=${encodeURIComponent(org.id)}` : ""}`);
  }

  // The "Video platform" select, filled in once the server answers and shown only when there is a choice (more
  // than one platform configured). current: the stream's platform (editing), else the organization's default
  // is preselected and, untouched, left for the server to apply. onPick(platform) follows each choice.
  function platformField(p, current, onPick) {
    const slot = el("div", { class: "platform-field", id: `${p}-platform`, hidden: true });
    platforms().then((answer) => {
      if (!answer || answer.backends.length < 2) return;
      const select = el("select", { id: `${p}-backend`, name: "backend" }, answer.backends.map((b) =>
        el("option", { value: b.name }, b.name === answer.default ? `${b.summary} (your default)` : b.summary)));
      select.value = current || answer.default;
      select.dataset.untouched = "1";
      const notes = el("ul", { class: "hint platform-notes", id: `${p}-backend-notes` });
      const pick = (follow) => {
        const chosen = answer.backends.find((b) => b.name === select.value);
        notes.replaceChildren(...(chosen ? chosen.notes : []).map((n) => el("li", {}, n)));
        if (chosen && onPick && follow) onPick(chosen);
      };
      select.addEventListener("change", () => { delete select.dataset.untouched; pick(true); });
      slot.replaceChildren(el("label", { for: `${p}-backend` }, "Video platform"), select,
        el("p", { class: "field-error", "data-error-for": "backend", role: "alert", hidden: true }), notes);
      slot.hidden = false;
      pick(!current);  // a new stream starts as its platform allows; an edited one stays as it is
    }).catch(() => { /* no choice shown: the server applies the organization's default */ });
    return slot;
  }

  // A 400's details ({field: reason}) next to the fields they name; reasons without a place go to the form's foot.
  function showFieldErrors(form, details) {
    for (const box of form.querySelectorAll(".field-error")) { box.hidden = true; box.textContent = ""; }
    if (!details || typeof details !== "object") return;
    const rest = [];
    for (const [name, reason] of Object.entries(details)) {
      const slot = form.querySelector(`[data-error-for="${name === "latency" ? "low_latency" : name}"]`) ||
        (rest.push(reason), null);
      if (slot) { slot.textContent = reason; slot.hidden = false; }
    }
    const foot = form.querySelector('[data-error-for="*"]');
    if (foot && rest.length) { foot.textContent = rest.join(" "); foot.hidden = false; }
  }

  // C.attempt, plus the refusal's reasons shown beside the fields.
  async function submitForm(form, action, done) {
    showFieldErrors(form, null);
    try {
      const result = await action();
      C.toast(done, "ok");
      return result;
    } catch (error) {
      const details = error.details;
      showFieldErrors(form, details);
      C.toast(details && typeof details === "object" ? `${error.message}: ${Object.values(details).join(" ")}`
        : details ? `${error.message}: ${details}` : error.message, "error");
      return undefined;
    }
  }

  function errorSlot(name) {
    return el("p", { class: "field-error", "data-error-for": name, role: "alert", hidden: true });
  }

  window.StreamsUI = { zonedToUtc, utcToZoned, todayIn, zoneSelect, orgZone, confirmInline, copyRow, keyNotice,
    statusBadge, rruleWords, freshKeys, LIVE, platforms };

  // -- the stream form (create and edit) ------------------------------------------------------------------------
  const FLAG_LABELS = [["chat_enabled", "Live chat"], ["reactions_enabled", "Reactions"], ["dvr_enabled", "Rewind (DVR)"],
    ["recording_enabled", "Keep a recording"], ["low_latency", "Low latency"], ["auto_publish", "Go live as soon as the encoder connects"],
    ["library_auto_publish", "Publish to the library when the service ends"]];
  const OFF_FOR_NEW = new Set(["library_auto_publish"]);  // what a new stream starts without (as the server does)

  function streamForm(stream, onSaved) {
    const editing = Boolean(stream);
    const zone = (stream && stream.timezone) || orgZone();
    const p = editing ? "edit" : "new";
    const form = el("form", { class: "panel stream-form", id: `${p}-stream-form`, "aria-label": editing ? "Edit stream" : "New stream" },
      el("h2", {}, editing ? `Edit “${stream.title}”` : "New stream"),
      el("label", { for: `${p}-title` }, "Title"),
      el("input", { id: `${p}-title`, name: "title", required: true, maxlength: 200, value: stream ? stream.title : "" }),
      el("label", { for: `${p}-description` }, "Description (optional)"),
      el("textarea", { id: `${p}-description`, name: "description", rows: 2 }, stream ? stream.description : ""),
      el("div", { class: "grid form-grid" },
        el("div", {}, el("label", { for: `${p}-start` }, "Starts (optional)"),
          el("input", { id: `${p}-start`, type: "datetime-local", value: stream ? utcToZoned(stream.scheduled_start, zone) : "" })),
        el("div", {}, el("label", { for: `${p}-minutes` }, "Length in minutes (optional)"),
          el("input", { id: `${p}-minutes`, type: "number", min: 1, max: 1440,
            value: stream && stream.scheduled_start && stream.scheduled_end
              ? Math.round((new Date(stream.scheduled_end) - new Date(stream.scheduled_start)) / 60000) : "" })),
        el("div", {}, el("label", { for: `${p}-zone` }, "Time zone"), zoneSelect(`${p}-zone`, zone)),
        el("div", {}, el("label", { for: `${p}-visibility` }, "Who can watch"),
          el("select", { id: `${p}-visibility`, name: "visibility" },
            el("option", { value: "PUBLIC" }, "Everyone (public)"),
            el("option", { value: "MEMBERS_ONLY" }, "Members only"),
            el("option", { value: "PRIVATE" }, "Private (link with a token)")))),
      platformField(p, stream ? stream.backend : null, (chosen) => {
        // A platform without a DVR window: rewind goes off (ticking it again asks, and the server says why not).
        const dvr = form.querySelector(`#${p}-dvr_enabled`);
        if (dvr) dvr.dataset.platformOff = chosen.dvr_window ? "" : "1";
        if (!chosen.dvr_window && dvr) dvr.checked = false;
      }),
      el("fieldset", { class: "flags" }, el("legend", {}, "Options"),
        FLAG_LABELS.map(([name, label]) => el("label", { class: "inline", for: `${p}-${name}` },
          el("input", { type: "checkbox", id: `${p}-${name}`, name, checked: stream ? stream[name] : !OFF_FOR_NEW.has(name) }),
          label)),
        FLAG_LABELS.map(([name]) => errorSlot(name))),
      errorSlot("*"),
      el("div", { class: "row actions" },
        el("button", { type: "submit", class: "primary" }, editing ? "Save changes" : "Create stream"),
        el("button", { type: "button", on: { click: () => form.remove() } }, "Close")));
    form.querySelector(`#${p}-visibility`).value = (stream && stream.visibility) || "PUBLIC";
    if (!editing) {
      // New streams follow the organization's defaults unless the volunteer changes a box.
      for (const [name] of FLAG_LABELS) form.querySelector(`#${p}-${name}`).dataset.untouched = "1";
      form.addEventListener("change", (event) => { if (event.target.dataset) delete event.target.dataset.untouched; });
      const org = C.org();
      if (org) {
        C.api("GET", `/api/orgs/${encodeURIComponent(org.id)}`).then((answer) => {
          const settings = answer.settings || {};
          const defaults = { dvr_enabled: settings.dvr_enabled, recording_enabled: settings.recording_enabled,
            auto_publish: settings.auto_publish,
            low_latency: settings.latency_mode ? settings.latency_mode === "LOW" : undefined };
          for (const [name, value] of Object.entries(defaults)) {
            const box = form.querySelector(`#${p}-${name}`);
            if (value !== undefined && box.dataset.untouched && !box.dataset.platformOff) box.checked = Boolean(value);
          }
        }).catch(() => { /* the server's defaults (all on) stand */ });
      }
    }
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const timeZone = form.querySelector(`#${p}-zone`).value;
      const start = form.querySelector(`#${p}-start`).value;
      const minutes = Number(form.querySelector(`#${p}-minutes`).value || 0);
      const body = {
        title: form.querySelector(`#${p}-title`).value.trim(),
        description: form.querySelector(`#${p}-description`).value,
        timezone: timeZone,
        visibility: form.querySelector(`#${p}-visibility`).value,
      };
      if (start) {
        body.scheduled_start = zonedToUtc(start, timeZone);
        body.scheduled_end = minutes ? new Date(new Date(body.scheduled_start).getTime() + minutes * 60000).toISOString() : null;
      } else if (editing) {
        body.scheduled_start = null;
        body.scheduled_end = null;
      }
      for (const [name] of FLAG_LABELS) {
        const box = form.querySelector(`#${p}-${name}`);
        if (editing || !box.dataset.untouched) body[name] = box.checked;
      }
      const platform = form.querySelector(`#${p}-backend`);
      if (platform && (editing ? platform.value !== stream.backend : !platform.dataset.untouched)) body.backend = platform.value;
      const saved = await submitForm(form, () => editing ? C.api("PATCH", `/api/streams/${stream.id}`, body)
        : C.api("POST", "/api/streams", body), editing ? "Saved" : "Stream created");
      if (saved) onSaved(saved, form);
    });
    return form;
  }

  // -- the series builder ---------------------------------------------------------------------------------------
  function seriesForm(onSaved) {
    const zone = orgZone();
    const preview = el("code", { id: "series-rrule" });
    const form = el("form", { class: "panel series-form", id: "series-form", "aria-label": "Schedule a recurring service" },
      el("h2", {}, "Schedule a recurring service"),
      el("label", { for: "series-title" }, "Title"),
      el("input", { id: "series-title", required: true, maxlength: 200, value: "Sunday Worship" }),
      el("fieldset", { class: "days" }, el("legend", {}, "On"),
        DAYS.map(([code, name]) => el("label", { class: "inline", for: `series-day-${code}` },
          el("input", { type: "checkbox", id: `series-day-${code}`, value: code, checked: code === "SU" }), name))),
      el("div", { class: "grid form-grid" },
        el("div", {}, el("label", { for: "series-every" }, "Repeats"),
          el("select", { id: "series-every" }, el("option", { value: "1" }, "Every week"),
            el("option", { value: "2" }, "Every other week"), el("option", { value: "3" }, "Every third week"),
            el("option", { value: "4" }, "Every fourth week"))),
        el("div", {}, el("label", { for: "series-time" }, "Starts at (local time)"),
          el("input", { id: "series-time", type: "time", required: true, value: "10:30" })),
        el("div", {}, el("label", { for: "series-duration" }, "Length in minutes"),
          el("input", { id: "series-duration", type: "number", min: 1, max: 1440, required: true, value: 90 })),
        el("div", {}, el("label", { for: "series-zone" }, "Time zone"), zoneSelect("series-zone", zone)),
        el("div", {}, el("label", { for: "series-dtstart" }, "First day (optional)"),
          el("input", { id: "series-dtstart", type: "date" }))),
      platformField("series", null, null),
      el("p", { class: "hint" }, "Repeat rule: ", preview),
      errorSlot("*"),
      el("div", { class: "row actions" },
        el("button", { type: "submit", class: "primary" }, "Schedule series"),
        el("button", { type: "button", on: { click: () => form.remove() } }, "Close")));
    const rrule = () => {
      const days = [...form.querySelectorAll(".days input:checked")].map((box) => box.value);
      const every = form.querySelector("#series-every").value;
      return `FREQ=WEEKLY${every !== "1" ? `;INTERVAL=${every}` : ""};BYDAY=${days.join(",")}`;
    };
    const refresh = () => { preview.textContent = rrule(); };
    form.addEventListener("change", refresh);
    refresh();
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (!form.querySelector(".days input:checked")) {
        C.toast("Choose at least one day of the week.", "error");
        return;
      }
      const body = {
        title: form.querySelector("#series-title").value.trim(),
        rrule: rrule(),
        start_time: form.querySelector("#series-time").value.slice(0, 5),
        duration: Number(form.querySelector("#series-duration").value),
        timezone: form.querySelector("#series-zone").value,
      };
      const first = form.querySelector("#series-dtstart").value;
      if (first) body.dtstart = first;
      const platform = form.querySelector("#series-backend");
      if (platform && !platform.dataset.untouched) body.backend = platform.value;
      const saved = await submitForm(form, () => C.api("POST", "/api/series", body), "Series scheduled");
      if (saved) onSaved(saved, form);
    });
    return form;
  }

  // -- the list -------------------------------------------------------------------------------------------------
  function whenOf(stream) {
    if (LIVE.includes(stream.status)) return `since ${C.when(stream.actual_start, stream.timezone)}`;
    if (stream.actual_end) return C.when(stream.actual_end, stream.timezone);
    return stream.scheduled_start ? C.when(stream.scheduled_start, stream.timezone) : "not scheduled";
  }

  // Moving a stream to another platform makes its live stream there: the answer carries the new key, shown once.
  function edited(saved, form) {
    if (!saved.stream_key) { form.remove(); return; }
    freshKeys.set(saved.id, saved.stream_key);
    form.replaceWith(el("div", { class: "panel", id: "moved" },
      el("p", {}, el("strong", {}, saved.title), " now runs on a new platform: OBS needs this server and key."),
      keyNotice(saved.stream_key, saved)));
  }

  function streamRow(stream, reload, showForm) {
    const actions = el("div", { class: "row" },
      el("a", { class: "button primary", href: `#/stream/${encodeURIComponent(stream.id)}` },
        LIVE.includes(stream.status) ? "Go-live panel" : "Open"),
      el("button", { type: "button", "aria-label": `Edit ${stream.title}`,
        on: { click: () => showForm(streamForm(stream, (saved, form) => { edited(saved, form); reload(); })) } }, "Edit"));
    if (["SCHEDULED", "STARTING"].includes(stream.status)) {
      const cancel = el("button", { type: "button", class: "danger", "aria-label": `Cancel ${stream.title}` }, "Cancel");
      cancel.addEventListener("click", () => confirmInline(cancel, `Cancel “${stream.title}”? Its stream key stops working.`, "Cancel the stream",
          async () => { if (await C.attempt(() => C.api("POST", `/api/streams/${stream.id}/cancel`), "Cancelled")) reload(); }));
      actions.append(cancel);
    }
    if (!LIVE.includes(stream.status)) {
      const del = el("button", { type: "button", class: "danger", "aria-label": `Delete ${stream.title}` }, "Delete");
      del.addEventListener("click", () => confirmInline(del,
        `Delete “${stream.title}” with all its media (recordings and MP4s, ${C.bytes(stream.storage_bytes)})? This can't be undone.`,
        "Delete for good",
        async () => {
          if (await C.attempt(() => C.api("DELETE", `/api/streams/${stream.id}`), "Deleted") !== undefined) reload();
        }));
      actions.append(del);
    }
    return el("tr", { "data-stream-id": stream.id },
      el("td", {}, el("a", { href: `#/stream/${encodeURIComponent(stream.id)}` }, stream.title),
        stream.backend && stream.backend !== "builtin"
          ? [" ", el("span", { class: `badge platform ${stream.backend}` }, PLATFORM_NAMES[stream.backend] || stream.backend)] : null,
        stream.series_id ? el("div", { class: "hint" }, "part of a series") : null),
      el("td", {}, statusBadge(stream.status), stream.error ? el("div", { class: "hint" }, stream.error) : null),
      el("td", {}, whenOf(stream)),
      el("td", {}, actions));
  }

  async function renderStreams(main) {
    const state = { tab: sessionStorage.getItem("console.streams.tab") || "upcoming" };
    const formSlot = el("div", { id: "stream-forms" });
    const showForm = (form) => {
      formSlot.replaceChildren(form);
      form.querySelector("input, select").focus();
    };
    const created = (stream, form) => {
      freshKeys.set(stream.id, stream.stream_key);
      const panel = el("div", { class: "panel", id: "created" },
        el("p", {}, "Created ", el("strong", {}, stream.title), ". ",
          el("a", { href: `#/stream/${encodeURIComponent(stream.id)}` }, "Open its go-live panel")),
        keyNotice(stream.stream_key, stream));
      form.replaceWith(panel);
      load();
    };
    const seriesCreated = (series, form) => {
      const panel = el("div", { class: "panel", id: "series-created" },
        el("p", {}, "Scheduled ", el("strong", {}, series.title), ": ", rruleWords(series.rrule), ` at ${series.start_time} (${series.timezone}). `,
          "Every service in the series uses this key."),
        keyNotice(series.stream_key, { rtmp_url: series.rtmp_url || series.rtmps_url || "", srt_url: series.srt_url || null }));
      form.replaceWith(panel);
      loadSeries();
      load();
    };
    const tabs = el("div", { class: "tabs", role: "tablist", "aria-label": "Which streams" });
    const table = el("tbody");
    const listInfo = el("p", { class: "hint", id: "streams-count", "aria-live": "polite" });
    const seriesList = el("ul", { class: "series-list", id: "series-list" });
    main.append(
      el("div", { class: "row page-head" }, el("h1", {}, "Streams"),
        el("button", { type: "button", class: "primary", id: "new-stream",
          on: { click: () => showForm(streamForm(null, created)) } }, "New stream"),
        el("button", { type: "button", id: "new-series", on: { click: () => showForm(seriesForm(seriesCreated)) } },
          "Schedule a series")),
      formSlot, tabs, listInfo,
      el("div", { class: "table-wrap" }, el("table", { class: "streams-table" },
        el("thead", {}, el("tr", {}, el("th", {}, "Title"), el("th", {}, "Status"), el("th", {}, "When"), el("th", {}, "Actions"))),
        table)),
      el("h2", {}, "Recurring services"), seriesList);
    for (const [name, label] of [["live", "Live"], ["upcoming", "Upcoming"], ["past", "Past"]]) {
      tabs.append(el("button", { type: "button", role: "tab", id: `tab-${name}`, "data-tab": name,
        "aria-selected": String(state.tab === name),
        on: { click: () => { state.tab = name; sessionStorage.setItem("console.streams.tab", name); load(); } } }, label));
    }
    async function load() {
      for (const tab of tabs.children) tab.setAttribute("aria-selected", String(tab.dataset.tab === state.tab));
      const answer = await C.attempt(() => C.api("GET", `/api/streams?state=${state.tab}&limit=100`));
      if (!answer) return;
      table.replaceChildren(...answer.streams.map((s) => streamRow(s, load, showForm)));
      if (!answer.streams.length) {
        table.append(el("tr", {}, el("td", { colspan: 4, class: "muted" },
          state.tab === "live" ? "Nothing is on air." : state.tab === "upcoming" ? "Nothing scheduled. Create a stream or a series."
            : "No past streams yet.")));
      }
      listInfo.textContent = `${answer.total} ${state.tab} stream${answer.total === 1 ? "" : "s"}` +
        (answer.next_offset !== null ? " (showing the first 100)" : "");
    }
    async function loadSeries() {
      const answer = await C.attempt(() => C.api("GET", "/api/series"));
      if (!answer) return;
      seriesList.replaceChildren(...answer.series.filter((s) => !s.until || s.until > todayIn(s.timezone)).map((s) => {
        const stop = el("button", { type: "button", class: "danger", "aria-label": `End the series ${s.title}` }, "End series");
        stop.addEventListener("click", () => confirmInline(stop,
          `End “${s.title}” from today? Services already held and their recordings stay.`, "End the series",
          async () => {
            const from = todayIn(s.timezone) < s.dtstart ? s.dtstart : todayIn(s.timezone);
            if (await C.attempt(() => C.api("DELETE", `/api/series/${s.id}?from=${from}`), "Series ended") !== undefined) { loadSeries(); load(); }
          }));
        return el("li", { class: "panel", "data-series-id": s.id },
          el("strong", {}, s.title), " — ", `${rruleWords(s.rrule)} at ${s.start_time} (${s.timezone}), ${s.duration} min`,
          el("div", { class: "row" }, stop));
      }));
      if (!seriesList.children.length) seriesList.append(el("li", { class: "muted" }, "No recurring services."));
    }
    await Promise.all([load(), loadSeries()]);
    C.every(15000, load);
  }

  C.page("streams", { nav: "Streams", title: "Streams", render: renderStreams });
})();
