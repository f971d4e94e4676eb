#!/usr/bin/python3
"""meshctl dashboard end to end: emojivoto meshed on a local cluster of its own (demo/cluster.py,
as the story test starts it, under a name, subnet and ports of its own), the real
`meshctl dashboard --no-browser` as a process, and its page in headless Chromium
(test/lib/browser.py):

  1. #/workloads?ns=emojivoto shows emoji, voting, web and vote-bot; emoji succeeds always,
     voting and web sometimes;
  2. the same URL opened in a fresh browser profile (after the token dance) shows the same;
  3. the call graph: web's calls to voting are failing, to emoji healthy; clicking voting
     opens its workload;
  4. the tap of web's VoteDoughnut calls to voting shows rows ending with gRPC status
     Unknown; pause stops new rows, resume shows them.

    /usr/bin/python3 test/e2e/dashboard_test.py --bin BUILD_DIR --artifacts DIR

Screenshots of each step go to DIR; with UPDATE_SCREENSHOT=1 the graph's also replaces the
README's (docs/dashboard-emojivoto.png, reviewed before it is committed: CI never sets it).
Needs root and chromium-headless-shell. Exit code 0 when
every check passes; the cluster and the dashboard are gone in any case.
"""

import argparse
import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "demo"))
import cluster  # noqa: E402
from emojivoto.test_story import check, failures, verdict  # noqa: E402

BROWSER = ROOT / "test" / "lib" / "browser.py"
TAP = ("#/tap?target=emojivoto/deploy/web&to=emojivoto/deploy/voting"
       "&path=/emojivoto.v1.VotingService/VoteDoughnut")
WORKLOADS = "#/workloads?ns=emojivoto"
# The workloads' rows as the page shows them: {name: success rate or None}.
ROWS = ("Object.fromEntries([...document.querySelectorAll('tr[data-workload]')].map(r => "
        "[r.dataset.workload.split('/')[2], r.dataset.successRate === undefined ? null : "
        "Number(r.dataset.successRate)]))")
# Ready, with a success rate for each workload that serves requests.
ROWS_READY = ("document.body.dataset.state === 'ready' && ['emoji', 'voting', 'web'].every(n => "
              "document.querySelector(`tr[data-workload='emojivoto/deploy/${n}']"
              "[data-success-rate]`))")
TAP_ROWS = "document.querySelectorAll('tr[data-request-id]').length"

def browse(steps, timeout=180):
    """Runs browser.py; returns its step results, the last line's page errors and its exit
    code."""
    result = subprocess.run(["/usr/bin/python3", str(BROWSER)], input=json.dumps(steps),
                            capture_output=True, text=True, timeout=timeout)
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0:
        print(result.stdout + result.stderr, flush=True)
    return lines[:-1], lines[-1] if lines else {}, result.returncode


