"""ONNX export: BN folded, resize nodes with PyTorch's exact coordinate semantics, dynamic batch and H/W,
an optional class-map head, metadata recording where the model came from and the parity measured at
export (onnxruntime against the PyTorch reference).

Uses the TorchScript exporter (`dynamo=False`): it needs no onnxscript and traces our models faithfully.
"""

from __future__ import annotations

import copy
import json
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from unet_fast.export.errors import DynamicAxesFixedWarning, ExportError, ExportParityError
from unet_fast.export.prepare import ClassMapHead, default_threshold, export_form
from unet_fast.export.probes import (
    AXIS_INDEX,
    probe_shapes,
    tracer_notes,
    user_code_notes,
    varying_axes,
    with_axis,
)
from unet_fast.model_guard import eval_model
from unet_fast.models.unet import UNet

DYNAMIC_AXES = ("batch", "height", "width")
MIN_OPSET = 17
INPUT_NAME = "input"

# What each Resize must say so that ONNX computes exactly what F.interpolate / nn.Upsample computes:
# nearest = PyTorch's legacy 'nearest' (src = floor(dst * in / out)); linear honours align_corners.
# Trap: ONNX's 'pytorch_half_pixel' maps an output length of 1 to source 0, while PyTorch (2.x) keeps the
# half-pixel formula there, which is 'half_pixel' (measured against onnxruntime in
# tests/export/test_resize.py). So align_corners=False must be 'half_pixel' and 'pytorch_half_pixel' is
# rewritten to it. TensorRT reads 'half_pixel' as kHALF_PIXEL with the formula single-pixel selector.
_EXACT_RESIZE = {
    ("nearest", "asymmetric", "floor"),  # F.interpolate(mode="nearest")
    ("linear", "align_corners", None),  # bilinear, align_corners=True
    ("linear", "half_pixel", None),  # bilinear, align_corners=False
}


@dataclass
class OnnxExport:
    """What `to_onnx` wrote: the file, the metadata it recorded and the parity it measured."""

    path: Path
    metadata: dict[str, Any]
    parity: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        exp = self.metadata["export"]
        lines = [f"wrote {self.path} (opset {exp['opset']}, dynamic {exp['dynamic'] or 'none'})"]
        fixed = exp.get("fixed_axes") or {}
        if fixed:
            lines.append(f"fixed: {_fixed_text(fixed)}{_trace_hint(exp.get('tracer_notes', []))}")
        lines.append(f"BatchNorm: {exp['bn_folded']} folded into convolutions, {len(exp['bn_left'])} left as is")
        lines += [f"  fold dropped: {r}" for r in exp.get("bn_fold_rejected", [])]
        lines += [_parity_line(p) for p in self.parity] or ["parity: not measured"]
        if self.parity and not self.metadata.get("parity_ok", True):
            lines.append("parity: OUT OF TOLERANCE (kept because allow_mismatch=True): " + _failures_text(self))
        return "\n".join(lines)


def _fixed_text(fixed: dict[str, Any]) -> str:
    """One line: which axes were declared fixed, at what size, and the first reason."""
    axes = ", ".join(f"{a} = {v['size']}" for a, v in fixed.items())
    why = next(iter(fixed.values()))["failures"][:1]
    return f"{axes} (asked dynamic; the traced graph is wrong at other sizes: {why[0] if why else '?'})"


def _parity_line(p: dict[str, Any]) -> str:
    if "skipped" in p:
        return f"  {p['runtime']} {p['input_shape']}: not checked: {p['skipped']}"
    if "error" in p:
        return f"  {p['runtime']} {p['input_shape']}: ERROR {p['error']}"
    return (f"  {p['runtime']} vs PyTorch, input {tuple(p['input_shape'])}: max_abs={p['max_abs']:.3g} "
            f"rel_l2={p['rel_l2']:.3g} argmax agreement={p['argmax_agreement']:.5%}")  # fmt: skip


