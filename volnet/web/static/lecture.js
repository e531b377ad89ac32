// Shared helpers of the lecture pages: the JSON API, number grids, colour maps. No libraries.
"use strict";

const TOKEN = document.querySelector('meta[name="volnet-token"]').content;
const $ = id => document.getElementById(id);

function showError(message) {
  const box = $("error");
  box.textContent = message || ""; box.hidden = !message;
}

async function api(path, options) {
  const response = await fetch(path, options);
  const body = await response.json();
  if (!response.ok) { showError(body.error || response.statusText); throw new Error(body.error); }
  showError("");
  return body;
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

// Diverging colour map: negative blue, zero white, positive red; t in [-1, 1].
function diverging(t) {
  t = Math.max(-1, Math.min(1, t));
  const a = Math.abs(t), w = Math.round(255 * (1 - a));
  return t >= 0 ? [255, w, w] : [w, w, 255];
}

// Sequential colour map for magnitudes in [0, 1]: black -> red -> yellow -> white ("hot").
function hot(t) {
  t = Math.max(0, Math.min(1, t));
  return [Math.min(255, 3 * 255 * t), Math.min(255, Math.max(0, 3 * 255 * t - 255)),
          Math.max(0, 3 * 255 * t - 510)].map(Math.round);
}

// A canvas of w x h pixels coloured by colour(values[i]).
function colourCanvas(values, w, h, colour) {
  const canvas = document.createElement("canvas");
  canvas.width = w; canvas.height = h;
  const ctx = canvas.getContext("2d"), img = ctx.createImageData(w, h);
  for (let i = 0; i < w * h; i++) {
    const [r, g, b] = colour(values[i]);
    img.data.set([r, g, b, 255], 4 * i);
  }
  ctx.putImageData(img, 0, 0);
  return canvas;
}

// A horizontal colour bar with its end values, as a legend for a colour map.
function colourBar(colour, low, high, label) {
  const div = document.createElement("div"); div.className = "colour-bar";
  const steps = Array.from({ length: 64 }, (_, i) => i / 63);
  const canvas = colourCanvas(steps, 64, 1, t => colour(low < 0 ? 2 * t - 1 : t));
  const lo = document.createElement("span"), hi = document.createElement("span");
  lo.textContent = fmt(low); hi.textContent = fmt(high);
  div.append(label ? label + " " : "", lo, canvas, hi);
  return div;
}

function guard(fn) { return (...args) => fn(...args).catch(err => console.warn(err)); }
