// /lecture/backprop: dx of a CONV as a full convolution, and a max pool's gradient routing.
"use strict";

const NAMES = ["W", "F", "K", "seed", "pool_W"];
let cell = 0;

function text(id, value) { document.querySelector(`[data-testid="${id}"]`).textContent = value; }

async function refresh() {
  const v = await latest("backprop", "/api/lecture/backprop?" + query({ ...readInts(NAMES), cell }));
  const c = v.conv, at = c.cell, F = c.F;
  cell = at.index;
  text("dx-index", `${at.i}, ${at.j}`);
  text("dx-terms", at.products.map((p, k) => `sum(dout${k} window * flipped w${k}) = ${fmt(p.flat().reduce((a, b) => a + b, 0))}`).join(" + "));
  text("dx-sum", fmt(at.sum));
  text("dx-backward-cell", fmt(at.backward));
  const steps = $("conv-steps"); steps.innerHTML = "";
  const win = (i, j) => i >= at.i && i < at.i + F && j >= at.j && j < at.j + F;
  c.dout_padded.forEach((grid, k) => {
    const pad = (i, j) => i < F - 1 || j < F - 1 || i >= grid.length - F + 1 || j >= grid.length - F + 1;
    steps.append(block(`dout${k} padded by F-1 = ${F - 1}`, numberGrid(grid, (i, j) => win(i, j) ? "on" : pad(i, j) ? "pad" : "", `dout-${k}`)));
    steps.append(block(`w${k}`, numberGrid(c.weights[k], null, `weight-${k}`)));
    steps.append(block(`w${k} flipped`, numberGrid(c.flipped[k], () => "on")));
    steps.append(block(`products`, numberGrid(at.products[k])));
  });
  const results = $("conv-results"); results.innerHTML = "";
  const here = (i, j) => (i === at.i && j === at.j ? "on" : "");
  results.append(block("input x", numberGrid(c.x, here, "x")));
  results.append(block("dx by full convolution", numberGrid(c.dx_full_conv, here, "dx-full")));
  results.append(block("dx from Conv2d.backward", numberGrid(c.dx_backward, here, "dx-backward")));
  drawPool(v.pool);
}

function drawPool(p) {
  const hit = new Set(p.routes.flat().map(([i, j]) => `${i},${j}`));
  const mark = (i, j) => (hit.has(`${i},${j}`) ? "hit" : "");
  const pool = $("pool"); pool.innerHTML = "";
  pool.append(block("input x (argmax green)", numberGrid(p.x, mark, "pool-x")));
  pool.append(block("max pool output", numberGrid(p.out, null, "pool-out")));
  pool.append(block("dout", numberGrid(p.dout, null, "pool-dout")));
  pool.append(block("dx from MaxPool2d.backward", numberGrid(p.dx, mark, "pool-dx")));
}

function step(by) { cell = Math.max(0, cell + by); guard(refresh)(); }
document.querySelector('[data-testid="next"]').addEventListener("click", () => step(1));
document.querySelector('[data-testid="prev"]').addEventListener("click", () => step(-1));
onInputs(NAMES, () => { cell = 0; guard(refresh)(); });
guard(refresh)();