# What the export's own parity check accepts, per graph precision: onnxruntime against the PyTorch model
# on the same input. fp32 is the same math in another order (observed rel-L2 ~1e-7); fp16 rounds every
# layer at 2^-11. A class-map output is compared by agreement (pixels whose two top scores are within that
# rounding may flip).
PARITY_LIMITS: dict[str, dict[str, float]] = {
    "fp32": {"rel_l2": 1e-4, "argmax_agreement": 0.999},
    "fp16": {"rel_l2": 1e-2, "argmax_agreement": 0.99},
}


def parity_failures(rows: Sequence[dict[str, Any]], precision: str, class_map: bool) -> list[str]:
    """One line per checked input size that is out of tolerance (or could not be run), naming the size."""
    lim = PARITY_LIMITS[precision]
    bad = []
    for p in rows:
        size = "x".join(str(d) for d in p["input_shape"])
        if "skipped" in p:  # the model itself refuses this size: nothing to compare
            continue
        if "error" in p:
            bad.append(f"input {size}: {p['error']}")
        elif p["nonfinite"]:
            bad.append(f"input {size}: {p['nonfinite']} NaN/inf values where PyTorch gives finite ones")
        elif class_map and p["argmax_agreement"] < lim["argmax_agreement"]:
            bad.append(f"input {size}: class-map agreement {p['argmax_agreement']:.4%} < "
                       f"{lim['argmax_agreement']:.2%}")  # fmt: skip
        elif not class_map and not p["rel_l2"] <= lim["rel_l2"]:
            bad.append(f"input {size}: rel_l2 {p['rel_l2']:.3g} > {lim['rel_l2']:g} "
                       f"(max_abs {p['max_abs']:.3g})")  # fmt: skip
    return bad


def _failures_text(r: OnnxExport) -> str:
    exp = r.metadata["export"]
    return "; ".join(parity_failures(r.parity, exp["precision"], exp["class_map"]))


def _require_onnx() -> Any:
    try:
        import onnx
    except ImportError as e:
        raise ImportError('ONNX export needs the onnx package: pip install "unet_fast[export]"') from e
    return onnx


def _check_args(
    model: nn.Module, example_input: Tensor, dynamic: Sequence[str] | None, opset: int
) -> tuple[str, ...]:
    if not isinstance(model, nn.Module):
        raise ValueError(f"to_onnx expects an nn.Module, got {type(model).__name__}")
    if (
        not isinstance(example_input, Tensor)
        or example_input.dim() != 4
        or not example_input.is_floating_point()
    ):
        got = (
            tuple(example_input.shape) if isinstance(example_input, Tensor) else type(example_input).__name__
        )
        raise ValueError(f"to_onnx expects a 4-D floating-point (N, C, H, W) example input, got {got}")
    if opset < MIN_OPSET:
        raise ValueError(
            f"opset must be >= {MIN_OPSET} (Resize and Softmax semantics we rely on), got {opset}"
        )
    dyn = tuple(dynamic or ())
    unknown = [d for d in dyn if d not in DYNAMIC_AXES]
    if unknown:
        raise ValueError(f"dynamic axes must be a subset of {DYNAMIC_AXES}, got {unknown}")
    return dyn


def _dynamic_axes(
    dyn: tuple[str, ...], output_name: str, class_map: bool, same_size: bool
) -> dict[str, dict[int, str]]:
    axis = {"batch": 0, "height": 2, "width": 3}
    inp = {axis[d]: d for d in dyn}
    out: dict[int, str] = {}
    for d in dyn:
        # Output H/W share the input's symbol only where they are equal at every size (padded U-Nets).
        name = d if d == "batch" or same_size else f"out_{d}"
        out[axis[d] - (1 if class_map and d != "batch" else 0)] = name
    return {INPUT_NAME: inp, output_name: out}


def _source_description(model: nn.Module) -> dict[str, Any]:
    desc: dict[str, Any] = {"class": f"{type(model).__module__}.{type(model).__qualname__}"}
    if isinstance(model, UNet):
        desc["config"] = model.config_dict()
    desc["parameters"] = sum(p.numel() for p in model.parameters())
    return desc


