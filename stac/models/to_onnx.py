"""Export the STAC head and the SEGMENT graph to ONNX (opset 18, dynamic H and W, no ScatterND).

torch.onnx cannot export a forward that calls autograd, so the forward-backward computation is first
traced to plain aten ops (``TracedGradient``); backward ops without an ONNX lowering are decomposed on
the way: convolution_backward into a (transposed) convolution; bilinear resizing is already matrix
products (``resize.py``). The traced module is called from ``StacHead``, which is exported like any
module. torch is pinned (the trace relies on its decompositions) and the tests check the exported
gradient against eager float64 autograd.
"""
from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from ..codec.transform import pad_to_multiple
from ..contract import HEAD, HEAD_GRAPH, MAX_BATCH, MODEL_INFO, SEGMENT, SEGMENT_GRAPH
from ..tables import DEFAULT_REGION_BLOCKS, blocks_for, region_grid
from .base import SegModel, build_model
from .head import AutogradDecoded, Decoded, Segment, StacHead

OPSET = 18


class ExportError(RuntimeError):
    pass


def _convolution_backward(grad_out, inp, weight, bias_sizes, stride, padding, dilation, transposed,
                          output_padding, groups, output_mask):
    """Input gradient only (weights are frozen): the adjoint of a convolution is the transposed one."""
    if output_mask[1] or output_mask[2]:
        raise ExportError("weight gradients requested: freeze the model's parameters before export")
    if transposed:
        grad_in = F.conv2d(grad_out, weight, None, stride, padding, dilation, groups)
    elif all(st == 1 for st in stride) and all(d * (k - 1) >= p for d, k, p in
                                              zip(dilation, weight.shape[-2:], padding)):
        # stride 1: a plain convolution with the kernel flipped and in/out swapped per group, which
        # onnxruntime runs far faster than ConvTranspose (depthwise and 1x1 layers above all)
        out_ch, in_per_group, kh, kw = weight.shape
        flipped = weight.reshape(groups, out_ch // groups, in_per_group, kh, kw).transpose(1, 2)
        flipped = flipped.reshape(groups * in_per_group, out_ch // groups, kh, kw).flip(-2, -1)
        pad = [d * (k - 1) - p for d, k, p in zip(dilation, (kh, kw), padding)]
        grad_in = F.conv2d(grad_out, flipped, None, 1, pad, dilation, groups)
    else:
        # full transposed convolution plus s - 1 rows/cols (zero: no window reached them), then crop to
        # the input's extent; the exact output_padding would depend on the parity of symbolic sizes
        extra = [s - 1 for s in stride]
        full = F.conv_transpose2d(grad_out, weight, None, stride, 0, extra, groups, dilation)
        grad_in = full[..., padding[0]:padding[0] + inp.shape[-2], padding[1]:padding[1] + inp.shape[-1]]
    return grad_in, None, None


class TracedGradient(torch.nn.Module):
    """forward(deq) -> (loss, logits, grad): ``AutogradDecoded`` traced to plain aten ops, backward included.

    make_fx with symbolic shapes records the backward formulas autograd runs, with sizes kept symbolic
    (torch.export's joint graph bakes the example's sizes into the backward), and applies our
    decompositions on the way. The result is an ordinary graph module that torch.onnx can export.
    """

    def __init__(self, decoded: Decoded, example: torch.Tensor):
        super().__init__()
        from torch._decomp import core_aten_decompositions
        from torch.fx.experimental.proxy_tensor import make_fx

        table = core_aten_decompositions()
        table[torch.ops.aten.convolution_backward.default] = _convolution_backward
        # the model's weights are real tensors inside the trace: they become constants of the graph
        self.graph = make_fx(AutogradDecoded(decoded), decomposition_table=table, tracing_mode="symbolic",
                             _allow_non_fake_inputs=True)(example)

    def forward(self, deq: torch.Tensor):
        return self.graph(deq)


def _example_coeffs(height: int, width: int, frames: int = 2) -> torch.Tensor:
    """Deterministic, image-like coefficients [frames, 3, Hb, Wb, 64] (mid-grey DC plus a little texture); two
    frames by default, since a traced dimension of size 1 would be taken for a constant."""
    g = torch.Generator().manual_seed(0)
    hb, wb = blocks_for(height, width)
    coeffs = torch.randn(frames, 3, hb, wb, 64, generator=g) * 4
    coeffs[..., 0] += 40
    return coeffs


def export_stac_head(model: SegModel, path: str | Path, *, region_blocks: int = DEFAULT_REGION_BLOCKS,
                     example_size: tuple[int, int] = (144, 256)) -> Path:
    """Write the STAC head ONNX for ``model``; tensors contract.HEAD, dynamic N (up to MAX_BATCH) and Hb/Wb."""
    example = _example_coeffs(*example_size)
    head = StacHead(TracedGradient(Decoded(model), example), model, region_blocks).eval()
    n, rh, rw = example.shape[0], *region_grid(example.shape[2], example.shape[3], region_blocks)
    args = (example.round().to(torch.int16), torch.zeros(n, rh, rw, dtype=torch.uint8),
            torch.ones(n, 16, 3, 64), torch.ones(n, 1))
    batch = torch.export.Dim("n", min=1, max=MAX_BATCH)
    hb, wb = torch.export.Dim("hb", min=2, max=1024), torch.export.Dim("wb", min=2, max=1024)
    shapes = {"coeffs": {0: batch, 2: hb, 3: wb},
              "levels": {0: batch, 1: torch.export.Dim.AUTO, 2: torch.export.Dim.AUTO},
              "tables": {0: batch, 1: torch.export.Dim("levels", min=1, max=256)}, "bound": {0: batch}}
    return _export(head, args, shapes, HEAD.input_names, HEAD.output_names, path)


def export_segment(model: SegModel, path: str | Path, example_size: tuple[int, int] = (144, 256)) -> Path:
    """Write the SEGMENT ONNX: IMAGE uint8 [N, H, W, 3] -> MASK uint8 [N, H, W] (H, W multiples of size_multiple;
    N frames of one size at once, as the edge's dynamic batcher gathers them)."""
    h, w = example_size
    image = torch.randint(0, 256, (2, h, w, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    m = model.size_multiple
    dims = {1: torch.export.Dim("h", min=1, max=1024) * m, 2: torch.export.Dim("w", min=1, max=1024) * m} \
        if m > 1 else {1: torch.export.Dim("h", min=8, max=8192), 2: torch.export.Dim("w", min=8, max=8192)}
    dims[0] = torch.export.Dim("n", min=1, max=MAX_BATCH)
    return _export(Segment(model), (image,), {"image": dims}, SEGMENT.input_names, SEGMENT.output_names, path)


def _export(module, args, dynamic_shapes, input_names, output_names, path) -> Path:
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" noise
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, args, dynamic_shapes=dynamic_shapes, input_names=input_names,
                                    output_names=output_names, opset_version=OPSET, dynamo=True,
                                    optimize=True, verbose=False, external_data=False)
    proto = program.model_proto
    # onnxruntime's CPU ScatterND-add races with >= 2 intra-op threads; no scatter of any kind is needed
    bad = sorted({n.op_type for n in proto.graph.node if n.op_type.startswith("Scatter")})
    if bad:
        raise ExportError(f"{path.name}: the graph contains {bad}")
    onnx.checker.check_model(proto)
    onnx.save(proto, path)
    return path


def export_model(model_name: str, out: str | Path, weights: str | Path | None = None,
                 region_blocks: int = DEFAULT_REGION_BLOCKS) -> dict[str, Path]:
    """Both graphs of one model into ``out`` (HEAD_GRAPH, SEGMENT_GRAPH) plus MODEL_INFO describing it."""
    model = build_model(model_name, weights)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"stac_head": export_stac_head(model, out / HEAD_GRAPH, region_blocks=region_blocks),
             "segment": export_segment(model, out / SEGMENT_GRAPH)}
    info = {**model.describe(), "weights": str(weights) if weights else None, "region_blocks": region_blocks}
    (out / MODEL_INFO).write_text(json.dumps(info, indent=2) + "\n")
    return paths


def validate(model_name: str, onnx_dir: str | Path, weights: str | Path | None = None) -> str:
    """Both graphs in onnxruntime against the torch model on a real frame (carphone, STAC-coded with a
    random level map); raises ExportError on disagreement, returns a one-line summary."""
    import numpy as np

    from ..codec import make_codec
    from ..codec.bitstream import read_stac
    from ..inference import HeadSession, SegmentSession
    from ..tables import TableSet
    from ..video import read_frames, sample_video

    onnx_dir = Path(onnx_dir)
    model = build_model(model_name, weights)
    tables = TableSet.default()
    frame = next(iter(read_frames(sample_video("carphone"), 1)))
    levels = np.random.default_rng(0).integers(0, tables.levels, tables.regions(*frame.shape[:2]),
                                               dtype=np.uint8)
    coded = read_stac(make_codec("stac", tables).encode_levels(frame, levels), tables)
    got = HeadSession(onnx_dir / HEAD_GRAPH).run(coded, tables)
    eager = StacHead(AutogradDecoded(Decoded(model)), model, tables.region_blocks)
    with torch.no_grad():
        mask, _, _, grad, _ = eager(torch.from_numpy(coded.coeffs)[None], torch.from_numpy(coded.levels)[None],
                                    torch.from_numpy(tables.steps)[None], torch.tensor([[tables.bound]]))
    h, w = frame.shape[:2]
    head_agree = float(np.mean(got.mask == mask.numpy()[0, :h, :w]))
    grad_err = float(np.linalg.norm(got.grad - grad.numpy()[0]) / max(np.linalg.norm(grad.numpy()), 1e-30))
    with torch.no_grad():
        seg = Segment(model)(torch.from_numpy(pad_to_multiple(frame, model.size_multiple))[None])
    seg_agree = float(np.mean(SegmentSession(onnx_dir / SEGMENT_GRAPH).run(frame) == seg.numpy()[0, :h, :w]))
    # 1e-2: random ReLU networks (models built without weights) are that ill-conditioned in float32
    if head_agree < 0.999 or seg_agree < 0.999 or grad_err > 1e-2:
        raise ExportError(f"ONNX disagrees with torch on a real frame: head mask {head_agree:.4f}, segment mask "
                          f"{seg_agree:.4f}, gradient relative error {grad_err:.2e}")
    return f"head mask {head_agree:.4f}, segment mask {seg_agree:.4f}, gradient relative error {grad_err:.1e}"
