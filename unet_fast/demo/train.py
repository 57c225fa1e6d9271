"""Train the bundled demo U-Net on the seeded shapes data set (shapes.py) and write weights + model card.

    unet-fast train-demo --out-dir unet_fast/assets          # what made the shipped weights (see the card)
    python -m unet_fast.demo.train --help                    # the same, as a module

Reproducible by construction: the training and validation sets come from fixed numpy seeds, the batch
order and initial weights from a fixed torch seed, the schedule is a fixed number of steps (not a time
budget). On another CPU or thread count the weights can differ in the last bits (float summation order),
so the validation IoU is what to compare, not the bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from unet_fast.demo.demo_image import make_demo_image
from unet_fast.demo.shapes import CLASS_NAMES, NUM_CLASSES, draw_dataset
from unet_fast.inference.model_card import ModelCard, load_model
from unet_fast.models.unet import UNet

WEIGHTS_NAME = "demo_unet.pt"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out-dir", default="unet_fast/assets", help="where demo_unet.pt and demo_unet.json go")
    p.add_argument("--steps", type=int, default=800, help="optimizer steps (fixed, for reproducibility)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3, help="Adam peak learning rate (cosine decay to 0)")
    p.add_argument("--train-images", type=int, default=2048)
    p.add_argument("--val-images", type=int, default=128)
    p.add_argument("--image-size", type=int, default=64, help="training images are square, this size")
    p.add_argument("--val-size", type=int, default=128, help="validation images are square, this size")
    p.add_argument("--base-channels", type=int, default=16)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--seed", type=int, default=0, help="torch seed; data seeds are seed+1000 / seed+2000")
    # One thread by default: on a busy shared machine two OpenMP threads burned ~4x the CPU time per step
    # (spinning at barriers while preempted); on a quiet 2-core machine --threads 2 is faster.
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--log-every", type=int, default=10)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - mean over classes of the soft Dice score; balances the thin, rare classes (lines) against CE."""
    probs = logits.softmax(1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    inter = (probs * onehot).sum((0, 2, 3))
    total = probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    return 1 - ((2 * inter + 1) / (total + 1)).mean()


def confusion(pred: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
    return torch.bincount((target.flatten() * k + pred.flatten()).long(), minlength=k * k).reshape(k, k)


def iou_from_confusion(cm: torch.Tensor) -> list[float]:
    """Per-class IoU over a whole set (intersections and unions summed over all images, then divided)."""
    inter = cm.diag().double()
    union = cm.sum(0).double() + cm.sum(1).double() - inter
    return [float(i / u) if u > 0 else float("nan") for i, u in zip(inter, union, strict=True)]


@torch.no_grad()
def evaluate(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int = 16) -> dict:
    """Mean IoU (over the 5 classes, background included) on normalised images [N, 1, H, W]."""
    model.eval()
    cm = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.long)
    for i in range(0, len(images), batch):
        pred = model(images[i : i + batch]).argmax(1)
        cm += confusion(pred, labels[i : i + batch], NUM_CLASSES)
    ious = iou_from_confusion(cm)
    return {"mean_iou": float(np.nanmean(ious)), "per_class_iou": dict(zip(CLASS_NAMES, ious, strict=True)),
            "pixel_accuracy": float(cm.diag().sum() / cm.sum())}  # fmt: skip


def train(args: argparse.Namespace, command: str) -> dict:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    train_seed, val_seed = args.seed + 1000, args.seed + 2000
    s = args.image_size
    images, labels = draw_dataset(train_seed, args.train_images, s, s)
    val_images, val_labels = draw_dataset(val_seed, args.val_images, args.val_size, args.val_size)
    x_all = torch.from_numpy(images).float().div_(255).unsqueeze(1)
    mean, std = float(x_all.mean()), float(x_all.std())
    x_all = (x_all - mean) / std
    y_all = torch.from_numpy(labels).long()
    x_val = (torch.from_numpy(val_images).float().div(255).unsqueeze(1) - mean) / std
    y_val = torch.from_numpy(val_labels).long()
    print(f"data: {args.train_images} train {s}x{s} (seed {train_seed}), {args.val_images} validation "
          f"{args.val_size}x{args.val_size} (seed {val_seed}), mean {mean:.4f} std {std:.4f}, "
          f"{time.time() - t0:.1f}s", flush=True)  # fmt: skip

    config = dict(in_channels=1, num_classes=NUM_CLASSES, base_channels=args.base_channels, depth=args.depth,
                  norm="batch", upsample="transpose", padding="same", head="softmax")  # fmt: skip
    model = UNet(**config).to(memory_format=torch.channels_last)  # ~25% less CPU per step than NCHW
    # Train on logits (stable CE); the shipped model has head="softmax", same weights.
    model.config = type(model.config)(**{**config, "head": "logits"})
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / 20) * 0.5 * (1 + math.cos(math.pi * i / args.steps))
    )
    gen = torch.Generator().manual_seed(args.seed)
    t_train = time.time()
    for step in range(args.steps):
        model.train()
        idx = torch.randint(0, len(x_all), (args.batch_size,), generator=gen)
        x, y = x_all[idx], y_all[idx]
        # Free augmentation: the shapes have no orientation, so flips and 90-degree turns keep labels valid.
        k = int(torch.randint(0, 4, (1,), generator=gen))
        x, y = torch.rot90(x, k, (2, 3)), torch.rot90(y, k, (1, 2))
        x = x.contiguous(memory_format=torch.channels_last)
        logits = model(x)
        loss = F.cross_entropy(logits, y) + soft_dice_loss(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            print(f"step {step + 1}/{args.steps} loss {loss.item():.4f} lr {sched.get_last_lr()[0]:.2e} "
                  f"{time.time() - t_train:.0f}s", flush=True)  # fmt: skip
    train_s = time.time() - t_train

    # Ship fp16 weights (half the bytes; the model still computes in fp32) and evaluate *what ships*.
    weights = out_dir / WEIGHTS_NAME
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    torch.save(state, weights)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    card = ModelCard(config=config, mean=[mean], std=[std], class_names=list(CLASS_NAMES),
                     patch_size=128)  # fmt: skip
    shipped, _ = load_model(weights, card)
    validation = evaluate(shipped, x_val, y_val)
    validation.update(images=args.val_images, size=[args.val_size, args.val_size], seed=val_seed)
    card.extra = {
        "validation": validation,
        "training": {"command": command, "seed": args.seed, "data_seed": train_seed, "steps": args.steps,
                     "batch_size": args.batch_size, "lr": args.lr, "images": args.train_images,
                     "size": [s, s], "loss": "cross-entropy + soft dice", "optimizer": "Adam, cosine decay",
                     "augmentation": "random 90-degree rotations", "final_loss": round(loss.item(), 5),
                     "train_seconds": round(train_s, 1), "threads": args.threads, "torch": torch.__version__,
                     "numpy": np.__version__, "machine": platform.processor() or platform.machine()},
        "weights_file": WEIGHTS_NAME, "weights_sha256": digest, "weights_dtype": "float16",
    }  # fmt: skip
    card.save(weights.with_suffix(".json"))
    make_demo_image(out_dir)  # the bundled demo image (seeded; independent of the training run)
    per_class = ", ".join(f"{k} {v:.3f}" for k, v in validation["per_class_iou"].items())
    print(f"validation mean IoU {validation['mean_iou']:.4f} ({per_class}); pixel accuracy "
          f"{validation['pixel_accuracy']:.4f}", flush=True)  # fmt: skip
    print(f"wrote {weights} ({weights.stat().st_size / 1e6:.2f} MB) and {weights.with_suffix('.json')} "
          f"in {time.time() - t0:.0f}s", flush=True)  # fmt: skip
    return validation


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m unet_fast.demo.train", description=__doc__.split("\n")[0])
    add_arguments(p)
    argv = sys.argv[1:] if argv is None else argv
    train(p.parse_args(argv), "python -m unet_fast.demo.train " + shlex.join(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
