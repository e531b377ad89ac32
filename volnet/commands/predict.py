"""``volnet predict CHECKPOINT IMAGE...``: top classes for image files."""

from __future__ import annotations

import os

import numpy as np


def add_parser(sub):
    p = sub.add_parser("predict", help="classify image files with a saved net")
    p.add_argument("checkpoint", help="a .safetensors checkpoint written by volnet train")
    p.add_argument("images", nargs="+", help="PNG/JPEG files; converted and resized to what "
                   "the model was trained on")
    p.add_argument("--top", type=int, default=None,
                   help="how many classes to print per image (default 3; 5 with --weights)")
    p.add_argument("--weights", default=None,
                   help="pretrained weights (.pth/.safetensors, or 'imagenet' to download) for "
                   "a zoo model named in place of the checkpoint: volnet predict resnet18 "
                   "--weights FILE cat.jpg prints ImageNet classes")
    p.add_argument("--invert", action="store_true",
                   help="invert grey levels (dark digits on white paper -> MNIST style); for "
                        "MNIST checkpoints a light background is detected and inverted anyway")
    p.add_argument("--no-center", action="store_true",
                   help="for MNIST checkpoints, resize the whole image instead of framing the "
                        "digit as MNIST did (20x20 box, centre of mass at the centre)")
    return p


DIGIT_DATASETS = ("mnist", "mnist-sample")


def digit_input(path: str, invert: bool = False) -> tuple[np.ndarray, bool]:
    """A photo or scan of one digit as MNIST prepared its digits: (1, 28, 28) uint8.

    Light backgrounds (the median border pixel above mid-grey) are inverted to
    MNIST's white ink on black; the digit's bounding box is scaled to 20x20 and
    its centre of mass put at the centre, as the demo's canvas does. Returns
    the image and whether it was inverted.
    """
    from volnet.data.images import open_image
    from volnet.web.imaging import mnist_style

    grey = np.asarray(open_image(path, "L"), dtype=np.float32) / 255
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    flip = invert or float(np.median(border)) > 0.5
    if flip:
        grey = 1.0 - grey
    field = mnist_style(grey)
    return np.round(field * 255).astype(np.uint8)[None], flip


def run(args) -> int:
    if args.weights:
        from volnet.data.imagenet import predict_pretrained

        for line in predict_pretrained(args.checkpoint, args.weights, args.images,
                                       top=args.top or 5):
            print(line)
        return 0
    from volnet.commands.checks import (
        check_classes,
        check_normalisation,
        num_outputs,
        recorded_shape,
    )
    from volnet.data.batches import BatchIterator
    from volnet.data.images import is_blank, load_image
    from volnet.errors import ConfigError
    from volnet.io.checkpoint import load
    from volnet.models.registry import MODELS

    if args.checkpoint in MODELS and not os.path.exists(args.checkpoint):
        raise ConfigError(f"{args.checkpoint} is a zoo model without weights: give them, "
                          f"`volnet predict {args.checkpoint} --weights FILE|imagenet IMAGE...`, "
                          "or a checkpoint of volnet train / volnet import in its place")
    net = load(args.checkpoint)
    prep = net.preprocessing
    shape = recorded_shape(args.checkpoint, prep)
    check_normalisation(args.checkpoint, prep, shape[0])
    names = check_classes(args.checkpoint, prep, num_outputs(net, shape, args.checkpoint),
                          None, "")
    digits = prep.get("dataset") in DIGIT_DATASETS and shape == (1, 28, 28) and not args.no_center
    images, notes = [], {}
    for path in args.images:
        if digits:
            image, flipped = digit_input(path, args.invert)
            if flipped and not args.invert:
                notes[path] = " (light background: inverted to MNIST's white on black)"
        else:
            image = load_image(path, shape, invert=args.invert)
        if is_blank(image):
            notes[path] = (" (blank image: one flat colour, nothing to classify; these "
                           "scores mean nothing)")
        images.append(image)
    images = np.stack(images)
    labels = np.zeros(len(images), dtype=np.int64)
    x = BatchIterator(images, labels, mean=prep.get("mean"), std=prep.get("std")).transform(images)
    probs = net.predict(x)
    for path, p in zip(args.images, probs):
        top = np.argsort(-p)[:max(1, args.top or 3)]
        print(f"{path}: " + ", ".join(f"{names[i]} {p[i]:.3f}" for i in top) + notes.get(path, ""))
    return 0
