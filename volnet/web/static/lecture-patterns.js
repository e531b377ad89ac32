// /lecture/patterns: build the lecture's layer pattern on the server and lint its sizes.
"use strict";

const NAMES = ["N", "M", "K", "input", "channels", "F", "width"];
const cell = (tr, value, numeric) => {
  const td = tr.insertCell(); td.textContent = value; if (numeric) td.className = "num";
};

async function refresh() {
  const pool = document.querySelector('[data-testid="pool"]').checked ? 1 : 0;
  const v = await latest("patterns", "/api/lecture/patterns?" + query({ ...readInts(NAMES), pool }));
  document.querySelector('[data-testid="pattern"]').textContent = v.pattern;
  document.querySelector('[data-testid="total-params"]').textContent = v.total_params.toLocaleString("en-US");
  document.querySelector('[data-testid="total-macs"]').textContent = v.macs.toLocaleString("en-US");
  const lint = document.querySelector('[data-testid="lint"]'); lint.innerHTML = "";
  v.lint.forEach(message => {
    const li = document.createElement("li"); li.textContent = message; li.dataset.testid = "lint-item";
    lint.append(li);
  });
  document.querySelector('[data-testid="lint-count"]').textContent =
    v.lint.length ? `${v.lint.length} warning${v.lint.length > 1 ? "s" : ""}` : "all rules hold";
  const body = document.querySelector("#summary tbody"); body.innerHTML = "";
  v.rows.forEach(row => {
    const tr = body.insertRow();
    [row.name, row.type, row.volume, row.window].forEach(t => cell(tr, t));
    [row.params, row.params_no_sharing].forEach(n => cell(tr, n.toLocaleString("en-US"), true));
    cell(tr, row.receptive_field, true);
  });
  const compare = document.querySelector('[data-testid="compare"] tbody'); compare.innerHTML = "";
  v.compare.forEach(stack => {
    const tr = compare.insertRow(); tr.dataset.testid = "compare-row";
    cell(tr, stack.name);
    [stack.params, stack.macs, stack.nonlinearities].forEach(n => cell(tr, n.toLocaleString("en-US"), true));
    cell(tr, `${stack.receptive_field}x${stack.receptive_field}`, true);
  });
}

onInputs(NAMES, guard(refresh));
document.querySelector('[data-testid="pool"]').addEventListener("change", guard(refresh));
guard(refresh)();
