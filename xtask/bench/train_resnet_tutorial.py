"""The tutorial's ResNet trained in PyTorch on the CIFAR-10 files Kiln reads: the other half of
the side-by-side run that docs/results.md ("Why the tutorial ResNet's test accuracy swings")
reports.

The network is the tutorial's own code as ../shared/TUTORIAL-NETWORKS.md gives it
(`resnet` of tests/pytorch/tutorial_weights.py, which the PyTorch weights tests use), with its
module names (`block1.0.weight`, ..., `classifier.bias`), so the state dict it saves as its
initial weights loads into Kiln with `kiln import resnet-cifar10`. The recipe is
experiments/resnet-cifar10.toml's: Xavier-uniform weights, plain SGD at lr 0.01, batch 64 with
the last partial batch kept, images resized to 96x96 by Pillow's bilinear filter and mapped to
(x/255 - 0.5)/0.5, no augmentation. The images are the folder layout's (DIR/train/<class>/*,
DIR/test/<class>/*) in Kiln's order: classes sorted, files sorted by name within a class, the
classes interleaved, so `--limit-train N` keeps the same N images as Kiln's.

After every epoch it evaluates the test images three ways, to tell the network's weights from
its batch-norm statistics:

- `test_acc`: model.eval(), the running statistics (what the tutorial and Kiln report);
- `test_acc_batch_stats`: model.train() under no_grad, each test batch normalised with its own
  statistics (what a network without running statistics would score);
- `test_acc_recomputed`: the running statistics recomputed as a plain average over
  `--recompute-batches` training batches with the epoch's final weights, then model.eval();
- `test_acc_stats_before_last_batch` (where the epoch ends in a partial batch): the final
  weights with the running statistics as they were before that batch, then model.eval().

One JSON object per epoch on stdout, the last line the whole run (also written to --out).

The whole recipe takes hours on a CPU, so `--checkpoint FILE` saves the run after every epoch
(weights, optimiser, both generators, the epochs so far; written beside FILE and renamed over
it, so an interrupted save leaves the last one whole) and, where FILE exists, resumes from it:
the same batch order and the same figures as a run without the interruption, on the same
machine and thread count. `--running-stats-only` scores only `test_acc`, as the tutorial does,
which saves the three extra passes over the test set per epoch.

Needs torch and Pillow (`~/.cache/kiln/torch-venv/bin/pip install pillow`).

usage: python train_resnet_tutorial.py --data-dir DIR [--limit-train N] [--limit-test N]
       [--epochs 10] [--seed 42] [--threads 2] [--save-init init.pt]
       [--init init.pt|model.safetensors] [--evaluate] [--recompute-batches 50] [--drop-last]
       [--running-stats-only] [--checkpoint run.ckpt] [--out run.json]
"""

import argparse
import copy
import json
import os
import sys
import time
import warnings

warnings.filterwarnings("ignore", message=".*NumPy.*")
import torch  # noqa: E402
from torch import nn  # noqa: E402

# The tutorial's network and the safetensors reader, as the PyTorch weights tests define them.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../tests/pytorch"))
from tutorial_weights import load_safetensors, resnet  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cifar_folder  # noqa: E402

SIZE = 96


def load_split(root, limit):
    """uint8 [N, 3, 96, 96] images and int64 labels of one split in Kiln's folder order."""
    images, labels, _ = cifar_folder.load_split(root, limit, SIZE)
    return images, labels


def normalised(images):
    return (images.float() / 255 - 0.5) / 0.5


def accuracy(model, images, labels, batch, train_mode=False):
    model.train(train_mode)
    correct = 0
    with torch.no_grad():
        for i in range(0, len(labels), batch):
            logits = model(normalised(images[i:i + batch]))
            correct += (logits.argmax(1) == labels[i:i + batch]).sum().item()
    return 100.0 * correct / len(labels)


def load_weights(path):
    """A state dict from torch.save's file or from a .safetensors file (what `kiln export`
    writes)."""
    return load_safetensors(path) if path.endswith(".safetensors") else torch.load(path)


def test_accuracies(model, train_x, test_x, test_y, args, generator):
    """The test accuracy with the running statistics, with each batch's own and with the
    statistics recomputed under the current weights (the module docstring)."""
    if args.running_stats_only:
        return dict(test_acc=accuracy(model, test_x, test_y, args.eval_batch))
    return dict(
        test_acc=accuracy(model, test_x, test_y, args.eval_batch),
        # on a copy: train mode would also move the running statistics
        test_acc_batch_stats=accuracy(copy.deepcopy(model), test_x, test_y, args.eval_batch,
                                      True),
        test_acc_recomputed=accuracy(
            recomputed_statistics(model, train_x, args.recompute_batches, args.batch,
                                  generator),
            test_x, test_y, args.eval_batch),
    )


def running_statistics(model):
    """A copy of every batch norm's running mean and variance, by state-dict key."""
    return {k: v.clone() for k, v in model.state_dict().items()
            if k.endswith("running_mean") or k.endswith("running_var")}


