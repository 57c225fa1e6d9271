"""Shape-generic plans (issue 14): one capture serves every input size of every family, weights are prepared
once, per-shape state is bounded (LRU, per-thread arenas freed with the thread), guards re-capture."""

from __future__ import annotations

import gc
import os
import random
import threading
import weakref

import pytest
import torch
from engine_helpers import MilesialUNet, SmpLikeUnet, check_parity, randomize_bn
from torch import nn

import unet_fast
from unet_fast import UNet
from unet_fast.kernels.cpu_winograd import WinogradWeight

# (model factory, example shape, new shapes): odd sizes, batch changes, both sides of every pad; no size
# whose deepest map is 1 pixel (export specialises 1: a guard, then a second capture, tested below)
FAMILIES = {
    "unet-same-transpose": (lambda: randomize_bn(UNet(3, 3, 4, 3, "batch", "transpose", head="softmax"), seed=3),
                            (1, 3, 32, 32), [(2, 3, 29, 35), (1, 3, 40, 24), (3, 3, 17, 50)]),
    "unet-same-bilinear": (lambda: randomize_bn(UNet(3, 2, 4, 4, None, "bilinear", True, head="sigmoid"), seed=4),
                           (1, 3, 32, 32), [(1, 3, 37, 33), (2, 3, 48, 37)]),
    "unet-valid": (lambda: randomize_bn(UNet(3, 2, 4, 3, "batch", "transpose", padding="valid", head="logits"), seed=5),
                   (1, 3, 92, 100), [(1, 3, 100, 92), (2, 3, 108, 124)]),
    "milesial": (lambda: randomize_bn(MilesialUNet(3, 2, False, base=4)), (1, 3, 32, 32),
                 [(2, 3, 36, 44), (1, 3, 45, 35)]),
    "milesial-bilinear": (lambda: randomize_bn(MilesialUNet(3, 2, True, base=4)), (1, 3, 32, 32),
                          [(1, 3, 41, 37)]),
    "smp-like": (lambda: randomize_bn(SmpLikeUnet("resnet18", 3, 3, decoder_channels=(16, 8, 8, 8, 8))),
                 (1, 3, 64, 64), [(2, 3, 72, 99), (1, 3, 71, 67)]),
}  # fmt: skip


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_every_size_one_capture(family: str) -> None:
    make, example, shapes = FAMILIES[family]
    m = make()
    fast = unet_fast.optimize(m, torch.randn(example), backend="torch")
    on_cpu = fast.with_backend("cpu")
    for shape in shapes:
        x = torch.randn(shape)
        for f in (fast, on_cpu):
            check_parity(m, f, x, f"{family} {shape} on {f.backend.name}")
    assert len(fast.captures) == 1 and fast.captures[0].dynamic, fast.report()
    assert fast.report_data().recaptures == 0


def test_weights_prepared_once_and_shared_by_every_shape() -> None:
    m = randomize_bn(UNet(3, 2, 4, 3, "batch", "transpose"), seed=6)
    fast = unet_fast.optimize(m, torch.randn(1, 3, 32, 32), backend="cpu")
    n_weights = len(fast._weights)
    assert n_weights > 0  # prepared at optimize, before any call
    a = fast.executor_for((1, 3, 32, 32))
    b = fast.executor_for((2, 3, 45, 27))
    extra = len(fast._weights) - n_weights
    packed_a = [p.weight for p in a.prepared if p.weight is not None]
    packed_b = [p.weight for p in b.prepared if p.weight is not None]
    # shared, except a conv's Winograd weight where the two plans run different tiles (issue 25: F(6x6) where
    # the size rule takes the output size, F(4x4) elsewhere): packed once per (kernel, weight), so once per tile
    differ = [(x, y) for x, y in zip(packed_a, packed_b, strict=True) if x is not y]
    assert packed_a and len(differ) == extra < len(packed_a)
    assert all(isinstance(x, WinogradWeight) and isinstance(y, WinogradWeight) and x.tile != y.tile
               for x, y in differ)  # fmt: skip
    fast.executor_for((1, 3, 45, 27))  # a third plan with b's tiles packs nothing new
    assert len(fast._weights) == n_weights + extra


