"""CIFAR-10's folder layout (DIR/train/<class>/*, DIR/test/<class>/*) read in Kiln's order, for
the PyTorch scripts that train on the very files Kiln reads: classes sorted, files sorted by name
within a class, the classes interleaved (the i-th file of every class, then the (i+1)-th), so the
first N images are the ones `--limit-train N` gives Kiln.

Needs torch and Pillow (`~/.cache/kiln/torch-venv/bin/pip install pillow`).
"""

import os

import torch
from PIL import Image

CLASSES = 10


def load_split(root, limit=None, size=None):
    """uint8 [N, 3, S, S] images (resized to `size` by Pillow's bilinear filter where given) and
    int64 labels of one split, with the class names."""
    classes = sorted(d for d in os.listdir(root) if not d.startswith("."))
    if len(classes) != CLASSES:
        raise SystemExit(f"{root}: expected {CLASSES} class folders, found {len(classes)}")
    files = [sorted(os.listdir(os.path.join(root, c))) for c in classes]
    order = []
    for i in range(max(len(f) for f in files)):
        order.extend((c, files[c][i]) for c in range(CLASSES) if i < len(files[c]))
    if limit is not None:
        order = order[:limit]
    images = None
    for n, (c, name) in enumerate(order):
        with Image.open(os.path.join(root, classes[c], name)) as img:
            img = img.convert("RGB")
            if size is not None:
                img = img.resize((size, size), Image.BILINEAR)
            w, h = img.size
            pixels = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
        if images is None:
            images = torch.empty(len(order), 3, h, w, dtype=torch.uint8)
        images[n] = pixels.view(h, w, 3).permute(2, 0, 1)
    labels = torch.tensor([c for c, _ in order], dtype=torch.int64)
    return images, labels, classes
