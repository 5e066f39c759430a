"""Golden values for kiln-draw's LSTM cell: PyTorch's nn.LSTMCell on fixed weights.

Writes lstm_cell.json beside this script: the cell's weights (PyTorch layout: weight_ih [4H, I],
weight_hh [4H, H], gate order i, f, g, o), a starting state, three steps of inputs, and the (h, c)
after each step. Run with the workspace's PyTorch venv:

    target/pytorch-venv/bin/python crates/kiln-draw/golden/lstm_cell.py
"""

import json
import os

import torch

torch.manual_seed(20150216)
INPUT, HIDDEN, BATCH, STEPS = 5, 4, 2, 3

cell = torch.nn.LSTMCell(INPUT, HIDDEN).double()
with torch.no_grad():
    # Wider than the default U(-1/2, 1/2) so the gates leave their linear region.
    for p in cell.parameters():
        p.uniform_(-1.0, 1.0)
inputs = torch.randn(STEPS, BATCH, INPUT, dtype=torch.float64)
h = torch.randn(BATCH, HIDDEN, dtype=torch.float64)
c = torch.randn(BATCH, HIDDEN, dtype=torch.float64)
h0, c0 = h.clone(), c.clone()

hs, cs = [], []
with torch.no_grad():
    for t in range(STEPS):
        h, c = cell(inputs[t], (h, c))
        hs.append(h.tolist())
        cs.append(c.tolist())

out = {
    "torch": torch.__version__,
    "input": INPUT,
    "hidden": HIDDEN,
    "weight_ih": cell.weight_ih.tolist(),
    "weight_hh": cell.weight_hh.tolist(),
    "bias_ih": cell.bias_ih.tolist(),
    "bias_hh": cell.bias_hh.tolist(),
    "h0": h0.tolist(),
    "c0": c0.tolist(),
    "inputs": inputs.tolist(),
    "h": hs,
    "c": cs,
}
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lstm_cell.json")
with open(path, "w") as f:
    json.dump(out, f, indent=1)
print(f"wrote {path} (torch {torch.__version__})")
