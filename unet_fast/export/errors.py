"""The exceptions of the export paths (a leaf module: onnx.py, half.py and tensorrt.py all raise them).

- `ValueError`: bad input (a model or example the export cannot take, an option out of range, a layer ONNX
  cannot express); nothing is written.
- `ExportError`: the export could not produce a valid file from a valid model (torch's exporter failed, the
  fp16 rewrite or `onnx.checker` rejected the graph). The message names the step and the node; the
  third-party exception is chained as `__cause__`. Nothing is written.
- `ExportParityError` (an `ExportError`): the file was produced but does not compute what the model computes
  at some input size (the export's own onnxruntime check); the message names each size and its error.
"""

from __future__ import annotations


class ExportError(RuntimeError):
    """The export could not produce a valid ONNX file or engine from the model (see the message and
    `__cause__`); no file was left at the destination."""


class ExportParityError(ExportError):
    """The exported file does not compute what the model computes (the export's own parity check)."""


class DynamicAxesFixedWarning(UserWarning):
    """`to_onnx` exported an axis the caller asked to be dynamic with a fixed size, because the traced graph
    does not compute what the model computes at other sizes (the message says where and why)."""
