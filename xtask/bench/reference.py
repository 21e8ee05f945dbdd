"""PyTorch eager reference for `cargo xtask bench`: the speed of one experiment's training step
and evaluation pass, measured on synthetic data.

For EXPERIMENT (an experiments/<name>.toml) it builds in PyTorch the network Kiln builds for it
(crates/kiln-models: same layers, shapes, activations, pooling, dropout, batch norm, biases and
parameter count; Kiln's models, not the tutorials', where the two differ), the recipe's
optimiser, loss (with its label smoothing) and batch size, and random inputs of the shape the
model sees after the experiment's transforms (e.g. CIFAR-10 resized to 96x96 for
resnet-cifar10). Only speed is measured, so the data are `torch.randn` images with random
labels: a few pre-generated batches, reused in turn.

Warm-up: W training steps and W evaluation passes in each layout, before any is timed. Then
training: S timed steps of forward, cross-entropy, zero_grad, backward,
optimiser step and `loss.item()` (Kiln reads every step's loss, which also synchronises).
Evaluation: the same in `model.eval()` and `torch.no_grad()`, a forward pass and its predicted
classes per step. The figures are batch / median step time.

Both memory layouts are timed, contiguous (NCHW) and channels_last (NHWC, where oneDNN picks
its blocked kernels), and the faster of the two is the reference (`layout` says which; both
figures are kept; `peak_rss_mib` is read before the second layout's
model exists). FLOPs per image come from `torch.utils.flop_counter` over one training step
(forward and backward) and one evaluation forward pass: Kiln runs the same networks, so the
bench turns every backend's images/s into GFLOP/s with them.

`cargo xtask bench` runs this script with the Python of ~/.cache/kiln/torch-venv (PyTorch 2.9.0),
with the thread count, warm-up and steps it gives Kiln for the same experiment, reads the one
JSON line it prints last and reports each Kiln backend's images per second as a ratio to these.
Needs only torch (no numpy, no torchvision).

usage: python reference.py EXPERIMENT --threads N --warmup W --steps S [--seed 42]
"""

import argparse
import json
import resource
import statistics
import sys
import time
import warnings
from pathlib import Path

# torch warns at import when numpy is missing; the script does not use numpy.
warnings.filterwarnings("ignore", message=".*NumPy.*")
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

# The weights tests' PyTorch networks: airbench94's is timed here as they build it.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "pytorch"))
import tutorial_weights  # noqa: E402

NUM_CLASSES = 10  # MNIST, Fashion-MNIST and CIFAR-10 alike
DATA_BATCHES = 4  # pre-generated batches, used in turn


def xavier_weights(model):
    """Xavier-uniform weights for every Conv2d and Linear, biases left at PyTorch's default
    (kiln_models::WeightInit::XavierUniform, as the tutorials' `xavier_uniform_(m.weight)`)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
    return model


class LeNet5(nn.Module):
    """kiln_models::LeNet5 for 1x28x28 inputs: conv(1,6,5,pad 2) -> act -> pool(2) ->
    conv(6,16,5) -> act -> pool(2) -> fc(400,120) -> act -> dropout -> fc(120,84) -> act ->
    dropout -> fc(84,10). Modern: ReLU, max pooling, dropout 0.5; classic: sigmoid, average
    pooling, no dropout (and Xavier-uniform weights, applied by the caller)."""

    def __init__(self, activation, pooling, dropout):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, NUM_CLASSES)
        self.act = {"relu": nn.ReLU(), "sigmoid": nn.Sigmoid()}[activation]
        self.pool = {"max": nn.MaxPool2d(2), "avg": nn.AvgPool2d(2)}[pooling]
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        x = self.pool(self.act(self.conv1(x)))
        x = self.pool(self.act(self.conv2(x)))
        x = x.flatten(1)
        x = self.drop(self.act(self.fc1(x)))
        x = self.drop(self.act(self.fc2(x)))
        return self.fc3(x)


class ConvNet(nn.Module):
    """kiln_models::ConvNet, the MNIST tutorial's: conv(1,4,5,pad 2) -> ReLU -> max pool(2) ->
    conv(4,8,5,pad 2) -> ReLU -> max pool(2) -> fc(392,512) -> ReLU -> dropout -> fc(512,10)."""

    def __init__(self, dropout):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 5, padding=2)
        self.conv2 = nn.Conv2d(4, 8, 5, padding=2)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(8 * 7 * 7, 512)
        self.fc2 = nn.Linear(512, NUM_CLASSES)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = self.drop(torch.relu(self.fc1(x.flatten(1))))
        return self.fc2(x)


class SimpleCnn(nn.Module):
    """kiln_models::SimpleCnn for 3x32x32 inputs: conv(3,16,3) -> max pool(2) -> ReLU ->
    fc(3600,10)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(16 * 15 * 15, NUM_CLASSES)

    def forward(self, x):
        x = torch.relu(self.pool(self.conv1(x)))
        return self.fc(x.flatten(1))


