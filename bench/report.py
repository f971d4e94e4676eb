#!/usr/bin/python3
"""Turns Google Benchmark JSON into the tables of bench/RESULTS.md: medians, and each
workload's ratio to the baseline run on the same input in the same process."""
import json
import sys

# Benchmark name -> the baseline it is compared with.
BASELINES = {"BM_Http1Parser": "BM_BareLlhttp"}


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


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "parsers":
        sys.exit("usage: report.py parsers RESULTS.json")
    parsers(sys.argv[2])
