// /lecture/dilated: one scene, two trained segmenters, one output unit's receptive fields.
"use strict";

const SCALE = 4;
let view = null;
const control = name => document.querySelector(`[data-testid="${name}"]`);

function paint(canvas, h, w, colourAt) {
  canvas.width = w * SCALE; canvas.height = h * SCALE;
  const ctx = canvas.getContext("2d"), img = ctx.createImageData(w * SCALE, h * SCALE);
  for (let i = 0; i < h * SCALE; i++) for (let j = 0; j < w * SCALE; j++) {
    const [r, g, b] = colourAt(Math.floor(i / SCALE), Math.floor(j / SCALE)), k = 4 * (i * w * SCALE + j);
    img.data[k] = r; img.data[k + 1] = g; img.data[k + 2] = b; img.data[k + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  return ctx;
}

function labelColour(label, grey) {
  if (label === 255) return [224, 224, 192];     // the colour VOC shows its border label in
  if (label === 0) return [grey, grey, grey].map(v => Math.round(v * 0.5));
  return view.models[0].colours[label];
}

function marker(ctx, box) {
  const [row, col] = view.unit;
  if (box) {
    const [[top, bottom], [left, right]] = box;
    ctx.strokeStyle = "#00e5ff"; ctx.lineWidth = 2;
    ctx.strokeRect(left * SCALE, top * SCALE, (right - left + 1) * SCALE, (bottom - top + 1) * SCALE);
  }
  ctx.strokeStyle = "#ffeb3b"; ctx.lineWidth = 2; ctx.beginPath();
  ctx.arc((col + 0.5) * SCALE, (row + 0.5) * SCALE, 6, 0, 2 * Math.PI); ctx.stroke();
}

function canvasFor(testid) {
  const canvas = document.createElement("canvas");
  canvas.dataset.testid = testid; canvas.className = "heat";
  return canvas;
}

function modelBlock(m) {
  const h = view.image.length, w = view.image[0].length;
  const section = document.createElement("div");
  section.dataset.testid = `model-${m.model}`;
  const title = document.createElement("h2");
  title.textContent = m.model === "dilated" ? "front-end (no context module)" : "front-end + basic context module";
  const mask = canvasFor(`mask-${m.model}`), field = canvasFor(`field-${m.model}`);
  marker(paint(mask, h, w, (i, j) => labelColour(m.mask[i][j], view.image[i][j])), m.box);
  marker(paint(field, h, w, (i, j) => hot(m.effective[i * w + j] / 255)), m.box);
  const [[top, bottom], [left, right]] = m.box;
  const e = m.effective_box;
  const facts = document.createElement("p");
  facts.dataset.testid = `facts-${m.model}`;
  facts.innerHTML = `theoretical receptive field <strong class="big" data-testid="rf-${m.model}">` +
    `${m.size[0]}x${m.size[1]}</strong> pixels (rows ${fmt(top)} to ${fmt(bottom)}, columns ` +
    `${fmt(left)} to ${fmt(right)}; the scene is ${h}x${w}); effective field above 0.1% of its ` +
    `peak: rows ${e ? e[0] + " to " + e[2] : "none"}, columns ${e ? e[1] + " to " + e[3] : "none"}.` +
    `<br>unit (${view.unit.join(", ")}) predicted <strong data-testid="class-${m.model}">` +
    `${view.class_names[m.unit_class]}</strong> (p = ${fmt(m.unit_probability)}); mean IoU on ` +
    `this scene <strong data-testid="iou-${m.model}">${fmt(m.scene_mean_iou)}</strong>`;
  const blocks = document.createElement("div"); blocks.className = "blocks";
  blocks.append(block("predicted labels, receptive field (cyan)", mask),
                block("effective receptive field |d score / d input|", field));
  section.append(title, blocks, facts);
  return section;
}

async function refresh() {
  const q = readInts(["scene", "row", "col"]);
  view = await latest("dilated", "/api/lecture/dilated?" + query(q));
  const h = view.image.length, w = view.image[0].length;
  const scene = $("scene");
  marker(paint(scene, h, w, (i, j) => [view.image[i][j], view.image[i][j], view.image[i][j]]), null);
  marker(paint($("truth"), h, w, (i, j) => labelColour(view.truth[i][j], view.image[i][j])), null);
  scene.onclick = event => {
    const box = scene.getBoundingClientRect();
    control("row").value = Math.min(h - 1, Math.floor((event.clientY - box.top) / box.height * h));
    control("col").value = Math.min(w - 1, Math.floor((event.clientX - box.left) / box.width * w));
    guard(refresh)();
  };
  const legend = control("legend"); legend.innerHTML = "";
  view.class_names.forEach((name, c) => {
    if (c === 0) return;
    const swatch = document.createElement("canvas"); swatch.className = "swatch";
    swatch.width = swatch.height = 1;
    const ctx = swatch.getContext("2d"); ctx.fillStyle = `rgb(${view.models[0].colours[c].join(",")})`;
    ctx.fillRect(0, 0, 1, 1);
    legend.append(swatch, ` ${name}  `);
  });
  const models = $("models"); models.innerHTML = "";
  view.models.forEach(m => models.append(modelBlock(m)));
}

onInputs(["scene", "row", "col"], guard(refresh));
guard(refresh)();
