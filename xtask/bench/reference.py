"""PyTorch eager reference for `cargo xtask bench`: the speed of one experiment's training step
and evaluation pass, measured on synthetic data.

For EXPERIMENT (an experiments/<name>.toml) it builds in PyTorch the network Kiln builds for it
(the PyTorch-weights tests' network, tests/pytorch/tutorial_weights.py, which those tests check
computes what Kiln's does from the same weights), the recipe's optimiser, loss (with its label
smoothing) and batch size, and random inputs of the shape the model sees after the
experiment's transforms (e.g. CIFAR-10 resized to 96x96 for resnet-cifar10). Only speed is measured, so the data are `torch.randn` images with random
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

# The networks are the weights tests' (tests/pytorch/tutorial_weights.py): those tests check
# that Kiln's network computes the same logits from the same weights, so the bench times the
# network Kiln runs, not a second copy of it written here.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "pytorch"))
import tutorial_weights  # noqa: E402

NUM_CLASSES = 10  # MNIST, Fashion-MNIST and CIFAR-10 alike
DATA_BATCHES = 4  # pre-generated batches, used in turn


def airbench94():
    """airbench94's network (make_net94's nn.Sequential) with the parameters airbench freezes
    left without a gradient: the whitening weights and the batch norms' scales."""
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


# Each experiment's input shape [C, H, W] after its transforms, recipe batch size, optimiser and
# label smoothing, from experiments/<name>.toml (ResNet-18's from tests/experiments/), and its
# network where it differs from tutorial_weights.NETWORKS'. Learning-rate schedulers are left
# out: they change the rate, not the cost of a step, as does the weights' initialisation
# (denormals are flushed).
EXPERIMENTS = {
    "lenet5-fashion-mnist": dict(
        input_shape=[1, 28, 28],
        batch=256,
        optimizer=adam(lr=0.01, weight_decay=0.001),
    ),
    "lenet5-classic-fashion-mnist": dict(
        input_shape=[1, 28, 28],
        batch=256,
        optimizer=sgd(lr=0.9),
    ),
    "convnet-mnist": dict(
        input_shape=[1, 28, 28],
        batch=64,
        optimizer=sgd(lr=0.001, momentum=0.9),
    ),
    "simple-cnn-cifar10": dict(
        input_shape=[3, 32, 32],
        batch=32,
        optimizer=sgd(lr=0.01),
    ),
    "cnn-dropout-cifar10": dict(
        input_shape=[3, 32, 32],
        batch=32,
        optimizer=sgd(lr=0.001, momentum=0.9),
    ),
    "resnet-cifar10": dict(
        input_shape=[3, 96, 96],  # CIFAR-10 resized to 96x96
        batch=64,
        optimizer=sgd(lr=0.01),
    ),
    "resnet18-cifar10-fast": dict(
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
        make = spec.get("model", tutorial_weights.NETWORKS[args.experiment][0])
        model = make().to(memory_format=layout)
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
