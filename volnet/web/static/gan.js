// The GAN page: start/pause/resume/reset, then poll the status and reload the sample grid
// whenever the server has drawn a newer one.
"use strict";
(function () {
  const token = document.querySelector('meta[name="volnet-token"]').content;
  const $ = (id) => document.getElementById(id);
  let shownStep = -1, next = 0, run = null, last = null;

  function showError(message) {
    const box = $("error");
    box.textContent = message || "";
    box.hidden = !message;
  }

  async function control(action) {
    const reply = await fetch("/api/gan/train", {method: "POST", body: JSON.stringify({action}),
      headers: {"Content-Type": "application/json", "X-Volnet-Token": token}});
    const body = await reply.json();
    showError(reply.ok ? "" : body.error);
    shownStep = -1;
  }

  async function poll() {
    try {
      const reply = await fetch(`/api/gan/status?since=${next}`);
      const s = await reply.json();
      if (!reply.ok) { showError(s.error); return; }
      if (s.run !== run) { run = s.run; next = 0; last = null; shownStep = -1; }
      next = s.next;
      if (s.losses.length) last = s.losses[s.losses.length - 1];
      const rate = s.seconds > 0 ? ` (${(s.step / s.seconds).toFixed(1)} steps/s)` : "";
      const why = s.unwatched ? " (no page was open)" : "";
      $("gan-status").textContent = `${s.state}${why}: step ${s.step} of ${s.max_steps}${rate}; ` +
        `samples drawn after step ${s.samples_step}`;
      $("gan-losses").textContent = last ?
        `discriminator loss ${last.d_loss.toFixed(3)}, generator loss ${last.g_loss.toFixed(3)}` : "";
      if (s.samples_step !== shownStep) {
        shownStep = s.samples_step;
        $("gan-samples").src = `/api/gan/samples.png?step=${s.samples_step}&run=${s.run}`;
      }
    } catch (err) {
      showError(`lost contact with the demo server: ${err}`);
    }
  }

  for (const action of ["start", "pause", "resume", "reset"]) {
    $(`gan-${action}`).addEventListener("click", () => control(action));
  }
  poll();
  setInterval(poll, 500);
})();
