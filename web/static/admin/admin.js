// The console's frame: the session, calls to the REST API (with the CSRF header), a hash router that
// pages register with, and small DOM helpers. Pages live in their own files and call Console.page(...).
"use strict";

(() => {
  const session = window.CONSOLE_SESSION;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const pages = new Map();
  const timers = [];
  let cleanups = [];

  class ApiError extends Error {
    constructor(status, message, details) {
      super(message);
      this.status = status;
      this.details = details;
    }
  }

  function signInAgain() {
    window.location.assign("/admin/sign-in?ended=1");
  }

  // fetch() under the console session: same-origin cookie, JSON in and out, errors as ApiError with the
  // server's own message. A 401 means the session ended: back to the sign-in page.
  async function api(method, path, body, options = {}) {
    const init = { method, credentials: "same-origin", headers: { "X-CSRF-Token": csrf } };
    if (body !== undefined) {
      if (body instanceof Blob || body instanceof ArrayBuffer) {
        init.body = body;
        if (options.contentType) init.headers["Content-Type"] = options.contentType;
      } else {
        init.body = JSON.stringify(body);
        init.headers["Content-Type"] = "application/json";
      }
    }
    const response = await fetch(path, init);
    if (response.status === 401) {
      signInAgain();
      throw new ApiError(401, "Your session has ended; sign in again.");
    }
    if (options.raw) return response;
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { data = null; }
    if (!response.ok) {
      const message = (data && data.error) || `${response.status} ${response.statusText}`;
      throw new ApiError(response.status, message, data && data.details);
    }
    return data;
  }

  // el("button", {class: "primary", on: {click: f}, "aria-label": "Copy"}, "text", childNode, ...)
  function el(tag, attrs, ...children) {
    const node = document.createElementNS(
      tag === "svg" || tag === "path" || tag === "polyline" || tag === "line" || tag === "text" || tag === "g" ||
        tag === "rect" || tag === "circle" ? "http://www.w3.org/2000/svg" : "http://www.w3.org/1999/xhtml", tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "on") for (const [event, handler] of Object.entries(value)) node.addEventListener(event, handler);
      else if (key === "text") node.textContent = value;
      else if (key === "value" && "value" in node) node.value = value;
      else if (key === "checked" && "checked" in node) node.checked = Boolean(value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function toast(message, kind = "info") {
    const box = el("div", { class: `toast ${kind}` }, message);
    document.getElementById("toasts").append(box);
    setTimeout(() => box.remove(), kind === "error" ? 8000 : 4000);
  }

  // Errors from an action, shown to the volunteer in plain words rather than lost in the console.
  async function attempt(action, done) {
    try {
      const result = await action();
      if (done) toast(done, "ok");
      return result;
    } catch (error) {
      toast(error.details && typeof error.details === "string" ? `${error.message}: ${error.details}` : error.message,
        "error");
      return undefined;
    }
  }

  function copyButton(text, label = "Copy") {
    const button = el("button", { type: "button", class: "copy", "aria-label": `${label}` }, "Copy");
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(typeof text === "function" ? text() : text);
        button.textContent = "Copied";
      } catch {
        // No clipboard permission (plain http): select the text for a manual copy instead.
        button.textContent = "Select and copy";
      }
      setTimeout(() => { button.textContent = "Copy"; }, 2000);
    });
    return button;
  }

  const orgKey = "console.org";
  function org() {
    const chosen = localStorage.getItem(orgKey);
    return session.orgs.find((o) => o.id === chosen) || session.orgs.find((o) => o.id === session.org_id) ||
      session.orgs[0];
  }

  function when(value, timeZone) {
    if (value === null || value === undefined || value === "") return "—";
    const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
    try {
      return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short", timeZone: timeZone || undefined });
    } catch {
      return date.toLocaleString();
    }
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    const s = Math.round(seconds);
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const rest = s % 60;
    return h ? `${h} h ${String(m).padStart(2, "0")} min` : m ? `${m} min ${String(rest).padStart(2, "0")} s` : `${rest} s`;
  }

  function bytes(n) {
    if (!n) return "0 B";
    const units = ["B", "KB", "MB", "GB", "TB"];
    const i = Math.min(units.length - 1, Math.floor(Math.log(n) / Math.log(1000)));
    return `${(n / 1000 ** i).toFixed(i ? 1 : 0)} ${units[i]}`;
  }

  // A repeating task that stops when the volunteer leaves the page.
  function every(ms, task) {
    const id = setInterval(task, ms);
    timers.push(id);
    return id;
  }

  function onLeave(cleanup) {
    cleanups.push(cleanup);
  }

  // page("streams", {nav: "Streams", title: "Streams", render: async (main, params) => {...}})
  function page(name, spec) {
    pages.set(name, spec);
  }

  function go(hash) {
    if (window.location.hash === hash) route();
    else window.location.hash = hash;
  }

  async function route() {
    while (timers.length) clearInterval(timers.pop());
    for (const cleanup of cleanups) { try { cleanup(); } catch { /* a page's own teardown */ } }
    cleanups = [];
    const [name, ...params] = (window.location.hash.replace(/^#\/?/, "") || "streams").split("/")
      .map((part) => decodeURIComponent(part));
    const spec = pages.get(name) || pages.get("streams") ||
      { title: "Console", render: (main) => main.append(el("p", {}, "Nothing here yet.")) };
    const main = document.getElementById("main");
    main.replaceChildren();
    document.title = `${spec.title || name} · Stream console`;
    for (const link of document.querySelectorAll("#nav a")) {
      link.toggleAttribute("aria-current", link.dataset.page === (spec.section || name));
    }
    document.body.classList.remove("nav-open");
    document.getElementById("menu-toggle").setAttribute("aria-expanded", "false");
    try {
      await spec.render(main, params);
    } catch (error) {
      main.append(el("p", { class: "notice", role: "alert" }, `This page could not load: ${error.message}`));
    }
  }

  function start() {
    const nav = document.getElementById("nav");
    for (const [name, spec] of pages) {
      if (spec.nav) nav.append(el("a", { href: `#/${name}`, "data-page": name }, spec.nav));
    }
    const picker = document.getElementById("org");
    if (session.orgs.length > 1) {
      picker.parentElement.hidden = false;
      for (const o of session.orgs) picker.append(el("option", { value: o.id }, o.name));
      picker.value = org().id;
      picker.addEventListener("change", () => { localStorage.setItem(orgKey, picker.value); route(); });
    }
    const toggle = document.getElementById("menu-toggle");
    toggle.addEventListener("click", () => {
      const open = document.body.classList.toggle("nav-open");
      toggle.setAttribute("aria-expanded", String(open));
    });
    window.addEventListener("hashchange", route);
    route();
  }

  window.Console = {
    session, csrf, api, ApiError, el, toast, attempt, copyButton, org, when, duration, bytes, every, onLeave,
    page, go, start, route,
  };
})();