def test_lru_bounds_cached_shapes_and_eviction_frees_arenas() -> None:
    m = randomize_bn(UNet(1, 2, 2, 2, None, "transpose"), seed=7)
    fast = unet_fast.optimize(m, torch.randn(1, 1, 16, 16), backend="torch", max_cached_shapes=3)
    fast(torch.randn(1, 1, 16, 16))
    arena = weakref.ref(fast.executor_for((1, 1, 16, 16))._arena(1))
    for h in range(17, 25):
        fast(torch.randn(1, 1, h, 20))
    assert fast.cached_shapes() == [(1, 22, 20), (1, 23, 20), (1, 24, 20)]
    gc.collect()
    assert arena() is None  # evicted with its executor
    data = fast.report_data()
    assert len(data.cached_shapes) == 3 and data.max_cached_shapes == 3
    assert (1, 24, 20) in [shape for shape, _, _ in data.cached_shapes]
    assert all(steps > 0 and mib > 0 for _, steps, mib in data.cached_shapes)
    with pytest.raises(ValueError, match="max_cached_shapes"):
        unet_fast.optimize(m, torch.randn(1, 1, 16, 16), backend="torch", max_cached_shapes=0)


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc/self/statm (Linux)")
def test_100_random_sizes_leave_memory_bounded() -> None:
    m = randomize_bn(UNet(3, 2, 4, 3, "batch", "transpose"), seed=8)
    fast = unet_fast.optimize(m, torch.randn(1, 3, 32, 32), backend="cpu", max_cached_shapes=4)
    rng = random.Random(0)
    sizes = [(rng.randint(1, 2), 3, rng.randint(24, 96), rng.randint(24, 96)) for _ in range(100)]
    for s in sizes[:20]:  # allocator and kernel caches reach their working size
        fast(torch.randn(s))
    gc.collect()
    before = _rss_mib()
    for s in sizes[20:]:
        fast(torch.randn(s))
    gc.collect()
    growth = _rss_mib() - before
    # per-shape state of this model is < 1 MiB; before issue 14 every size kept a capture and packed weights
    assert growth < 64, f"RSS grew by {growth:.0f} MiB over 80 new sizes"
    assert len(fast.cached_shapes()) == 4 and len(fast.captures) == 1


def test_two_threads_with_different_sizes_stay_correct() -> None:
    m = randomize_bn(UNet(3, 3, 4, 3, "batch", "transpose", head="softmax"), seed=9)
    fast = unet_fast.optimize(m, torch.randn(1, 3, 32, 32), backend="cpu", max_cached_shapes=2)
    inputs = {0: [torch.randn(1, 3, 32 + i, 40) for i in range(3)], 1: [torch.randn(2, 3, 27, 33 + i) for i in range(3)]}
    with torch.no_grad():
        refs = {k: [m(x) for x in xs] for k, xs in inputs.items()}
    errors: list[BaseException] = []
    results: dict[int, list[torch.Tensor]] = {0: [], 1: []}

    def work(k: int) -> None:
        try:
            for _ in range(3):
                for x in inputs[k]:  # more shapes than the cache holds: evictions while the other runs
                    results[k].append(fast(x))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for k in (0, 1):
        for i, out in enumerate(results[k]):
            torch.testing.assert_close(out, refs[k][i % 3], atol=1e-4, rtol=1e-4)


def test_a_threads_arena_is_released_when_the_thread_ends() -> None:
    m = randomize_bn(UNet(1, 2, 2, 2, None, "transpose"), seed=10)
    fast = unet_fast.optimize(m, torch.randn(1, 1, 16, 16), backend="torch")
    x = torch.randn(1, 1, 16, 16)
    ex = fast.executor_for(tuple(x.shape))
    ref: list[weakref.ref] = []

    def work() -> None:
        fast(x)
        ref.append(weakref.ref(ex._arena(1)))

    t = threading.Thread(target=work)
    t.start()
    t.join()
    del t
    gc.collect()
    assert ref and ref[0]() is None


