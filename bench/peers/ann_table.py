#!/usr/bin/env python3
"""One markdown table from `lesion-bench vectors --json` and hnswlib_sweep.py's JSON:
recall@10 and queries/s along ef for both, queries/s at recall 0.98, build time, memory.
usage: ann_table.py NAME OURS.json HNSWLIB.json"""
import json
import sys


def at_recall(sweep, target):
    """Queries/s of the fastest ef reaching the target recall (None if none does)."""
    reaching = [p["queries_per_second"] for p in sweep if p["recall_at_10"] >= target]
    return max(reaching) if reaching else None


def fmt(qps):
    return "-" if qps is None else f"{qps:,.0f}"


name, ours_path, peer_path = sys.argv[1:4]
ours = json.load(open(ours_path))
peer = json.load(open(peer_path))
ours_sweep = {p["ef"]: p for p in ours["ef_sweep"]}
peer_sweep = {p["ef"]: p for p in peer["ef_sweep"]}
reach = ours.get("connectivity") or {}
print(
    f"### {name}: {ours['vectors']:,} x {ours['dim']}, {ours['queries']:,} queries, k = 10, one query thread\n"
)
print(f"| ef | ours recall@10 | ours q/s | {peer['engine']} recall@10 | hnswlib q/s |")
print("|---:|---:|---:|---:|---:|")
for ef in sorted(set(ours_sweep) | set(peer_sweep)):
    o, p = ours_sweep.get(ef), peer_sweep.get(ef)
    print(
        f"| {ef} | {o['recall_at_10']:.4f} | {o['queries_per_second']:,.0f} | "
        f"{p['recall_at_10']:.4f} | {p['queries_per_second']:,.0f} |"
        if o and p
        else f"| {ef} | - | - | - | - |"
    )
print()
for target in (0.98, 0.99, 0.995):
    print(
        f"- q/s at recall@10 >= {target}: ours {fmt(at_recall(ours['ef_sweep'], target))}, "
        f"hnswlib {fmt(at_recall(peer['ef_sweep'], target))}"
    )
print(
    f"- max recall@10: ours {max(p['recall_at_10'] for p in ours['ef_sweep']):.4f}, "
    f"hnswlib {max(p['recall_at_10'] for p in peer['ef_sweep']):.4f}"
)
print(
    f"- build: ours {ours['build_seconds']:.1f} s (M {ours['m']}, ef_construction {ours['ef_construction']}), "
    f"hnswlib {peer['build_seconds']:.1f} s (M {peer['m']}, ef_construction {peer['ef_construction']}, "
    f"{peer['build_threads']} threads); load ours {ours['load_seconds']:.2f} s"
)
print(
    f"- memory: ours graph {ours['graph_bytes'] / 1e6:.0f} MB + vectors {ours['vector_bytes'] / 1e6:.0f} MB; "
    f"hnswlib index resident growth {peer['resident_growth_mb']:.0f} MB"
)
if reach:
    print(
        f"- ours layer 0: {reach['reachable']:,} of {reach['nodes']:,} nodes reachable from the entry point, "
        f"{reach['without_in_links']} without in-links; calibrated ef {ours['calibrated_ef']}"
    )
