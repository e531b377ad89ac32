// Line charts, colour maps and images on plain canvas; no libraries.
"use strict";

// Draw series [{name, color, points: [[x, y], ...]}] with axes, ticks and a legend above the
// plot (never over the curves). opts: {yMin, yMax} fix the y range (else it fits the data);
// log: log10 y axis; reference: {y, label} draws a dashed line; xLabel names the x axis.
function drawChart(canvas, series, opts) {
  const ctx = canvas.getContext("2d");
  ctx.font = "11px sans-serif";
  const w = canvas.width, h = canvas.height, left = 48, right = 10, bottom = 30;
  const top = legend(ctx, series, left, w - right) + 6;
  ctx.clearRect(0, top - 4, w, h - top + 4);
  const f = opts.log ? (y => Math.log10(Math.max(y, 1e-12))) : (y => y);
  const all = series.flatMap(s => s.points).filter(p => !opts.log || p[1] > 0);
  const ys = all.map(p => f(p[1])).concat(opts.reference ? [f(opts.reference.y)] : []);
  let xMax = Math.max(1, ...all.map(p => p[0]));
  let yMin = opts.yMin, yMax = opts.yMax;
  if (yMin === undefined) yMin = opts.log ? Math.floor(Math.min(...ys) - 0.25) : Math.min(0, ...ys);
  if (yMax === undefined) yMax = opts.log ? Math.ceil(Math.max(...ys, yMin + 1)) : (all.length ? Math.max(1e-6, ...ys) * 1.05 : 1);
  if (!isFinite(yMin) || !isFinite(yMax) || yMax <= yMin) { yMin = 0; yMax = 1; }
  const X = x => left + (w - left - right) * x / xMax;
  const Y = y => top + (h - top - bottom) * (1 - (y - yMin) / (yMax - yMin));
  ctx.strokeStyle = "#999"; ctx.fillStyle = "#444"; ctx.lineWidth = 1;
  ctx.beginPath(); ctx.moveTo(left, top); ctx.lineTo(left, h - bottom); ctx.lineTo(w - right, h - bottom); ctx.stroke();
  const ticks = opts.log ? Math.round(yMax - yMin) : 4;
  for (let i = 0; i <= ticks; i++) {
    const y = yMin + (yMax - yMin) * i / ticks;
    ctx.fillStyle = "#444";
    ctx.fillText(opts.log ? `1e${Math.round(y)}` : y.toFixed(yMax - yMin < 2 ? 2 : 1), 2, Y(y) + 4);
    ctx.strokeStyle = "#eee"; ctx.beginPath(); ctx.moveTo(left + 1, Y(y)); ctx.lineTo(w - right, Y(y)); ctx.stroke();
  }
  ctx.fillText("0", left - 3, h - bottom + 14);
  ctx.fillText(String(Math.round(xMax)), w - right - 30, h - bottom + 14);
  ctx.fillText(opts.xLabel || "step", w / 2 - 10, h - 6);
  if (opts.reference) {
    ctx.strokeStyle = "#555"; ctx.setLineDash([5, 4]); ctx.beginPath();
    ctx.moveTo(left, Y(f(opts.reference.y))); ctx.lineTo(w - right, Y(f(opts.reference.y))); ctx.stroke();
    ctx.setLineDash([]); ctx.fillStyle = "#555";
    ctx.fillText(opts.reference.label, w - right - ctx.measureText(opts.reference.label).width - 2, Y(f(opts.reference.y)) - 3);
  }
  series.forEach(s => {
    ctx.strokeStyle = s.color; ctx.lineWidth = 1.5; ctx.beginPath();
    s.points.filter(p => !opts.log || p[1] > 0).forEach((p, i) =>
      (i ? ctx.lineTo(X(p[0]), Y(f(p[1]))) : ctx.moveTo(X(p[0]), Y(f(p[1])))));
    ctx.stroke();
  });
}

// The legend in a band above the plot, wrapped into rows; returns the band's height.
function legend(ctx, series, left, right) {
  const items = series.map(s => {
    const last = s.points.length ? " " + fmtNumber(s.points[s.points.length - 1][1]) : "";
    return { color: s.color, text: s.name + last };
  });
  let x = left, row = 0;
  const placed = items.map(item => {
    const width = 18 + ctx.measureText(item.text).width + 12;
    if (x + width > right && x > left) { x = left; row += 1; }
    const at = { ...item, x, y: 4 + row * 14 }; x += width; return at;
  });
  const height = 4 + (row + 1) * 14;
  ctx.clearRect(0, 0, ctx.canvas.width, height + 2);
  placed.forEach(p => {
    ctx.fillStyle = p.color; ctx.fillRect(p.x, p.y + 4, 12, 3);
    ctx.fillStyle = "#333"; ctx.fillText(p.text, p.x + 16, p.y + 9);
  });
  return height;
}

function fmtNumber(v) {
  return Math.abs(v) >= 0.01 || v === 0 ? v.toFixed(3) : v.toExponential(1);
}

// Exponential moving average of [[x, y]] points, to read a noisy per-step curve.
function smooth(points, beta) {
  let avg = null;
  return points.map(([x, y]) => { avg = avg === null ? y : beta * avg + (1 - beta) * y; return [x, avg]; });
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
function colourCanvas(values, w, h, colour, className) {
  const canvas = document.createElement("canvas");
  canvas.width = w; canvas.height = h;
  if (className) canvas.className = className;
  const ctx = canvas.getContext("2d"), img = ctx.createImageData(w, h);
  for (let i = 0; i < w * h; i++) {
    const [r, g, b] = colour(values[i]);
    img.data[4 * i] = r; img.data[4 * i + 1] = g; img.data[4 * i + 2] = b; img.data[4 * i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  return canvas;
}

// The colour for value v on the scale [low, high]: diverging (symmetric) when the range
// crosses zero, "hot" for non-negative values.
function scaleColour(low, high) {
  if (low < 0) { const top = Math.max(-low, high) || 1; return v => diverging(v / top); }
  const span = high - low || 1;
  return v => hot((v - low) / span);
}

// A horizontal colour bar with its end values: the legend of scaleColour(low, high).
function colourBar(low, high, label) {
  const div = document.createElement("div"); div.className = "colour-bar";
  const top = Math.max(-low, high), lo = low < 0 ? -top : low, hi = low < 0 ? top : high;
  const steps = Array.from({ length: 64 }, (_, i) => lo + (hi - lo) * i / 63);
  const canvas = colourCanvas(steps, 64, 1, scaleColour(low, high));
  const a = document.createElement("span"), b = document.createElement("span");
  a.textContent = fmtNumber(lo); b.textContent = fmtNumber(hi);
  div.append(label ? label + " " : "", a, canvas, b);
  return div;
}

// A canvas showing a grey image given as a flat row-major list of 0..255 values.
function greyCanvas(values, width, height, className) {
  return colourCanvas(values, width, height, v => [v, v, v], className);
}
