"""TensorRT: build a serialized engine from a model or an ONNX file (TensorRT 10+ Python API: ONNX parser,
one optimization profile, `build_serialized_network`), and run it as an `nn.Module` on torch CUDA tensors
(`set_input_shape`, `set_tensor_address`, `execute_async_v3` on the current stream), optionally replayed
through a CUDA graph.

TensorRT is optional: nothing here imports it at module import time; each entry point checks for it first
and raises `TensorRTUnavailable` with the reason. Everything that can be checked before TensorRT touches the
GPU is checked in Python (profile shapes, input shapes, the engine file, the TensorRT version and GPU that
built it, recorded beside the engine), so bad input is a clear error, not a crash inside the library.

Precision, two ways. Weakly typed (TensorRT 10's default): fp16/bf16/int8 are builder flags, and
`keep_fp32` pins the layers that lose accuracy in half precision (softmax, normalisation, reductions) to
fp32 through layer precision constraints. Strongly typed (the only mode of TensorRT 11, which removed those
flags; optional in 10): precision comes from the ONNX types, so for fp16 the ONNX graph itself is
rewritten to fp16 with the same ops kept in fp32 (unet_fast.export.half) and parsed into a network created
STRONGLY_TYPED. bf16 and int8 exist only in the weakly typed path here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    import tensorrt as trt

Precision = Literal["fp32", "fp16", "bf16", "int8"]
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16", "int8")
Shape = tuple[int, int, int, int]
SIDECAR_SUFFIX = ".json"  # engine.plan -> engine.plan.json: how and where the engine was built


class TensorRTUnavailable(ImportError):
    """TensorRT cannot be used here (not installed, only type stubs, or no CUDA device)."""


def _require_tensorrt() -> None:
    """Raise TensorRTUnavailable with the reason unless a real TensorRT Python package imports."""
    try:
        import tensorrt
    except ImportError as e:
        raise TensorRTUnavailable(
            f"TensorRT is not installed ({e}); install NVIDIA's wheel (pip install tensorrt) on a CUDA machine"
        ) from e
    if not hasattr(tensorrt, "Builder"):  # e.g. a type-stub package, which installs a bare namespace
        raise TensorRTUnavailable("the 'tensorrt' module found has no Builder: only type stubs are installed")


def tensorrt_version() -> str | None:
    """The installed TensorRT version, or None."""
    try:
        _require_tensorrt()
    except TensorRTUnavailable:
        return None
    import tensorrt as trt

    return str(trt.__version__)


# ---------------------------------------------------------------------------------------------------
# Logging: TensorRT reports failures through its logger; keep them to put in our error messages
# ---------------------------------------------------------------------------------------------------


def _make_logger(verbose: bool = False) -> Any:
    import tensorrt as trt

    class _RecordingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                self.errors.append(msg)
            if verbose or severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                print(f"[TensorRT {severity}] {msg}")

    return _RecordingLogger()


def _logged(logger: Any) -> str:
    errors = getattr(logger, "errors", [])
    return ("; TensorRT said: " + " | ".join(errors[-5:])) if errors else ""


# ---------------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------------


@dataclass
class Profile:
    """One optimization profile for the (N, C, H, W) input: any shape with min <= shape <= max (per axis)
    runs; `opt` is the shape TensorRT tunes for."""

    min: Shape
    opt: Shape
    max: Shape

    def __post_init__(self) -> None:
        for name in ("min", "opt", "max"):
            v = tuple(int(d) for d in getattr(self, name))
            if len(v) != 4 or any(d < 1 for d in v):
                raise ValueError(f"profile {name} shape must be 4 positive ints (N, C, H, W), got {v}")
            setattr(self, name, v)
        if not all(a <= b <= c for a, b, c in zip(self.min, self.opt, self.max, strict=True)):
            raise ValueError(f"profile shapes must satisfy min <= opt <= max on every axis, got "
                             f"min={self.min} opt={self.opt} max={self.max}")  # fmt: skip
        if not self.min[1] == self.opt[1] == self.max[1]:
            raise ValueError(f"the channel count is fixed; got {self.min[1]}, {self.opt[1]}, {self.max[1]}")

    def contains(self, shape: Sequence[int]) -> bool:
        return len(shape) == 4 and all(a <= s <= b for a, s, b in zip(self.min, shape, self.max, strict=True))

    def check(self, shape: Sequence[int]) -> None:
        if not self.contains(shape):
            raise ValueError(f"input shape {tuple(shape)} is outside the engine's optimization profile "
                             f"(min {self.min}, max {self.max}); rebuild the engine with a wider profile")  # fmt: skip


@dataclass
class BuildInfo:
    """Recorded beside the engine (`<engine>.json`) and checked when it is loaded."""

    tensorrt: str
    precision: str
    keep_fp32: bool
    strongly_typed: bool
    profile: dict[str, list[int]]
    input: str
    output: str
    device: str | None
    compute_capability: list[int] | None
    onnx: str
    unet_fast: str
    fp32_layers: list[str] = field(default_factory=list)

    def write(self, engine_path: Path) -> Path:
        path = Path(str(engine_path) + SIDECAR_SUFFIX)
        path.write_text(json.dumps(asdict(self), indent=2))
        return path


# Layers TensorRT should keep in fp32 when building fp16/bf16: softmax and normalisations (and the
# reductions decomposed norms are made of) overflow or lose the small differences they work on.
_FP32_LAYER_TYPES = ("SOFTMAX", "NORMALIZATION", "REDUCE")


def _pin_fp32_layers(network: trt.INetworkDefinition) -> list[str]:
    import tensorrt as trt

    kinds = [getattr(trt.LayerType, k) for k in _FP32_LAYER_TYPES if hasattr(trt.LayerType, k)]
    pinned = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type in kinds:
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.float32)
            pinned.append(layer.name)
    return pinned


def _weakly_typed_available() -> bool:
    import tensorrt as trt

    return hasattr(trt.BuilderFlag, "FP16")


def _set_precision(config: trt.IBuilderConfig, network: trt.INetworkDefinition, precision: str,
                   keep_fp32: bool, int8_calibrator: Any) -> list[str]:  # fmt: skip
    """Weakly typed precision: builder flags plus fp32 pins."""
    import tensorrt as trt

    if precision == "fp32":
        return []
    flag = {"fp16": "FP16", "bf16": "BF16", "int8": "INT8"}[precision]
    if not hasattr(trt.BuilderFlag, flag):
        raise ValueError(
            f"TensorRT {trt.__version__} has no BuilderFlag.{flag} (weakly typed precision was removed)"
        )
    config.set_flag(getattr(trt.BuilderFlag, flag))
    if precision == "int8":
        if int8_calibrator is None:
            raise ValueError(
                "precision='int8' needs int8_calibrator (a tensorrt.IInt8Calibrator over real images)"
            )
        config.set_flag(trt.BuilderFlag.FP16)  # layers int8 cannot take fall back to fp16, not fp32
        config.int8_calibrator = int8_calibrator
    if not keep_fp32:
        return []
    pinned = _pin_fp32_layers(network)
    if pinned:
        # PREFER: fall back with a warning where a pinned layer has no fp32 kernel, rather than fail.
        config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
    return pinned


def _parse_onnx(network: trt.INetworkDefinition, logger: Any, onnx_path: Path) -> None:
    import tensorrt as trt

    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = []
        for i in range(parser.num_errors):
            err = parser.get_error(i)
            errors.append(f"node {err.node_name()!r} ({err.node_operator()}): {err.desc()}")
        raise ValueError(
            f"TensorRT's ONNX parser rejected {onnx_path}: " + "; ".join(errors or ["(no detail)"])
        )


def _fixed_axes(onnx_file: Path) -> dict[str, Any]:
    """metadata["export"]["fixed_axes"] of a file from `to_onnx` (axes it had to declare fixed, and why)."""
    try:
        from unet_fast.export.onnx import read_metadata

        return dict(read_metadata(onnx_file).get("export", {}).get("fixed_axes") or {})
    except Exception:  # not our file, or no onnx package: nothing to add to the message
        return {}


def _check_network_input(network: trt.INetworkDefinition, profile: Profile,
                         fixed: dict[str, Any] | None = None) -> tuple[str, str]:  # fmt: skip
    if network.num_inputs != 1 or network.num_outputs != 1:
        raise ValueError(f"expected a model with one input and one output, the ONNX graph has "
                         f"{network.num_inputs} inputs and {network.num_outputs} outputs")  # fmt: skip
    inp = network.get_input(0)
    dims = _dims(inp.shape)
    if len(dims) != 4:
        raise ValueError(f"expected a 4-D (N, C, H, W) input, the ONNX input {inp.name!r} has shape {dims}")
    for axis, d in enumerate(dims):
        if d >= 0 and not profile.min[axis] == profile.max[axis] == d:
            name = {0: "batch", 2: "height", 3: "width"}.get(axis, "")
            why = (fixed or {}).get(name)
            hint = (f"; to_onnx declared it fixed because the traced graph is wrong at other sizes "
                    f"({why['failures'][0]}): use a profile with min = opt = max = {d} there"
                    if why and why.get("failures") else "; export with that axis dynamic")  # fmt: skip
            raise ValueError(f"the ONNX input {inp.name!r} has static size {d} on axis {axis} but the profile "
                             f"spans {profile.min[axis]}..{profile.max[axis]}{hint}")  # fmt: skip
    return inp.name, network.get_output(0).name


def _dims(d: trt.Dims) -> tuple[int, ...]:
    return tuple(int(d[i]) for i in range(len(d)))


def _half_copy(onnx_file: Path, engine_path: Path, keep_fp32: bool) -> tuple[Path, list[str]]:
    """An fp16 copy of an fp32 ONNX file for a strongly typed build (a file already fp16 is used as is)."""
    import onnx

    from unet_fast.export.half import KEEP_FP32_OPS, convert_to_half, is_converted

    proto = onnx.load(str(onnx_file))
    if is_converted(proto):
        return onnx_file, []
    pinned = convert_to_half(proto, KEEP_FP32_OPS if keep_fp32 else ())
    out = engine_path.with_suffix(".fp16.onnx")
    onnx.save(proto, str(out))
    return out, pinned


def _device_info() -> tuple[str | None, list[int] | None]:
    if not torch.cuda.is_available():
        return None, None
    return torch.cuda.get_device_name(), list(torch.cuda.get_device_capability())


@dataclass
class TensorRTBuild:
    engine: Path
    info: BuildInfo
    onnx: Path
    timing_cache: Path | None


def to_tensorrt(model_or_onnx: nn.Module | str | PathLike, path: str | PathLike, *,
                example_input: Tensor | None = None, precision: Precision = "fp16",
                min_shape: Sequence[int] | None = None, opt_shape: Sequence[int] | None = None,
                max_shape: Sequence[int] | None = None, workspace: int = 1 << 30,
                timing_cache: str | PathLike | None = None, keep_fp32: bool = True,
                int8_calibrator: Any = None, onnx_path: str | PathLike | None = None,
                strongly_typed: bool | None = None, verbose: bool = False, check_parity: bool = True,
                allow_mismatch: bool = False) -> TensorRTBuild:  # fmt: skip
    """Build a serialized TensorRT engine at `path` and return what was built.

    `model_or_onnx`: an nn.Module (exported first with `to_onnx`, dynamic batch/H/W, to `onnx_path` or
    `<path>.onnx`) or the path of an ONNX file. Shapes: `opt_shape` defaults to `example_input`'s shape,
    `min_shape`/`max_shape` to `opt_shape` (a static profile); any input between min and max then runs.
    `precision`: "fp32" (TF32 allowed), "fp16", "bf16", "int8" (needs `int8_calibrator`); `keep_fp32` pins
    softmax/normalisation/reduce layers to fp32 (on by default: fp16 softmax heads are a known TensorRT
    U-Net accuracy loss). `workspace`: bytes of scratch memory TensorRT may use. `timing_cache`: a file read
    before and written after the build, so rebuilds skip kernel timing. A `<path>.json` sidecar records
    the TensorRT version, GPU and profile; `TensorRTModule` checks them before loading.
    `strongly_typed`: None picks what the installed TensorRT supports (weakly typed where it has the
    precision flags, TensorRT 10; strongly typed otherwise, TensorRT 11); fp16 strongly typed builds from an
    fp16 ONNX graph (written here, `<path>.fp16.onnx` when given an fp32 ONNX file).
    `check_parity` / `allow_mismatch` (model input only): the ONNX export's own onnxruntime check (see
    `to_onnx`); out of tolerance raises ExportParityError naming the size before any engine is built,
    unless `allow_mismatch=True`. The caller's model is not changed.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if workspace < 1:
        raise ValueError(f"workspace must be a positive number of bytes, got {workspace}")
    if opt_shape is None:
        if example_input is None:
            raise ValueError("give opt_shape or example_input (the shape TensorRT tunes for)")
        opt_shape = tuple(example_input.shape)
    profile = Profile(tuple(min_shape or opt_shape), tuple(opt_shape), tuple(max_shape or opt_shape))  # type: ignore[arg-type]
    path = Path(path)
    if not isinstance(model_or_onnx, nn.Module) and not Path(model_or_onnx).is_file():
        raise FileNotFoundError(f"no ONNX file at {model_or_onnx}")
    _require_tensorrt()
    import tensorrt as trt

    typed = (not _weakly_typed_available()) if strongly_typed is None else strongly_typed
    if typed and precision in ("bf16", "int8"):
        raise ValueError(f"precision={precision!r} needs a weakly typed build (TensorRT 10, strongly_typed=False); "
                         f"TensorRT {trt.__version__} strongly typed takes fp32 or fp16 here")  # fmt: skip
    half_graph = typed and precision == "fp16"
    pinned: list[str] = []
    if isinstance(model_or_onnx, nn.Module):
        from unet_fast.export.onnx import to_onnx
        from unet_fast.export.probes import AXIS_INDEX, profile_probe_shapes

        onnx_file = Path(onnx_path) if onnx_path is not None else path.with_suffix(".onnx")
        x = example_input if example_input is not None else torch.randn(profile.opt)
        # Dynamic exactly where the engine will see other sizes, and checked at sizes inside the profile
        # that take other pooling decisions than opt's: a graph the tracer baked for one size fails here,
        # naming the size, before any engine is built (a fixed axis would contradict the profile).
        dynamic = tuple(a for a, i in AXIS_INDEX.items()
                        if not profile.min[i] == profile.max[i] == x.shape[i])  # fmt: skip
        g = torch.Generator().manual_seed(0)
        probes = [torch.randn(s, generator=g, dtype=x.dtype)
                  for s in profile_probe_shapes(profile.min, profile.opt, profile.max)]  # fmt: skip
        exported = to_onnx(model_or_onnx, onnx_file, x, dynamic=dynamic,
                           precision="fp16" if half_graph else "fp32", keep_fp32=keep_fp32,
                           check_parity=check_parity, allow_mismatch=allow_mismatch, parity_tensors=probes,
                           fix_dynamic=False)  # fmt: skip
        pinned = list(exported.metadata["export"]["fp32_nodes"])
    else:
        onnx_file = Path(model_or_onnx)
        if half_graph:
            onnx_file, pinned = _half_copy(onnx_file, path, keep_fp32)

    logger = _make_logger(verbose)
    builder = trt.Builder(logger)
    flags = 0  # TensorRT 10: explicit batch is the only mode, no flag needed
    if typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    _parse_onnx(network, logger, onnx_file)
    input_name, output_name = _check_network_input(network, profile, _fixed_axes(onnx_file))

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace))
    if not typed:
        pinned = _set_precision(config, network, precision, keep_fp32, int8_calibrator)

    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(
        input_name, trt.Dims(list(profile.min)), trt.Dims(list(profile.opt)), trt.Dims(list(profile.max))
    )
    if config.add_optimization_profile(opt_profile) < 0:
        raise ValueError(f"TensorRT rejected the optimization profile {profile}{_logged(logger)}")

    cache_path = Path(timing_cache) if timing_cache is not None else None
    cache_bytes = cache_path.read_bytes() if cache_path is not None and cache_path.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    if not config.set_timing_cache(cache, False):
        raise ValueError(
            f"the timing cache {cache_path} does not match this TensorRT/GPU; delete it to rebuild"
        )

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT could not build an engine from {onnx_file}{_logged(logger)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(serialized))
    if cache_path is not None:
        cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))

    device, capability = _device_info()
    info = BuildInfo(tensorrt=str(trt.__version__), precision=precision, keep_fp32=keep_fp32, strongly_typed=typed,
                     profile={"min": list(profile.min), "opt": list(profile.opt), "max": list(profile.max)},
                     input=input_name, output=output_name, device=device, compute_capability=capability,
                     onnx=str(onnx_file), unet_fast=__import__("unet_fast").__version__, fp32_layers=pinned)  # fmt: skip
    info.write(path)
    return TensorRTBuild(path, info, onnx_file, cache_path)