def test_warmup_and_report() -> None:
    m = randomize_bn(UNet(3, 2, 4, 3, "batch", "transpose"), seed=11)
    fast = unet_fast.optimize(m, torch.randn(1, 3, 32, 32), backend="cpu")
    assert fast.warmup([(1, 3, 48, 40), (2, 3, 33, 31)]) is fast
    assert fast.cached_shapes()[-2:] == [(1, 48, 40), (2, 33, 31)]
    data = fast.report_data()
    assert len(data.captures) == 1 and data.captures[0].dynamic and data.recaptures == 0
    assert data.cached_shapes[-1][0] == (2, 33, 31) and data.plan is not None and data.plan.shape == (2, 33, 31)
    assert data.weights > 0 and data.weights_mib > 0
    assert "N x H x W = 2x33x31" in str(data)  # the text renders the fields


class BranchesOnSize(nn.Module):
    """Runs another layer when H is a multiple of 16: a guard of the export."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x) if x.shape[2] % 16 == 0 else self.b(x)
        return torch.relu(self.bn(y))


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_guard_on_size_is_right_on_both_sides(backend: str) -> None:
    m = randomize_bn(BranchesOnSize())
    fast = unet_fast.optimize(m, torch.randn(1, 3, 32, 20), backend=backend)
    for h in (32, 48, 33, 47, 64, 31):  # both sides, each twice
        check_parity(m, fast, torch.randn(2, 3, h, 21), f"H={h}")
    caps = fast.captures
    # the reason names the guard that fails (issue 23: it used to blame "a guard" even where every guard held)
    assert len(caps) == 2 and "% 16" in caps[1].reason and "fails there" in caps[1].reason, [c.reason for c in caps]
    data = fast.report_data()
    assert len(data.captures) == 2 and data.recaptures == 1 and data.captures[0].dynamic


def test_valid_unet_size_error_is_closed_form() -> None:
    m = UNet(1, 2, 2, 3, None, "transpose", padding="valid").eval()
    fast = unet_fast.optimize(m, torch.randn(1, 1, 92, 92), backend="torch")
    with pytest.raises(ValueError, match="nearest valid sizes are 92 or 100"):
        fast(torch.randn(1, 1, 96, 92))
    assert len(fast.captures) == 1  # no capture was tried for the impossible size


class DataDependent(nn.Module):
    """torch.export cannot take it (a branch on the data): captured per size, as one PyTorch fallback."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 2, 3, padding=1), nn.Conv2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x) if bool(x.mean() > 0) else self.b(x)


def test_static_captures_are_bounded_too() -> None:
    m = DataDependent().eval()
    fast = unet_fast.optimize(m, torch.randn(1, 3, 8, 8), backend="torch", max_cached_shapes=2)
    for h in range(9, 15):
        x = torch.randn(2, 3, h, 7).abs() * (1 if h % 2 else -1)
        with torch.no_grad():
            torch.testing.assert_close(fast(x), m(x))
    assert len(fast.captures) == 3  # the first + max_cached_shapes re-captures
    data = fast.report_data()
    assert not data.captures[0].dynamic and data.dropped_captures > 0


def test_monai_like_one_capture_per_pad_pattern_of_its_branches() -> None:
    """MONAI's UpCat branches on whether the pooled size was floored (`if x_e.shape != x_0.shape`): a guard per
    level and side. Sizes with the same pattern share a capture; a new pattern adds exactly one (issue 23: on
    torch 2.14 every size added one, because the guards could not be evaluated)."""
    from monai_like import BasicUNetLike

    m = randomize_bn(BasicUNetLike(3, 2, (4, 4, 8, 8, 16, 4)), seed=8)
    fast = unet_fast.optimize(m, torch.randn(1, 3, 64, 64), backend="torch")
    for shape, captures in (((2, 3, 80, 48), 1),  # no floor at any level: the example's pattern
                            ((1, 3, 65, 64), 2), ((2, 3, 97, 80), 2)):  # H floored at the first pool only  # fmt: skip
        check_parity(m, fast, torch.randn(shape), f"monai-like {shape}")
        assert len(fast.captures) == captures, (shape, [c.reason for c in fast.captures])