def _name_unsupported_layer(model: nn.Module, example_input: Tensor, err: Exception) -> str | None:
    """The module path of the first traced node of the unsupported operator named in `err`."""
    m = re.search(r"operator '([\w:.]+)'", str(err))
    if m is None:
        return None
    kind = m.group(1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model, (example_input,), check_trace=False)
    except Exception:
        return None
    for node in traced.inlined_graph.nodes():
        if node.kind() == kind:
            # jit.trace scopes read "__module.decoder/__module.decoder.1"; the last part is the module path
            path = node.scopeName().rsplit("/", 1)[-1].removeprefix("__module").lstrip(".")
            try:
                cls = type(model.get_submodule(path)).__name__
            except AttributeError:
                cls = "?"
            return f"{path or '<top level>'} ({cls})"
    return None


def _export(model: nn.Module, example: Tensor, path: Path, opset: int, output_name: str,
            dynamic_axes: dict[str, dict[int, str]]) -> list[str]:  # fmt: skip
    """torch.onnx.export to `path`; returns the tracer's notes (probes.tracer_notes). Raises ValueError for a
    layer ONNX cannot express (naming it), ExportError for any other exporter failure."""
    # The TorchScript exporter warns about its own deprecation and about Python values in shape
    # arithmetic; those are collected (tracer_notes), not printed: the probes decide whether they matter.
    with tracer_notes() as notes:
        try:
            torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[output_name],
                              dynamic_axes=dynamic_axes or None, do_constant_folding=True)  # fmt: skip
        except torch.onnx.errors.UnsupportedOperatorError as e:
            where = _name_unsupported_layer(model, example, e)
            raise ValueError(f"cannot export to ONNX: layer {where or '<unknown>'} uses an operator ONNX "
                             f"opset {opset} lacks: {e}") from e  # fmt: skip
        except Exception as e:  # SymbolicValueError, OnnxExporterError, a RuntimeError inside the trace
            raise ExportError(f"torch.onnx.export (TorchScript exporter, opset {opset}) cannot export "
                              f"{type(model).__name__}: {_first_line(e)}") from e  # fmt: skip
    return notes


def _first_line(e: BaseException) -> str:
    """The first line of an exception's message, onnxruntime's status prefixes shortened."""
    text = str(e).strip()
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    text = re.sub(r"Non-zero status code returned while running (\w+) node\. Name:'([^']*)' Status Message: "
                  r"(?:\S+\.\w+:\d+ \w+ )?", r"\1 node '\2': ", text)  # fmt: skip
    return (text.splitlines()[0] if text else type(e).__name__)[:400]


def fix_resize_nodes(onnx_model: Any, exact_resize: bool = True) -> list[dict[str, str]]:
    """Rewrite linear 'pytorch_half_pixel' Resize nodes to 'half_pixel' and check that every Resize
    reproduces a PyTorch interpolation exactly; ValueError naming the node otherwise."""
    found = []
    for node in onnx_model.graph.node:
        if node.op_type != "Resize":
            continue
        attrs = {a.name: a for a in node.attribute}
        mode = attrs["mode"].s.decode() if "mode" in attrs else "nearest"
        ctm_attr = attrs.get("coordinate_transformation_mode")
        ctm = ctm_attr.s.decode() if ctm_attr is not None else "half_pixel"
        if exact_resize and mode == "linear" and ctm == "pytorch_half_pixel" and ctm_attr is not None:
            ctm_attr.s = b"half_pixel"
            ctm = "half_pixel"
        nearest = attrs["nearest_mode"].s.decode() if "nearest_mode" in attrs else "round_prefer_floor"
        key = (mode, ctm, nearest if mode == "nearest" else None)
        if "antialias" in attrs and attrs["antialias"].i:
            raise ValueError(
                f"Resize node {node.name!r} uses antialiasing, which no PyTorch U-Net upsample does"
            )
        if exact_resize and key not in _EXACT_RESIZE:
            raise ValueError(
                f"Resize node {node.name!r} (mode={mode}, coordinate_transformation_mode={ctm}, nearest_mode="
                f"{nearest}) does not reproduce a PyTorch nearest/bilinear interpolation; supported: "
                f"{sorted(str(k) for k in _EXACT_RESIZE)}"
            )
        found.append({"node": node.name, "mode": mode, "coordinate_transformation_mode": ctm,
                      **({"nearest_mode": nearest} if mode == "nearest" else {})})  # fmt: skip
    return found


