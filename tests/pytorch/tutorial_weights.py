"""The built-in networks and ResNet-18 (tests/experiments/) as their PyTorch code defines them,
for the PyTorch weights tests.

Module names are the tutorials' own (../shared/TUTORIAL-NETWORKS.md), so the state dicts are
the ones the tutorials' `torch.save(net.state_dict(), ...)` writes; resnet18-cifar10-fast has
no tutorial and uses Kiln's field names. Each forward returns logits (the tutorials that end in
`log_softmax` add it after these).

    python tutorial_weights.py save EXPERIMENT DIR N    # DIR/weights.pt, DIR/torch-logits.f32
    python tutorial_weights.py check EXPERIMENT DIR N   # DIR/kiln.safetensors -> DIR/roundtrip-logits.f32

Both read N images from DIR/inputs.f32 (little-endian float32, [N, C, H, W] row-major) and
write the logits in eval mode as little-endian float32 [N, 10].
"""

import json
import struct
import sys
from pathlib import Path

import torch
from torch import nn
import torch.nn.functional as F


class Conv(nn.Module):
    """simple-cnn-cifar10."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3)
        self.pool = nn.MaxPool2d(2, 2)
        self.relu = nn.ReLU()
        self.linear = nn.Linear(3600, 10)

    def forward(self, x):
        return self.linear(torch.flatten(self.relu(self.pool(self.conv(x))), 1))


class residual(nn.Module):
    def __init__(self, channel_in, channel_out, add_conv1_1=False, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(channel_in, channel_out, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channel_out)
        self.conv2 = nn.Conv2d(channel_out, channel_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channel_out)
        self.conv3 = nn.Conv2d(channel_in, channel_out, 1, stride) if add_conv1_1 else None

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        if self.conv3 is not None:
            x = self.conv3(x)
        return F.relu(x + y)


class resnet(nn.Module):
    """resnet-cifar10 (96x96 inputs)."""

    def __init__(self, in_channel=3, num_classes=10):
        super().__init__()
        self.block1 = nn.Sequential(
            nn.Conv2d(in_channel, 64, 7, 2),
            nn.BatchNorm2d(64, eps=1e-3),
            nn.ReLU(True),
            nn.MaxPool2d(3, 2, padding=1),
        )
        self.block2 = nn.Sequential(residual(64, 64), residual(64, 64))
        self.block3 = nn.Sequential(residual(64, 128, True, 2), residual(128, 128))
        self.block4 = nn.Sequential(residual(128, 256, True, 2), residual(256, 256))
        self.block5 = nn.Sequential(
            residual(256, 512, True, 2), residual(512, 512), nn.AvgPool2d(3), nn.Flatten()
        )
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x):
        for block in (self.block1, self.block2, self.block3, self.block4, self.block5):
            x = block(x)
        return self.classifier(x)


class ConvNet(nn.Module):
    """convnet-mnist."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 5, padding=2)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(4, 8, 5, padding=2)
        self.fc1 = nn.Linear(392, 512)
        self.fc2 = nn.Linear(512, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(F.dropout(x, 0.5, self.training))


class CifarDropout(nn.Module):
    """cnn-dropout-cifar10, with the published model's module names."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
        self.act1 = nn.ReLU()
        self.drop1 = nn.Dropout(0.3)
        self.conv2 = nn.Conv2d(32, 32, 3, padding=1)
        self.act2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flat = nn.Flatten()
        self.fc3 = nn.Linear(8192, 512)
        self.act3 = nn.ReLU()
        self.drop3 = nn.Dropout(0.5)
        self.fc4 = nn.Linear(512, 10)

    def forward(self, x):
        x = self.drop1(self.act1(self.conv1(x)))
        x = self.flat(self.pool2(self.act2(self.conv2(x))))
        return self.fc4(self.drop3(self.act3(self.fc3(x))))


class LeNet5(nn.Module):
    """lenet5-fashion-mnist (modern)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.pool1 = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.pool2 = nn.MaxPool2d(2, 2)
        self.fc1 = nn.Linear(400, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x):
        x = self.pool1(F.relu(self.conv1(x)))
        x = self.pool2(F.relu(self.conv2(x)))
        x = self.dropout(F.relu(self.fc1(torch.flatten(x, 1))))
        x = self.dropout(F.relu(self.fc2(x)))
        return self.fc3(x)


def lenet5_classic():
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.Sigmoid(), nn.AvgPool2d(2, 2),
        nn.Conv2d(6, 16, 5), nn.Sigmoid(), nn.AvgPool2d(2, 2),
        nn.Flatten(),
        nn.Linear(400, 120), nn.Sigmoid(),
        nn.Linear(120, 84), nn.Sigmoid(),
        nn.Linear(84, 10),
    )


