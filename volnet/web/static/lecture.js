// Shared helpers of the lecture pages: the JSON API, number grids, colour maps. No libraries.
"use strict";

const TOKEN = document.querySelector('meta[name="volnet-token"]').content;
const $ = id => document.getElementById(id);

function showError(message) {
  const box = $("error");
  box.textContent = message || ""; box.hidden = !message;
}

// ``current()`` says whether the caller still wants this reply: an outdated one neither shows
// nor clears the error banner.
async function api(path, options, current = () => true) {
  const response = await fetch(path, options);
  const body = await response.json();
  if (!current()) throw new Error("superseded");
  if (!response.ok) { showError(body.error || response.statusText); throw new Error(body.error); }
  showError("");
  return body;
}

// fetch JSON, but resolve only for the latest call made under ``key``: a reply (or an error)
// to an older request (the user kept clicking) never overwrites a newer one.
const latestTicket = {};
async function latest(key, path, options) {
  const ticket = (latestTicket[key] = (latestTicket[key] || 0) + 1);
  return api(path, options, () => ticket === latestTicket[key]);
}

// The query string of the named number inputs: {W: 5, ...} -> "W=5&...".
function query(values) {
  return Object.entries(values).map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join("&");
}

function readInts(names) {
  const out = {};
  names.forEach(name => { out[name] = Math.round(Number(document.querySelector(`[data-testid="${name}"]`).value)); });
  return out;
}

// Call fn after any of the inputs changes (debounced), and once now.
function onInputs(names, fn) {
  let timer = null;
  names.forEach(name => document.querySelector(`[data-testid="${name}"]`).addEventListener("input", () => {
    clearTimeout(timer); timer = setTimeout(fn, 150);
  }));
}

function fmt(v) {
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v)) return String(v === 0 ? 0 : v);
  return (Math.abs(v) >= 100 ? v.toFixed(1) : v.toFixed(Math.abs(v) >= 1 ? 2 : 3)).replace(/\.?0+$/, "");
}

// A table of numbers; mark(i, j) returns a class name for a cell ("" for none).
function numberGrid(matrix, mark, testid) {
  const table = document.createElement("table");
  table.className = "grid";
  if (testid) table.dataset.testid = testid;
  matrix.forEach((row, i) => {
    const tr = table.insertRow();
    row.forEach((v, j) => {
      const td = tr.insertCell(); td.textContent = fmt(v);
      const cls = mark ? mark(i, j) : ""; if (cls) td.className = cls;
    });
  });
  return table;
}

// A titled block holding one element (a grid or a canvas).
function block(title, element, className) {
  const div = document.createElement("div");
  div.className = "block" + (className ? " " + className : "");
  const h = document.createElement("div"); h.className = "block-title"; h.textContent = title;
  div.append(h, element);
  return div;
}

function guard(fn) {
  return (...args) => fn(...args).catch(err => { if (err.message !== "superseded") console.warn(err.message); });
}
