"""Real-ESRGAN x4plus from ncnn's format (realesrgan-x4plus.param / .bin) to RRDBNet's names.

Real-ESRGAN-ncnn-vulkan ships the x4plus network (Wang et al., ICCVW 2021) as an ncnn
graph: a text `.param` (one layer a line: type, name, input and output blobs, `key=value`
parameters) and a `.bin` of the convolutions' weights in layer order. Each weight is
the 4-byte tag 0x01306B47 and fp16 values, OIHW, padded to 4 bytes; each bias follows as
raw fp32 without a tag. LeakyReLU(0.2) is fused into the convolutions (activation type 2).

`rrdbnet_from_ncnn` checks the graph against RRDBNet's layout (conv_first, 23 RRDB x 3
RDB x 5 convolutions, conv_body, conv_up1, conv_up2, conv_hr, conv_last; which ones are
followed by the activation; nearest x2 twice; the 0.2 residual scalings), reads the weights
into the `params_ema` names that spandrel's ESRGAN reads, and checks that network's output
against this graph run directly (`run_graph`). The weights stay fp16-rounded.
"""

import struct
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from benchmark.errors import BenchError

MAGIC = "7767517"
FP16_TAG = 0x01306B47
LEAKY = (2, [0.2])  # activation_type 2 = LeakyReLU, its slope
RESIDUAL = [0.2, 1.0]  # Eltwise sum coefficients: 0.2 x branch + skip
CONV_KEYS = {0, 1, 4, 5, 6, 9, 10}  # num_output, kernel, pad, bias_term, weight size, activation


@dataclass(frozen=True)
class Layer:
    kind: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: dict


def _value(text: str):
    return float(text) if any(c in text for c in ".eE") else int(text)


def parse_param(text: str) -> list[Layer]:
    """The layers of an ncnn .param file, in order."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != [MAGIC]:
        raise BenchError(f"not an ncnn .param file (first line {lines[:1]}, expected {MAGIC})")
    count = int(lines[1][0])
    layers = []
    for tokens in lines[2:]:
        kind, name, n_in, n_out = tokens[0], tokens[1], int(tokens[2]), int(tokens[3])
        blobs = tokens[4:4 + n_in + n_out]
        params = {}
        for item in tokens[4 + n_in + n_out:]:
            key, value = item.split("=", 1)
            key = int(key)
            if key <= -23300:  # an array parameter: count, then the values
                values = [_value(v) for v in value.split(",")]
                params[-key - 23300] = values[1:]
            else:
                params[key] = _value(value)
        layers.append(Layer(kind, name, tuple(blobs[:n_in]), tuple(blobs[n_in:]), params))
    if len(layers) != count:
        raise BenchError(f"ncnn .param: header says {count} layers, found {len(layers)}")
    return layers


def rrdbnet_layout(blocks: int = 23, features: int = 64, growth: int = 32):
    """RRDBNet x4's convolutions in graph order: (name, in, out, followed by LeakyReLU)."""
    convs = [("conv_first", 3, features, False)]
    for b in range(blocks):
        for r in (1, 2, 3):
            for k in range(1, 6):
                convs.append((f"body.{b}.rdb{r}.conv{k}", features + (k - 1) * growth,
                              growth if k < 5 else features, k < 5))
    convs += [("conv_body", features, features, False), ("conv_up1", features, features, True),
              ("conv_up2", features, features, True), ("conv_hr", features, features, True),
              ("conv_last", features, 3, False)]
    return convs


