#!/usr/bin/env python3
"""Export a PyTorch module to ONNX with a dynamic batch axis, plus reference inputs and outputs.

Writes into --out:
  model.onnx      the exported model: one float32 input and one float32 output, dim 0 named 'batch'
  reference.json  inputs (a batch of --reference-batch) and the outputs PyTorch computed for them

Built-in modules (seeded, small):
  mlp   Linear(16, 32) -> ReLU -> Linear(32, 4)                      input [batch, 16]
  cnn   Conv(3->8) -> ReLU -> MaxPool -> Conv(8->16) -> ReLU -> MaxPool -> Linear(256, 5)
                                                                     input [batch, 3, 16, 16]
  transformer  Embedding(100, 32) -> 2 x TransformerEncoderLayer(32, 4 heads, 64) -> mean -> Linear(32, 5)
                                                                     input int64 ids [batch, sequence]

Your own module:
  export_model.py --module my_pkg.my_mod:MyNet --input-shape 1,16 [--init-kwargs '{"hidden": 64}']
                  [--state-dict weights.pt] --out build/my-net
  The class is imported from the current directory or PYTHONPATH, built with the keyword arguments,
  loaded with the state dict when given, and put in eval mode. --input-shape is one example input;
  its first dim is the batch axis and becomes dynamic in the ONNX file.

--quantized-reference also runs torch.quantization.quantize_dynamic (qint8, nn.Linear) on the module and
writes its outputs for the same inputs into reference.json ('quantized'), to compare a quantised ONNX model
with PyTorch's own dynamic quantisation.

Needs torch and onnx (Debian: apt-get install python3-torch python3-onnx; run /usr/bin/python3).
"""

import argparse
import importlib
import json
import os
import sys

import onnx
import torch
from torch import nn

DEFAULT_OPSET = 13
SEED = 0


class Mlp(nn.Module):
    """16 -> 32 -> 4 with a ReLU between."""

    INPUT_SHAPE = (1, 16)

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))

    def forward(self, x):
        return self.layers(x)


class SmallCnn(nn.Module):
    """A 3x16x16 image to 5 class scores."""

    INPUT_SHAPE = (1, 3, 16, 16)

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Linear(16 * 4 * 4, 5)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class TinyEncoder(nn.Module):
    """Token ids to 5 class scores through a 2-layer transformer encoder (Linear layers throughout)."""

    INPUT_SHAPE = (1, 16)
    VOCAB = 100

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(self.VOCAB, 32)
        # batch_first=False keeps PyTorch 1.13 off its fused fast path, which quantize_dynamic breaks.
        layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0)
        self.encoder = nn.TransformerEncoder(layer, 2)
        # The encoder clones one layer: give each its own weights, as training would.
        for layer in self.encoder.layers:
            layer.self_attn._reset_parameters()
            layer.linear1.reset_parameters()
            layer.linear2.reset_parameters()
        self.head = nn.Linear(32, 5)

    def forward(self, ids):
        hidden = self.encoder(self.embed(ids).transpose(0, 1)).transpose(0, 1)
        return self.head(hidden.mean(dim=1))

    @classmethod
    def example(cls, shape):
        return torch.randint(0, cls.VOCAB, shape)


BUILT_IN = {'mlp': Mlp, 'cnn': SmallCnn, 'transformer': TinyEncoder}


def example_input(module, shape):
    """Random input of `shape` for `module`: its own example() (token ids) or normal floats."""
    example = getattr(type(module), 'example', None)
    return example(shape) if example is not None else torch.randn(*shape)


def tensor_json(tensor):
    datatype = 'INT64' if tensor.dtype == torch.int64 else 'FP32'
    return {'datatype': datatype, 'shape': list(tensor.shape), 'data': tensor.tolist()}