class CnnDropout(nn.Module):
    """kiln_models::CnnDropout for 3x32x32 inputs: conv(3,32,3,pad 1) -> ReLU -> dropout ->
    conv(32,32,3,pad 1) -> ReLU -> max pool(2) -> fc(8192,512) -> ReLU -> dropout -> fc(512,10)."""

    def __init__(self, conv_dropout, fc_dropout):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 16 * 16, 512)
        self.fc2 = nn.Linear(512, NUM_CLASSES)
        self.drop_conv = nn.Dropout(conv_dropout)
        self.drop_fc = nn.Dropout(fc_dropout)

    def forward(self, x):
        x = self.drop_conv(torch.relu(self.conv1(x)))
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = self.drop_fc(torch.relu(self.fc1(x.flatten(1))))
        return self.fc2(x)


class BasicBlock(nn.Module):
    """kiln_models::resnet::BasicBlock: relu(bn1(conv1(x))) -> bn2(conv2(.)) [-> ReLU when
    relu_before_add] -> + shortcut(x) -> ReLU. The shortcut is a strided 1x1 conv (with a bias
    when `bias`, batch norm when shortcut_bn) when the shape changes, else the identity; the
    3x3 convolutions have no bias."""

    def __init__(self, in_c, out_c, stride, bias, bn_eps, relu_before_add, shortcut_bn):
        super().__init__()
        self.conv1 = nn.Conv2d(in_c, out_c, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_c, eps=bn_eps)
        self.conv2 = nn.Conv2d(out_c, out_c, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_c, eps=bn_eps)
        self.relu_before_add = relu_before_add
        self.shortcut = nn.Identity()
        if stride != 1 or in_c != out_c:
            layers = [nn.Conv2d(in_c, out_c, 1, stride, bias=bias)]
            if shortcut_bn:
                layers.append(nn.BatchNorm2d(out_c, eps=bn_eps))
            self.shortcut = nn.Sequential(*layers)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.relu_before_add:
            y = torch.relu(y)
        return torch.relu(y + self.shortcut(x))


class ResNet(nn.Module):
    """kiln_models::ResNet: a stem, stages of BasicBlocks (every stage after the first halves
    the resolution), average pooling and a linear head.

    stem "imagenet": conv 7x7 stride 2 (pad 3, or none without stem_padding) -> BN -> ReLU ->
    max pool 3x3 stride 2 pad 1; stem "cifar": conv 3x3 stride 1 pad 1 (or none) -> BN -> ReLU.
    head_pool: None for global average pooling, k for AvgPool2d(k). `bias` gives the stem's
    and the shortcuts' convolutions a bias, `bn_eps` is every batch norm's epsilon but the
    stem's when stem_bn_eps is given."""

    def __init__(self, blocks, widths, stem, head_pool, bias=False, bn_eps=1e-5,
                 relu_before_add=False, shortcut_bn=True, stem_bn_eps=None, stem_padding=True):
        super().__init__()
        in_c = widths[0]
        stem_eps = bn_eps if stem_bn_eps is None else stem_bn_eps
        if stem == "imagenet":
            self.stem = nn.Sequential(
                nn.Conv2d(3, in_c, 7, 2, padding=3 if stem_padding else 0, bias=bias),
                nn.BatchNorm2d(in_c, eps=stem_eps),
                nn.ReLU(),
                nn.MaxPool2d(3, 2, padding=1),
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(3, in_c, 3, 1, padding=1 if stem_padding else 0, bias=bias),
                nn.BatchNorm2d(in_c, eps=stem_eps),
                nn.ReLU(),
            )
        stages = []
        for stage, (n, width) in enumerate(zip(blocks, widths)):
            for b in range(n):
                stride = 2 if stage > 0 and b == 0 else 1
                stages.append(
                    BasicBlock(in_c, width, stride, bias, bn_eps, relu_before_add, shortcut_bn)
                )
                in_c = width
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1) if head_pool is None else nn.AvgPool2d(head_pool)
        self.fc = nn.Linear(in_c, NUM_CLASSES)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(self.pool(x).flatten(1))


