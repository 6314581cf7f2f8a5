#!/usr/bin/env python3
"""Embeds an archive as sharded batch work on a Dask cluster, then builds the index from the
shard files. Each task runs `lesion-indexer embed-shard` for one shard; the scheduler and the
workers talk over TCP, so the same job runs on a local cluster (the default: a scheduler and
WORKERS worker processes started here, bound to 127.0.0.1) or on a real one (--scheduler
tcp://HOST:8786, with the archive, the binary and the output folder on a shared file system).

Prints one JSON object: per shard its lesions, patients, seconds and lesions/s on its worker,
the wall time of the whole embedding, and the build's.

usage: dask_embed.py --indexer BIN --dataset DIR --out DIR [--shards 4] [--workers 2]
                     [--model NAME] [--scheduler tcp://HOST:PORT]
"""
import argparse
import json
import os
import re
import subprocess
import time

from dask.distributed import Client, LocalCluster


def embed_shard(indexer, dataset, model, shard, count, out):
    """One task: one shard embedded by the CLI on whatever worker runs it."""
    started = time.time()
    done = subprocess.run(
        [indexer, "embed-shard", "--dataset", dataset, "--shard", f"{shard}/{count}",
         "--out", out, "--model", model],
        capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"shard {shard}/{count}: {done.stderr.strip()}")
    # "shard I/N: L lesions of P patients in S s (R lesions/s) -> FILE"
    found = re.search(r"(\d+) lesions of (\d+) patients", done.stdout)
    return {
        "shard": shard,
        "lesions": int(found.group(1)),
        "patients": int(found.group(2)),
        "seconds": time.time() - started,
        "worker_pid": os.getpid(),
        "file": out,
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--indexer", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model", default="lesion-cnn")
    parser.add_argument("--scheduler")
    args = parser.parse_args()
    indexer = os.path.abspath(args.indexer)
    dataset = os.path.abspath(args.dataset)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)

    if args.scheduler:
        cluster, client = None, Client(args.scheduler)
    else:
        # Worker processes with one thread each: the CLI spreads its own work over cores.
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                               protocol="tcp", host="127.0.0.1", dashboard_address=None)
        client = Client(cluster)
    started = time.time()
    futures = [
        client.submit(embed_shard, indexer, dataset, args.model, i, args.shards,
                      os.path.join(out, f"shard-{i}-of-{args.shards}.lshard"), pure=False)
        for i in range(args.shards)
    ]
    shards = sorted(client.gather(futures), key=lambda s: s["shard"])
    embedding_seconds = time.time() - started
    scheduler = client.scheduler.address
    client.close()
    if cluster is not None:
        cluster.close()

    index = os.path.join(out, "index")
    started = time.time()
    subprocess.run([indexer, "build", "--dataset", dataset, "--index", index, "--model",
                    args.model, "--embeddings", *[s["file"] for s in shards]],
                   check=True, capture_output=True)
    build_seconds = time.time() - started
    for s in shards:
        s["lesions_per_second"] = s["lesions"] / s["seconds"]
    print(json.dumps({
        "scheduler": scheduler,
        "workers": len({s["worker_pid"] for s in shards}),
        "shards": shards,
        "lesions": sum(s["lesions"] for s in shards),
        "embedding_seconds": embedding_seconds,
        "build_from_shards_seconds": build_seconds,
        "index": index,
    }, indent=1))


if __name__ == "__main__":
    main()
