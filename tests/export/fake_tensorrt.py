"""A MOCK of the `tensorrt` Python module: only the surface unet_fast.export.tensorrt uses, recording every
call, so the builder's and the runtime module's control flow (profiles, precision flags, fp32 pinning,
timing cache, error paths) can be tested where TensorRT cannot be installed.

It is not TensorRT: it builds nothing and runs nothing. Its "parser" reads the real ONNX file (with the
onnx package) to learn the input, output and node types; its "engine" is a JSON blob. Names and signatures
follow the TensorRT 10 Python API (and the published type stubs, which the static test checks against).
"""

from __future__ import annotations

import json
import types
from enum import Enum
from typing import ClassVar


class _Enum(Enum):
    def __repr__(self) -> str:
        return f"{type(self).__name__}.{self.name}"

    def __int__(self) -> int:  # pybind11 enums convert to int; `1 << int(flag)` relies on it
        return int(self.value)


class DataType(_Enum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    INT64 = 8
    BF16 = 7


class LayerType(_Enum):
    CONVOLUTION = 0
    SOFTMAX = 6
    REDUCE = 14
    RESIZE = 25
    NORMALIZATION = 45
    OTHER = 99


class TensorIOMode(_Enum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class MemoryPoolType(_Enum):
    WORKSPACE = 0


class NetworkDefinitionCreationFlag(_Enum):
    STRONGLY_TYPED = 1


def make_builder_flag(strongly_typed_only: bool = False) -> type:
    """TensorRT 10's BuilderFlag, or a TensorRT-11-like one without the weak-typing precision flags."""
    names = ["TF32", "PREFER_PRECISION_CONSTRAINTS", "OBEY_PRECISION_CONSTRAINTS"]
    if not strongly_typed_only:
        names += ["FP16", "BF16", "INT8"]
    return _Enum("BuilderFlag", names)


_ONNX_LAYER = {"Cast": LayerType.OTHER, "Conv": LayerType.CONVOLUTION, "ConvTranspose": LayerType.CONVOLUTION, "Softmax": LayerType.SOFTMAX,
               "Resize": LayerType.RESIZE, "ReduceMean": LayerType.REDUCE,
               "InstanceNormalization": LayerType.NORMALIZATION}  # fmt: skip


class Dims(list):
    pass


class ILogger:
    class Severity(_Enum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    def __init__(self) -> None:
        pass


class Tensor:
    def __init__(self, name: str, shape: list[int], dtype: DataType = DataType.FLOAT) -> None:
        self.name, self.shape, self.dtype = name, Dims(shape), dtype


class Layer:
    def __init__(self, name: str, type_: LayerType) -> None:
        self.name, self.type, self.num_outputs = name, type_, 1
        self.precision: DataType | None = None
        self.output_types: dict[int, DataType] = {}

    def set_output_type(self, index: int, dtype: DataType) -> None:
        self.output_types[index] = dtype


class Network:
    def __init__(self, flags: int) -> None:
        self.flags = flags
        self.inputs: list[Tensor] = []
        self.outputs: list[Tensor] = []
        self.layers: list[Layer] = []

    num_inputs = property(lambda self: len(self.inputs))
    num_outputs = property(lambda self: len(self.outputs))
    num_layers = property(lambda self: len(self.layers))

    def get_input(self, i: int) -> Tensor:
        return self.inputs[i]

    def get_output(self, i: int) -> Tensor:
        return self.outputs[i]

    def get_layer(self, i: int) -> Layer:
        return self.layers[i]


class ParserError:
    def __init__(self, node: str, op: str, desc: str) -> None:
        self._node, self._op, self._desc = node, op, desc

    def node_name(self) -> str:
        return self._node

    def node_operator(self) -> str:
        return self._op

    def desc(self) -> str:
        return self._desc


def _onnx_dtype(elem_type: int) -> DataType:
    return {1: DataType.FLOAT, 10: DataType.HALF, 6: DataType.INT32, 7: DataType.INT64}[elem_type]


class OnnxParser:
    reject_ops: ClassVar[set[str]] = set()  # the test sets the ONNX op types this "parser" refuses

    def __init__(self, network: Network, logger: ILogger) -> None:
        self.network, self.errors = network, []

    def parse_from_file(self, path: str) -> bool:
        import onnx

        graph = onnx.load(path).graph

        def shape(v) -> list[int]:
            return [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]

        for node in graph.node:
            if node.op_type in self.reject_ops:
                self.errors.append(ParserError(node.name, node.op_type, "mock: unsupported"))
            self.network.layers.append(Layer(node.name, _ONNX_LAYER.get(node.op_type, LayerType.OTHER)))
        self.network.initializer_types = {t.data_type for t in graph.initializer}
        self.network.inputs = [
            Tensor(v.name, shape(v), _onnx_dtype(v.type.tensor_type.elem_type)) for v in graph.input
        ]
        self.network.outputs = [
            Tensor(v.name, shape(v), _onnx_dtype(v.type.tensor_type.elem_type)) for v in graph.output
        ]
        return not self.errors

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, i: int) -> ParserError:
        return self.errors[i]


class OptimizationProfile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple[Dims, Dims, Dims]] = {}

    def set_shape(self, name: str, min: Dims, opt: Dims, max: Dims) -> None:
        self.shapes[name] = (min, opt, max)


class TimingCache:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def serialize(self) -> bytes:
        return self.data + b"|timed"


class BuilderConfig:
    def __init__(self, module: types.ModuleType) -> None:
        self._m = module
        self.flags: set = set()
        self.pools: dict = {}
        self.profiles: list[OptimizationProfile] = []
        self.cache: TimingCache | None = None
        self.cache_inputs: list[bytes] = []
        self.int8_calibrator = None

    def set_flag(self, flag) -> None:
        self.flags.add(flag.name)

    def set_memory_pool_limit(self, pool: MemoryPoolType, size: int) -> None:
        self.pools[pool] = size

    def add_optimization_profile(self, profile: OptimizationProfile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, data: bytes) -> TimingCache:
        self.cache_inputs.append(bytes(data))
        return TimingCache(bytes(data))

    def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
        self.cache = cache
        return not self._m.reject_timing_cache

    def get_timing_cache(self) -> TimingCache:
        assert self.cache is not None
        return self.cache


class Builder:
    def __init__(self, logger: ILogger) -> None:
        self.logger = logger

    def create_network(self, flags: int = 0) -> Network:
        return Network(flags)

    def create_builder_config(self) -> BuilderConfig:
        config = BuilderConfig(_module())
        _module().last_config = config
        return config

    def create_optimization_profile(self) -> OptimizationProfile:
        return OptimizationProfile()

    def build_serialized_network(self, network: Network, config: BuilderConfig) -> bytes | None:
        m = _module()
        m.last_network = network
        if m.fail_build:
            self.logger.log(ILogger.Severity.ERROR, "mock: no implementation for layer /head/Conv")
            return None
        (profile,) = config.profiles
        (name,) = profile.shapes
        lo, opt, hi = profile.shapes[name]
        return b"MOCKENGINE" + json.dumps({"input": name, "output": network.outputs[0].name,
                                          "in_dtype": network.inputs[0].dtype.name,
                                          "out_dtype": network.outputs[0].dtype.name,
                                          "profile": [list(lo), list(opt), list(hi)]}).encode()  # fmt: skip


class ExecutionContext:
    def __init__(self, engine: Engine) -> None:
        self.engine, self.shapes, self.addresses, self.enqueued = engine, {}, {}, []

    def set_input_shape(self, name: str, shape) -> bool:
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> Dims:
        n, _, h, w = self.shapes[self.engine.spec["input"]]
        return Dims([n, 3, h, w])  # the mock's "network" maps (N, C, H, W) -> (N, 3, H, W)

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream: int) -> bool:
        self.enqueued.append(stream)
        return True


