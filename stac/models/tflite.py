"""A TFLite graph as a torch module, for the small op set of MediaPipe's segmentation models.

tflite2onnx cannot read these files (HARD_SWISH, fp16 weights behind DEQUANTIZE, MediaPipe's custom
Convolution2DTransposeBias), so we parse the flatbuffer with the `tflite` package and run its operators
in order. Tensors are NCHW inside the module; the file's NHWC shapes only fix kernel layouts.
Weights become buffers, not parameters: the STAC head differentiates with respect to its input only.

Sizes are not baked in: SAME padding is computed from the actual input and RESIZE_BILINEAR scales by
the factor the file was built with, so the network runs at any input size that is a multiple of its
total stride.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .resize import resize


class TfliteError(ValueError):
    """The file is not a TFLite model this converter understands."""


@dataclass
class _Op:
    kind: str
    inputs: list[int]
    outputs: list[int]
    options: dict


def _builtin_names() -> dict[int, str]:
    import tflite

    return {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}


def _padding(code: int) -> str:
    import tflite

    return "SAME" if code == tflite.Padding.SAME else "VALID"


def _options(op, kind: str) -> dict:
    import tflite

    raw = op.BuiltinOptions()
    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        o = tflite.Conv2DOptions() if kind == "CONV_2D" else tflite.DepthwiseConv2DOptions()
        o.Init(raw.Bytes, raw.Pos)
        return {"padding": _padding(o.Padding()), "stride": (o.StrideH(), o.StrideW()),
                "dilation": (o.DilationHFactor(), o.DilationWFactor()), "act": o.FusedActivationFunction()}
    if kind in ("ADD", "MUL"):
        o = tflite.AddOptions() if kind == "ADD" else tflite.MulOptions()
        o.Init(raw.Bytes, raw.Pos)
        return {"act": o.FusedActivationFunction()}
    if kind == "MEAN":
        o = tflite.ReducerOptions()
        o.Init(raw.Bytes, raw.Pos)
        return {"keep_dims": bool(o.KeepDims())}
    if kind == "AVERAGE_POOL_2D":
        o = tflite.Pool2DOptions()
        o.Init(raw.Bytes, raw.Pos)
        return {"filter": (o.FilterHeight(), o.FilterWidth()), "padding": _padding(o.Padding()),
                "act": o.FusedActivationFunction()}
    if kind == "RESIZE_BILINEAR":
        o = tflite.ResizeBilinearOptions()
        o.Init(raw.Bytes, raw.Pos)
        if o.AlignCorners() or not o.HalfPixelCenters():
            raise TfliteError("RESIZE_BILINEAR: only half_pixel_centers=True, align_corners=False is supported")
        return {}
    if kind == "Convolution2DTransposeBias":
        # MediaPipe's custom options: int32 {padding (TfLitePadding: 1 SAME, 2 VALID), stride_w, stride_h}
        padding, stride_w, stride_h = op.CustomOptionsAsNumpy().view(np.int32)[:3]
        return {"padding": "SAME" if padding == 1 else "VALID", "stride": (int(stride_h), int(stride_w))}
    return {}


SUPPORTED = {"ADD", "AVERAGE_POOL_2D", "CONV_2D", "DEPTHWISE_CONV_2D", "Convolution2DTransposeBias", "DEQUANTIZE", "HARD_SWISH",
             "LOGISTIC", "MEAN", "MUL", "RELU", "RESIZE_BILINEAR"}


def _same_pad(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's SAME padding: any odd pixel goes after, not before (unlike torch's symmetric padding)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _activation(x: torch.Tensor, code: int) -> torch.Tensor:
    if code == 0:
        return x
    if code == 1:
        return F.relu(x)
    if code == 3:
        return torch.clamp(x, 0.0, 6.0)
    raise TfliteError(f"fused activation {code} is not supported")


class TfliteNet(torch.nn.Module):
    """forward(x float32 [N, C, H, W]) -> the graph's output, NCHW.

    With ``drop_final_logistic`` the last LOGISTIC is skipped, so the module returns logits.
    """

    def __init__(self, data: bytes, *, drop_final_logistic: bool = False):
        super().__init__()
        import tflite

        if len(data) < 8 or data[4:8] != b"TFL3":
            raise TfliteError("not a TFLite model (no TFL3 file identifier)")
        model = tflite.Model.GetRootAsModel(data, 0)
        if model.SubgraphsLength() != 1:
            raise TfliteError(f"expected one subgraph, found {model.SubgraphsLength()}")
        graph = model.Subgraphs(0)
        names = _builtin_names()
        self.ops: list[_Op] = []
        self.shapes: dict[int, tuple[int, ...]] = {}
        self.ints: dict[int, list[int]] = {}
        for i in range(graph.OperatorsLength()):
            op = graph.Operators(i)
            code = model.OperatorCodes(op.OpcodeIndex())
            kind = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")
            if kind == "CUSTOM":
                kind = code.CustomCode().decode()
            if kind not in SUPPORTED:
                raise TfliteError(f"operator {kind} (op {i}) is not supported")
            self.ops.append(_Op(kind, [int(t) for t in op.InputsAsNumpy()], [int(t) for t in op.OutputsAsNumpy()],
                                _options(op, kind)))
        for t in range(graph.TensorsLength()):
            tensor = graph.Tensors(t)
            self.shapes[t] = tuple(int(s) for s in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
            buf = model.Buffers(tensor.Buffer()).DataAsNumpy() if tensor.Buffer() else 0
            if isinstance(buf, np.ndarray) and buf.size:
                dtype = {tflite.TensorType.FLOAT32: np.float32, tflite.TensorType.FLOAT16: np.float16,
                         tflite.TensorType.INT32: np.int32}.get(tensor.Type())
                if dtype is None:
                    raise TfliteError(f"tensor {t} has unsupported constant type {tensor.Type()}")
                if dtype == np.int32:  # shapes and axes: plain ints, so they stay static under torch.export
                    self.ints[t] = buf.view(np.int32).tolist()
                else:
                    self.register_buffer(f"t{t}", torch.from_numpy(
                        buf.view(dtype).astype(np.float32).reshape(self.shapes[t])))
        self.input = int(graph.InputsAsNumpy()[0])
        self.output = int(graph.OutputsAsNumpy()[0])
        if drop_final_logistic:
            last = self.ops[-1]
            if last.kind != "LOGISTIC" or last.outputs[0] != self.output:
                raise TfliteError("the graph does not end in LOGISTIC")
            self.ops.pop()
            self.output = last.inputs[0]
        for op in self.ops:
            if op.kind == "AVERAGE_POOL_2D" and (op.options["padding"] != "VALID" or
                                                  op.options["filter"] != self.shapes[op.inputs[0]][1:3]):
                raise TfliteError("AVERAGE_POOL_2D: only global pooling (VALID, filter = input) is supported")

    def _const(self, t: int) -> torch.Tensor:
        return getattr(self, f"t{t}")

    def _conv(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, options: dict, groups: int):
        kh, kw = weight.shape[-2:]
        (sh, sw), (dh, dw) = options["stride"], options["dilation"]
        if options["padding"] == "SAME":
            top, bottom = _same_pad(x.shape[-2], kh, sh, dh)
            left, right = _same_pad(x.shape[-1], kw, sw, dw)
            x = F.pad(x, (left, right, top, bottom))
        return _activation(F.conv2d(x, weight, bias, (sh, sw), 0, (dh, dw), groups), options["act"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values: dict[int, torch.Tensor] = {self.input: x}

        def value(t: int) -> torch.Tensor:
            return values[t] if t in values else self._const(t)

        for op in self.ops:
            a = [value(t) for t in op.inputs if t >= 0 and t not in self.ints]
            if op.kind == "DEQUANTIZE":
                out = a[0]  # fp16 weights were widened to float32 when loaded
            elif op.kind == "CONV_2D":  # weight [O, kh, kw, I]
                out = self._conv(a[0], a[1].permute(0, 3, 1, 2), a[2] if len(a) > 2 else None, op.options, 1)
            elif op.kind == "DEPTHWISE_CONV_2D":  # weight [1, kh, kw, C*m]
                out = self._conv(a[0], a[1].permute(3, 0, 1, 2), a[2] if len(a) > 2 else None, op.options,
                                 a[0].shape[1])
            elif op.kind == "Convolution2DTransposeBias":  # weight [O, kh, kw, I]
                weight = a[1].permute(3, 0, 1, 2)
                stride = op.options["stride"]
                out = F.conv_transpose2d(a[0], weight, a[2], stride)
                if op.options["padding"] == "SAME":  # output is input * stride; crop what the kernel overhangs
                    kh, kw = weight.shape[-2:]
                    top, left = max(kh - stride[0], 0) // 2, max(kw - stride[1], 0) // 2
                    out = out[..., top:top + a[0].shape[-2] * stride[0], left:left + a[0].shape[-1] * stride[1]]
            elif op.kind == "HARD_SWISH":
                out = a[0] * torch.clamp(a[0] + 3.0, 0.0, 6.0) / 6.0
            elif op.kind == "RELU":
                out = F.relu(a[0])
            elif op.kind == "LOGISTIC":
                out = torch.sigmoid(a[0])
            elif op.kind == "ADD":
                out = _activation(a[0] + a[1], op.options["act"])
            elif op.kind == "MUL":
                out = _activation(a[0] * a[1], op.options["act"])
            elif op.kind == "MEAN":
                axes = [{0: 0, 1: 2, 2: 3, 3: 1}[int(d)] for d in self.ints[op.inputs[1]]]
                out = a[0].mean(dim=axes, keepdim=op.options["keep_dims"])
            elif op.kind == "AVERAGE_POOL_2D":  # global, checked at load: stays global at any input size
                out = _activation(a[0].mean(dim=(2, 3), keepdim=True), op.options["act"])
            elif op.kind == "RESIZE_BILINEAR":
                src = self.shapes[op.inputs[0]]
                target = self.ints[op.inputs[1]]
                fh, fw = target[0] // src[1], target[1] // src[2]
                out = resize(a[0], (a[0].shape[-2] * fh, a[0].shape[-1] * fw))
            values[op.outputs[0]] = out
        return values[self.output]