def start_dashboard(story):
    """meshctl dashboard, and the address it prints (with its token)."""
    env = dict(os.environ, NODEMESH_AGGREGATOR=story.aggregator)
    process = subprocess.Popen([story.binary("meshctl"), "dashboard", "--no-browser"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=env)
    printed = ""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        if select.select([process.stdout], [], [], 1)[0]:
            printed += process.stdout.readline()
            match = re.search(r"(http://127\.0\.0\.1:\d+/)\?token=([^#\s]+)", printed)
            if match:
                return process, match.group(1), match.group(2)
    process.kill()
    process.wait()
    raise RuntimeError(f"meshctl dashboard printed no address in 30 s: {printed}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True, help="build tree or directory of binaries")
    parser.add_argument("--artifacts", required=True, help="directory for the screenshots")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("dashboard_test.py: needs root (network namespaces, cgroups, eBPF)")
    if not os.access("/usr/bin/chromium-headless-shell", os.X_OK):
        sys.exit("dashboard_test.py: needs chromium-headless-shell: run bash test/install-deps.sh")
    artifacts = Path(args.artifacts)
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = lambda name: {"screenshot": str(artifacts / name)}  # noqa: E731
    story = cluster.Cluster("nodemesh-dashtest", "10.91.0.0/24", args.bin,
                            aggregator_port=18087, metrics_port=14193)
    dashboard = None
    try:
        story.up()
        story.meshctl("inject", "ns/emojivoto")
        story.wait_for_mesh_traffic()
        dashboard, base, token = start_dashboard(story)
        entry = f"{base}?token={token}"

        # The workloads, then the same URL in a fresh profile.
        steps, errors, code = browse([
            {"open": entry + WORKLOADS},
            {"wait": ROWS_READY, "timeout": 30},
            {"eval": ROWS},
            {"eval": "location.hash"},
            shot("1-workloads.png"),
            {"newProfile": True},
            {"open": entry + WORKLOADS},
            {"wait": ROWS_READY, "timeout": 30},
            {"eval": ROWS},
            shot("2-workloads-reopened.png"),
        ])
        check(code == 0, f"the workloads view renders without errors {errors}")
        values = [step["value"] for step in steps if "eval" in step]
        if len(values) == 3:
            rows, hash_after, reopened = values
            check(set(rows) == {"emoji", "voting", "web", "vote-bot"},
                  f"the rows are emoji, voting, web and vote-bot ({sorted(rows)})")
            check(rows.get("emoji") == 1, f"emoji's success rate is 1 ({rows.get('emoji')})")
            for name in ("voting", "web"):
                rate = rows.get(name)
                check(rate is not None and 0 < rate < 1,
                      f"{name}'s success rate is between 0 and 1 ({rate})")
            check(hash_after == WORKLOADS, f"the URL keeps the view ({hash_after})")
            check(set(reopened) == set(rows) and reopened.get("emoji") == 1
                  and all(0 < (reopened.get(n) or 0) < 1 for n in ("voting", "web")),
                  f"the URL reopened in a fresh profile shows the same rows ({reopened})")

        # The call graph: web's calls to voting fail, those to emoji do not; a node opens its
        # workload.
        health = ("Object.fromEntries([...document.querySelectorAll('path[data-edge]')].map(e => "
                  "[e.dataset.edge, e.dataset.health]))")
        web = "emojivoto/deploy/web"
        steps, errors, code = browse([
            {"open": entry + "#/graph?ns=emojivoto"},
            # (A wait's value must be JSON truthy: an element comes back as {}.)
            {"wait": "document.body.dataset.state === 'ready' && document.querySelector("
                     f"'path[data-edge=\"{web}>emojivoto/deploy/voting\"]') !== null",
             "timeout": 30},
            {"eval": health},
            shot("3-graph.png"),
            {"click": "g[data-workload='emojivoto/deploy/voting']"},
            {"wait": "location.hash.startsWith('#/workload?') && "
                     "document.body.dataset.state === 'ready'", "timeout": 30},
            {"eval": "location.hash"},
        ])
        check(code == 0, f"the graph view renders without errors {errors}")
        values = [step["value"] for step in steps if "eval" in step]
        if len(values) == 2:
            edges, opened = values
            check(edges.get(f"{web}>emojivoto/deploy/voting") == "failing",
                  f"web -> voting is failing ({edges})")
            check(edges.get(f"{web}>emojivoto/deploy/emoji") == "healthy",
                  f"web -> emoji is healthy ({edges})")
            check("sel=emojivoto/deploy/voting" in opened,
                  f"clicking voting opens its workload ({opened})")
            if os.environ.get("UPDATE_SCREENSHOT") == "1":
                shutil.copyfile(artifacts / "3-graph.png",
                                ROOT / "docs" / "dashboard-emojivoto.png")

        # The tap, paused and resumed.
        unknown = "document.querySelectorAll('tr[data-grpc-status=Unknown]').length > 0"
        steps, errors, code = browse([
            {"open": entry + TAP},
            {"wait": unknown, "timeout": 30},
            shot("4-tap.png"),
            {"click": "[data-tap-pause]"},
            {"eval": f"window.pausedRows = {TAP_ROWS}"},
            # Doughnut votes keep coming (one every few seconds): none is drawn while paused.
            {"wait": f"new Promise(done => setTimeout(() => done({TAP_ROWS} === "
                     "window.pausedRows), 5000))", "timeout": 10},
            shot("5-tap-paused.png"),
            {"click": "[data-tap-pause]"},
            {"wait": f"{TAP_ROWS} > window.pausedRows", "timeout": 30},
            {"eval": "[...document.querySelectorAll('tr[data-request-id]')].map(r => "
                     "[r.dataset.path, r.dataset.grpcStatus])"},
            shot("6-tap-resumed.png"),
        ])
        check(code == 0, f"the tap shows VoteDoughnut ending Unknown, pauses and resumes "
              f"{errors}")
        if code == 0:
            rows = steps[-2]["value"]
            # (A row whose request started before the tap has no path.)
            check(all(path in (None, "/emojivoto.v1.VotingService/VoteDoughnut")
                      for path, _ in rows), "every tapped row is a VoteDoughnut call")
    except Exception as error:  # the cluster and the dashboard must go whatever happened
        failures.append(repr(error))
        print(f"FAIL  {error}", flush=True)
    finally:
        if dashboard:
            dashboard.terminate()
            try:
                dashboard.wait(10)
            except subprocess.TimeoutExpired:
                dashboard.kill()
                dashboard.wait()
        story.down()
    return verdict()


if __name__ == "__main__":
    sys.exit(main())
