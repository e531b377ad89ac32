// /lecture/conv: step the filter over the input; the server's Conv2d gives every number.
"use strict";

const NAMES = ["W", "D", "F", "S", "P", "K", "seed"];
let cell = 0, view = null, timer = null;

function text(id, value) { document.querySelector(`[data-testid="${id}"]`).textContent = value; }

async function refresh() {
  view = await latest("conv", "/api/lecture/conv?" + query({ ...readInts(NAMES), cell }));
  text("formula", view.formula);
  text("out-size", view.valid ? view.out_size : "not an integer");
  text("why", view.why);
  text("params-formula", view.params_formula);
  text("params", view.params.toLocaleString("en-US"));
  text("params-no-sharing", view.params_no_sharing === null ? "-" : view.params_no_sharing.toLocaleString("en-US"));
  $("drawing").hidden = !view.valid;
  if (view.valid) { cell = view.cell.index; draw(); }
}

function draw() {
  const c = view.cell, F = view.F, P = view.P, n = view.input[0].length;
  text("cell-index", `${c.k}, ${c.i}, ${c.j}`);
  text("cell-sum", fmt(c.value));
  text("cell-terms", c.slice_sums.map((s, d) => `${fmt(s)} (slice ${d})`).join(" + ") + ` + ${fmt(c.bias)} (bias b${c.k})`);
  const products = $("products"); products.innerHTML = "";
  c.products.forEach((grid, d) => products.append(block(
    `x[:,:,${d}] * w${c.k}[:,:,${d}] : sum ${fmt(c.slice_sums[d])}`, numberGrid(grid, () => "on"))));
  const volumes = $("volumes"); volumes.innerHTML = "";
  const inWindow = (i, j) => i >= c.top && i < c.top + F && j >= c.left && j < c.left + F;
  const isPad = (i, j) => i < P || j < P || i >= n - P || j >= n - P;
  view.input.forEach((slice, d) => volumes.append(block(`input x[:,:,${d}]`,
    numberGrid(slice, (i, j) => inWindow(i, j) ? "on" : isPad(i, j) ? "pad" : "", `input-${d}`))));
  view.weights.forEach((filter, k) => {
    const div = document.createElement("div"); div.className = "blocks";
    filter.forEach((slice, d) => div.append(block(`w${k}[:,:,${d}]`,
      numberGrid(slice, () => (k === c.k ? "on" : ""), `weight-${k}-${d}`))));
    div.append(block(`b${k}`, numberGrid([[view.bias[k]]], () => (k === c.k ? "on" : ""), `bias-${k}`)));
    volumes.append(block(`filter w${k}`, div));
  });
  const size = view.out_size;
  view.output.forEach((slice, k) => {
    const shown = slice.map((row, i) => row.map((v, j) => (k * size * size + i * size + j <= c.index ? v : "")));
    volumes.append(block(`output o[:,:,${k}]`, numberGrid(shown, (i, j) =>
      (k === c.k && i === c.i && j === c.j) ? "on" : (shown[i][j] === "" ? "" : "done")), `output-${k}`));
  });
}

function step(by) { cell = Math.max(0, cell + by); guard(refresh)(); }

document.querySelector('[data-testid="next"]').addEventListener("click", () => step(1));
document.querySelector('[data-testid="prev"]').addEventListener("click", () => step(-1));
document.querySelector('[data-testid="play"]').addEventListener("click", event => {
  if (timer) { clearInterval(timer); timer = null; event.target.textContent = "play"; return; }
  timer = setInterval(() => step(1), 800); event.target.textContent = "stop";
});
onInputs(NAMES, () => { cell = 0; guard(refresh)(); });
guard(refresh)();