class Engine:
    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.names = [spec["input"], spec["output"]]

    num_io_tensors = property(lambda self: 2)

    def get_tensor_name(self, i: int) -> str:
        return self.names[i]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return TensorIOMode.INPUT if name == self.spec["input"] else TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name: str) -> DataType:
        return DataType[self.spec["in_dtype" if name == self.spec["input"] else "out_dtype"]]

    def get_tensor_profile_shape(self, name: str, profile: int) -> list[Dims]:
        return [Dims(s) for s in self.spec["profile"]]

    def create_execution_context(self) -> ExecutionContext:
        return ExecutionContext(self)


class Runtime:
    def __init__(self, logger: ILogger) -> None:
        self.logger = logger

    def deserialize_cuda_engine(self, blob: bytes) -> Engine | None:
        _module().deserialized += 1
        if not bytes(blob).startswith(b"MOCKENGINE"):
            self.logger.log(
                ILogger.Severity.ERROR, "mock: Serialization assertion magicTagRead == kMAGIC_TAG failed"
            )
            return None
        return Engine(json.loads(bytes(blob)[len(b"MOCKENGINE") :]))


_current: types.ModuleType | None = None


def _module() -> types.ModuleType:
    assert _current is not None
    return _current


def make_fake_tensorrt(version: str = "10.13.0.35", strongly_typed_only: bool = False) -> types.ModuleType:
    """A fresh mock `tensorrt` module; install it with monkeypatch.setitem(sys.modules, "tensorrt", m)."""
    global _current
    m = types.ModuleType("tensorrt")
    m.__version__ = version
    for obj in (
        DataType,
        LayerType,
        TensorIOMode,
        NetworkDefinitionCreationFlag,
        MemoryPoolType,
        Dims,
        ILogger,
        OnnxParser,
        Builder,
        Runtime,
    ):
        setattr(m, obj.__name__, obj)
    m.BuilderFlag = make_builder_flag(strongly_typed_only)
    m.float32, m.float16, m.bfloat16 = DataType.FLOAT, DataType.HALF, DataType.BF16
    m.int32, m.int64, m.int8, m.uint8, m.bool = (
        DataType.INT32,
        DataType.INT64,
        DataType.INT8,
        DataType.UINT8,
        DataType.BOOL,
    )
    m.fail_build = False
    m.reject_timing_cache = False
    m.deserialized = 0
    m.last_config = None
    m.last_network = None
    OnnxParser.reject_ops = set()
    _current = m
    return m