def parse_shape(text):
    try:
        shape = tuple(int(d) for d in text.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a shape such as 1,16")
    if not shape or any(d < 1 for d in shape):
        raise argparse.ArgumentTypeError(f"'{text}': every dim must be a positive integer")
    return shape


def load_user_module(spec, init_kwargs):
    if ':' not in spec:
        raise SystemExit(f"--module '{spec}' must look like package.module:ClassName")
    module_name, class_name = spec.split(':', 1)
    # Like `python -m`, a module in the current directory can be named.
    sys.path.insert(0, os.getcwd())
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise SystemExit(f"cannot import {spec}: {error}")
    return cls(**init_kwargs)


def build_module(args):
    torch.manual_seed(SEED)
    if args.module in BUILT_IN:
        cls = BUILT_IN[args.module]
        return cls(), args.input_shape or cls.INPUT_SHAPE
    if args.input_shape is None:
        raise SystemExit('--input-shape is required with a module of your own')
    module = load_user_module(args.module, json.loads(args.init_kwargs))
    if args.state_dict:
        module.load_state_dict(torch.load(args.state_dict, map_location='cpu'))
    return module, args.input_shape


def export(module, input_shape, out_dir, opset, input_name, output_name, reference_batch,
           quantized_reference=False):
    module.eval()
    os.makedirs(out_dir, exist_ok=True)
    model_path = os.path.join(out_dir, 'model.onnx')
    example = example_input(module, input_shape)
    torch.onnx.export(
        module,
        (example,),
        model_path,
        input_names=[input_name],
        output_names=[output_name],
        dynamic_axes=dynamic_axes(module, input_name, output_name),
        opset_version=opset,
        do_constant_folding=True,
    )
    onnx.checker.check_model(onnx.load(model_path))

    # A batch other than the example's proves the batch axis really is dynamic.
    inputs = example_input(module, (reference_batch, *input_shape[1:]))
    with torch.no_grad():
        outputs = module(inputs)
    reference = {
        'producer': f'torch {torch.__version__}',
        'opset': opset,
        'inputs': {input_name: tensor_json(inputs)},
        'outputs': {output_name: tensor_json(outputs)},
    }
    if quantized_reference:
        quantized = torch.quantization.quantize_dynamic(module, {nn.Linear}, dtype=torch.qint8)
        with torch.no_grad():
            quantized_outputs = quantized(inputs)
        reference['quantized'] = {
            'producer': f'torch {torch.__version__} quantize_dynamic(qint8, nn.Linear)',
            'outputs': {output_name: tensor_json(quantized_outputs)},
        }
    with open(os.path.join(out_dir, 'reference.json'), 'w', encoding='utf-8') as f:
        json.dump(reference, f)
    return model_path


def dynamic_axes(module, input_name, output_name):
    # Token ids have a dynamic sequence axis too.
    if isinstance(module, TinyEncoder):
        return {input_name: {0: 'batch', 1: 'sequence'}, output_name: {0: 'batch'}}
    return {input_name: {0: 'batch'}, output_name: {0: 'batch'}}


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('module', nargs='?', default=None,
                        help="'mlp', 'cnn', or package.module:ClassName")
    parser.add_argument('--module', dest='module_option', default=None,
                        help='the same as the positional argument')
    parser.add_argument('--out', required=True, help='folder for model.onnx and reference.json')
    parser.add_argument('--input-shape', type=parse_shape, default=None,
                        help='example input shape, batch first, e.g. 1,16')
    parser.add_argument('--init-kwargs', default='{}', help='JSON keyword arguments of the class')
    parser.add_argument('--state-dict', default=None,
                        help='weights to load (torch.save of a state dict)')
    parser.add_argument('--opset', type=int, default=DEFAULT_OPSET,
                        help=f'ONNX opset (default {DEFAULT_OPSET})')
    parser.add_argument('--input-name', default='input')
    parser.add_argument('--output-name', default='output')
    parser.add_argument('--reference-batch', type=int, default=3,
                        help='batch size of the reference inputs (default 3)')
    parser.add_argument('--quantized-reference', action='store_true',
                        help="also write torch's quantize_dynamic outputs for the reference inputs")
    args = parser.parse_args(argv)
    args.module = args.module_option or args.module
    if args.module is None:
        parser.error("name a module: 'mlp', 'cnn' or package.module:ClassName")
    if args.reference_batch < 1:
        parser.error('--reference-batch must be at least 1')

    module, input_shape = build_module(args)
    path = export(module, input_shape, args.out, args.opset, args.input_name, args.output_name,
                  args.reference_batch, args.quantized_reference)
    print(f'wrote {path} and reference.json (opset {args.opset}, input {args.input_name} '
          f"[batch, {', '.join(str(d) for d in input_shape[1:])}])")


if __name__ == '__main__':
    main()
