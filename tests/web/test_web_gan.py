"""The demo's GAN page: controls, live samples from a fixed noise batch, and the page itself
in headless Chromium (screenshot in artifacts/web/gan.png)."""

import io
import re

import numpy as np
import pytest
from browsing import ARTIFACTS, poll
from PIL import Image


def _tiles(png: bytes) -> np.ndarray:
    """The 64 28x28 digits of a sample grid, as floats in [0, 1]."""
    grid = np.asarray(Image.open(io.BytesIO(png)), dtype=np.float64) / 255
    return np.stack([grid[2 + r * 30:30 + r * 30, 2 + c * 30:30 + c * 30]
                     for r in range(8) for c in range(8)])


def test_gan_trains_and_its_fixed_noise_samples_gain_contrast(client, post):
    first = client.get("/api/gan/samples.png").content
    assert _tiles(first).std() < 0.05                          # untrained: uniform grey
    assert post("/api/gan/train", {"action": "start"}).json()["state"] == "training"
    poll(lambda: client.get("/api/gan/status").json()["samples_step"] >= 60, 120, "60 GAN steps")
    status = client.get("/api/gan/status").json()
    assert status["losses"][0]["step"] == 1 and {"d_loss", "g_loss"} <= set(status["losses"][0])
    later = _tiles(client.get("/api/gan/samples.png").content)
    assert later.std() > 4 * _tiles(first).std()               # dark background, bright strokes
    assert post("/api/gan/train", {"action": "pause"}).json()["state"] == "paused"
    step = client.get("/api/gan/status").json()["step"]
    assert client.get(f"/api/gan/status?since={step}").json()["losses"] == []
    reply = post("/api/gan/train", {"action": "reset"}).json()
    assert reply["state"] == "idle" and reply["step"] == 0
    assert client.get("/api/gan/samples.png").content == first  # same seed, same fixed noise


@pytest.mark.parametrize("payload, status", [({"action": "fly"}, 400), ([1], 400)])
def test_gan_controls_refuse_bad_requests(post, payload, status):
    reply = post("/api/gan/train", payload)
    assert reply.status_code == status and "error" in reply.json()


def test_gan_control_needs_the_token(client):
    assert client.post("/api/gan/train", json={"action": "start"}).status_code == 403


def _shown_step(page) -> int:
    match = re.search(r"samples drawn after step (\d+)", page.inner_text("#gan-status"))
    return int(match.group(1)) if match else -1


def test_gan_page_in_the_browser(browser, server):
    page = browser.new_page(viewport={"width": 900, "height": 900})
    problems = []
    page.on("pageerror", lambda err: problems.append(str(err)))
    page.on("console", lambda msg: msg.type == "error" and problems.append(msg.text))
    page.goto(server.url)
    page.click("#gan-link")
    page.wait_for_selector("#gan-samples")
    page.click("#gan-start")
    poll(lambda: _shown_step(page) >= 40, 120, "samples after 40 steps")
    poll(lambda: page.evaluate("document.getElementById('gan-samples').naturalWidth") == 242, 10,
         "the sample grid image")
    # legible: each 28 px digit drawn at 3x with hard pixel edges (not the 242 px file as is)
    assert page.evaluate("document.getElementById('gan-samples').getBoundingClientRect().width") >= 700
    assert page.evaluate("getComputedStyle(document.getElementById('gan-samples')).imageRendering") \
        == "pixelated"
    assert "generator loss" in page.inner_text("#gan-losses")
    page.click("#gan-pause")
    poll(lambda: page.inner_text("#gan-status").startswith("paused"), 10, "paused")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "gan.png"), full_page=True)
    page.click("#gan-reset")
    poll(lambda: page.inner_text("#gan-status").startswith("idle"), 20, "reset")
    page.close()
    assert not problems, problems


def test_gan_header_link_is_light_on_the_dark_header(browser, server):
    """The header's links must stand out from its #263238 background (WCAG contrast >= 4.5)."""
    page = browser.new_page()
    page.goto(server.url)
    colours = page.evaluate("""() => [getComputedStyle(document.getElementById('gan-link')).color,
        getComputedStyle(document.querySelector('header')).backgroundColor]""")
    page.close()

    def luminance(css):
        channels = [int(v) / 255 for v in re.findall(r"\d+", css)[:3]]
        lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    fg, bg = sorted((luminance(colours[0]), luminance(colours[1])), reverse=True)
    assert (fg + 0.05) / (bg + 0.05) >= 4.5, colours


def test_gan_run_pauses_when_no_page_watches_and_resumes_when_one_does(sample):
    """Closing every tab must not leave the GAN burning the CPU until Pause is pressed."""
    from volnet.web.gan import GanSession

    session = GanSession(sample, batch_size=8, max_steps=10_000, idle_after=0.3)
    try:
        session.start()
        poll(lambda: session.state == "paused", 60, "the run to pause itself")
        assert session.unwatched
        step = session.step
        import time
        time.sleep(1.0)
        assert session.step == step                      # held: no steps without a viewer
        session.watched()                                # a tab polls the status again
        status = session.status()
        assert status["state"] == "training" and not status["unwatched"]
        poll(lambda: session.step > step, 60, "training to go on")
        session.pause()                                  # a viewer's pause is not undone by polling
        session.watched()
        assert session.status()["state"] == "paused"
    finally:
        session.close()
