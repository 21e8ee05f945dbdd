"""airbench94's own PyTorch code trained in fp32 on the CPU, on the CIFAR-10 files Kiln reads:
the anchor that Kiln's airbench94-cifar10 recipe is measured against (accuracy and wall time on
the same processor and data).

airbench (Keller Jordan; `pip install airbench==0.1.8`) is written for one CUDA GPU in fp16:
its network is built with `.half().cuda()`, its loader loads `cifar10/*.pt` onto `cuda:0` and
its timer is `torch.cuda.Event`. This script changes only that and runs the package's own
`train` (the recipe: whitening initialisation, Nesterov SGD with its decoupled learning rate and
weight decay, the bias scaler, label smoothing, the triangle schedule, alternating flips and
translations, lookahead, test-time augmentation) on its own network components
(`lib_airbench94`'s `Conv`, `ConvGroup`, `Mul`, `Flatten` and `hyp`):

- the network is assembled as `make_net94` assembles it, in fp32 on the CPU, channels_last;
- the loader is the package's `CifarLoader` reading the images of DIR (the folder layout, in
  Kiln's order; the original CIFAR-10 files are not on these machines) converted once to the
  `{images, labels, classes}` file it expects, loaded onto the CPU in fp32;
- `torch.cuda.Event` and `torch.cuda.synchronize` become wall-clock timers.

One JSON object per seed on stdout (test accuracy without and with test-time augmentation,
airbench's own `total_time_seconds` (training, the whitening and the final evaluation) and the
wall time of the whole call), then a summary of all seeds (also written to --out).

Needs torch, torchvision, Pillow and airbench:
  ~/.cache/kiln/torch-venv/bin/pip install airbench==0.1.8 torchvision==0.24.0 pillow

usage: python airbench94_reference.py --data-dir DIR [--seeds 0,1,2] [--threads 2]
       [--epochs 9.9] [--limit-train N] [--out FILE]
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cifar_folder  # noqa: E402


class WallClock:
    """`torch.cuda.Event(enable_timing=True)` on the CPU."""

    def __init__(self, **_):
        self.at = None

    def record(self):
        self.at = time.perf_counter()

    def elapsed_time(self, end):
        return 1e3 * (end.at - self.at)


def write_dataset(data_dir, out_dir, limit_train):
    """DIR's folder layout as airbench's `train.pt` / `test.pt` (uint8 NHWC images)."""
    for split, limit in (("train", limit_train), ("test", None)):
        images, labels, classes = cifar_folder.load_split(os.path.join(data_dir, split), limit)
        torch.save({"images": images.permute(0, 2, 3, 1).contiguous(), "labels": labels,
                    "classes": classes}, os.path.join(out_dir, f"{split}.pt"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="CIFAR-10's folder layout")
    parser.add_argument("--seeds", default="0", help="comma-separated torch seeds")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--epochs", type=float, default=None,
                        help="airbench94's 9.9 unless given (shorter: a smoke test)")
    parser.add_argument("--limit-train", type=int, default=None)
    parser.add_argument("--out", default=None, help="also write the summary here (JSON)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    try:
        from importlib.metadata import version
        import airbench.lib_airbench94 as lib
        import airbench.utils as utils
    except ImportError:
        raise SystemExit("airbench is not installed: pip install airbench==0.1.8")
    if version("airbench") != "0.1.8":
        print(f"note: airbench {version('airbench')}; this script is written for 0.1.8",
              file=sys.stderr)
    work = tempfile.mkdtemp(prefix="airbench94-")
    write_dataset(args.data_dir, work, args.limit_train)

    class CpuLoader(utils.CifarLoader):
        """The package's loader on the CPU in fp32, reading `work` whatever path it is given."""

        def __init__(self, path, train=True, batch_size=500, aug=None, drop_last=None,
                     shuffle=None, altflip=False, gpu=0):
            super().__init__(work, train, batch_size, aug, drop_last, shuffle, altflip, "cpu")
            data = torch.load(os.path.join(work, "train.pt" if train else "test.pt"))
            self.images = (data["images"].float() / 255).permute(0, 3, 1, 2).to(
                memory_format=torch.channels_last)

    # `train` makes its test loader from the module's `CifarLoader`.
    utils.CifarLoader = CpuLoader
    torch.cuda.Event = WallClock
    torch.cuda.synchronize = lambda *_: None

    def make_net():
        """make_net94 without `.half().cuda()`."""
        hyp = lib.hyp["net"]
        widths, momentum = hyp["widths"], hyp["batchnorm_momentum"]
        k = 2
        whiten_width = 2 * 3 * k ** 2
        net = nn.Sequential(
            lib.Conv(3, whiten_width, k, padding=0, bias=True),
            nn.GELU(),
            lib.ConvGroup(whiten_width, widths["block1"], momentum),
            lib.ConvGroup(widths["block1"], widths["block2"], momentum),
            lib.ConvGroup(widths["block2"], widths["block3"], momentum),
            nn.MaxPool2d(3),
            lib.Flatten(),
            nn.Linear(widths["block3"], 10, bias=False),
            lib.Mul(hyp["scaling_factor"]),
        )
        net[0].weight.requires_grad = False
        return net.to(memory_format=torch.channels_last)

    # airbench's table gives every epoch's figures and, in its final entry ("eval"), the
    # run's; keep them all.
    epochs_log = []
    print_details = utils.print_training_details

    def keep_entries(variables, is_final_entry):
        if variables.get("epoch") is not None:  # None: the warm-up run's entry
            epochs_log.append(dict(
                epoch=str(variables["epoch"]),
                train_loss=variables.get("train_loss"), train_acc=variables.get("train_acc"),
                val_acc=variables.get("val_acc"), tta_val_acc=variables.get("tta_val_acc"),
                seconds=variables.get("total_time_seconds")))
        print_details(variables, is_final_entry)

    utils.print_training_details = keep_entries

    opt = lib.hyp["opt"]
    epochs = args.epochs if args.epochs is not None else opt["train_epochs"]
    train_loader = CpuLoader(work, train=True, batch_size=opt["batch_size"],
                             aug=lib.hyp["aug"], altflip=True)
    test_loader = CpuLoader(work, train=False, batch_size=2000)
    runs = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        torch.manual_seed(seed)
        epochs_log.clear()
        started = time.perf_counter()
        model = lib.train94(train_loader, epochs=epochs, make_net=make_net, run=seed,
                            verbose=True)
        wall = time.perf_counter() - started
        final = epochs_log[-1]
        run = dict(seed=seed, epochs=epochs, threads=args.threads,
                   test_acc=utils.evaluate(model, test_loader, tta_level=0),
                   tta_test_acc=final["tta_val_acc"],
                   airbench_seconds=final["seconds"], wall_seconds=wall,
                   train_images=len(train_loader.images), epochs_log=list(epochs_log))
        print(json.dumps(run), flush=True)
        runs.append(run)
    tta = [r["tta_test_acc"] for r in runs]
    summary = dict(
        torch=torch.__version__, airbench=version("airbench"), threads=args.threads, data_dir=args.data_dir, runs=runs,
        tta_test_acc_mean=statistics.mean(tta),
        tta_test_acc_stdev=statistics.stdev(tta) if len(tta) > 1 else None,
        airbench_seconds_mean=statistics.mean(r["airbench_seconds"] for r in runs),
    )
    print(json.dumps(summary), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
