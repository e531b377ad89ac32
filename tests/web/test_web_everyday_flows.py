"""Issue 23 in headless Chromium: the lecture pages tell the truth while they work.

The dense page's class strip lines up with the image; the receptive-field heat map is the
average over many random inputs (Luo et al. 2016) and never shows the previous model's numbers
while a new one computes; every page shows a working badge while it waits for the server; the
patterns page starts at vn.models.pattern's real defaults and its table never contradicts its
error banner. Screenshots: artifacts/web/issue23-*.png.
"""

import numpy as np
import pytest
from browsing import shoot
from test_web_lecture_browser import by, poll, set_controls, text

import volnet as vn
from volnet.models.pattern import pattern
from volnet.web.lecture import fields


@pytest.fixture
def page(browser, server):
    """A page that fails the test on any script error; a 400 reply the test provokes (and the
    page shows in its banner) is the one console error allowed."""
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    page = context.new_page()
    problems = []
    page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
    page.on("console", lambda msg: msg.type == "error" and "status of 400" not in msg.text
            and problems.append(msg.text))
    page.base = server.url.rstrip("/")
    yield page
    context.close()
    assert not problems, problems


def test_patterns_page_starts_at_the_zoo_pattern_and_errors_clear_the_table(page):
    page.goto(page.base + "/lecture/patterns")
    default = vn.summary(pattern(), (3, 32, 32)).totals["params"]       # widths (32, 64)
    poll(lambda: text(page, "total-params") == f"{default:,}", "the zoo pattern's total")
    assert default == vn.summary(vn.models.build("pattern"), (3, 32, 32)).totals["params"]
    assert by(page, "widths").input_value() == "32, 64"
    assert [by(page, n).input_value() for n in ("N", "M", "K", "F")] == ["2", "2", "1", "3"]
    set_controls(page, F=4)                                            # even: pattern refuses
    banner = page.locator("#error")
    poll(lambda: banner.is_visible(), "the error banner")
    assert "odd" in banner.inner_text()
    poll(lambda: text(page, "lint-count") != "all rules hold", "the verdict to go")
    assert text(page, "total-params") == "\u2014"
    assert by(page, "summary").locator("tbody tr").count() == 0
    shoot(page, "issue23-patterns-error.png")
    set_controls(page, F=3, widths="16, 48")
    net = pattern(widths=(16, 48))
    poll(lambda: text(page, "total-params") == f"{vn.summary(net, (3, 32, 32)).totals['params']:,}",
         "the 16, 48 pattern")
    assert banner.is_hidden() and text(page, "lint-count") == "all rules hold"


def test_receptive_field_is_averaged_and_never_stale(page):
    page.goto(page.base + "/lecture/receptive-field")
    poll(lambda: text(page, "rf-size") not in ("", "\u2026"), "LeNet's field")
    lenet = text(page, "rf-size")
    by(page, "model").select_option("vgg16")
    seen = set()

    def settled():
        seen.add(text(page, "rf-size"))
        return text(page, "rf-size") not in ("", "\u2026")
    poll(settled, "VGG-16's field", timeout=120)
    assert lenet not in seen, seen                     # LeNet's number never stood for VGG-16's
    assert "\u2026" in seen                            # the page said it was computing
    layer, row, col = (by(page, "layer").input_value(), int(by(page, "row").input_value()),
                       int(by(page, "col").input_value()))
    samples = int(text(page, "samples"))
    assert samples >= 4
    # the average over that many random inputs, by volnet directly (independent of the server)
    net = vn.models.build("vgg16", seed=0, hidden_features=64).astype("float64")
    chain = fields.units(net)
    chain = chain[:[p for p, _ in chain].index(layer) + 1]
    x = np.random.default_rng(0).standard_normal((samples, 3, 112, 112))
    for _, unit in chain:
        x = unit.forward(x, cache=True)
    dout = np.zeros_like(x)
    dout[:, :, row, col] = 1
    for _, unit in reversed(chain):
        dout = unit.backward(dout)
    average = np.abs(dout).sum(axis=1).mean(axis=0)
    view = fields.field_view("vgg16", layer, row, col)
    np.testing.assert_allclose(view["effective_max"], average.max(), rtol=1e-9)
    one = np.abs(dout[:1]).sum(axis=1)[0]
    # the average is smoother than one input's speckle: neighbouring pixels differ less
    rough = lambda g: np.abs(np.diff(g, axis=1)).sum() / g.sum()
    assert rough(average) < 0.8 * rough(one)
    shoot(page, "issue23-receptive-field-vgg16.png")


def test_every_page_shows_that_it_waits_for_the_server(page):
    page.goto(page.base + "/lecture/receptive-field")
    poll(lambda: text(page, "rf-size") not in ("", "\u2026"), "the first field")
    by(page, "model").select_option("vgg16")               # seconds of work on the server
    poll(lambda: by(page, "working").is_visible(), "the working badge", timeout=10)
    shoot(page, "issue23-working.png")
    poll(lambda: text(page, "rf-size") not in ("", "\u2026"), "VGG-16's field", timeout=120)
    poll(lambda: by(page, "working").is_hidden(), "the badge to go")
    for path in ("/", "/gan", "/lecture/conv", "/lecture/backprop", "/lecture/dense",
                 "/lecture/patterns"):
        page.goto(page.base + path)
        assert by(page, "working").count() == 1, path      # on every page, hidden when idle
        poll(lambda: by(page, "working").is_hidden(), f"{path} to settle", timeout=60)


def test_dense_class_strip_lines_up_with_the_image(page, tmp_path):
    page.goto(page.base + "/lecture/dense")
    poll(lambda: text(page, "passes") != "", "the first map")
    by(page, "classifier").select_option("lenet5")
    poll(lambda: text(page, "step") == "4", "step 4")
    boxes = []

    def drawn():     # both pictures in place and nothing pending (the strip is redrawn)
        boxes[:] = [by(page, "image").bounding_box(), by(page, "predicted-map").bounding_box()]
        return None not in boxes and page.locator("body[aria-busy]").count() == 0
    poll(drawn, "the strip under the image")
    image, strip = boxes
    assert abs(image["x"] - strip["x"]) < 1 and abs(image["width"] - strip["width"]) < 1
    assert 0 <= strip["y"] - (image["y"] + image["height"]) < 40       # right under it
    shoot(page, "issue23-dense.png")