class Shortcut(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 1, stride, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x):
        return self.bn(self.conv(x))


class Block(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = Shortcut(c_in, c_out, stride) if stride != 1 or c_in != c_out else None

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class Stage(nn.Module):
    def __init__(self, blocks):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


class ResNet18(nn.Module):
    """resnet18-cifar10-fast, with Kiln's field names (it has no tutorial)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        stages, c_in = [], 64
        for i, width in enumerate([64, 128, 256, 512]):
            stride = 1 if i == 0 else 2
            stages.append(Stage([Block(c_in, width, stride), Block(width, width, 1)]))
            c_in = width
        self.layers = nn.ModuleList(stages)
        self.fc = nn.Linear(512, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        for stage in self.layers:
            x = stage(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class Mul(nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return x * self.scale


class ConvGroup(nn.Module):
    """airbench94's ConvGroup (lib_airbench94.py): conv, pool, norm, GELU, conv, norm, GELU."""

    def __init__(self, c_in, c_out):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding="same", bias=False)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = nn.BatchNorm2d(c_out, eps=1e-12, momentum=0.4)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding="same", bias=False)
        self.norm2 = nn.BatchNorm2d(c_out, eps=1e-12, momentum=0.4)
        self.activ = nn.GELU()

    def forward(self, x):
        x = self.activ(self.norm1(self.pool(self.conv1(x))))
        return self.activ(self.norm2(self.conv2(x)))


def airbench94():
    """make_net94's nn.Sequential in fp32 (its module names: 0 the whitening convolution, 2-4
    the groups, 7 the head)."""
    return nn.Sequential(
        nn.Conv2d(3, 24, 2, padding=0, bias=True), nn.GELU(),
        ConvGroup(24, 64), ConvGroup(64, 256), ConvGroup(256, 256),
        nn.MaxPool2d(3), nn.Flatten(), nn.Linear(256, 10, bias=False), Mul(1 / 9),
    )


NETWORKS = {
    "simple-cnn-cifar10": (Conv, (3, 32, 32)),
    "resnet-cifar10": (resnet, (3, 96, 96)),
    "convnet-mnist": (ConvNet, (1, 28, 28)),
    "cnn-dropout-cifar10": (CifarDropout, (3, 32, 32)),
    "lenet5-fashion-mnist": (LeNet5, (1, 28, 28)),
    "lenet5-classic-fashion-mnist": (lenet5_classic, (1, 28, 28)),
    "resnet18-cifar10-fast": (ResNet18, (3, 32, 32)),
    "airbench94-cifar10": (airbench94, (3, 32, 32)),
}


def build(experiment):
    torch.manual_seed(0)
    make, shape = NETWORKS[experiment]
    net = make()
    # Batch-norm statistics and affine values away from their defaults, so the test sees
    # whether they arrive (eval mode uses the running statistics).
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.num_batches_tracked.fill_(123)
    return net.eval(), shape


def read_f32(path, shape):
    data = Path(path).read_bytes()
    return torch.frombuffer(bytearray(data), dtype=torch.float32).reshape(shape)


def write_logits(net, inputs, path):
    with torch.no_grad():
        logits = net(inputs).to(torch.float32).contiguous()
    Path(path).write_bytes(struct.pack(f"<{logits.numel()}f", *logits.flatten().tolist()))


def load_safetensors(path):
    """A safetensors file as a dict of tensors (the format is a JSON header and raw data;
    parsed here so the test needs torch alone)."""
    data = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    dtypes = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64}
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        t = torch.frombuffer(bytearray(body[begin:end]), dtype=dtypes[info["dtype"]])
        tensors[name] = t.reshape(info["shape"])
    return tensors


def main():
    command, experiment, folder, n = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
    net, shape = build(experiment)
    inputs = read_f32(folder / "inputs.f32", (n, *shape))
    if command == "save":
        torch.save(net.state_dict(), folder / "weights.pt")
        write_logits(net, inputs, folder / "torch-logits.f32")
    elif command == "check":
        # Blank every weight first, so only what the file holds can give the logits; strict:
        # every key of the network must be in the file and every key of the file used.
        with torch.no_grad():
            for t in net.state_dict().values():
                t.zero_()
        net.load_state_dict(load_safetensors(folder / "kiln.safetensors"), strict=True)
        write_logits(net.eval(), inputs, folder / "roundtrip-logits.f32")
    else:
        sys.exit(f"unknown command {command!r}: expected save or check")


if __name__ == "__main__":
    main()