def _check_graph(layers: list[Layer], layout) -> list[Layer]:
    """The graph's convolutions, after checking every layer against RRDBNet's layout."""
    kinds = [layer.kind for layer in layers]
    convs = [layer for layer in layers if layer.kind == "Convolution"]
    if len(convs) != len(layout):
        raise BenchError(f"ncnn graph: {len(convs)} convolutions, RRDBNet x4 has {len(layout)}")
    for layer, (name, cin, cout, leaky) in zip(convs, layout):
        p = layer.params
        expected = {0: cout, 1: 3, 4: 1, 5: 1, 6: cout * cin * 9}
        act = (p.get(9, 0), p.get(10, []))
        if set(p) - CONV_KEYS or any(p.get(k) != v for k, v in expected.items()) or (
                act != (LEAKY if leaky else (0, []))):
            raise BenchError(f"ncnn graph: {layer.name} ({name}) has {p}, expected a 3x3 "
                             f"convolution {cin} -> {cout}, pad 1, bias, "
                             f"{'LeakyReLU 0.2' if leaky else 'no activation'}")
    blocks = (len(layout) - 6) // 15
    wanted = {"Input": 1, "Interp": 2, "Eltwise": 4 * blocks, "BinaryOp": 1}
    for kind, n in wanted.items():
        if kinds.count(kind) != n:
            raise BenchError(f"ncnn graph: {kinds.count(kind)} {kind} layers, expected {n}")
    unknown = set(kinds) - {*wanted, "Convolution", "Split", "Concat"}
    if unknown:
        raise BenchError(f"ncnn graph: layer types {sorted(unknown)} are not RRDBNet's")
    for layer in layers:
        p = layer.params
        if layer.kind == "Interp" and p != {0: 1, 1: 2.0, 2: 2.0}:
            raise BenchError(f"ncnn graph: {layer.name} is {p}, expected nearest x2")
        if layer.kind == "Eltwise" and p != {0: 1, 1: RESIDUAL}:
            raise BenchError(f"ncnn graph: {layer.name} is {p}, expected 0.2 x branch + skip")
        if layer.kind in ("BinaryOp", "Concat") and p.get(0, 0) != 0:
            raise BenchError(f"ncnn graph: {layer.name} is {p}, expected an add / channel "
                             f"concat")
    if layers[0].kind != "Input" or layers[0].outputs != ("data",) or \
            convs[-1].outputs != ("output",):
        raise BenchError("ncnn graph: expected blobs `data` -> `output`")
    return convs


def read_weights(data: bytes, layout) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weight OIHW float32, bias) per convolution from an ncnn .bin, all of it."""
    out, offset = [], 0
    for name, cin, cout, _ in layout:
        count = cout * cin * 9
        if offset + 4 > len(data) or struct.unpack_from("<I", data, offset)[0] != FP16_TAG:
            raise BenchError(f"ncnn .bin: {name}'s weights at byte {offset} do not start with "
                             f"the fp16 tag {FP16_TAG:#010x}")
        offset += 4
        weight = np.frombuffer(data, "<f2", count, offset).astype(np.float32)
        offset += (count * 2 + 3) // 4 * 4
        bias = np.frombuffer(data, "<f4", cout, offset).astype(np.float32)
        offset += cout * 4
        out.append((torch.from_numpy(weight.reshape(cout, cin, 3, 3)), torch.from_numpy(bias)))
    if offset != len(data):
        raise BenchError(f"ncnn .bin: {len(data)} bytes, the graph's weights take {offset}")
    return out


def run_graph(layers: list[Layer], weights, x: torch.Tensor) -> torch.Tensor:
    """The ncnn graph itself on `x` (N, 3, H, W), layer by layer: the conversion's check."""
    blobs, convs = {}, iter(weights)
    for layer in layers:
        ins = [blobs[name] for name in layer.inputs]
        if layer.kind == "Input":
            outs = [x]
        elif layer.kind == "Convolution":
            weight, bias = next(convs)
            y = F.conv2d(ins[0], weight, bias, padding=1)
            outs = [F.leaky_relu(y, 0.2) if layer.params.get(9) == LEAKY[0] else y]
        elif layer.kind == "Split":
            outs = ins * len(layer.outputs)
        elif layer.kind == "Concat":
            outs = [torch.cat(ins, 1)]
        elif layer.kind == "Eltwise":
            outs = [sum(c * t for c, t in zip(layer.params[1], ins))]
        elif layer.kind == "BinaryOp":
            outs = [ins[0] + ins[1]]
        else:  # Interp
            outs = [F.interpolate(ins[0], scale_factor=2, mode="nearest")]
        blobs.update(zip(layer.outputs, outs))
    return blobs["output"]


def rrdbnet_from_ncnn(param: str, data: bytes, blocks: int = 23) -> dict[str, torch.Tensor]:
    """Real-ESRGAN's `params_ema` state dict from its ncnn files, checked (module docstring)."""
    from spandrel import ModelLoader

    layout = rrdbnet_layout(blocks)
    layers = parse_param(param)
    _check_graph(layers, layout)
    weights = read_weights(data, layout)
    state = {}
    for (name, *_), (weight, bias) in zip(layout, weights):
        state[f"{name}.weight"], state[f"{name}.bias"] = weight, bias
    net = ModelLoader().load_from_state_dict(state)
    if net.architecture.id != "ESRGAN" or net.scale != 4:
        raise BenchError(f"converted Real-ESRGAN: spandrel reads it as {net.architecture.id} "
                         f"x{net.scale}, expected ESRGAN x4")
    x = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        gap = (net.model.eval()(x) - run_graph(layers, weights, x)).abs().max().item()
    if gap > 1e-4:
        raise BenchError(f"converted Real-ESRGAN: spandrel's network differs from the ncnn "
                         f"graph by {gap:.2e}; the layers were not mapped in order")
    return state