def parity_inputs(
    model: nn.Module, example_input: Tensor, dynamic: Sequence[str], seed: int = 0
) -> list[Tensor]:
    """Random inputs for the export-time parity check at `probes.probe_shapes`: the example's shape, and
    where axes are dynamic, sizes that take other pooling decisions than the example's (every level's
    parity flipped, batch + 1; odd and non-square), which a graph traced at one size can get wrong."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=example_input.dtype)
            for s in probe_shapes(model, example_input.shape, dynamic)]  # fmt: skip


def onnxruntime_parity(path: str | PathLike, reference: nn.Module, inputs: Sequence[Tensor],
                       class_map: bool = False, threshold: float | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Run the ONNX file with onnxruntime (CPU) on each input and compare with `reference` (the original
    PyTorch model); one parity dict per input (see unet_fast.parity.ParityReport). An input the model
    itself refuses is recorded as {"skipped": why}; one onnxruntime fails on as {"error": its message}."""
    import onnxruntime as ort

    from unet_fast.parity import compare

    reference = eval_model(reference)  # the caller's model keeps its mode and BN statistics
    ref_model = ClassMapHead(reference, threshold).eval() if class_map else reference
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, torch.get_num_threads())
    opts.log_severity_level = 4  # a failing run comes back as an exception, reported per size: no log lines
    runtime = f"onnxruntime {ort.__version__} CPU"
    try:
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # e.g. a bf16 graph: ORT's CPU provider lacks most bf16 kernels
        return [
            {"runtime": runtime, "input_shape": list(x.shape), "error": f"cannot run: {_first_line(e)}"}
            for x in inputs
        ]
    rows = []
    for x in inputs:
        row: dict[str, Any] = {"runtime": runtime, "input_shape": list(x.shape)}
        rows.append(row)
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref = ref_model(x)
        except Exception as e:  # a size the model does not take (ValueError, a shape RuntimeError)
            row["skipped"] = f"the model does not take this size ({type(e).__name__}: {_first_line(e)})"
            continue
        try:
            got = torch.from_numpy(sess.run(None, {INPUT_NAME: x.numpy()})[0])
        except Exception as e:
            row["error"] = f"onnxruntime fails where PyTorch runs: {_first_line(e)}"
            continue
        if got.shape != ref.shape:
            row["error"] = f"output shape {tuple(got.shape)} != reference {tuple(ref.shape)}"
            continue
        r = compare(ref, got, class_dim=1)
        row.update({"max_abs": r.max_abs, "rel_l2": r.rel_l2, "argmax_agreement": r.argmax_agreement,
                    "mean_iou": r.mean_iou, "nonfinite": r.nonfinite})  # fmt: skip
    return rows


