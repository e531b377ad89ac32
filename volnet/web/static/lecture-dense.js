// /lecture/dense: score maps of a classifier slid over a bigger image (one converted pass).
"use strict";

let view = null, upload = null;
const SCALE = 4;   // screen pixels per image pixel, for the image and the class strip under it
const control = name => document.querySelector(`[data-testid="${name}"]`);
function text(id, value) { control(id).textContent = value; }

async function refresh() {
  const q = query({ classifier: control("classifier").value, stride: control("stride").value });
  view = upload
    ? await latest("dense", "/api/lecture/dense?" + q, { method: "POST", body: upload,
        headers: { "Content-Type": "image/png", "X-Volnet-Token": TOKEN } })
    : await latest("dense", "/api/lecture/dense?" + q);
  const [rows, cols] = view.map_size;
  text("net-stride", view.net_stride); text("step", view.step);
  text("map-size", `${rows}x${cols}`); text("crops", view.crops.toLocaleString("en-US"));
  text("crop-size", `${view.crop[0]}x${view.crop[1]}`); text("passes", view.passes);
  text("dense-ms", view.dense_ms); text("crops-ms", view.crops_ms);
  text("max-diff", fmt(view.max_difference_to_crops));
  text("exact-note", view.exact ? "" : ": the net zero-pads, so a position sees real pixels where a lone crop sees zeros");
  text("labels", view.labels.length ? `(digits left to right: ${view.labels.join(" ")})` : "");
  control("map-row").max = rows - 1; control("map-col").max = cols - 1;
  control("map-row").value = Math.min(rows - 1, Number(control("map-row").value));
  control("map-col").value = Math.min(cols - 1, Number(control("map-col").value));
  $("predicted").innerHTML = "";
  $("predicted").append(classStrip(view.predicted, view.confidence), classLegend());
  drawMaps(); select();
}

function select() {
  const i = Number(control("map-row").value), j = Number(control("map-col").value);
  const list = control("scores-at"); list.innerHTML = "";
  view.scores.forEach(map => { const li = document.createElement("li"); li.textContent = fmt(map[i][j]); list.append(li); });
  drawImage(i, j);
}

function drawImage(si, sj) {
  const img = view.image, h = img.length, w = img[0].length, scale = SCALE;
  const canvas = $("image"); canvas.width = w * scale; canvas.height = h * scale;
  const ctx = canvas.getContext("2d");
  for (let i = 0; i < h; i++) for (let j = 0; j < w; j++) {
    ctx.fillStyle = `rgb(${img[i][j]},${img[i][j]},${img[i][j]})`; ctx.fillRect(j * scale, i * scale, scale, scale);
  }
  ctx.fillStyle = "#ffb300";
  for (let i = 0; i < view.map_size[0]; i++) for (let j = 0; j < view.map_size[1]; j++)
    ctx.fillRect(j * view.step * scale, i * view.step * scale, 2, 2);
  ctx.strokeStyle = "#00e5ff"; ctx.lineWidth = 2;
  ctx.strokeRect(sj * view.step * scale, si * view.step * scale, view.crop[1] * scale, view.crop[0] * scale);
}

const CLASS_COLOURS = [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
  [145, 30, 180], [70, 240, 240], [240, 50, 230], [170, 110, 40], [128, 128, 128]];

