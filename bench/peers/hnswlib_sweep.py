#!/usr/bin/env python3
"""hnswlib on a TEXMEX vector set, measured as `lesion-bench vectors` measures ours: rows
scaled to unit length, inner product, build on all cores, queries on one thread, recall@10
against the exact top 10, for a sweep of ef. Prints one JSON object.

usage: hnswlib_sweep.py BASE.fvecs QUERIES.fvecs [TRUTH.ivecs] [--m 16] [--ef-construction 200]
"""
import argparse
import json
import os
import resource
import time

import hnswlib
import numpy as np


def read_vecs(path, dtype):
    raw = np.fromfile(path, dtype="<i4")
    dim = int(raw[0])
    rows = raw.reshape(-1, dim + 1)
    if not (rows[:, 0] == dim).all():
        raise SystemExit(f"{path}: rows of differing dimensions")
    return rows[:, 1:].copy().view(dtype)


def resident_mb():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("base")
    parser.add_argument("queries")
    parser.add_argument("truth", nargs="?")
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=200)
    parser.add_argument("--build-threads", type=int, default=os.cpu_count())
    parser.add_argument("--min-seconds", type=float, default=0.3, help="repeat the query set until this long has passed")
    args = parser.parse_args()

    base = read_vecs(args.base, "<f4").astype(np.float32)
    queries = read_vecs(args.queries, "<f4").astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    if args.truth:
        truth = read_vecs(args.truth, "<i4")[:, :10]
    else:
        truth = np.argsort(-(queries @ base.T), axis=1)[:, :10]

    before = resident_mb()
    index = hnswlib.Index(space="ip", dim=base.shape[1])
    started = time.perf_counter()
    index.init_index(max_elements=len(base), M=args.m, ef_construction=args.ef_construction)
    index.set_num_threads(args.build_threads)
    index.add_items(base, np.arange(len(base)))
    build_seconds = time.perf_counter() - started
    grown = resident_mb() - before

    index.set_num_threads(1)
    sweep = []
    for ef in [10, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024]:
        index.set_ef(ef)
        # Repeat the query set until min_seconds have passed (small sets take milliseconds).
        passes = 0
        started = time.perf_counter()
        while passes == 0 or time.perf_counter() - started < args.min_seconds:
            labels, _ = index.knn_query(queries, k=10, num_threads=1)
            passes += 1
        seconds = time.perf_counter() - started
        hits = sum(len(set(row) & set(t)) for row, t in zip(labels.tolist(), truth.tolist()))
        sweep.append(
            {
                "ef": ef,
                "recall_at_10": hits / (10 * len(queries)),
                "queries_per_second": passes * len(queries) / seconds,
            }
        )
    print(
        json.dumps(
            {
                "engine": f"hnswlib {getattr(hnswlib, '__version__', '0.8')}",
                "vectors": len(base),
                "dim": base.shape[1],
                "queries": len(queries),
                "m": args.m,
                "ef_construction": args.ef_construction,
                "build_threads": args.build_threads,
                "build_seconds": build_seconds,
                "resident_growth_mb": grown,
                "peak_resident_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3,
                "ef_sweep": sweep,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