def resnet_tutorial():
    """experiments/resnet-cifar10.toml: the tutorial's ResNet (unpadded 7x7 stem with a bias and
    BN eps 1e-3, AvgPool(3) head, blocks' BN eps 1e-5, ReLU before the addition, 1x1 shortcuts
    with a bias and without batch norm, Xavier-uniform weights), for 96x96 inputs."""
    model = ResNet([2, 2, 2, 2], [64, 128, 256, 512], "imagenet", head_pool=3, bias=True,
                   relu_before_add=True, shortcut_bn=False, stem_bn_eps=1e-3,
                   stem_padding=False)
    return xavier_weights(model)


def resnet18():
    """experiments/resnet18-cifar10-fast.toml: the standard CIFAR ResNet-18 (3x3 stem, no conv
    biases, BN shortcuts, global pooling), for 32x32 inputs."""
    return ResNet([2, 2, 2, 2], [64, 128, 256, 512], "cifar", head_pool=None)


def airbench94():
    """experiments/airbench94-cifar10.toml: airbench94's network, as tests/pytorch/
    tutorial_weights.py builds it for the weights tests (make_net94's nn.Sequential), with the
    parameters airbench freezes left without a gradient: the whitening weights and the batch
    norms' scales."""
    net = tutorial_weights.airbench94()
    net[0].weight.requires_grad = False
    for name, param in net.named_parameters():
        if ".norm" in name and name.endswith(".weight"):
            param.requires_grad = False
    return net


def adam(lr, weight_decay=0.0):
    return lambda params: torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def sgd(lr, momentum=0.0, weight_decay=0.0, nesterov=False):
    return lambda params: torch.optim.SGD(
        params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov
    )


# Each experiment's network, input shape [C, H, W] after its transforms, recipe batch size,
# optimiser and label smoothing, from experiments/<name>.toml. Learning-rate schedulers are left
# out: they change the rate, not the cost of a step.
EXPERIMENTS = {
    "lenet5-fashion-mnist": dict(
        model=lambda: LeNet5("relu", "max", dropout=0.5),
        input_shape=[1, 28, 28],
        batch=256,
        optimizer=adam(lr=0.01, weight_decay=0.001),
    ),
    "lenet5-classic-fashion-mnist": dict(
        model=lambda: xavier_weights(LeNet5("sigmoid", "avg", dropout=0.0)),
        input_shape=[1, 28, 28],
        batch=256,
        optimizer=sgd(lr=0.9),
    ),
    "convnet-mnist": dict(
        model=lambda: ConvNet(dropout=0.5),
        input_shape=[1, 28, 28],
        batch=64,
        optimizer=sgd(lr=0.001, momentum=0.9),
    ),
    "simple-cnn-cifar10": dict(
        model=SimpleCnn,
        input_shape=[3, 32, 32],
        batch=32,
        optimizer=sgd(lr=0.01),
    ),
    "cnn-dropout-cifar10": dict(
        model=lambda: CnnDropout(conv_dropout=0.3, fc_dropout=0.5),
        input_shape=[3, 32, 32],
        batch=32,
        optimizer=sgd(lr=0.001, momentum=0.9),
    ),
    "resnet-cifar10": dict(
        model=resnet_tutorial,
        input_shape=[3, 96, 96],  # CIFAR-10 resized to 96x96
        batch=64,
        optimizer=sgd(lr=0.01),
    ),
    "resnet18-cifar10-fast": dict(
        model=resnet18,
        input_shape=[3, 32, 32],  # random crop with padding 4 keeps 32x32
        batch=128,
        optimizer=sgd(lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True),
        label_smoothing=0.1,
    ),
    # The rate factors of its parameter groups and its lookahead change no step's cost; its
    # frozen parameters (the whitening weights, the batch norms' scales) get no gradient.
    "airbench94-cifar10": dict(
        model=airbench94,
        input_shape=[3, 32, 32],  # translations with reflected borders keep 32x32
        batch=1024,
        optimizer=sgd(lr=1.5, momentum=0.85, weight_decay=0.0013305, nesterov=True),
        label_smoothing=0.2,
    ),
}


