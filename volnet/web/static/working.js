// Every page: a "working..." badge in the header while a request waits for the server (a
// network that takes seconds to build, VGG-16's receptive field), so a slow answer never
// looks like no answer. Wraps fetch once; quick replies (polls) never show it.
"use strict";
(function () {
  const DELAY_MS = 400;            // shown only when the server takes longer than this
  const badge = document.createElement("span");
  badge.className = "working"; badge.dataset.testid = "working";
  badge.setAttribute("role", "status"); badge.textContent = "working\u2026"; badge.hidden = true;
  let pending = 0, timer = null;

  function update() {
    clearTimeout(timer);
    if (pending === 0) { badge.hidden = true; document.body.removeAttribute("aria-busy"); return; }
    document.body.setAttribute("aria-busy", "true");
    timer = setTimeout(() => { badge.hidden = pending === 0; }, DELAY_MS);
  }

  const send = window.fetch.bind(window);
  window.fetch = (...args) => {
    pending += 1; update();
    return send(...args).finally(() => { pending -= 1; update(); });
  };
  document.addEventListener("DOMContentLoaded", () => {
    (document.querySelector("header h1") || document.body).append(badge);
  });
})();
