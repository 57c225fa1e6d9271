"""Accuracy of Winograd F(6x6, 3x3) against F(4x4, 3x3) in fp32, per layer of unet64 (an emulation, not the
kernel): transforms and the channel reduction in fp32, the weight transform in float64 rounded once to fp32
(as pack_winograd_weight does), against a float64 direct convolution. Feeds docs/winograd.md's F(6x6)
evaluation.

    python benchmarks/winograd_f6_accuracy.py [--size 32] [--seed 0]

Points: F(4x4) 0, +-1, +-2, inf (the kernel's matrices, cpu_winograd.winograd_matrices, up to row scaling);
F(6x6) 0, +-1, +-2, +-1/2, inf (the usual choice), and 0, +-1, +-2, 4, 1/2, inf for comparison; with --f8, F(8x8)
on 0, +-1, +-2, +-1/2 and +-4 or +-1/4, inf. Matrices from the Cook-Toom construction (A^T and G from the points, B^T solved
exactly so that the 1-D algorithm is a correlation), checked to 1e-12 before use.
"""

from __future__ import annotations

import argparse
from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.bench_winograd import unet_layers  # run from the repo root


def cook_toom(points: list[Fraction], m: int, r: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B^T [n, n], G [n, r], A^T [m, n]) of F(m, r) on the finite `points` plus infinity (n = m + r - 1)."""
    n = m + r - 1
    assert len(points) == n - 1
    at = np.zeros((m, n), dtype=object)
    g = np.zeros((n, r), dtype=object)
    for j, a in enumerate(points):
        f = Fraction(1)
        for b in points:
            if b != a:
                f *= a - b
        for i in range(m):
            at[i, j] = a**i
        for k in range(r):
            g[j, k] = a**k / f
    at[m - 1, n - 1] = Fraction(1)
    g[n - 1, r - 1] = Fraction(1)
    # B^T from sum_j A^T[i, j] G[j, k] B^T[j, l] = [l == i + k]: linear in B^T, solved in float64 then
    # snapped to the nearest 1/1024 (the entries are small dyadic-friendly rationals) and verified.
    rows, rhs = [], []
    for i in range(m):
        for k in range(r):
            for ll in range(n):
                coef = np.zeros((n, n))
                for j in range(n):
                    coef[j, ll] = float(at[i, j] * g[j, k])
                rows.append(coef.ravel())
                rhs.append(1.0 if ll == i + k else 0.0)
    sol, *_ = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)
    bt = np.round(sol.reshape(n, n) * 1024) / 1024
    at_f, g_f = at.astype(float), g.astype(float)
    rng = np.random.default_rng(0)
    d, w = rng.standard_normal(n), rng.standard_normal(r)
    y = at_f @ ((g_f @ w) * (bt @ d))
    assert np.allclose(y, np.correlate(d, w, mode="valid"), atol=1e-12), "bad Winograd matrices"
    return bt, g_f, at_f


def winograd_fp32(x: torch.Tensor, w: torch.Tensor, mats: tuple, m: int) -> torch.Tensor:
    """x [H, W, Cin] fp32 (padding 1), w [Cout, Cin, 3, 3] -> [H, W, Cout] fp32 by F(m, 3)."""
    bt, g, at = (torch.tensor(a) for a in mats)
    n = m + 2
    h, wd, _ = x.shape
    th, tw = -(-h // m), -(-wd // m)
    xp = F.pad(x.permute(2, 0, 1), (1, tw * m + 1 - wd, 1, th * m + 1 - h))  # [C, th*m+2, tw*m+2]
    d = xp.unfold(1, n, m).unfold(2, n, m).permute(1, 2, 3, 4, 0)  # [th, tw, n, n, C]
    btf, atf = bt.float(), at.float()
    v = torch.einsum("ai,xyijc,bj->abxyc", btf, d, btf).reshape(n * n, th * tw, -1)
    u = torch.einsum("ak,oikl,bl->abio", g, w.double(), g).reshape(n * n, w.shape[1], w.shape[0]).float()
    mm = torch.bmm(v, u).reshape(n, n, th, tw, -1)  # fp32 reduction over Cin
    y = torch.einsum("ia,abxyo,jb->xiyjo", atf, mm, atf).reshape(th * m, tw * m, -1)
    return y[:h, :wd]


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b).norm() / b.norm())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=32, help="cap on H = W per layer (error is per pixel)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--f8", action="store_true", help="also F(8x8, 3x3) on two point sets (docs/peers.md, floor)"
    )
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    h = Fraction(1, 2)
    sets = {
        "F4 0,+-1,+-2 (kernel)": (cook_toom([Fraction(0), Fraction(1), Fraction(-1), Fraction(2), Fraction(-2)], 4), 4),
        "F6 0,+-1,+-2,+-1/2": (
            cook_toom([Fraction(0), Fraction(1), Fraction(-1), Fraction(2), Fraction(-2), h, -h], 6), 6),
        "F6 0,+-1,+-2,4,1/2": (
            cook_toom([Fraction(0), Fraction(1), Fraction(-1), Fraction(2), Fraction(-2), Fraction(4), h], 6), 6),
    }  # fmt: skip
    if args.f8:
        q = Fraction(1, 4)
        base = [Fraction(0), Fraction(1), Fraction(-1), Fraction(2), Fraction(-2), h, -h]
        sets["F8 0,+-1,+-2,+-1/2,+-4"] = (cook_toom([*base, Fraction(4), Fraction(-4)], 8), 8)
        sets["F8 0,+-1,+-2,+-1/2,+-1/4"] = (cook_toom([*base, q, -q], 8), 8)
    print("| layer | HxW (capped) | Cin -> Cout | " + " | ".join(sets) + " | fp32 direct |")
    print("|---|---|---|" + "---|" * (len(sets) + 1))
    worst = dict.fromkeys(sets, 0.0)
    for name, hw, cins, cout in unet_layers(256):
        s = min(hw, args.size)
        cin = sum(cins)
        x = torch.randn(s, s, cin).relu()
        w = torch.randn(cout, cin, 3, 3) * (2.0 / (9 * cin)) ** 0.5
        ref = F.conv2d(x.double().permute(2, 0, 1)[None], w.double(), padding=1)[0].permute(1, 2, 0)
        direct = F.conv2d(x.permute(2, 0, 1)[None], w, padding=1)[0].permute(1, 2, 0)
        errs = {}
        for key, (mats, m) in sets.items():
            errs[key] = rel_l2(winograd_fp32(x, w, mats, m), ref)
            worst[key] = max(worst[key], errs[key])
        print(f"| {name} | {s} | {cin} -> {cout} | " + " | ".join(f"{e:.1e}" for e in errs.values())
              + f" | {rel_l2(direct, ref):.1e} |", flush=True)  # fmt: skip
    print("\nworst per layer: " + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))


if __name__ == "__main__":
    main()
