"""``volnet predict CHECKPOINT IMAGE...``: top classes for image files."""

from __future__ import annotations

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
                   help="invert grey levels (dark digits on white paper -> MNIST style)")
    return p


def run(args) -> int:
    if args.weights:
        from volnet.data.imagenet import predict_pretrained

        for line in predict_pretrained(args.checkpoint, args.weights, args.images,
                                       top=args.top or 5):
            print(line)
        return 0
    from volnet.data.batches import BatchIterator
    from volnet.data.images import load_image
    from volnet.io.checkpoint import load

    net = load(args.checkpoint)
    prep = net.preprocessing
    shape = tuple(prep.get("input_shape", ()))
    if len(shape) != 3:
        from volnet.errors import CheckpointError

        raise CheckpointError(f"{args.checkpoint} records no input shape; it was not saved by "
                              "volnet train (save it with preprocessing={'input_shape': ...})")
    images = np.stack([load_image(path, shape, invert=args.invert) for path in args.images])
    labels = np.zeros(len(images), dtype=np.int64)
    x = BatchIterator(images, labels, mean=prep.get("mean"), std=prep.get("std")).transform(images)
    probs = net.predict(x)
    names = prep.get("class_names") or [str(i) for i in range(probs.shape[1])]
    for path, p in zip(args.images, probs):
        top = np.argsort(-p)[:max(1, args.top or 3)]
        print(f"{path}: " + ", ".join(f"{names[i]} {p[i]:.3f}" for i in top))
    return 0
