// /lecture/patterns: build the lecture's layer pattern on the server and lint its sizes.
"use strict";

const NAMES = ["N", "M", "K", "input", "channels", "F"];
const control = name => document.querySelector(`[data-testid="${name}"]`);
const cell = (tr, value, numeric) => {
  const td = tr.insertCell(); td.textContent = value; if (numeric) td.className = "num";
};
const edited = new Set();   // controls the user set; the others show the server's settings

// Only what the user set goes to the server; it fills in vn.models.pattern's defaults (one
// width per block: 32, 64, then doubling) and replies with every setting it used.
async function refresh() {
  const values = {};
  NAMES.filter(n => edited.has(n)).forEach(n => { values[n] = readInts([n])[n]; });
  if (edited.has("widths")) values.widths = control("widths").value.replace(/\s+/g, "");
  if (edited.has("pool")) values.pool = control("pool").checked ? 1 : 0;
  let v;
  try {
    v = await latest("patterns", "/api/lecture/patterns?" + query(values));
  } catch (err) {
    if (err.message !== "superseded") clear();
    throw err;
  }
  // A control the user is in is theirs even before its first keystroke: a reply that lands
  // between focusing (or selecting) a field and typing must not put its number under the caret.
  const mine = n => edited.has(n) || control(n) === document.activeElement;
  NAMES.filter(n => !mine(n)).forEach(n => { control(n).value = v.settings[n]; });
  if (!mine("widths")) control("widths").value = v.settings.widths.join(", ");
  if (!mine("pool")) control("pool").checked = Boolean(v.settings.pool);
  show(v);
}

// The error banner says why nothing was built: no table, total or verdict from before stays.
function clear() {
  control("pattern").textContent = "";
  ["total-params", "total-macs"].forEach(id => { control(id).textContent = "\u2014"; });
  control("lint").innerHTML = "";
  control("lint-count").textContent = "not built: see the error above";
  document.querySelector("#summary tbody").innerHTML = "";
  document.querySelector('[data-testid="compare"] tbody').innerHTML = "";
}

function show(v) {
  control("pattern").textContent = v.pattern;
  control("total-params").textContent = v.total_params.toLocaleString("en-US");
  control("total-macs").textContent = v.macs.toLocaleString("en-US");
  const lint = control("lint"); lint.innerHTML = "";
  v.lint.forEach(message => {
    const li = document.createElement("li"); li.textContent = message; li.dataset.testid = "lint-item";
    lint.append(li);
  });
  control("lint-count").textContent =
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

[...NAMES, "widths"].forEach(n => control(n).addEventListener("input", () => edited.add(n)));
onInputs([...NAMES, "widths"], guard(refresh));
control("pool").addEventListener("change", () => { edited.add("pool"); guard(refresh)(); });
guard(refresh)();
