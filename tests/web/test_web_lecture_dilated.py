"""/lecture/dilated: its numbers against volnet directly (the bundled segmenters' masks,
vn.receptive_field, a backward pass), and the page in headless Chromium (screenshot in
artifacts/web/lecture-dilated.png)."""

import numpy as np
import pytest
from browsing import poll, shoot

import volnet as vn
from volnet.data.scenes import make_scenes
from volnet.data.segmenters import checkpoint_path
from volnet.tools.segment_image import predict_mask


def _view(client, **query):
    reply = client.get("/api/lecture/dilated", params=query)
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_masks_fields_and_gradients_are_volnets(client):
    view = _view(client, scene=3, row=20, col=41)
    x, y = make_scenes(4, "test")
    assert view["image"] == x[3, 0].tolist() and view["truth"] == y[3].tolist()
    for shown, name in zip(view["models"], ("dilated", "dilated-context")):
        net = vn.load(checkpoint_path(name))
        mask, probs = predict_mask(net, x[3])
        assert shown["mask"] == mask.tolist()
        field = vn.receptive_field(net, (1, 64, 64))
        assert shown["size"] == list(field.size)
        cls = int(mask[20, 41])
        assert shown["unit_class"] == cls
        assert shown["unit_probability"] == pytest.approx(float(probs[cls, 20, 41]), abs=1e-4)
        # effective field: the gradient of that score, recomputed here
        prep = net.preprocessing
        xin = (x[3:4].astype(np.float32) / 255 - prep["mean"][0]) / prep["std"][0]
        out = net.forward(xin, cache=True)
        dout = np.zeros_like(out)
        dout[0, cls, 20, 41] = 1
        grad = np.abs(net.backward(dout)[0, 0])
        assert shown["effective_max"] == pytest.approx(float(grad.max()), rel=1e-5)
    sizes = [m["size"][0] for m in view["models"]]
    assert sizes == [52, 316]                  # the context module: wider than the scene


@pytest.mark.parametrize("query", [{"scene": 100}, {"row": 64}, {"col": -1}])
def test_out_of_range_queries_are_refused(client, query):
    reply = client.get("/api/lecture/dilated", params=query)
    assert reply.status_code == 400 and "error" in reply.json()


def test_dilated_page_in_the_browser(browser, server):
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    page = context.new_page()
    problems = []
    page.on("pageerror", lambda err: problems.append(str(err)))
    page.on("console", lambda msg: msg.type == "error" and problems.append(msg.text))
    page.goto(server.url.rstrip("/") + "/lecture/dilated")
    rf = page.locator('[data-testid="rf-dilated-context"]')
    poll(lambda: rf.count() == 1 and rf.inner_text() == "316x316", 60, "the page's first view")
    assert page.locator('[data-testid="rf-dilated"]').inner_text() == "52x52"
    page.locator('[data-testid="scene"]').fill("5")
    poll(lambda: "unit (32, 32)" in page.locator('[data-testid="facts-dilated"]').inner_text()
         and page.locator('[data-testid="iou-dilated"]').count() == 1, 60, "scene 5")
    # a click on the scene picks the output unit: a stroke pixel of scene 5's first digit
    _, masks = make_scenes(6, "test")
    rows, cols = np.nonzero((masks[5] > 0) & (masks[5] < 255))
    row, col = int(rows[len(rows) // 2]), int(cols[len(rows) // 2])
    page.locator('[data-testid="scene-canvas"]').click(position={"x": col * 4 + 2, "y": row * 4 + 2})
    view = None

    def shown():
        nonlocal view
        text = page.locator('[data-testid="facts-dilated"]').inner_text()
        if f"unit ({row}, {col})" not in text:
            return False
        view = server_view(5, row, col)
        return True

    def server_view(scene, row, col):
        from volnet.web.lecture.dilated import dilated_view
        return dilated_view(scene, row, col)

    poll(shown, 60, "the clicked unit")
    for m in view["models"]:
        assert page.locator(f'[data-testid="class-{m["model"]}"]').inner_text() == \
            view["class_names"][m["unit_class"]]
        iou = float(page.locator(f'[data-testid="iou-{m["model"]}"]').inner_text())
        assert iou == pytest.approx(m["scene_mean_iou"], abs=1e-3)
        # the mask canvas shows the predicted classes: sample the centre of every pixel
        pixels = np.array(page.evaluate(f"""() => {{
            const c = document.querySelector('[data-testid="mask-{m["model"]}"]');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            const out = [];
            for (let i = 0; i < 64; i++) for (let j = 0; j < 64; j++) {{
                const k = 4 * ((i * 4 + 2) * c.width + j * 4 + 1); out.push([d[k], d[k+1], d[k+2]]);
            }}
            return out; }}"""))
        mask = np.array(m["mask"]).ravel()
        colours = np.array(m["colours"])
        # leave out the pixels under the unit's ring and the box's outline, drawn on top
        i, j = np.divmod(np.arange(64 * 64), 64)
        (top, bottom), (left, right) = m["box"]
        outline = np.isin(i, [int(top), int(bottom) + 1]) | np.isin(j, [int(left), int(right) + 1])
        ring = (abs(i - row) <= 2) & (abs(j - col) <= 2)
        digit = (mask > 0) & ~outline & ~ring
        assert digit.sum() > 50
        np.testing.assert_array_equal(pixels[digit], colours[mask[digit]])
    shoot(page, "lecture-dilated.png")
    context.close()
    assert not problems, problems