# ---------------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------------


def _torch_dtype(dtype: trt.DataType) -> torch.dtype:
    import tensorrt as trt

    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.bfloat16: torch.bfloat16,
             trt.int32: torch.int32, trt.int64: torch.int64, trt.int8: torch.int8, trt.uint8: torch.uint8,
             trt.bool: torch.bool}  # fmt: skip
    if dtype not in table:
        raise ValueError(f"engine tensor type {dtype} has no torch equivalent")
    return table[dtype]


def _read_sidecar(engine_path: Path) -> dict[str, Any] | None:
    side = Path(str(engine_path) + SIDECAR_SUFFIX)
    if not side.is_file():
        return None
    try:
        return json.loads(side.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{side} is not valid JSON ({e}); delete it or rebuild the engine") from e


def _check_built_here(engine_path: Path, info: dict[str, Any] | None, trt_version: str) -> None:
    """Refuse, before deserializing, an engine whose sidecar says it was built by another TensorRT or for
    another GPU architecture (TensorRT engines are specific to both)."""
    if info is None:
        return
    built = str(info.get("tensorrt"))
    if built != trt_version:
        raise ValueError(f"{engine_path} was built by TensorRT {built}, this is TensorRT {trt_version}: "
                         "engines are not portable across versions; rebuild it (unet-fast export tensorrt)")  # fmt: skip
    cap = info.get("compute_capability")
    if cap and torch.cuda.is_available() and list(torch.cuda.get_device_capability()) != list(cap):
        raise ValueError(f"{engine_path} was built for compute capability {tuple(cap)} ({info.get('device')}), "
                         f"this GPU is {torch.cuda.get_device_capability()}: rebuild the engine on this GPU")  # fmt: skip


class TensorRTModule(nn.Module):
    """Runs a serialized TensorRT engine (one input, one output) on torch CUDA tensors.

    Any input shape inside the engine's optimization profile runs; one outside it is a ValueError that
    states the profile. The input is cast to the engine's input type and made contiguous; the output is a
    new tensor of the engine's output type on the input's device. Work is enqueued on the current CUDA
    stream. `cuda_graph=True` captures the enqueue once per input shape and replays it (lower launch
    overhead for small batches; it re-captures when the shape changes).
    """

    def __init__(
        self, engine_path: str | PathLike, *, cuda_graph: bool = False, verbose: bool = False
    ) -> None:
        super().__init__()
        path = Path(engine_path)
        if not path.is_file():
            raise FileNotFoundError(f"no TensorRT engine at {path}")
        blob = path.read_bytes()
        if not blob:
            raise ValueError(f"{path} is empty: not a TensorRT engine")
        _require_tensorrt()
        if not torch.cuda.is_available():
            raise TensorRTUnavailable("TensorRTModule needs a CUDA device; torch sees none")
        import tensorrt as trt

        self.engine_path = path
        self.build_info = _read_sidecar(path)
        _check_built_here(path, self.build_info, str(trt.__version__))
        self._logger = _make_logger(verbose)
        self._runtime = trt.Runtime(self._logger)
        engine = self._runtime.deserialize_cuda_engine(blob)
        if engine is None:
            raise ValueError(f"{path} is not a TensorRT engine this TensorRT ({trt.__version__}) can load: "
                             f"corrupt, or built by another version or for another GPU{_logged(self._logger)}")  # fmt: skip
        self._engine = engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(
                f"{path}: expected one input and one output tensor, got inputs {inputs}, outputs {outputs}"
            )
        self.input_name, self.output_name = inputs[0], outputs[0]
        self.input_dtype = _torch_dtype(engine.get_tensor_dtype(self.input_name))
        self.output_dtype = _torch_dtype(engine.get_tensor_dtype(self.output_name))
        lo, opt, hi = (_dims(d) for d in engine.get_tensor_profile_shape(self.input_name, 0))
        self.profile = Profile(lo, opt, hi)  # type: ignore[arg-type]
        context = engine.create_execution_context()
        if context is None:
            raise RuntimeError(
                f"TensorRT could not create an execution context for {path}{_logged(self._logger)}"
            )
        self._context = context
        self.cuda_graph = cuda_graph
        self._graph: Any = None  # (shape, torch.cuda.CUDAGraph, static input, static output)

    def check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or x.dim() != 4:
            raise ValueError(
                f"expected a 4-D (N, C, H, W) tensor, got {getattr(x, 'shape', type(x).__name__)}"
            )
        self.profile.check(x.shape)
        if not x.is_cuda:
            raise ValueError(f"TensorRTModule runs on CUDA tensors; got a tensor on {x.device}")
        if not x.is_floating_point() and x.dtype != self.input_dtype:
            raise ValueError(f"expected a floating-point input, got {x.dtype}")

    def _bind(self, x: Tensor) -> Tensor:
        shape = tuple(x.shape)
        if not self._context.set_input_shape(self.input_name, shape):
            raise ValueError(f"TensorRT rejected input shape {shape}{_logged(self._logger)}")
        out_shape = _dims(self._context.get_tensor_shape(self.output_name))
        if any(d < 0 for d in out_shape):
            raise RuntimeError(f"TensorRT left the output shape unresolved: {out_shape}")
        out = torch.empty(out_shape, dtype=self.output_dtype, device=x.device)
        self._context.set_tensor_address(self.input_name, x.data_ptr())
        self._context.set_tensor_address(self.output_name, out.data_ptr())
        return out

    def _enqueue(self) -> None:
        if not self._context.execute_async_v3(torch.cuda.current_stream().cuda_stream):
            raise RuntimeError(f"TensorRT execute_async_v3 failed{_logged(self._logger)}")

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        with torch.cuda.device(x.device):
            x = x.to(self.input_dtype).contiguous()
            if not self.cuda_graph:
                out = self._bind(x)
                self._enqueue()
                return out
            return self._replay(x)

    def _replay(self, x: Tensor) -> Tensor:
        shape = tuple(x.shape)
        if self._graph is None or self._graph[0] != shape:
            static_in = x.clone()
            static_out = self._bind(static_in)
            self._enqueue()  # one plain run first: TensorRT does its lazy per-shape set-up outside capture
            torch.cuda.current_stream().synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._enqueue()
            self._graph = (shape, graph, static_in, static_out)
        _, graph, static_in, static_out = self._graph
        static_in.copy_(x)
        graph.replay()
        return static_out.clone()

    def extra_repr(self) -> str:
        return (f"engine={str(self.engine_path)!r}, profile=(min {self.profile.min}, max {self.profile.max}), "
                f"in={self.input_dtype}, out={self.output_dtype}, cuda_graph={self.cuda_graph}")  # fmt: skip
