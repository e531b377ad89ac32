// Line charts and grey images on plain canvas; no libraries.
"use strict";

// Draw series [{name, color, points: [[x, y], ...]}] with axes, ticks and a legend.
// opts: {yMin, yMax} fix the y range (else it fits the data); xLabel names the x axis.
function drawChart(canvas, series, opts) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, left = 44, right = 10, top = 10, bottom = 30;
  ctx.clearRect(0, 0, w, h);
  const all = series.flatMap(s => s.points);
  let xMax = Math.max(1, ...all.map(p => p[0]));
  let yMin = opts.yMin, yMax = opts.yMax;
  if (yMin === undefined) yMin = Math.min(0, ...all.map(p => p[1]));
  if (yMax === undefined) yMax = all.length ? Math.max(1e-6, ...all.map(p => p[1])) * 1.05 : 1;
  const X = x => left + (w - left - right) * x / xMax;
  const Y = y => top + (h - top - bottom) * (1 - (y - yMin) / (yMax - yMin));
  ctx.strokeStyle = "#999"; ctx.fillStyle = "#444"; ctx.font = "11px sans-serif"; ctx.lineWidth = 1;
  ctx.beginPath(); ctx.moveTo(left, top); ctx.lineTo(left, h - bottom); ctx.lineTo(w - right, h - bottom); ctx.stroke();
  for (let i = 0; i <= 4; i++) {
    const y = yMin + (yMax - yMin) * i / 4;
    ctx.fillText(y.toFixed(yMax - yMin < 2 ? 2 : 1), 2, Y(y) + 4);
    ctx.strokeStyle = "#eee"; ctx.beginPath(); ctx.moveTo(left + 1, Y(y)); ctx.lineTo(w - right, Y(y)); ctx.stroke();
  }
  ctx.fillText("0", left - 3, h - bottom + 14);
  ctx.fillText(String(Math.round(xMax)), w - right - 30, h - bottom + 14);
  ctx.fillText(opts.xLabel || "step", w / 2 - 10, h - 6);
  series.forEach((s, k) => {
    ctx.strokeStyle = s.color; ctx.lineWidth = 1.5; ctx.beginPath();
    s.points.forEach((p, i) => (i ? ctx.lineTo(X(p[0]), Y(p[1])) : ctx.moveTo(X(p[0]), Y(p[1]))));
    ctx.stroke();
    ctx.fillStyle = s.color; ctx.fillRect(left + 10 + k * 110, top + 2, 12, 3);
    const last = s.points.length ? " " + s.points[s.points.length - 1][1].toFixed(3) : "";
    ctx.fillText(s.name + last, left + 26 + k * 110, top + 8);
  });
}

// Exponential moving average of [[x, y]] points, to read a noisy per-step curve.
function smooth(points, beta) {
  let avg = null;
  return points.map(([x, y]) => { avg = avg === null ? y : beta * avg + (1 - beta) * y; return [x, avg]; });
}

// A canvas showing a grey image given as a flat row-major list of 0..255 values.
function greyCanvas(values, width, height, className) {
  const canvas = document.createElement("canvas");
  canvas.width = width; canvas.height = height;
  if (className) canvas.className = className;
  const ctx = canvas.getContext("2d"), img = ctx.createImageData(width, height);
  for (let i = 0; i < width * height; i++) {
    const v = values[i];
    img.data[4 * i] = img.data[4 * i + 1] = img.data[4 * i + 2] = v; img.data[4 * i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  return canvas;
}
