#!/usr/bin/env python3
"""The bundled `ct-resnet-l2` trunk in PyTorch beside `lesion-bench embed`, in one run.

PyTorch CPU runs the same truncated network (conv1 to layer2 of the collapsed Merlin
ResNet-152, global average pooling, 512 features) from the same file,
data/models/ct-resnet-l2/model.safetensors (read here without the safetensors package), on
the same patches `lesion-bench embed` measures: 64 x 64 px, 3 channels, value i of a patch
((i * 7919) % 1000) / 1000, the one patch repeated to fill a batch. Both on 2 threads, one
after the other, alternating round by round so that drift on a shared machine hits both:
each round is `lesion-bench embed --models ct-resnet-l2 --candle-nchw --json` and then
PyTorch in three forms (batch norms as modules; folded into the convolutions; folded and
channels-last), each with one warm-up batch then `--patches` patches, as lesion-bench does.
Prints one JSON object with every round and a Markdown table of the medians with the ratio
candle / the fastest PyTorch form.

    python3 bench/peers/ct_trunk_torch.py --lesion-bench target/release/lesion-bench

Without torch the script makes a venv (default target/torch-venv), installs PyTorch CPU and
numpy from PyPI into it, and runs itself there.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
TORCH = "torch==2.15.0"
LAYER2_BLOCKS = (3, 8)
SIZE = 64


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


def read_safetensors(path: Path):
    """name -> float32 torch tensor; the format is an 8-byte header length, a JSON header
    of dtypes, shapes and offsets, then the raw little-endian data."""
    import numpy as np
    import torch

    raw = path.read_bytes()
    length = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + length])
    body = memoryview(raw)[8 + length :]
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if entry["dtype"] != "F32":
            raise SystemExit(f"{path}: {name} is {entry['dtype']}, expected F32")
        start, end = entry["data_offsets"]
        values = np.frombuffer(body[start:end], dtype="<f4").reshape(entry["shape"])
        tensors[name] = torch.from_numpy(values.copy())
    return tensors


def build(weights, fold: bool):
    """The network as torch.nn modules, eval mode; `fold` puts each batch norm into its
    convolution, as the Rust side does at load."""
    import torch
    from torch import nn

    def conv_bn(conv, bn, stride, padding):
        w = weights[f"{conv}.weight"]
        layer = nn.Conv2d(w.shape[1], w.shape[0], w.shape[2], stride, padding, bias=fold)
        norm = nn.BatchNorm2d(w.shape[0], eps=1e-5)
        norm.weight.data = weights[f"{bn}.weight"].clone()
        norm.bias.data = weights[f"{bn}.bias"].clone()
        norm.running_mean = weights[f"{bn}.running_mean"].clone()
        norm.running_var = weights[f"{bn}.running_var"].clone()
        if not fold:
            layer.weight.data = w.clone()
            return nn.Sequential(layer, norm)
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        layer.weight.data = w * scale.reshape(-1, 1, 1, 1)
        layer.bias.data = norm.bias - norm.running_mean * scale
        return layer

    class Block(nn.Module):
        def __init__(self, name, stride, downsample):
            super().__init__()
            self.reduce = conv_bn(f"{name}.conv1", f"{name}.bn1", 1, 0)
            self.spatial = conv_bn(f"{name}.conv2", f"{name}.bn2", stride, 1)
            self.expand = conv_bn(f"{name}.conv3", f"{name}.bn3", 1, 0)
            self.downsample = (
                conv_bn(f"{name}.downsample.0", f"{name}.downsample.1", stride, 0)
                if downsample
                else None
            )

        def forward(self, x):
            y = torch.relu(self.reduce(x))
            y = torch.relu(self.spatial(y))
            y = self.expand(y)
            return torch.relu(y + (self.downsample(x) if self.downsample is not None else x))

    class Trunk(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = conv_bn("conv1", "bn1", 2, 3)
            self.pool = nn.MaxPool2d(3, 2, 1)
            blocks = []
            for stage, count in enumerate(LAYER2_BLOCKS):
                for b in range(count):
                    stride = 2 if (b == 0 and stage > 0) else 1
                    blocks.append(Block(f"layer{stage + 1}.{b}", stride, b == 0))
            self.blocks = nn.Sequential(*blocks)

        def forward(self, x):
            x = self.pool(torch.relu(self.stem(x)))
            return self.blocks(x).mean(dim=(2, 3))

    return Trunk().eval()


def patch():
    import torch

    values = [((i * 7919) % 1000) / 1000.0 for i in range(3 * SIZE * SIZE)]
    return torch.tensor(values, dtype=torch.float32).reshape(1, 3, SIZE, SIZE)


def torch_rate(model, batch: int, patches: int, channels_last: bool) -> float:
    import torch

    x = patch().repeat(batch, 1, 1, 1)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        model(x)
        rounds = max(1, -(-patches // batch))
        started = time.perf_counter()
        for _ in range(rounds):
            model(x)
        return rounds * batch / (time.perf_counter() - started)


def candle_rates(lesion_bench: str, batches, patches: int):
    env = dict(os.environ, RAYON_NUM_THREADS="2")
    out = subprocess.run(
        [
            lesion_bench,
            "embed",
            "--models",
            "ct-resnet-l2",
            "--candle-nchw",
            "--batches",
            *[str(b) for b in batches],
            "--patches",
            str(patches),
            "--json",
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rates = {}
    for line in out.splitlines():
        row = json.loads(line)
        rates[(row["model"], row["batch"])] = row["patches_per_second"]
    return rates


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lesion-bench", default=str(REPO / "target/release/lesion-bench"))
    parser.add_argument(
        "--weights", type=Path, default=REPO / "data/models/ct-resnet-l2/model.safetensors"
    )
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--patches", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--venv", type=Path, default=REPO / "target" / "torch-venv")
    args = parser.parse_args()
    ensure_torch(args.venv)
    import torch

    torch.set_num_threads(args.threads)
    weights = read_safetensors(args.weights)
    forms = {
        "pytorch eager (batch norm modules)": (build(weights, fold=False), False),
        "pytorch folded": (build(weights, fold=True), False),
        "pytorch folded, channels-last": (
            build(weights, fold=True).to(memory_format=torch.channels_last),
            True,
        ),
    }
    rounds = []
    for r in range(args.rounds):
        measured = {}
        for (name, batch), rate in candle_rates(
            args.lesion_bench, args.batches, args.patches
        ).items():
            label = "candle channels-last (default)" if name == "ct-resnet-l2" else "candle nchw"
            measured[f"{label}|{batch}"] = rate
        for label, (model, channels_last) in forms.items():
            for batch in args.batches:
                measured[f"{label}|{batch}"] = torch_rate(
                    model, batch, args.patches, channels_last
                )
        rounds.append(measured)
        print(f"round {r + 1}: {json.dumps(measured)}", file=sys.stderr)
    labels = list(dict.fromkeys(k.split("|")[0] for k in rounds[0]))
    median = {
        key: statistics.median(r[key] for r in rounds) for key in rounds[0]
    }
    print(
        json.dumps(
            {
                "torch": torch.__version__,
                "threads": args.threads,
                "patches_per_figure": args.patches,
                "rounds": rounds,
                "median": median,
            },
            indent=2,
        )
    )
    print()
    header = " | ".join(f"batch {b} (patches/s)" for b in args.batches)
    print(f"| implementation | {header} |")
    print("|---|" + "---:|" * len(args.batches))
    for label in labels:
        cells = " | ".join(f"{median[f'{label}|{b}']:.1f}" for b in args.batches)
        print(f"| {label} | {cells} |")
    torch_labels = [l for l in labels if l.startswith("pytorch")]
    for b in args.batches:
        best = max(torch_labels, key=lambda l: median[f"{l}|{b}"])
        ours = median[f"candle channels-last (default)|{b}"]
        print(
            f"\nbatch {b}: candle / fastest PyTorch ({best}) = {ours / median[f'{best}|{b}']:.2f}"
        )


if __name__ == "__main__":
    main()