def recomputed_statistics(model, images, batches, batch, generator):
    """A copy of `model` whose running statistics are the plain average of `batches` random
    training batches' statistics under its current weights."""
    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    order = torch.randperm(len(images), generator=generator)
    model.train()
    with torch.no_grad():
        for b in range(min(batches, len(images) // batch)):
            model(normalised(images[order[b * batch:(b + 1) * batch]]))
    return model


# What a resumed run must share with the run that saved it: anything else would silently train
# another recipe on another set. --epochs may grow; --out, --threads and --init may change.
RECIPE_ARGS = ("data_dir", "limit_train", "limit_test", "batch", "eval_batch", "lr", "seed",
               "recompute_batches", "drop_last", "running_stats_only")


def recipe_of(args):
    return {k: getattr(args, k) for k in RECIPE_ARGS}


def save_checkpoint(args, model, optimizer, shuffle, recompute, epochs):
    state = dict(
        recipe=recipe_of(args),
        epochs=epochs,
        model=model.state_dict(),
        optimizer=optimizer.state_dict(),
        shuffle=shuffle.get_state(),
        recompute=recompute.get_state(),
        torch_rng=torch.get_rng_state(),
    )
    partial = args.checkpoint + ".partial"
    torch.save(state, partial)
    os.replace(partial, args.checkpoint)


def resume(args, model, optimizer, shuffle, recompute):
    """Restores a run saved by save_checkpoint; returns the next epoch and the epochs so far."""
    state = torch.load(args.checkpoint, weights_only=False)
    recipe = recipe_of(args)
    differ = {k: (v, recipe[k]) for k, v in state["recipe"].items() if recipe.get(k) != v}
    if differ:
        raise SystemExit(f"{args.checkpoint}: saved by a run with other settings "
                         f"(setting: (saved, given)): {differ}")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    shuffle.set_state(state["shuffle"])
    recompute.set_state(state["recompute"])
    torch.set_rng_state(state["torch_rng"])
    epochs = state["epochs"]
    return (epochs[-1]["epoch"] + 1 if epochs else 1), epochs


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", required=True)
    p.add_argument("--limit-train", type=int)
    p.add_argument("--limit-test", type=int)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--eval-batch", type=int, default=200)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--save-init", help="write the initial state dict here (for kiln import)")
    p.add_argument("--init", help="start from these weights (torch.save or .safetensors)")
    p.add_argument("--evaluate", action="store_true",
                   help="evaluate the initial weights first, as epoch 0")
    p.add_argument("--recompute-batches", type=int, default=50)
    p.add_argument("--drop-last", action="store_true", help="drop each epoch's partial batch")
    p.add_argument("--running-stats-only", action="store_true",
                   help="score the test set with the running statistics alone")
    p.add_argument("--checkpoint", help="save the run here after every epoch; resume from it")
    p.add_argument("--out")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = resnet()
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
    if args.init:
        missing, unexpected = model.load_state_dict(load_weights(args.init), strict=False)
        # Kiln keeps no batch counters; PyTorch's are unused with a fixed momentum.
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise SystemExit(f"{args.init}: expected the tutorial network's keys; missing "
                             f"{missing}, unexpected {unexpected}")
    if args.save_init:
        torch.save(model.state_dict(), args.save_init)

    start = time.perf_counter()
    train_x, train_y = load_split(os.path.join(args.data_dir, "train"), args.limit_train)
    test_x, test_y = load_split(os.path.join(args.data_dir, "test"), args.limit_test)
    load_s = time.perf_counter() - start

    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()
    shuffle = torch.Generator().manual_seed(args.seed)
    recompute = torch.Generator().manual_seed(args.seed + 1)
    epochs = []
    first = 1
    if args.checkpoint and os.path.exists(args.checkpoint):
        first, epochs = resume(args, model, optimizer, shuffle, recompute)
        print(f"resumed {args.checkpoint} after epoch {first - 1}", file=sys.stderr, flush=True)
    elif args.evaluate:
        row = dict(epoch=0, **test_accuracies(model, train_x, test_x, test_y, args, recompute))
        epochs.append(row)
        print(json.dumps(row), flush=True)
    for epoch in range(first, args.epochs + 1):
        start = time.perf_counter()
        model.train()
        order = torch.randperm(len(train_y), generator=shuffle)
        end = len(order) - len(order) % args.batch if args.drop_last else len(order)
        loss_sum, correct, seen = 0.0, 0, 0
        before_last = None
        for i in range(0, end, args.batch):
            idx = order[i:i + args.batch]
            if len(idx) < args.batch and not args.running_stats_only:
                before_last = running_statistics(model)
            logits = model(normalised(train_x[idx]))
            loss = loss_fn(logits, train_y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(idx)
            correct += (logits.argmax(1) == train_y[idx]).sum().item()
            seen += len(idx)
        train_s = time.perf_counter() - start
        if before_last is not None:
            without_last = copy.deepcopy(model)
            without_last.load_state_dict(before_last, strict=False)
        row = dict(
            epoch=epoch,
            train_loss=loss_sum / seen,
            train_acc=100.0 * correct / seen,
            **test_accuracies(model, train_x, test_x, test_y, args, recompute),
            train_s=round(train_s, 1),
        )
        if before_last is not None:
            row["test_acc_stats_before_last_batch"] = accuracy(
                without_last, test_x, test_y, args.eval_batch)
        epochs.append(row)
        print(json.dumps(row), flush=True)
        if args.checkpoint:
            save_checkpoint(args, model, optimizer, shuffle, recompute, epochs)

    result = dict(
        network="tutorial resnet(3, 10)",
        parameters=sum(p.numel() for p in model.parameters()),
        torch=torch.__version__,
        args=vars(args),
        train_images=len(train_y),
        test_images=len(test_y),
        load_s=round(load_s, 1),
        epochs=epochs,
    )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
