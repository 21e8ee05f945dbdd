"""PyTorch reference for `cargo xtask bench`: the lenet5-fashion-mnist recipe, eager mode.

The same network, data, normalisation, batch size and optimiser as
experiments/lenet5-fashion-mnist.toml, timed the way `kiln run` times an epoch (training
only, evaluation apart). Prints one JSON line with the measured figures. Needs only torch (no
numpy, no torchvision): the IDX files are read with gzip and struct.

usage: python lenet5_pytorch.py DATA_DIR --threads N --epochs E [--limit-train N]
"""

import argparse
import gzip
import json
import os
import struct
import time
import warnings

# torch warns at import when numpy is missing; the script does not use numpy.
warnings.filterwarnings("ignore", message=".*NumPy.*")
import torch  # noqa: E402
from torch import nn


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    dims = magic & 0xFF
    shape = struct.unpack(">" + "I" * dims, data[4 : 4 + 4 * dims])
    return torch.frombuffer(bytearray(data[4 + 4 * dims :]), dtype=torch.uint8).reshape(shape)


def load(data_dir, prefix, limit):
    images = read_idx(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte.gz"))
    if limit:
        images, labels = images[:limit], labels[:limit]
    x = (images.float().unsqueeze(1) / 255.0 - 0.2860) / 0.3530
    return x, labels.long()


class LeNet5(nn.Module):
    """ReLU, max pooling, dropout 0.5: kiln_models::LeNet5 with the modern defaults."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(400, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)
        self.pool = nn.MaxPool2d(2)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = x.flatten(1)
        x = self.drop(torch.relu(self.fc1(x)))
        x = self.drop(torch.relu(self.fc2(x)))
        return self.fc3(x)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("data_dir")
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--limit-train", type=int, default=0)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    # As in DESIGN.md: Adam with weight decay drives dead units' weights into denormals, which
    # slow the CPU; flushing them keeps the reference at its real speed (same accuracy).
    torch.set_flush_denormal(True)
    torch.manual_seed(args.seed)
    train_x, train_y = load(args.data_dir, "train", args.limit_train)
    test_x, test_y = load(args.data_dir, "t10k", 0)
    model = LeNet5()
    opt = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=0.001)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
    loss_fn = nn.CrossEntropyLoss()
    batch = 256

    train_seconds = 0.0
    images = 0
    for _ in range(args.epochs):
        model.train()
        order = torch.randperm(len(train_x))
        start = time.perf_counter()
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            loss = loss_fn(model(train_x[idx]), train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss.item()  # kiln reads every step's loss too
            images += len(idx)
        train_seconds += time.perf_counter() - start
        sched.step()

    model.eval()
    with torch.no_grad():
        correct = sum(
            (model(test_x[i : i + 1000]).argmax(1) == test_y[i : i + 1000]).sum().item()
            for i in range(0, len(test_x), 1000)
        )
    print(
        json.dumps(
            {
                "backend": "pytorch",
                "torch": torch.__version__,
                "threads": args.threads,
                "train_images_per_sec": images / train_seconds,
                "test_accuracy": correct / len(test_x),
            }
        )
    )


if __name__ == "__main__":
    main()
