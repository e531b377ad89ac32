"""Generated data for the new-user tests (issue 15): a folder of shape images and a few
real digits. Helpers, not tests."""

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")


def draw(shape: str, rng, size: int = 16) -> Image.Image:
    """A bright filled shape of random colour, size and place on a dark noisy background."""
    img = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 70, 3)))
    d, fg = ImageDraw.Draw(img), tuple(int(v) for v in rng.integers(150, 256, 3))
    r = rng.uniform(0.25, 0.4) * size
    cx, cy = rng.uniform(r, size - r, 2)
    box = [cx - r, cy - r, cx + r, cy + r]
    if shape == "circle":
        d.ellipse(box, fill=fg)
    elif shape == "square":
        d.rectangle(box, fill=fg)
    else:
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fg)
    noise = rng.normal(0, 10, (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(img) + noise, 0, 255).astype(np.uint8))


def make_shapes_folder(root, per_class=(30, 10), seed=0, held_out="test", shapes=SHAPES):
    """root/train/<shape>/*.png and root/<held_out>/<shape>/*.png, as volnet train reads."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class[0]), (held_out, per_class[1])):
        for shape in shapes:
            (root / split / shape).mkdir(parents=True)
            for i in range(count):
                draw(shape, rng).save(root / split / shape / f"{i:03d}.png")
    return root
