"""``volnet segment CHECKPOINT IMAGE --out overlay.png [--mask mask.png]``: label every pixel."""

from __future__ import annotations

import numpy as np


def add_parser(sub):
    p = sub.add_parser("segment", help="label every pixel of an image with a segmentation net",
                       description="Run a checkpoint written by volnet train fcn|dilated|"
                                   "dilated-context on IMAGE; write the labels drawn over the "
                                   "image, and optionally the class-index mask.")
    p.add_argument("checkpoint", help="a segmentation checkpoint (.safetensors)")
    p.add_argument("image", help="a PNG/JPEG file, any size (padded to a multiple of 8)")
    p.add_argument("--out", required=True, help="overlay PNG to write (classes in Pascal "
                   "VOC colours over the image, enlarged to at least 256 px)")
    p.add_argument("--mask", default=None, help="also write the predicted class index per "
                   "pixel as a grey PNG of the image's size (the folder format's masks)")
    p.add_argument("--overwrite", action="store_true", help="allow replacing existing files")
    return p


def _png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 image, grey (H, W) or RGB (H, W, 3)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def run(args) -> int:
    from volnet.commands.outputs import OutputPlan
    from volnet.data.images import open_image
    from volnet.tools.segment_image import overlay, predict_mask, segmentation_checkpoint

    plan = OutputPlan(overwrite=args.overwrite)       # refused before any work
    out, mask_path = plan.add("--out", args.out), plan.add("--mask", args.mask)
    net = segmentation_checkpoint(args.checkpoint)
    channels = net.preprocessing["input_shape"][0]
    pixels = np.asarray(open_image(args.image, "L" if channels == 1 else "RGB"), dtype=np.uint8)
    image = pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)
    mask, probs = predict_mask(net, image)
    plan.stage(out, _png(overlay(image, mask)))
    if mask_path:
        plan.stage(mask_path, _png(mask))
    plan.commit()                                      # both files, or neither
    names = net.preprocessing.get("class_names") or [str(i) for i in range(probs.shape[0])]
    counts = np.bincount(mask.ravel(), minlength=len(names))
    found = [f"{names[c]} ({counts[c]} px, mean probability {probs[c][mask == c].mean():.2f})"
             for c in np.flatnonzero(counts) if c != 0]
    print(f"{args.image}: {mask.shape[1]}x{mask.shape[0]} pixels; "
          + (f"found {', '.join(found)}" if found else "only background"))
    print(f"overlay written to {out}" + (f", mask to {mask_path}" if mask_path else ""))
    return 0
