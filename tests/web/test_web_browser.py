"""The page in real headless Chromium (Debian's /usr/bin/chromium) driven by Playwright.

Screenshots go to artifacts/web/ at the repository root (git-ignored) for a person to look at.
The browser (one per test session) comes from conftest.py: without Chromium these tests skip,
unless VOLNET_REQUIRE_BROWSER=1 (set by .ci/run): then they fail.
"""

import re

import pytest
from browsing import poll, shoot


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1300, "height": 1000})
    page = context.new_page()
    problems = []
    page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
    page.on("console", lambda msg: msg.type == "error" and problems.append(msg.text))
    page.goto(server.url)
    page.wait_for_selector("#summary tbody tr")
    yield page
    context.close()
    unexpected = [p for p in problems if "status of 400" not in p]   # the layer-list test's 4xx
    assert not unexpected, unexpected


def held_out_accuracy(page) -> float:
    match = re.search(r"held-out accuracy ([\d.]+)%", page.inner_text("#status"))
    return float(match.group(1)) / 100 if match else 0.0


def test_train_live_draw_and_look_inside(page, browser, server):
    assert page.inner_text("#total-params") == "61,706"   # LeNet-5 before any training
    page.click("#start")
    page.wait_for_selector("#status[data-state=training]")
    poll(lambda: held_out_accuracy(page) > 0.9, what="held-out accuracy above 90%")
    assert held_out_accuracy(page) > 0.9
    losses = page.evaluate("metrics.train.map(p => p.loss)")
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10   # the loss fell
    held = page.evaluate("metrics.held.map(p => p.acc)")
    assert held[-1] > held[0]

    # a second tab watches the same run
    other = browser.new_page()
    other.goto(server.url)
    poll(lambda: re.search(r"step [1-9]", other.inner_text("#status")), 10, "the second tab")
    other.close()

    page.click("#pause")
    page.wait_for_selector("#status[data-state=paused]")

    # the per-layer statistics arrived and are drawn (values: tests/web/test_web_lecture.py)
    samples = page.evaluate("metrics.layers.length")
    assert samples > 0 and page.evaluate("Object.keys(metrics.layers[0].grad_norm).length") == 5

    # draw a "1": one vertical stroke
    page.locator("#draw").scroll_into_view_if_needed()
    box = page.locator("#draw").bounding_box()
    page.mouse.move(box["x"] + 140, box["y"] + 40)
    page.mouse.down()
    page.mouse.move(box["x"] + 145, box["y"] + 240, steps=12)
    page.mouse.up()
    # the reply to the finished stroke (one sent mid-stroke may come first, or last)
    poll(lambda: page.evaluate("predictSent > 0 && predictShown === predictSent"), 10,
         "a prediction of the drawing")
    assert page.inner_text("#draw-prediction") == "1"
    assert page.locator("#draw-probs .bar").count() == 10
    preview_ink = ("() => Array.from(document.getElementById('draw-input').getContext('2d')"
                   ".getImageData(0, 0, 56, 56).data).some(v => v > 0)")
    poll(lambda: page.evaluate(preview_ink), 10, "the 'Seen by the net' preview")
    # issue 15 item 10: Clear empties the preview with the drawing, and a late reply keeps it so
    page.click("#clear")
    page.wait_for_timeout(500)
    assert page.inner_text("#draw-prediction") == "-" and not page.evaluate(preview_ink)

    page.fill("#digit-index", "7")
    page.click("#show-activations")
    page.wait_for_selector("#activations .layer canvas")
    assert page.locator("#activations .layer").count() == 13   # input + 12 LeNet layers
    assert page.locator("#grid .tile").count() == 100
    assert page.locator("#filters canvas").count() == 6
    shoot(page, "trained.png")
    page.click("#reset")
    page.wait_for_selector("#status[data-state=idle]")


def test_bad_layer_list_shows_the_error_on_the_page(page, browser, server):
    watcher = browser.new_page()   # another tab, which should follow the change of network
    watcher.goto(server.url)
    watcher.wait_for_selector("#summary tbody tr")
    page.check("input[value=custom]")
    page.fill("#layers", "conv 8 5 pad2, relu, pool 2")
    page.click("#build")
    page.wait_for_selector("#error:not([hidden])")
    assert "end with 'fc 10'" in page.inner_text("#error")
    page.fill("#layers", "conv 8 5 pad2, relu, pool 2, fc 10")
    page.click("#build")
    page.wait_for_selector("#error", state="hidden")
    assert page.inner_text("#total-params") == "15,898"
    poll(lambda: watcher.inner_text("#total-params") == "15,898", 20, "the other tab's summary")
    watcher.close()
    shoot(page, "custom-net.png")