def timed_steps(step, warmup, steps):
    """Runs `step` warmup times, then steps times; returns the timed steps' seconds."""
    for i in range(warmup):
        step(i)
    seconds = []
    for i in range(warmup, warmup + steps):
        start = time.perf_counter()
        step(i)
        seconds.append(time.perf_counter() - start)
    return seconds


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("experiment", metavar="EXPERIMENT")
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--warmup", type=int, required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args()
    if args.experiment not in EXPERIMENTS:
        p.error(f"unknown experiment {args.experiment!r}; known: {', '.join(EXPERIMENTS)}")
    if args.threads < 1 or args.warmup < 0 or args.steps < 1:
        p.error("expected --threads >= 1, --warmup >= 0 and --steps >= 1")
    spec = EXPERIMENTS[args.experiment]

    torch.set_num_threads(args.threads)
    # As in DESIGN.md: weight decay drives dead units' weights into denormals, which slow the
    # CPU; flushing them keeps the reference at its real speed.
    torch.set_flush_denormal(True)
    torch.manual_seed(args.seed)

    batch, shape = spec["batch"], spec["input_shape"]
    loss_fn = nn.CrossEntropyLoss(label_smoothing=spec.get("label_smoothing", 0.0))
    labels = [torch.randint(0, NUM_CLASSES, (batch,)) for _ in range(DATA_BATCHES)]
    data = [torch.randn(batch, *shape) for _ in range(DATA_BATCHES)]

    def prepare(layout):
        torch.manual_seed(args.seed)
        model = spec["model"]().to(memory_format=layout)
        optimizer = spec["optimizer"]([p for p in model.parameters() if p.requires_grad])
        images = [x.contiguous(memory_format=layout) for x in data]

        def train_step(i):
            model.train()
            x, y = images[i % DATA_BATCHES], labels[i % DATA_BATCHES]
            loss = loss_fn(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss.item()

        def eval_step(i):
            model.eval()
            with torch.no_grad():
                predictions = model(images[i % DATA_BATCHES]).argmax(1)
                predictions.sum().item()

        return model, train_step, eval_step

    # Every layout is warmed up before any is timed: the process's first steps run slower
    # whatever the layout (allocator, oneDNN's kernel cache), and timing the layouts one after
    # the other without this favoured whichever came second by up to 1.9x (LeNet-5,
    # 2026-12-05). The peak memory is read once the first (contiguous) model has run its
    # warm-up steps, before the second exists: the peak of one model, as Kiln's is.
    layouts = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
    prepared = {}
    for name, layout in layouts.items():
        prepared[name] = prepare(layout)
        _, train_step, eval_step = prepared[name]
        for i in range(max(args.warmup, 1)):
            train_step(i)
            eval_step(i)
        if name == "contiguous":
            peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB
    measured = {
        name: (timed_steps(train_step, 0, args.steps), timed_steps(eval_step, 0, args.steps))
        for name, (_, train_step, eval_step) in prepared.items()
    }
    train_fastest = min(measured, key=lambda n: statistics.median(measured[n][0]))
    eval_fastest = min(measured, key=lambda n: statistics.median(measured[n][1]))

    model, train_step, eval_step = prepared["contiguous"]
    with FlopCounterMode(display=False) as train_flops:
        train_step(0)
    with FlopCounterMode(display=False) as eval_flops:
        eval_step(0)

    def per_sec(name, index):
        return batch / statistics.median(measured[name][index])

    print(
        json.dumps(
            {
                "experiment": args.experiment,
                "backend": "pytorch",
                "torch": torch.__version__,
                "threads": args.threads,
                "batch": batch,
                "input_shape": shape,
                "parameters": sum(p.numel() for p in model.parameters()),
                "train_flop_per_image": train_flops.get_total_flops() / batch,
                "eval_flop_per_image": eval_flops.get_total_flops() / batch,
                "train_images_per_sec": per_sec(train_fastest, 0),
                "eval_images_per_sec": per_sec(eval_fastest, 1),
                "train_layout": train_fastest,
                "eval_layout": eval_fastest,
                "by_layout": {
                    name: {
                        "train_images_per_sec": per_sec(name, 0),
                        "eval_images_per_sec": per_sec(name, 1),
                    }
                    for name in measured
                },
                "train_step_ms": [round(s * 1000, 3) for s in measured[train_fastest][0]],
                "eval_step_ms": [round(s * 1000, 3) for s in measured[eval_fastest][1]],
                "peak_rss_mib": round(peak_rss_mib, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
