"""One small forward per model through one unet_fast backend: what first_contact.py runs under
compute-sanitizer (memcheck, racecheck). Small on purpose: the sanitizer slows every kernel 10-100x.

Two U-Nets, batch 2 and odd sizes, so the fused reads and epilogues all run: transposed-conv up with BN and
a softmax head (pool epilogue, concat slots, padding of odd sizes), and bilinear up without BN (the
resampled view reads of the conv and of upsample_concat). Prints one JSON line per model with its parity
against the fp32 PyTorch model; exits 1 when a forward raises or is out of tolerance.

    compute-sanitizer --tool memcheck python fc_sanitize_forward.py --backend cuda --dtype float16
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import unet_fast  # noqa: E402
from unet_fast import UNet  # noqa: E402
from unet_fast.bench.workloads import lively_weights  # noqa: E402
from unet_fast.parity import compare  # noqa: E402

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
REL_L2 = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}
MODELS = {
    "transpose-bn-softmax": (lambda: UNet(3, 2, 8, 3, "batch", "transpose", head="softmax"), (2, 3, 45, 38)),
    "bilinear-logits": (lambda: UNet(3, 3, 8, 3, None, "bilinear", head="logits"), (2, 3, 37, 50)),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", required=True)
    p.add_argument("--dtype", default="float16", choices=list(DTYPES))
    p.add_argument("--device", default="cuda")
    p.add_argument(
        "--models", default=",".join(MODELS), help=f"comma-separated subset of {', '.join(MODELS)}"
    )
    a = p.parse_args(argv)
    dtype, ok = DTYPES[a.dtype], True
    names = [n for n in a.models.split(",") if n]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        p.error(f"unknown models {unknown}; choose from {', '.join(MODELS)}")
    for name in names:
        build, shape = MODELS[name]
        torch.manual_seed(0)
        model = lively_weights(build(), seed=1)
        x = torch.randn(shape)
        with torch.inference_mode():
            ref = model(x)
        record = {"model": name, "backend": a.backend, "dtype": a.dtype}
        try:
            fast = unet_fast.optimize(model, x.to(a.device), backend=a.backend, dtype=dtype)
            with torch.inference_mode():
                out = fast(x.to(a.device))
            if a.device == "cuda":
                torch.cuda.synchronize()
            parity = compare(ref, out.float().cpu())
            record.update(parity=parity.as_dict(), ok=parity.nonfinite == 0 and parity.rel_l2 < REL_L2[dtype])
        except Exception as e:  # report and go on: the sanitizer's findings are the point of this run
            record.update(ok=False, error=f"{type(e).__name__}: {e}"[:1000])
        ok &= bool(record["ok"])
        print(json.dumps(record, default=str), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
