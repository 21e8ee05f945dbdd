"""PyTorch calibration for cnn-dropout-cifar10: the tutorial's recipe, trained in eager PyTorch
on the same image folder Kiln reads, to tell Kiln's accuracy from the recipe's.

The network, inputs ([0, 1], no normalisation), optimiser (SGD lr 0.001, momentum 0.9), batch
(32, shuffled each epoch) and epochs (20) of experiments/cnn-dropout-cifar10.toml. Prints a JSON
line per epoch (train loss and accuracy, test accuracy, seconds). Reads the JPEGs with Pillow
(`~/.cache/kiln/torch-venv/bin/pip install pillow`).

usage: python cnn_dropout_pytorch.py DATA_DIR --threads N [--epochs E] [--seed S]
  DATA_DIR holds train/<class>/*.jpg and test/<class>/*.jpg (cifar10-jpeg.tar.gz unpacked)
"""

import argparse
import json
import os
import time
import warnings

warnings.filterwarnings("ignore", message=".*NumPy.*")
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402


def load(split_dir):
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


class CnnDropout(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 32, 3, padding=1)
        self.fc1 = nn.Linear(8192, 512)
        self.fc2 = nn.Linear(512, 10)
        self.drop_conv = nn.Dropout(0.3)
        self.drop_fc = nn.Dropout(0.5)

    def forward(self, x):
        x = self.drop_conv(torch.relu(self.conv1(x)))
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = self.drop_fc(torch.relu(self.fc1(x.flatten(1))))
        return self.fc2(x)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("data_dir")
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train_x, train_y = load(os.path.join(args.data_dir, "train"))
    test_x, test_y = load(os.path.join(args.data_dir, "test"))
    model = CnnDropout()
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    batch = 32

    for epoch in range(1, args.epochs + 1):
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
        model.eval()
        with torch.no_grad():
            test_correct = sum(
                (model(test_x[i : i + 500]).argmax(1) == test_y[i : i + 500]).sum().item()
                for i in range(0, len(test_x), 500)
            )
        print(
            json.dumps(
                {
                    "epoch": epoch,
                    "train_loss": loss_sum / len(train_x),
                    "train_accuracy": correct / len(train_x),
                    "test_accuracy": test_correct / len(test_x),
                    "seconds": time.perf_counter() - start,
                    "torch": torch.__version__,
                    "threads": args.threads,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
