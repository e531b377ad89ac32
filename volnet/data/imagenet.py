"""ImageNet evaluation preprocessing and the 1000 class names, as torchvision's models expect.

torchvision's ImageNet models were trained on RGB images scaled to [0, 1] and
normalised per channel with ``MEAN``/``STD``; at evaluation an image is
resized so its shorter side is 256 (bilinear, antialiased), centre-cropped to
224x224 (Inception v3: 342 and 299). :func:`preprocess` reproduces those
steps with Pillow and NumPy.

The class names (``imagenet_classes.txt``, index order of the ILSVRC-2012
synsets) are the short labels of Keras's ``imagenet_class_index.json`` as
listed in pytorch/hub's ``imagenet_classes.txt``, with underscores as spaces.
"""

from __future__ import annotations

import os
from functools import lru_cache
from importlib import resources

import numpy as np

from volnet.errors import DataError

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
# model -> (resize of the shorter side, centre crop); 256/224 for every other model
SIZES = {"inception_v3": (342, 299)}
# torchvision builds its pretrained GoogLeNet and Inception v3 with ``transform_input=True``:
# the model maps ImageNet-normalised input back to (x - 0.5) / 0.5, the scale Google
# trained on. A volnet model built without that step (the default) gets that scale directly.
NORMS = {"googlenet": ((0.5,) * 3, (0.5,) * 3), "inception_v3": ((0.5,) * 3, (0.5,) * 3)}


@lru_cache(maxsize=1)
def class_names() -> tuple[str, ...]:
    """The 1000 ImageNet class names in the models' output order.

    Example:
        >>> names = class_names()
        >>> len(names), names[0], names[207], names[281]
        (1000, 'tench', 'golden retriever', 'tabby')
    """
    text = resources.files("volnet.data").joinpath("imagenet_classes.txt").read_text("utf-8")
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) != 1000:
        raise DataError(f"imagenet_classes.txt holds {len(names)} names, expected 1000; "
                        "the installation is damaged")
    return names


def open_rgb(path: str):
    """A Pillow RGB image from ``path``, refusing decompression bombs with a DataError."""
    from volnet.data.images import open_image

    return open_image(path, "RGB")


def preprocess(image, resize: int = 256, crop: int = 224, mean=MEAN, std=STD) -> np.ndarray:
    """torchvision's ImageNet evaluation transform: resize, centre crop, scale, normalise.

    Args:
        image: a Pillow image, an (H, W, 3) uint8 array or an image file path.
        resize: length of the shorter side after resizing (the longer one keeps
            the aspect ratio, ``int(resize * long / short)`` as torchvision).
        crop: side of the centred square crop.
        mean, std: per-channel normalisation of the [0, 1] RGB values.

    Shape:
        any (H, W) RGB image -> (3, crop, crop) float32.

    Example:
        >>> grey = np.full((300, 400, 3), 128, dtype=np.uint8)
        >>> x = preprocess(grey)
        >>> x.shape, round(float(x[0, 0, 0]), 4)    # (128/255 - 0.485) / 0.229
        ((3, 224, 224), 0.0741)
    """
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        image = open_rgb(image)
    elif isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise DataError(f"preprocess expects an (H, W, 3) uint8 array, got {image.dtype} "
                            f"{image.shape}")
        image = Image.fromarray(image)
    else:
        image = image.convert("RGB")
    if resize < crop:
        raise DataError(f"resize ({resize}) must be at least the crop ({crop})")
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    if short != resize:
        new_long = int(resize * long / short)
        size = (resize, new_long) if w <= h else (new_long, resize)
        image = image.resize(size, Image.BILINEAR)   # Pillow antialiases when shrinking
    w, h = image.size
    top, left = round((h - crop) / 2.0), round((w - crop) / 2.0)
    array = np.asarray(image, dtype=np.float32)[top:top + crop, left:left + crop] / 255.0
    array = (array - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32)


def classify(net, images, model: str = "", top: int = 5) -> list[list[tuple[str, float]]]:
    """Top-``top`` (class name, probability) pairs for each image file, ImageNet style.

    Args:
        net: a network with 1000 outputs trained on ImageNet (e.g. torchvision weights).
        images: image file paths.
        model: zoo name, to pick its preprocessing size (Inception v3: 342/299).
        top: how many classes to report per image.
    """
    resize, crop = SIZES.get(model, (256, 224))
    has_transform = any(name == "transform_input" for name, _ in net.named_children())
    mean, std = (MEAN, STD) if has_transform else NORMS.get(model, (MEAN, STD))
    x = np.stack([preprocess(path, resize, crop, mean, std) for path in images])
    probs = net.predict(x, batch_size=8)
    if probs.shape[1] != 1000:
        raise DataError(f"the network has {probs.shape[1]} outputs; ImageNet class names need "
                        "1000 (load ImageNet weights, e.g. volnet weights resnet18)")
    names = class_names()
    return [[(names[i], float(p[i])) for i in np.argsort(-p)[:max(1, top)]] for p in probs]


def predict_pretrained(model: str, weights, images, top: int = 5) -> list[str]:
    """``volnet predict MODEL --weights W IMAGE...``: one line of top classes per image.

    Args:
        model: zoo model name (``resnet18``).
        weights: a ``.pth``/``.safetensors`` file, or ``"imagenet"`` to download torchvision's.
        images: image file paths.
        top: classes per line.
    """
    from volnet.models.registry import pretrained

    net = pretrained(model, weights)
    results = classify(net, images, model, top)
    return [f"{path}: " + ", ".join(f"{name} {p:.3f}" for name, p in pairs)
            for path, pairs in zip(images, results)]
