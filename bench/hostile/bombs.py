#!/usr/bin/env python3
"""Decompression bombs against a running lesion-web: time to refuse and peak server memory.

  bombs.py --server-pid PID --address 127.0.0.1:8080 [--key KEY] [--parallel 8]

Sends a real 16-bit PNG bomb (IHDR 40,000 x 40,000, a complete zlib stream of zeros that
would inflate to 3.2 GB, about 3 MB on the wire), an 8-bit PNG bomb and DICOM headers
declaring 60,000 x 60,000, each `--parallel` times at once, and prints the status, the
time to answer and the server's resident and peak resident memory (VmRSS, VmHWM) before and
after, as one JSON object.
"""
import argparse
import concurrent.futures
import http.client
import json
import os
import struct
import time
import zlib


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width, height, depth, cache):
    if os.path.exists(cache):
        return open(cache, "rb").read()
    row = b"\0" * (1 + width * depth // 8)
    z = zlib.compressobj(9)
    parts = [z.compress(row) for _ in range(height)]
    parts.append(z.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, depth, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")
    open(cache, "wb").write(data)
    return data


def dicom_bomb(rows, columns):
    def element(group, elem, vr, value):
        return struct.pack("<HH", group, elem) + vr + struct.pack("<H", len(value)) + value
    out = b"\0" * 128 + b"DICM" + element(2, 0x10, b"UI", b"1.2.840.10008.1.2.1\0")
    out += element(8, 0x60, b"CS", b"CT") + element(0x28, 2, b"US", struct.pack("<H", 1))
    out += element(0x28, 0x10, b"US", struct.pack("<H", rows)) + element(0x28, 0x11, b"US", struct.pack("<H", columns))
    out += element(0x28, 0x100, b"US", struct.pack("<H", 16))
    out += struct.pack("<HH", 0x7FE0, 0x10) + b"OW\0\0" + struct.pack("<I", rows * columns * 2 % 2**32) + b"\0" * 4096
    return out


def memory(pid):
    fields = {}
    for line in open(f"/proc/{pid}/status"):
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return fields


def reset_peak(pid):
    """Restarts VmHWM at the current resident size (Linux 4.0+), so each class's peak is its own."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def upload(address, key, body_bytes):
    boundary = "bombBoundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"slice\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + body_bytes + f"\r\n--{boundary}--\r\n".encode()
    host, port = address.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    started = time.perf_counter()
    conn.request("POST", "/api/uploads", body=body, headers=headers)
    response = conn.getresponse()
    reply = response.read()
    elapsed = time.perf_counter() - started
    code = json.loads(reply).get("error", {}).get("code") if reply.startswith(b"{") else None
    return response.status, code, elapsed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--server-pid", type=int, required=True)
    parser.add_argument("--address", default="127.0.0.1:8080")
    parser.add_argument("--key")
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--dir", help="also send every file of this folder (cargo run --example hostile_images)")
    args = parser.parse_args()
    bombs = {
        "png16_40000x40000": png_bomb(40000, 40000, 16, "/tmp/lesion-bomb16.png"),
        "png8_40000x40000": png_bomb(40000, 40000, 8, "/tmp/lesion-bomb8.png"),
        "dicom_60000x60000": dicom_bomb(60000, 60000),
    }
    if args.dir:
        for name in sorted(os.listdir(args.dir)):
            bombs[name] = open(os.path.join(args.dir, name), "rb").read()
    report = {"before": memory(args.server_pid), "bombs": {}}
    for name, data in bombs.items():
        peak_reset = reset_peak(args.server_pid)
        resident = memory(args.server_pid)["VmRSS"]
        with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
            outcomes = list(pool.map(lambda _: upload(args.address, args.key, data), range(args.parallel)))
        after = memory(args.server_pid)
        report["bombs"][name] = {
            "bytes": len(data),
            "sent": args.parallel,
            "statuses": sorted({f"{s} {c}" for s, c, _ in outcomes}),
            "max_seconds": round(max(t for _, _, t in outcomes), 4),
            "median_seconds": round(sorted(t for _, _, t in outcomes)[len(outcomes) // 2], 4),
            # Peak resident growth over this class alone, when the kernel let us reset it.
            "peak_growth_mib": round(after["VmHWM"] - resident, 1) if peak_reset else None,
        }
    report["after"] = memory(args.server_pid)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
