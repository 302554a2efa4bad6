#!/usr/bin/env python3
"""Exports the small PyTorch models of the shape-edge corpus (test/integration/shape-edge-corpus.test.ts).

  encoder.onnx  Embedding(100, 16) over INT64 ids -> nn.TransformerEncoder (1 layer, batch first), opset 17
                input_ids [batch, seq] -> out [batch, seq, 16]. Given an empty sequence, onnxruntime raises
                SIGFPE in its attention at optimisation level extended or all: the process dies.
  cnn.onnx      Conv -> ReLU -> MaxPool -> Conv -> ReLU -> AdaptiveAvgPool -> Linear(8, 5)
                x [batch, 3, height, width] -> out [batch, 5]
  multi.onnx    x FP32 [batch, 4], ids INT64 [batch, seq], mask BOOL [batch, seq] -> out [batch, 4]
                (a masked mean of embeddings plus a dense layer: several inputs of different dtypes that
                share symbolic dims)

Usage: shape-edge-models.py <out dir>. Seeded, a second or two; needs torch and onnx (/usr/bin/python3 on
Debian with python3-torch and python3-onnx).
"""

import os
import sys

import torch
from torch import nn

OPSET = 17


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(100, 16)
        layer = nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=1)

    def forward(self, ids):
        return self.encoder(self.embed(ids))


class Cnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        return self.head(torch.flatten(self.features(x), 1))


class Multi(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(50, 4)
        self.dense = nn.Linear(4, 4)

    def forward(self, x, ids, mask):
        weights = mask.unsqueeze(-1).float()
        pooled = (self.embed(ids) * weights).sum(1) / weights.sum(1).clamp(min=1)
        return self.dense(x) + pooled


def export(module, args, names, axes, path):
    module.eval()
    torch.onnx.export(module, args, path, input_names=names, output_names=['out'], dynamic_axes=axes,
                      opset_version=OPSET)


def main(out):
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    export(Encoder(), (torch.randint(0, 100, (2, 5)),), ['input_ids'],
           {'input_ids': {0: 'batch', 1: 'seq'}, 'out': {0: 'batch', 1: 'seq'}}, os.path.join(out, 'encoder.onnx'))
    export(Cnn(), (torch.randn(1, 3, 16, 16),), ['x'],
           {'x': {0: 'batch', 2: 'height', 3: 'width'}, 'out': {0: 'batch'}}, os.path.join(out, 'cnn.onnx'))
    example = (torch.randn(2, 4), torch.randint(0, 50, (2, 3)), torch.ones(2, 3, dtype=torch.bool))
    export(Multi(), example, ['x', 'ids', 'mask'],
           {'x': {0: 'batch'}, 'ids': {0: 'batch', 1: 'seq'}, 'mask': {0: 'batch', 1: 'seq'}, 'out': {0: 'batch'}},
           os.path.join(out, 'multi.onnx'))


if __name__ == '__main__':
    main(sys.argv[1])
