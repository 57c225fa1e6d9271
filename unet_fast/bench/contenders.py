"""The contenders of shared/BENCHMARKING.md, each behind one interface.

A contender has a `check(settings)` that returns "" when it can run here (or the reason it cannot, with
the fix), and a `prepare(model, x, settings)` that does the one-time work (copy, export, compile, build)
and returns a `Prepared`: a zero-argument `run()` that performs one forward pass on the prepared input and
returns the output. Every contender gets the same fp32 model and the same input; each one casts to the
benchmark dtype and moves to the device itself, outside the timed call. Threads are set explicitly and
identically for all: torch.set_num_threads, ORT intra_op_num_threads, OpenVINO INFERENCE_NUM_THREADS.

A row says the precision it computed in (`Prepared.precision`), which is not always the run's dtype: in a
bfloat16 run ONNX Runtime and OpenVINO pinned to f32 stay fp32 reference rows (ORT has no bf16 convolution
on CPU), and OpenVINO at its default precision reports what its CPU plugin picked (bf16 on CPUs with
AVX512-BF16 or AMX, f32 elsewhere)."""

from __future__ import annotations

import copy
import importlib.util
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

INSTALL_HINT = 'pip install -e ".[bench]"'


@dataclass(frozen=True)
class Settings:
    device: str  # "cpu" | "cuda"
    dtype: torch.dtype
    threads: int
    workdir: Path  # scratch space for exported files (one per workload run)


@dataclass
class Prepared:
    run: Callable[[], object]  # one forward pass; returns the output (Tensor or numpy array)
    setup_s: float  # copy + export + compile/build + first call, measured once
    note: str = ""
    graphable: bool = False  # the call may be captured into a CUDA graph
    report: str = ""  # the contender's own description of what it ran (unet_fast's optimize report)
    precision: str = ""  # what the row computed in ("fp32" | "bf16" | "fp16"); "" = the run's dtype


@dataclass(frozen=True)
class Contender:
    name: str
    description: str
    family: str  # "peer" | "unet_fast"
    check: Callable[[Settings], str]
    prepare: Callable[[nn.Module, Tensor, Settings], Prepared]
    # The run dtypes whose default selection (no --contenders) includes this contender; None: every dtype.
    # Named explicitly it runs at any dtype its check() accepts.
    default_dtypes: tuple[torch.dtype, ...] | None = None

    def in_default(self, dtype: torch.dtype) -> bool:
        return self.default_dtypes is None or dtype in self.default_dtypes


DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}
# Short names for the precision a row computed in (the table's precision column).
PRECISION_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
PRECISION_DTYPES = {v: k for k, v in PRECISION_NAMES.items()}
# OpenVINO's element type names (ov.Type.get_type_name()) for the precisions above.
_OPENVINO_PRECISIONS = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}


def precision_name(dtype: torch.dtype) -> str:
    """'fp32' | 'fp16' | 'bf16' for a benchmark dtype (ValueError for any other)."""
    try:
        return PRECISION_NAMES[dtype]
    except KeyError:
        choices = ", ".join(DTYPE_NAMES.values())
        raise ValueError(f"dtype {dtype} is not benchmarked; choose from {choices}") from None


def openvino_precision(type_name: str) -> str:
    """The table's precision name for an OpenVINO element type name ('f32' -> 'fp32', 'bf16' -> 'bf16',
    'f16' -> 'fp16'); any other name is returned as OpenVINO spells it, so the row still says the truth."""
    return _OPENVINO_PRECISIONS.get(type_name, type_name)


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _to_device(model: nn.Module, x: Tensor, s: Settings) -> tuple[nn.Module, Tensor]:
    m = copy.deepcopy(model).to(device=s.device, dtype=s.dtype).eval()
    return m, x.to(device=s.device, dtype=s.dtype)


def _sync(s: Settings) -> None:
    if s.device == "cuda":
        torch.cuda.synchronize()


def _first_call(run: Callable[[], object], s: Settings, t0: float) -> float:
    """Run once (this is where lazy compilers do their work) and return seconds since t0."""
    with torch.inference_mode():
        run()
    _sync(s)
    return time.perf_counter() - t0


# --- PyTorch eager --------------------------------------------------------------------------------


def _check_any(s: Settings) -> str:
    return ""


