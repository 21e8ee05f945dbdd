"""PyTorch calibration of a recipe on real data: the experiment's network, optimiser and batch
(reference.py's EXPERIMENTS, the same definitions the benchmark times) trained in eager PyTorch
on the files Kiln reads, to tell Kiln's accuracy from the recipe's.

Inputs are `ToTensor()`'s x/255, as the tutorials feed them, unless --normalize MEAN STD is
given (one mean and deviation for every channel, as Kiln's `[data] normalize` with one value). Prints a JSON line per epoch: train
loss and accuracy, validation accuracy where the experiment has a validation split, test
accuracy, seconds.

Data, by experiment:
- convnet-mnist: DATA_DIR holds MNIST's four IDX files (`../shared/datasets/mnist`); as in the
  tutorial and experiments/convnet-mnist.toml, validation = the first 5,000 test images and
  test = the last 5,000.
- lenet5-fashion-mnist, lenet5-classic-fashion-mnist: Fashion-MNIST's four IDX files.
- cnn-dropout-cifar10, simple-cnn-cifar10: DATA_DIR holds train/<class>/*.jpg and
  test/<class>/*.jpg (cifar10-jpeg.tar.gz unpacked); reading them needs Pillow
  (`~/.cache/kiln/torch-venv/bin/pip install pillow`).

usage: python calibrate.py EXPERIMENT DATA_DIR --threads N [--epochs E] [--seed S]
                           [--normalize MEAN STD]
"""

import argparse
import gzip
import json
import os
import struct
import time

from reference import EXPERIMENTS  # also silences torch's warning about NumPy
import torch  # noqa: E402
from torch import nn  # noqa: E402

# Epoch counts of experiments/<name>.toml; the validation split where the experiment has one.
RECIPES = {
    "convnet-mnist": dict(layout="idx", epochs=20, validation=5000),
    "lenet5-fashion-mnist": dict(layout="idx", epochs=14),
    "lenet5-classic-fashion-mnist": dict(layout="idx", epochs=10),
    "simple-cnn-cifar10": dict(layout="folder", epochs=10),
    "cnn-dropout-cifar10": dict(layout="folder", epochs=20),
}


def read_idx(path, magic):
    """One IDX file (gzipped or not) as bytes after its header, with its dimensions."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    found, = struct.unpack(">I", data[:4])
    if found != magic:
        raise SystemExit(f"{path}: expected IDX magic {magic:#x}, found {found:#x}")
    rank = magic & 0xFF
    dims = struct.unpack(f">{rank}I", data[4 : 4 + 4 * rank])
    return data[4 + 4 * rank :], dims


def load_idx(data_dir, prefix):
    def find(name):
        for candidate in (name + ".gz", name):
            path = os.path.join(data_dir, candidate)
            if os.path.exists(path):
                return path
        raise SystemExit(f"{data_dir}: no {name}[.gz]")

    pixels, (n, h, w) = read_idx(find(f"{prefix}-images-idx3-ubyte"), 0x803)
    labels, (m,) = read_idx(find(f"{prefix}-labels-idx1-ubyte"), 0x801)
    if n != m:
        raise SystemExit(f"{data_dir}: {n} {prefix} images but {m} labels")
    x = torch.frombuffer(bytearray(pixels), dtype=torch.uint8).reshape(n, 1, h, w)
    return x.float() / 255.0, torch.frombuffer(bytearray(labels), dtype=torch.uint8).long()


def load_folder(split_dir):
    from PIL import Image

    classes = sorted(os.listdir(split_dir))
    pixels, labels = bytearray(), []
    for label, name in enumerate(classes):
        folder = os.path.join(split_dir, name)
        for file in sorted(os.listdir(folder)):
            with Image.open(os.path.join(folder, file)) as img:
                img = img.convert("RGB")
                if img.size != (32, 32):
                    raise SystemExit(f"{folder}/{file}: expected 32x32, found {img.size}")
                pixels += img.tobytes()
            labels.append(label)
    x = torch.frombuffer(pixels, dtype=torch.uint8).reshape(-1, 32, 32, 3)
    # HWC bytes -> CHW floats in [0, 1], as torchvision's ToTensor.
    return x.permute(0, 3, 1, 2).float() / 255.0, torch.tensor(labels)


def accuracy(model, x, y):
    model.eval()
    with torch.no_grad():
        correct = sum(
            (model(x[i : i + 500]).argmax(1) == y[i : i + 500]).sum().item()
            for i in range(0, len(x), 500)
        )
    return correct / len(x)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("experiment", metavar="EXPERIMENT", choices=sorted(RECIPES))
    p.add_argument("data_dir")
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--normalize", type=float, nargs=2, metavar=("MEAN", "STD"))
    args = p.parse_args()
    recipe, spec = RECIPES[args.experiment], EXPERIMENTS[args.experiment]

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(args.seed)
    if recipe["layout"] == "idx":
        train_x, train_y = load_idx(args.data_dir, "train")
        test_x, test_y = load_idx(args.data_dir, "t10k")
    else:
        train_x, train_y = load_folder(os.path.join(args.data_dir, "train"))
        test_x, test_y = load_folder(os.path.join(args.data_dir, "test"))
    if args.normalize:
        mean, std = args.normalize
        train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    count = recipe.get("validation", 0)
    valid_x, valid_y = test_x[:count], test_y[:count]
    test_x, test_y = test_x[count:], test_y[count:]

    model = spec["model"]()
    opt = spec["optimizer"](model.parameters())
    loss_fn = nn.CrossEntropyLoss(label_smoothing=spec.get("label_smoothing", 0.0))
    batch = spec["batch"]
    for epoch in range(1, (args.epochs or recipe["epochs"]) + 1):
        start = time.perf_counter()
        model.train()
        order = torch.randperm(len(train_x))
        loss_sum, correct = 0.0, 0
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            logits = model(train_x[idx])
            loss = loss_fn(logits, train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            correct += (logits.argmax(1) == train_y[idx]).sum().item()
        line = {
            "experiment": args.experiment,
            "epoch": epoch,
            "train_loss": loss_sum / len(train_x),
            "train_accuracy": correct / len(train_x),
        }
        if count:
            line["valid_accuracy"] = accuracy(model, valid_x, valid_y)
        line["test_accuracy"] = accuracy(model, test_x, test_y)
        line.update(
            seconds=time.perf_counter() - start,
            inputs="normalize {} {}".format(*args.normalize) if args.normalize else "x/255",
            torch=torch.__version__,
            threads=args.threads,
        )
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
