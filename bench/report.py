#!/usr/bin/python3
"""Turns Google Benchmark JSON into the tables of bench/RESULTS.md: medians, and each
workload's ratio to (or, for costs in ns, its excess over) the baseline run on the same
input in the same process."""
import json
import sys

# Benchmark name -> the baseline it is compared with.
BASELINES = {"BM_Http1Parser": "BM_BareLlhttp", "BM_Http2GrpcParser": "BM_BareHpack"}


def medians(path):
    with open(path) as f:
        runs = json.load(f)["benchmarks"]
    out = {}
    for run in runs:
        if run.get("aggregate_name") == "median":
            out[run["run_name"]] = run
    return out


def parsers(path):
    rows = medians(path)
    print(f"{'benchmark':<24} {'MB/s':>10} {'messages/s':>12} {'vs baseline':>12}")
    for name, run in rows.items():
        family, _, arg = name.partition("/")
        mbps = run["bytes_per_second"] / 1e6
        rate = run["items_per_second"]
        baseline = BASELINES.get(family)
        ratio = ""
        if baseline and f"{baseline}/{arg}" in rows:
            ratio = f"{mbps / (rows[f'{baseline}/{arg}']['bytes_per_second'] / 1e6):.0%}"
        print(f"{name:<24} {mbps:>10.1f} {rate:>12,.0f} {ratio:>12}")


def nanoseconds(run):
    scale = {"ns": 1, "us": 1e3, "ms": 1e6, "s": 1e9}[run["time_unit"]]
    return run["cpu_time"] * scale


def tap(path):
    rows = medians(path)
    untapped = nanoseconds(rows["BM_Exchange/0"])
    print(f"{'per exchange, on the worker':<36} {'ns':>8} {'above no tap':>13}")
    for name, run in rows.items():
        if name.startswith("BM_Exchange"):
            ns = nanoseconds(run)
            print(f"{run.get('label', name):<36} {ns:>8.0f} {ns - untapped:>13.0f}")
    print()
    print(f"{'GET /tap, per event':<36} {'ns':>8}")
    for name, run in rows.items():
        if name.startswith("BM_TapEventJson"):
            print(f"{name:<36} {1e9 / run['items_per_second']:>8.0f}")


def metrics(path):
    rows = medians(path)
    loop = nanoseconds(rows["BM_InputLoop"])
    record = nanoseconds(rows["BM_HistogramRecord"])
    print(f"{'per request':<22} {'ns':>8} {'above loop':>11} {'x record':>9}")
    for name, run in rows.items():
        if name.startswith("BM_Collect"):
            continue
        ns = nanoseconds(run)
        print(f"{name:<22} {ns:>8.1f} {ns - loop:>11.1f} {ns / record:>9.1f}")
    print()
    print(f"{'collection':<22} {'series':>8} {'us total':>11} {'ns/series':>10}")
    for name, run in rows.items():
        if not name.startswith("BM_Collect"):
            continue
        series = int(name.partition("/")[2])
        ns = nanoseconds(run)
        print(f"{name:<22} {series:>8} {ns / 1e3:>11.1f} {ns / series:>10.0f}")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("parsers", "metrics", "tap"):
        sys.exit("usage: report.py parsers|metrics|tap RESULTS.json")
    {"parsers": parsers, "metrics": metrics, "tap": tap}[sys.argv[1]](sys.argv[2])