def _prepare_eager(channels_last: bool) -> Callable[[nn.Module, Tensor, Settings], Prepared]:
    def prepare(model: nn.Module, x: Tensor, s: Settings) -> Prepared:
        t0 = time.perf_counter()
        m, xs = _to_device(model, x, s)
        if channels_last:
            m = m.to(memory_format=torch.channels_last)
            xs = xs.contiguous(memory_format=torch.channels_last)  # the caller hands channels_last input

        def run() -> Tensor:
            return m(xs)

        note = "cuDNN may use TF32 for fp32 convs (PyTorch default)" if s.device == "cuda" else ""
        return Prepared(run, _first_call(run, s, t0), note, graphable=True)

    return prepare


# --- torch.compile (Inductor, freezing) -----------------------------------------------------------


def _check_compile(s: Settings) -> str:
    import shutil

    if s.device == "cpu" and not (shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")):
        return "torch.compile on CPU needs a C++ compiler (g++/clang++) on PATH"
    if s.device == "cuda" and not _installed("triton"):
        return 'torch.compile on CUDA needs triton (pip install -e ".[gpu]")'
    return ""


def _prepare_compile(model: nn.Module, x: Tensor, s: Settings) -> Prepared:
    import torch._inductor.config as inductor_config

    t0 = time.perf_counter()
    m, xs = _to_device(model, x, s)
    # bf16 on CPU: channels_last model and input, the layout oneDNN's bf16 convolutions run in (the bf16
    # peer of BENCHMARKING.md); the fp32 row stays as it was recorded (NCHW in, Inductor picks layouts)
    channels_last = s.dtype == torch.bfloat16 and s.device == "cpu"
    if channels_last:
        m = m.to(memory_format=torch.channels_last)
        xs = xs.contiguous(memory_format=torch.channels_last)
    compiled = torch.compile(m)

    def run() -> Tensor:
        return compiled(xs)

    # freezing constant-folds the (frozen) weights, BN included, and lets Inductor pick weight layouts; it
    # applies at compile time, which happens on the first call, under inference_mode. patch() sets the flag
    # for that call only and restores the caller's value after it.
    with inductor_config.patch(freezing=True):
        setup = _first_call(run, s, t0)
    how = "freezing, channels_last" if channels_last else "freezing"
    return Prepared(run, setup, f"compile {setup:.0f} s ({how})", graphable=True)


# --- ONNX export shared by ONNX Runtime, OpenVINO and TensorRT ------------------------------------


def onnx_file(model: nn.Module, x: Tensor, s: Settings) -> tuple[Path, str]:
    """Export the fp32 model once per workload run (cached in the workdir); returns (path, how)."""
    path = s.workdir / "model.onnx"
    how_file = s.workdir / "model.onnx.how"
    if path.exists():
        return path, how_file.read_text() if how_file.exists() else ""
    s.workdir.mkdir(parents=True, exist_ok=True)
    m = copy.deepcopy(model).float().eval()
    xin = x.float()
    try:
        from unet_fast.export import to_onnx  # the project's exporter (BN folded, static shapes here)

        to_onnx(m, path, xin, dynamic=(), check_parity=False)
        how = "unet_fast.export.to_onnx (static shape)"
    except Exception as e:  # not in this checkout, or it refused the model: export directly
        why = "absent" if isinstance(e, ImportError | AttributeError) else f"failed: {type(e).__name__}"
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings about the model's own shape checks
            torch.onnx.export(m, (xin,), str(path), dynamo=False, opset_version=17,
                              input_names=["input"], output_names=["output"])  # fmt: skip
        how = f"torch.onnx.export(dynamo=False, opset 17); unet_fast.export.to_onnx {why}"
    how_file.write_text(how)
    return path, how


# --- ONNX Runtime ---------------------------------------------------------------------------------


def _check_ort(s: Settings) -> str:
    if not _installed("onnxruntime") or not _installed("onnx"):
        return f"onnxruntime/onnx are not installed ({INSTALL_HINT})"
    if s.dtype == torch.float16 or (s.dtype == torch.bfloat16 and s.device != "cpu"):
        return "benchmarked at float32 only (an fp16 ONNX graph is a different model to export)"
    if s.device == "cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return "no CUDAExecutionProvider (install onnxruntime-gpu)"
    return ""


def _prepare_ort(model: nn.Module, x: Tensor, s: Settings) -> Prepared:
    import onnxruntime as ort

    t0 = time.perf_counter()
    path, how = onnx_file(model, x, s)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = s.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    providers = ["CUDAExecutionProvider"] if s.device == "cuda" else ["CPUExecutionProvider"]
    sess = ort.InferenceSession(str(path), so, providers=providers)
    name = sess.get_inputs()[0].name
    feed = {name: x.float().contiguous().numpy()}

    def run() -> object:
        return sess.run(None, feed)[0]

    note = f"all graph optimizations; {how}"
    if s.dtype != torch.float32:  # a bf16 run keeps ORT as an fp32 reference row: say so in the row
        note = f"fp32 reference row (ONNX Runtime has no bf16 convolution on CPU); {note}"
    return Prepared(run, _first_call(run, s, t0), note, precision="fp32")


# --- OpenVINO -------------------------------------------------------------------------------------


def _check_openvino(s: Settings) -> str:
    if not _installed("openvino"):
        return f"openvino is not installed ({INSTALL_HINT})"
    if s.device != "cpu":
        return "benchmarked on CPU only"
    if s.dtype == torch.float16:
        return "benchmarked at float32 (pinned f32) and bfloat16 (its default precision) only"
    return ""


def _prepare_openvino(pinned_f32: bool) -> Callable[[nn.Module, Tensor, Settings], Prepared]:
    """OpenVINO's CPU plugin on the shared ONNX file, fp32 in and out. pinned_f32: INFERENCE_PRECISION_HINT
    f32 (an fp32 row); else no hint, so the plugin runs at its default precision, which is bf16 on CPUs with
    AVX512-BF16 or AMX. Either way the row's precision is what the compiled model reports it runs at."""

    def prepare(model: nn.Module, x: Tensor, s: Settings) -> Prepared:
        import openvino as ov

        t0 = time.perf_counter()
        path, how = onnx_file(model, x, s)
        core = ov.Core()
        config: dict[str, object] = {"INFERENCE_NUM_THREADS": s.threads, "PERFORMANCE_HINT": "LATENCY"}
        if pinned_f32:
            config["INFERENCE_PRECISION_HINT"] = "f32"
        compiled = core.compile_model(ov.convert_model(str(path)), "CPU", config)
        ran = compiled.get_property("INFERENCE_PRECISION_HINT")  # an ov.Type: what the plugin resolved
        ran_name = ran.get_type_name() if hasattr(ran, "get_type_name") else str(ran)
        request = compiled.create_infer_request()
        feed = {0: x.float().contiguous().numpy()}
        output = compiled.output(0)

        def run() -> object:
            return request.infer(feed)[output]

        if pinned_f32:
            note = ("CPU plugin, f32 precision" if ran_name == "f32"
                    else f"CPU plugin, pinned f32 but it reports {ran_name}")  # fmt: skip
        else:
            note = f"OpenVINO CPU (default: {ran_name})"
        precision = openvino_precision(ran_name)
        return Prepared(run, _first_call(run, s, t0), f"{note}; {how}", precision=precision)

    return prepare


# --- TensorRT (GPU, where installed) ---------------------------------------------------------------


def _check_tensorrt(s: Settings) -> str:
    if s.device != "cuda":
        return "GPU only"
    if not _installed("tensorrt"):
        return 'tensorrt is not installed (pip install -e ".[tensorrt]")'
    return ""


def _prepare_tensorrt(model: nn.Module, x: Tensor, s: Settings) -> Prepared:
    """ONNX -> TensorRT 10 engine; fp16/bf16 via builder flags (I/O stays fp32). Untested without a GPU."""
    import tensorrt as trt

    t0 = time.perf_counter()
    path, how = onnx_file(model, x, s)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse the ONNX file: {errors}")
    config = builder.create_builder_config()
    if s.dtype == torch.float16:
        config.set_flag(trt.BuilderFlag.FP16)
    elif s.dtype == torch.bfloat16:
        config.set_flag(trt.BuilderFlag.BF16)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT failed to build an engine (see its log above)")
    engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    in_name = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
    out_name = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
    x_dev = x.float().contiguous().cuda()
    out = torch.empty(tuple(engine.get_tensor_shape(out_name)), device="cuda", dtype=torch.float32)
    context.set_tensor_address(in_name, x_dev.data_ptr())
    context.set_tensor_address(out_name, out.data_ptr())

    def run() -> Tensor:
        context.execute_async_v3(torch.cuda.current_stream().cuda_stream)
        return out

    return Prepared(run, _first_call(run, s, t0), f"TensorRT {trt.__version__}; {how}", graphable=True)


# --- unet_fast backends ---------------------------------------------------------------------------

UNET_FAST_BACKENDS = ("torch", "cpu", "triton", "cuda")
_BACKEND_DEVICE = {"torch": None, "cpu": "cpu", "triton": "cuda", "cuda": "cuda"}


def unet_fast_backend_reason(backend: str, s: Settings) -> str:
    import unet_fast

    if not callable(getattr(unet_fast, "optimize", None)):
        return "unet_fast.optimize is not available yet (the engine has not landed in this checkout)"
    want = _BACKEND_DEVICE[backend]
    if want is not None and want != s.device:
        return f"runs on {want}; this run is on {s.device}"
    from unet_fast.info import collect

    status = collect()["backends"].get(backend)
    if status is None:
        return f"backend {backend!r} is not listed by unet_fast.info"
    if not status["usable"]:
        return status["why"] or "not usable here"
    if backend == "triton" and not torch.cuda.is_available():
        return "Triton runs only in the interpreter here (no GPU): correct but not a speed contender"
    try:  # a dtype the backend does not support is a reason to skip, not a failure
        from unet_fast.backends import BACKENDS

        supported = BACKENDS[backend].supported_dtypes()
    except Exception:  # engine internals moved: let optimize() decide and report
        return ""
    if s.dtype not in supported:
        return f"supports {', '.join(DTYPE_NAMES.get(d, str(d)) for d in supported)} only"
    return ""


def _prepare_unet_fast(backend: str) -> Callable[[nn.Module, Tensor, Settings], Prepared]:
    def prepare(model: nn.Module, x: Tensor, s: Settings) -> Prepared:
        import unet_fast

        t0 = time.perf_counter()
        # bf16 on CPU takes the fp32 input and returns fp32 (casting at its boundary, as OpenVINO's default
        # precision does); elsewhere the input is in the benchmark dtype, as the other contenders get it
        fp32_io = s.device == "cpu" and s.dtype == torch.bfloat16
        xs = x.to(device=s.device, dtype=torch.float32 if fp32_io else s.dtype)
        # the engine captures from a CPU copy of the fp32 model and runs where the example input lives; on
        # CUDA it replays its own CUDA graphs (the runner does not wrap it in a second one)
        graphs = {"cuda_graphs": True} if s.device == "cuda" else {}
        fast = unet_fast.optimize(
            copy.deepcopy(model).float().eval(), xs, backend=backend, dtype=s.dtype, **graphs
        )

        def run() -> Tensor:
            return fast(xs)

        report, data = "", None
        if callable(getattr(fast, "report_data", None)):
            try:
                data = fast.report_data()
                report = str(data)
            except Exception as e:  # the report is informative only
                report = f"report() failed: {type(e).__name__}: {e}"
        notes = ["engine CUDA graphs"] if graphs else []
        if fp32_io:
            notes += ["fp32 in/out", *_bf16_summary(data)]
        if data is not None and any(st.fallback for st in data.steps):  # in the table, not only in the JSON
            notes.append("some steps fall back to PyTorch (see the report in the JSON)")
        note = "; ".join(notes)
        return Prepared(run, _first_call(run, s, t0), note, report=report)

    return prepare


def _check_unet_fast_cpu_fp32(s: Settings) -> str:
    if s.dtype == torch.float32:
        return "the same as unet_fast-cpu in an fp32 run"
    return unet_fast_backend_reason("cpu", Settings(s.device, torch.float32, s.threads, s.workdir))


def _prepare_unet_fast_cpu_fp32(model: nn.Module, x: Tensor, s: Settings) -> Prepared:
    """Our cpu backend at fp32 in a bf16 run: the row that says whether asking for bf16 pays on this CPU
    (without a matrix engine, fp32 Winograd can beat every bf16 direct convolution)."""
    p = _prepare_unet_fast("cpu")(model, x.float(), Settings(s.device, torch.float32, s.threads, s.workdir))
    return Prepared(p.run, p.setup_s, "fp32 reference row (our own fp32 engine)", report=p.report,
                    precision="fp32")  # fmt: skip


def _bf16_summary(data: Any) -> list[str]:
    """From optimize's report data (its step records): which kernels ran, one entry per kernel with its step
    count (e.g. '10 convs by Winograd F(4x4,3x3) on bf16, fp32 compute, avx512', '7 convs by bf16 tiles
    (portable)': the emulator, not AMX), and how many steps ran on the bf16 torch reference; [] without data."""
    if data is None:
        return []
    ours = [st for st in data.steps if st.backend != "torch"]
    out = []
    for label in dict.fromkeys(st.label for st in ours):
        of = [st for st in ours if st.label == label]
        what = "convs" if {st.kind for st in of} <= {"Conv", "ConvTranspose2x2"} else "steps"
        out.append(f"{len(of)} {what} by {label}")
    refs = sum(st.reference for st in data.steps)
    if refs:
        out.append(f"{refs} steps on the torch reference")
    return out


def _unet_fast_contender(backend: str) -> Contender:
    return Contender(f"unet_fast-{backend}", f"unet_fast.optimize(backend={backend!r})", "unet_fast",
                     lambda s: unet_fast_backend_reason(backend, s), _prepare_unet_fast(backend))  # fmt: skip


def _peer(module: str, attr: str, *args: object) -> Callable:
    """A function of a peer's own module (unet_fast.bench.peers_mnn / peers_ncnn), imported on first call:
    those modules import this one, and an engine that is not installed costs nothing until it is asked."""

    def call(*call_args: object) -> object:
        fn = getattr(importlib.import_module(f"unet_fast.bench.{module}"), attr)
        return (fn(*args) if args else fn)(*call_args)

    return call


CONTENDERS: dict[str, Contender] = {
    c.name: c
    for c in [
        Contender("eager", "PyTorch eager, NCHW (the reference's own speed)", "peer", _check_any,
                  _prepare_eager(False)),
        Contender("eager-cl", "PyTorch eager, channels_last", "peer", _check_any, _prepare_eager(True)),
        Contender("compile", "torch.compile (Inductor, freezing, inference_mode)", "peer", _check_compile,
                  _prepare_compile),
        Contender("onnxruntime", "ONNX Runtime, all graph optimizations", "peer", _check_ort, _prepare_ort),
        Contender("openvino", "OpenVINO CPU plugin, pinned f32", "peer", _check_openvino, _prepare_openvino(True)),
        Contender("openvino-default", "OpenVINO CPU plugin at its default precision (bf16 where the CPU has it)",
                  "peer", _check_openvino, _prepare_openvino(False), default_dtypes=(torch.bfloat16,)),
        Contender("tensorrt", "TensorRT engine from ONNX", "peer", _check_tensorrt, _prepare_tensorrt),
        Contender("mnn", "MNN, Session API, precision=high (fp32), converted in-process from ONNX", "peer",
                  _peer("peers_mnn", "check"), _peer("peers_mnn", "prepare", "high"), default_dtypes=(torch.float32,)),
        Contender("mnn-normal", "MNN, Session API, precision=normal (fp32 on x86)", "peer",
                  _peer("peers_mnn", "check"), _peer("peers_mnn", "prepare", "normal"), default_dtypes=(torch.float32,)),
        Contender("ncnn", "ncnn via pnnx from ONNX, Winograd + sgemm on, fp16/bf16/int8 off", "peer",
                  _peer("peers_ncnn", "check"), _peer("peers_ncnn", "prepare"), default_dtypes=(torch.float32,)),
        *[_unet_fast_contender(b) for b in UNET_FAST_BACKENDS],
        Contender("unet_fast-cpu-fp32", "unet_fast.optimize(backend='cpu') at fp32, a reference row in bf16 runs",
                  "unet_fast", _check_unet_fast_cpu_fp32, _prepare_unet_fast_cpu_fp32,
                  default_dtypes=(torch.bfloat16, torch.float16)),
    ]
}  # fmt: skip


def get_contender(name: str) -> Contender:
    try:
        return CONTENDERS[name]
    except KeyError:
        raise ValueError(f"unknown contender {name!r}; choose from {', '.join(CONTENDERS)}") from None