// The predicted class of every crop, drawn at the centre of its crop on the image's own scale
// (so it lines up with the picture above it): a cell per position, in its class's colour, faded
// towards white as the softmax confidence drops; cells large enough carry the class, in bold
// where the net is sure (p >= 0.5). A last line reads the middle row (the crops centred
// vertically on the image, where a line of digits sits): each run of positions naming one
// class with p >= 0.5, labelled once under its middle.
function classStrip(map, confidence) {
  const scale = SCALE, rows = map.length, cols = map[0].length, cell = view.step * scale;
  const canvas = document.createElement("canvas"), line = 20;
  canvas.width = view.image[0].length * scale; canvas.height = rows * cell + line;
  canvas.className = "class-strip"; canvas.dataset.testid = "predicted-map";
  const ctx = canvas.getContext("2d"), left = (view.crop[1] / 2) * scale - cell / 2;
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.textAlign = "center"; ctx.textBaseline = "middle";
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) {
    const k = map[i][j], p = confidence[i][j], x = left + j * cell, y = i * cell;
    const [r, g, b] = CLASS_COLOURS[k % 10].map(c => Math.round(255 - (255 - c) * p));
    ctx.fillStyle = `rgb(${r},${g},${b})`; ctx.fillRect(x, y, cell, cell);
    if (cell >= 12) {
      ctx.font = `${p >= 0.5 ? "bold " : ""}${Math.min(cell - 3, 15)}px sans-serif`;
      ctx.fillStyle = p >= 0.5 ? "#000" : "#777";
      ctx.fillText(String(k), x + cell / 2, y + cell / 2 + 1);
    }
  }
  readingLine(ctx, map, confidence, left, cell, rows * cell, line);
  return canvas;
}

function readingLine(ctx, map, confidence, left, cell, top, line) {
  const mid = Math.floor((map.length - 1) / 2);   // crops centred on the image's middle row
  const sure = map[mid].map((k, j) => (confidence[mid][j] >= 0.5 ? k : null));
  ctx.font = "bold 15px sans-serif";
  for (let j = 0; j < sure.length;) {
    let end = j; while (end + 1 < sure.length && sure[end + 1] === sure[j]) end++;
    if (sure[j] !== null && (end > j || cell >= 12)) {
      const x0 = left + j * cell, x1 = left + (end + 1) * cell;
      ctx.fillStyle = `rgb(${CLASS_COLOURS[sure[j] % 10].join(",")})`;
      ctx.fillRect(x0 + 1, top + 2, x1 - x0 - 2, 3);
      ctx.fillStyle = "#000"; ctx.fillText(String(sure[j]), (x0 + x1) / 2, top + line / 2 + 3);
    }
    j = end + 1;
  }
}

function classLegend() {
  const div = document.createElement("div"); div.className = "controls";
  CLASS_COLOURS.forEach((c, k) => {
    const swatch = colourCanvas([0], 1, 1, () => c, "swatch");
    const span = document.createElement("span"); span.append(swatch, ` ${k}`); div.append(span);
  });
  return div;
}

function drawMaps() {
  const all = view.scores.flat(2), top = Math.max(...all.map(Math.abs)) || 1;
  $("legend").innerHTML = ""; $("legend").append(colourBar(-top, top, "score"));
  const maps = $("maps"); maps.innerHTML = "";
  view.scores.forEach((map, k) => {
    const canvas = colourCanvas(map.flat(), map[0].length, map.length, v => diverging(v / top));
    canvas.dataset.testid = `score-map-${k}`;
    maps.append(block(`class ${k}`, canvas));
  });
}

control("upload").addEventListener("change", async event => {
  const file = event.target.files[0]; if (!file) return;
  upload = await file.arrayBuffer(); guard(refresh)();
});
control("checkpoint").addEventListener("change", guard(async event => {
  const file = event.target.files[0]; if (!file) return;
  await api("/api/lecture/dense/checkpoint", { method: "POST", body: await file.arrayBuffer(),
    headers: { "Content-Type": "application/octet-stream", "X-Volnet-Token": TOKEN } });
  const option = control("classifier").querySelector("option[value=checkpoint]");
  option.disabled = false; control("classifier").value = "checkpoint";
  await refresh();
}));
control("use-digits").addEventListener("click", () => { upload = null; control("upload").value = ""; guard(refresh)(); });
["classifier", "stride"].forEach(n => control(n).addEventListener("change", guard(refresh)));
onInputs(["map-row", "map-col"], select);
guard(refresh)();