def to_onnx(model: nn.Module, path: str | PathLike, example_input: Tensor,
            dynamic: Sequence[str] | None = DYNAMIC_AXES, opset: int = MIN_OPSET, *, class_map: bool = False,
            class_map_threshold: float | None = None, exact_resize: bool = True, check_parity: bool = True,
            parity_tensors: Sequence[Tensor] | None = None, precision: str = "fp32",
            keep_fp32: bool = True, allow_mismatch: bool = False, fix_dynamic: bool = True) -> OnnxExport:  # fmt: skip
    """Export `model` to ONNX at `path`.

    - BatchNorm is folded into the preceding convolutions (unet_fast.graph.bn_fold) before tracing; the
      folded copy is first run against the model on `example_input`, and a fold that changes the output
      (a symbolic trace drops `isinstance` branches) is dropped, named in metadata["export"]["bn_fold_rejected"].
    - `dynamic`: which of ("batch", "height", "width") stay symbolic; `opset` >= 17.
    - `class_map=True` appends an argmax head: the output is the int32 (N, H, W) class map
      (one-channel models: score > `class_map_threshold`, known from our UNet's head, else required).
    - `exact_resize`: every Resize node is checked to compute what PyTorch computes (see _EXACT_RESIZE),
      which is what TensorRT then reads; an unsupported one is a ValueError naming the node.
    - `precision`: "fp32", or "fp16" for a graph that computes in half precision (what strongly typed
      TensorRT needs) with inputs and outputs still fp32; `keep_fp32` keeps softmax, normalisations and
      reductions in fp32 there (unet_fast.export.half, torch.autocast's policy).
    - `check_parity`: run onnxruntime against `model` on random inputs (`parity_tensors`, else the
      example's size and, on dynamic axes, sizes that take other pooling decisions: probes.probe_shapes)
      and record the figures in the file's metadata (skipped, and said so, without onnxruntime). Out of
      tolerance (PARITY_LIMITS) at the example's size, or not runnable there, is an ExportParityError
      naming each size and its error, and no file is written; `allow_mismatch=True` keeps the file anyway
      (a warning, and metadata["parity_ok"] = False).
    - `fix_dynamic`: where the graph is right at the example's size but not at other sizes of a dynamic
      axis (the tracer baked a Python decision on a shape into it), that axis is exported again with the
      example's size, declared fixed in the file, named in metadata["export"]["fixed_axes"] with the failures
      and in a DynamicAxesFixedWarning. `fix_dynamic=False` makes it an ExportParityError (or, with
      `allow_mismatch`, a kept file). Without the parity check, a dynamic export whose trace baked in
      decisions of the model's own code is kept with a warning naming those lines.
    The file passes `onnx.checker` (full check); it is written only when the export succeeds (a file
    already at `path` is replaced then, and left as it was otherwise). Errors: ValueError (bad arguments,
    a model or size the export cannot take, a layer ONNX cannot express), ExportError (the exporter or the
    fp16 rewrite failed; unet_fast.export.errors), ExportParityError. Returns an `OnnxExport` with the
    metadata and parity. The caller's model is never changed: a model (or any submodule) in training mode
    is exported in eval mode from a private copy, and stays in training mode with its BN statistics.
    """
    onnx = _require_onnx()
    dyn = _check_args(model, example_input, dynamic, opset)
    if precision not in ("fp32", "fp16"):
        raise ValueError(f"precision must be 'fp32' or 'fp16' (ONNX Conv has no bfloat16 before opset 22, which "
                         f"torch's TorchScript exporter does not write), got {precision!r}")  # fmt: skip
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if any(t.device.type != "cpu" for t in [*model.parameters(), *model.buffers()]):
        # Export and the onnxruntime check run on CPU; the caller's model stays where it is.
        model = copy.deepcopy(model).cpu().eval()
    else:
        model = eval_model(model)  # never model.eval(): that would change the caller's model
    example_input = example_input.detach().cpu()
    try:
        with torch.no_grad():
            reference_out = model(example_input)  # validates the input size for the model, before any export
    except ValueError:
        raise
    except Exception as e:  # a shape error deep in a foreign model: bad input, said as such
        raise ValueError(f"the model cannot run on the example input {tuple(example_input.shape)}: "
                         f"{type(e).__name__}: {_first_line(e)}") from e  # fmt: skip
    if not isinstance(reference_out, Tensor) or reference_out.dim() != 4:
        from unet_fast.parity import describe

        raise ValueError(f"the model returns {describe(reference_out)}; to_onnx exports a model that returns one "
                         "(N, classes, H, W) tensor: export a wrapper module whose forward returns the output you "
                         "want (e.g. model(x)['out'])")  # fmt: skip
    threshold = class_map_threshold if class_map_threshold is not None else default_threshold(model)
    if class_map and reference_out.shape[1] == 1 and threshold is None:
        raise ValueError(
            "the model has one output channel: give class_map_threshold (0.5 after a sigmoid, 0 on logits)"
        )

    form, fold = export_form(model, example_input, reference_out)
    if class_map:
        form = ClassMapHead(form, threshold).eval()
    output_name = "class_map" if class_map else "output"
    same_size = isinstance(model, UNet) and model.config.padding == "same"
    can_check = check_parity and _has_onnxruntime()
    example_shape = tuple(example_input.shape)
    # Written beside `path` and moved into place at the end: a failed export leaves no file, and a file
    # already at `path` is untouched until there is a good one to replace it.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        fixed: dict[str, dict[str, Any]] = {}
        now = dyn
        while True:
            notes = _export(form, example_input, tmp, opset, output_name,
                            _dynamic_axes(now, output_name, class_map, same_size))  # fmt: skip
            proto = onnx.load(str(tmp))
            resizes = fix_resize_nodes(proto, exact_resize)
            bn_nodes = [n.name for n in proto.graph.node if n.op_type == "BatchNormalization"]
            fp32_nodes: list[str] = []
            if precision != "fp32":
                from unet_fast.export.half import KEEP_FP32_OPS, convert_to_half

                fp32_nodes = convert_to_half(proto, KEEP_FP32_OPS if keep_fp32 else ())
            metadata: dict[str, Any] = {
                "unet_fast_version": __import__("unet_fast").__version__,
                "source_model": _source_description(model),
                "export": {"opset": opset, "dynamic": list(now), "class_map": class_map, "threshold": threshold,
                           "input": INPUT_NAME, "output": output_name, "example_shape": list(example_shape),
                           "bn_folded": len(fold.folded), "bn_left": fold.left + bn_nodes,
                           "bn_fold_rejected": fold.rejected, "resize": resizes,
                           "precision": precision, "fp32_nodes": fp32_nodes, "torch": torch.__version__,
                           "dynamic_requested": list(dyn), "fixed_axes": fixed, "tracer_notes": notes},
            }  # fmt: skip
            _write_metadata(onnx, proto, metadata, tmp)
            try:
                onnx.checker.check_model(proto, full_check=True)  # in memory: no reload of a large file
            except Exception as e:  # ValidationError / InferenceError: a graph we wrote wrong
                raise ExportError(f"the exported graph fails onnx.checker: {_first_line(e)}") from e
            parity: list[dict[str, Any]] = []
            if not can_check:
                break
            inputs = (
                [t for t in parity_tensors if _fits(t.shape, example_shape, now)]
                if parity_tensors is not None
                else parity_inputs(model, example_input, now)
            )
            parity = onnxruntime_parity(tmp, model, inputs, class_map, threshold)
            failures = parity_failures(parity, precision, class_map)
            bad = (_failing_axes(parity, tmp, model, example_input, now, precision, class_map, threshold)
                   if failures and fix_dynamic else {})  # fmt: skip
            if not bad:
                break
            for axis, why in bad.items():
                fixed[axis] = {"size": example_shape[AXIS_INDEX[axis]], "failures": why}
            now = tuple(a for a in now if a not in bad)

        if not check_parity:
            pass
        elif not can_check:
            metadata["parity"] = "not measured: onnxruntime is not installed"
        else:
            metadata["parity"] = parity
            metadata["parity_limits"] = PARITY_LIMITS[precision]
            metadata["parity_ok"] = not failures
            if failures and not allow_mismatch:
                raise ExportParityError(
                    f"the ONNX export does not compute what the model computes (onnxruntime vs PyTorch, "
                    f"{precision}): {'; '.join(failures)}{_trace_hint(notes)}. The file was not kept; pass "
                    "allow_mismatch=True (CLI: --allow-mismatch) to keep it anyway, or check_parity=False to "
                    "skip the check"
                )
            if failures:
                warnings.warn(f"{path}: kept although parity is out of tolerance: {'; '.join(failures)}",
                              stacklevel=2)  # fmt: skip
        if fixed:
            warnings.warn(f"{path}: {_fixed_text(fixed)}{_trace_hint(notes)}; export at the size you will run "
                          "(a static export), or make that code traceable; fix_dynamic=False makes this an "
                          "error", DynamicAxesFixedWarning, stacklevel=2)  # fmt: skip
        elif not can_check and now and user_code_notes(notes):
            warnings.warn(f"{path}: the dynamic axes {list(now)} are not verified (no parity check), and the "
                          f"graph may be wrong at other sizes than the example's{_trace_hint(notes)}",
                          stacklevel=2)  # fmt: skip
        _write_metadata(onnx, proto, metadata, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return OnnxExport(path, metadata, parity)


def _has_onnxruntime() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _fits(shape: Sequence[int], example_shape: Sequence[int], dynamic: Sequence[str]) -> bool:
    """Whether an input of `shape` can run on a graph whose non-`dynamic` axes have the example's sizes."""
    return all(shape[i] == example_shape[i] for a, i in AXIS_INDEX.items() if a not in dynamic) and (
        shape[1] == example_shape[1]
    )


def _trace_hint(notes: Sequence[str]) -> str:
    """', where the trace baked in Python decisions at file:line (`code`), ...' for the model's own code."""
    mine = user_code_notes(notes)
    if not mine:
        return ""
    shown = "; ".join(mine[:3]) + (f" and {len(mine) - 3} more" if len(mine) > 3 else "")
    return f", where the trace turned tensor values into Python constants at {shown}"


def _failing_axes(rows: Sequence[dict[str, Any]], path: Path, model: nn.Module, example: Tensor,
                  dynamic: Sequence[str], precision: str, class_map: bool,
                  threshold: float | None) -> dict[str, list[str]]:  # fmt: skip
    """The dynamic axes on which the graph is wrong, with the failure lines that show it; {} when it is
    wrong at the example's own shape (then no axis to fix helps). A probe that varies several axes at once
    is split into one probe per axis; if none of those fails alone, all of its axes are named."""
    example_shape = tuple(example.shape)
    bad: dict[str, list[str]] = {}
    for row in rows:
        lines = parity_failures([row], precision, class_map)
        if not lines:
            continue
        shape = tuple(row["input_shape"])
        axes = varying_axes(shape, example_shape, dynamic)
        if not axes:
            return {}
        culprits = axes
        if len(axes) > 1:
            g = torch.Generator().manual_seed(1)
            singles = [torch.randn(with_axis(example_shape, shape, a), generator=g) for a in axes]
            single_rows = onnxruntime_parity(path, model, singles, class_map, threshold)
            culprits = [a for a, r in zip(axes, single_rows, strict=True) if parity_failures([r], precision, class_map)]
            culprits = culprits or axes
        for a in culprits:
            bad.setdefault(a, []).extend(lines)
    return bad


def _write_metadata(onnx: Any, proto: Any, metadata: dict[str, Any], path: Path) -> None:
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key = f"unet_fast.{key}"
        entry.value = value if isinstance(value, str) else json.dumps(value)
    proto.producer_name = "unet_fast"
    proto.producer_version = metadata["unet_fast_version"]
    onnx.save(proto, str(path))


def read_metadata(path: str | PathLike) -> dict[str, Any]:
    """The unet_fast metadata of an exported ONNX file (JSON values decoded)."""
    onnx = _require_onnx()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX file at {path}")
    proto = onnx.load(str(path), load_external_data=False)
    out: dict[str, Any] = {}
    for entry in proto.metadata_props:
        if entry.key.startswith("unet_fast."):
            key = entry.key[len("unet_fast.") :]
            try:
                out[key] = json.loads(entry.value)
            except json.JSONDecodeError:
                out[key] = entry.value
    return out
