#!/usr/bin/env python3
"""Splits one .fvecs (e.g. `lesion-indexer export-vectors`) into a bench set: every STRIDE-th
row becomes a query, the rest the base. usage: split_fvecs.py IN.fvecs OUT_DIR [STRIDE=32]"""
import os
import sys

import numpy as np

source, out = sys.argv[1], sys.argv[2]
stride = int(sys.argv[3]) if len(sys.argv) > 3 else 32
raw = np.fromfile(source, dtype="<i4")
dim = int(raw[0])
rows = raw.reshape(-1, dim + 1)
held_out = np.arange(len(rows)) % stride == 0
os.makedirs(out, exist_ok=True)
rows[~held_out].tofile(os.path.join(out, "base.fvecs"))
rows[held_out].tofile(os.path.join(out, "queries.fvecs"))
print(f"{out}: {int((~held_out).sum())} base, {int(held_out.sum())} queries, {dim} dimensions")
