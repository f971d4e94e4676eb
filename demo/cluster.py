#!/usr/bin/python3
"""A local nodemesh cluster on this machine: two simulated Kubernetes nodes whose pods are
network namespaces + veth + cgroups on one pod network (a bridge), one nodemesh-agent per
node, one aggregator, and the emojivoto app spread over both nodes, unmeshed.

    demo/cluster.py up [--name N] [--subnet 10.88.0.0/24] [--bin DIR]
    demo/cluster.py story [--name N]     the debugging story, on a cluster that is up
    demo/cluster.py status [--name N]
    demo/cluster.py down [--name N]      removes everything `up` made

Everything `up` creates is recorded in /run/<name>/state.json as it is made, so `down`
removes exactly that (and works after a failed or interrupted `up`). Logs of every process
go to /run/<name>/logs/. Needs root, iproute2, and the nodemesh binaries in --bin
(default: build/release, as `cmake --preset release` makes them).

Layout (namespace emojivoto; services as in Kubernetes, one replica each):
    node-1: emoji, vote-bot        node-2: voting, web
Each pod listens on :8080 of its own address; /etc/netns/<pod>/hosts names the others
(web-svc, emoji-svc, voting-svc). The inventory (/run/<name>/inventory.json) lists every
pod with its node; both agents watch it, each enrolls its own node's meshed pods, and
`meshctl inject` flips `meshed` in it.
"""

import argparse
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
APP = HERE / "emojivoto" / "app"
PYTHON = "/usr/bin/python3"  # Debian's, the one with python3-grpcio
NAMESPACE = "emojivoto"

# (deployment, node, service account, service name, command after the interpreter)
PODS = [
    ("emoji", "node-1", "emoji", "emoji-svc", ["emoji.py", "--listen", "0.0.0.0:8080"]),
    ("voting", "node-2", "voting", "voting-svc", ["voting.py", "--listen", "0.0.0.0:8080"]),
    ("web", "node-2", "web", "web-svc",
     ["web.py", "--listen", "0.0.0.0:8080", "--emoji-addr", "emoji-svc:8080",
      "--voting-addr", "voting-svc:8080"]),
    ("vote-bot", "node-1", "default", None, ["vote_bot.py", "--web-addr", "web-svc:8080",
                                              "--rate", "5"]),
]
NODES = ["node-1", "node-2"]


def say(message):
    print(message, flush=True)


def run(*argv, check=True, quiet=False):
    result = subprocess.run(argv, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip() or result.stdout.strip()}")
    return result


def cgroup2_mount():
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            before, _, after = line.partition(" - ")
            if after.split()[0] == "cgroup2":
                return Path(before.split()[4])
    raise RuntimeError("no cgroup v2 mount: nodemesh needs cgroup v2")


def pod_name(deployment, cluster):
    # Kubernetes-like, stable for a given cluster name: web-7c9d6f8b5-x2kqp.
    digest = hashlib.sha256(f"{cluster}/{deployment}".encode()).hexdigest()
    return f"{deployment}-{digest[:9]}-{digest[9:14]}"


class Cluster:
    def __init__(self, name, subnet="10.88.0.0/24", bin_dir=None, aggregator_port=8085,
                 metrics_port=4191):
        self.name = name
        self.state_dir = Path("/run") / name
        self.logs = self.state_dir / "logs"
        self.state_file = self.state_dir / "state.json"
        self.inventory = self.state_dir / "inventory.json"
        self.bin_dir = Path(bin_dir or ROOT / "build" / "release")
        self.subnet = ipaddress.ip_network(subnet)
        self.aggregator = f"127.0.0.1:{aggregator_port}"
        self.metrics_port = metrics_port
        self.cgroup_root = f"/{name}"
        # Interface names have 15 characters at most: a short tag unique to the name.
        self.short = "nm" + hashlib.sha256(name.encode()).hexdigest()[:6]
        self.state = {"links": [], "netns": [], "etc_netns": [], "cgroups": [], "pids": {}}
        if self.state_file.exists():
            self.state = json.loads(self.state_file.read_text())

    # --- bookkeeping: everything made is written down before the next step ------------

    def remember(self, kind, value):
        self.state[kind].append(value)
        self.save()

    def save(self):
        self.state_dir.mkdir(parents=True, exist_ok=True)
        temporary = self.state_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.state, indent=1))
        temporary.rename(self.state_file)

    def binary(self, name):
        # A directory of binaries, or a CMake build tree with them in their folders.
        for folder in ("", "agent", "aggregator", "cli"):
            path = self.bin_dir / folder / name
            if path.exists():
                return str(path)
        raise RuntimeError(f"{name} not found in {self.bin_dir}: build with `cmake --preset "
                           f"release && cmake --build --preset release`, or pass --bin")

    # --- up ---------------------------------------------------------------------------

    def up(self):
        if self.state_file.exists():
            say(f"cluster {self.name} exists: taking it down first")
            self.down()
            self.state = {"links": [], "netns": [], "etc_netns": [], "cgroups": [], "pids": {}}
        self.logs.mkdir(parents=True, exist_ok=True)
        self.save()
        for tool in ("nodemesh-agent", "nodemesh-aggregator"):
            self.binary(tool)
        hosts = list(self.subnet.hosts())
        gateway, addresses = hosts[0], hosts[10:]
        bridge = f"{self.short}br"
        self.check_subnet_free()
        say(f"pod network {self.subnet} on bridge {bridge}")
        run("ip", "link", "add", bridge, "type", "bridge")
        self.remember("links", bridge)
        run("ip", "addr", "add", f"{gateway}/{self.subnet.prefixlen}", "dev", bridge)
        run("ip", "link", "set", bridge, "up")

        mount = cgroup2_mount()
        for node in NODES:
            directory = mount / self.name / node
            directory.mkdir(parents=True, exist_ok=True)
            self.remember("cgroups", str(directory))

        pods = []
        for index, (deployment, node, account, service, _) in enumerate(PODS):
            name = pod_name(deployment, self.name)
            netns = f"{self.name}-{deployment}"
            veth = f"{self.short}p{index}"
            ip = str(addresses[index])
            cgroup = f"{self.cgroup_root}/{node}/{name}"
            (mount / cgroup.lstrip("/")).mkdir(parents=True, exist_ok=True)
            self.remember("cgroups", str(mount / cgroup.lstrip("/")))
            run("ip", "netns", "add", netns)
            self.remember("netns", netns)
            run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
            self.remember("links", veth)
            run("ip", "link", "set", veth, "master", bridge, "up")
            run("ip", "-n", netns, "addr", "add", f"{ip}/{self.subnet.prefixlen}", "dev", "eth0")
            run("ip", "-n", netns, "link", "set", "eth0", "up")
            run("ip", "-n", netns, "link", "set", "lo", "up")
            run("ip", "-n", netns, "route", "add", "default", "via", str(gateway))
            pods.append({"namespace": NAMESPACE, "name": name,
                         "owner": {"kind": "Deployment", "name": deployment},
                         "labels": {"app": deployment}, "serviceAccount": account,
                         "ips": [ip], "cgroup": cgroup, "netns": f"/var/run/netns/{netns}",
                         "meshed": False, "node": node, "_service": service,
                         "_netns": netns})
            say(f"  pod {NAMESPACE}/{name} on {node}: {ip}")
        hosts_file = "".join(f"{p['ips'][0]} {p['_service']} {p['name']}\n"
                             for p in pods if p["_service"])
        for pod in pods:
            directory = Path("/etc/netns") / pod["_netns"]
            directory.mkdir(parents=True, exist_ok=True)
            self.remember("etc_netns", str(directory))
            (directory / "hosts").write_text("127.0.0.1 localhost\n" + hosts_file)
        self.write_inventory([{k: v for k, v in p.items() if not k.startswith("_")}
                              for p in pods])

        say(f"aggregator on {self.aggregator}")
        aggregator_log = self.logs / "aggregator.log"
        logged_before = aggregator_log.stat().st_size if aggregator_log.exists() else 0
        self.spawn("aggregator", [self.binary("nodemesh-aggregator"), "--listen", self.aggregator])
        # It says so once it listens; an agent that dialled before would wait out its backoff.
        self.wait_for(lambda: b"serving agents and clients" in
                      aggregator_log.read_bytes()[logged_before:],
                      "the aggregator to listen", log="aggregator")
        for index, node in enumerate(NODES):
            say(f"agent for {node}: /metrics on 127.0.0.1:{self.metrics_port + index}")
            self.spawn(f"agent-{node}", [
                self.binary("nodemesh-agent"), "--node", node, "--inventory", str(self.inventory),
                "--cgroup-root", f"{self.cgroup_root}/{node}", "--aggregator", self.aggregator,
                "--metrics-address", f"127.0.0.1:{self.metrics_port + index}",
                "--admin-socket", str(self.state_dir / f"{node}.sock"), "--workers", "1"])
        for node in NODES:
            self.wait_for(lambda n=node: (self.state_dir / f"{n}.sock").exists(),
                          f"the agent of {node} to start", log=f"agent-{node}")

        for deployment, node, _, service, command in PODS:
            pod = next(p for p in pods if p["owner"]["name"] == deployment)
            ready = self.state_dir / f"{deployment}.ready"
            arguments = [PYTHON, str(APP / command[0]), *command[1:]]
            if service:
                arguments += ["--ready-file", str(ready)]
            self.spawn_in_pod(deployment, pod, arguments)
            if service:
                self.wait_for(ready.exists, f"{deployment} to serve", log=deployment)
        say(f"emojivoto is running, unmeshed; inventory {self.inventory}")

    def check_subnet_free(self):
        routes = run("ip", "-j", "route", "show").stdout
        for route in json.loads(routes or "[]"):
            destination = route.get("dst", "")
            if destination and destination != "default":
                try:
                    if ipaddress.ip_network(destination, strict=False).overlaps(self.subnet):
                        raise RuntimeError(
                            f"{self.subnet} overlaps the route {destination} on this machine: "
                            f"choose another with --subnet")
                except ValueError:
                    continue

    def write_inventory(self, pods):
        temporary = self.inventory.with_suffix(".tmp")
        temporary.write_text(json.dumps({"pods": pods}, indent=1) + "\n")
        temporary.rename(self.inventory)

    def spawn(self, name, argv, preexec=None):
        log = open(self.logs / f"{name}.log", "ab")
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True,
                                   preexec_fn=preexec)
        self.state["pids"][name] = process.pid
        self.save()
        return process

    def spawn_in_pod(self, name, pod, argv):
        # Into the pod's cgroup first, then its netns: `ip netns exec` mounts a fresh /sys,
        # where the cgroup tree is not visible. It also bind-mounts /etc/netns/<pod>/hosts.
        # Both exec in place, so the pid stays the application's.
        procs = cgroup2_mount() / pod["cgroup"].lstrip("/") / "cgroup.procs"
        shell = f'echo $$ > {procs} && exec ip netns exec {pod["_netns"]} "$@"'
        return self.spawn(name, ["sh", "-c", shell, "sh", *argv])

    def wait_for(self, condition, what, timeout=60, log=None):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            pid = self.state["pids"].get(log)
            if pid and not alive(pid):
                raise RuntimeError(f"waiting for {what}: it exited; see {self.logs / log}.log:\n"
                                   + tail(self.logs / f"{log}.log"))
            time.sleep(0.2)
        raise RuntimeError(f"timed out waiting for {what}"
                           + (f"; see {self.logs / log}.log" if log else ""))

    # --- down -------------------------------------------------------------------------

    def down(self):
        if not self.state_file.exists():
            say(f"no cluster {self.name}")
            return
        # The app first (then the agents see nothing break), the agents, the aggregator.
        for name, pid in sorted(self.state["pids"].items(),
                                key=lambda item: ("agent" in item[0], item[0] == "aggregator")):
            stop(pid)
        mount = cgroup2_mount()
        for directory in sorted(self.state["cgroups"], key=len, reverse=True):
            kill_cgroup(Path(directory))
        for netns in self.state["netns"]:
            run("ip", "netns", "del", netns, check=False)
        for link in self.state["links"]:
            run("ip", "link", "del", link, check=False)
        for directory in self.state["etc_netns"]:
            shutil.rmtree(directory, ignore_errors=True)
        for directory in sorted(self.state["cgroups"], key=len, reverse=True):
            try:
                os.rmdir(directory)
            except FileNotFoundError:
                pass
        try:
            os.rmdir(mount / self.name)
        except OSError:
            pass
        shutil.rmtree(self.state_dir, ignore_errors=True)
        say(f"cluster {self.name} removed")

    # --- story ------------------------------------------------------------------------

    def meshctl(self, *args, check=True, timeout=60):
        env = dict(os.environ, NODEMESH_AGGREGATOR=self.aggregator,
                   NODEMESH_INVENTORY=str(self.inventory))
        result = subprocess.run([self.binary("meshctl"), *args], capture_output=True, text=True,
                                env=env, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"meshctl {' '.join(args)}: {result.stderr.strip()}")
        return result

    def app_pids(self):
        return {name: pid for name, pid in self.state["pids"].items()
                if name in {deployment for deployment, *_ in PODS}}

    def stat_rows(self, *args):
        return json.loads(self.meshctl("stat", "deploy", "-n", NAMESPACE, *args,
                                       "-o", "json").stdout)["rows"]

    def wait_for_mesh_traffic(self, timeout=120):
        """Until every deployment that serves requests has some in the window, and at
        least half a minute of them, so the first numbers mean something."""
        started = time.monotonic()
        served = {"web", "emoji", "voting"}
        while time.monotonic() - started < timeout:
            rows = {row["name"]: row for row in self.stat_rows()}
            ready = all(rows.get(name, {}).get("requests", 0) > 0 for name in served)
            elapsed = time.monotonic() - started
            progress(f"waiting for traffic through the mesh: {elapsed:3.0f}s")
            if ready and elapsed >= 30:
                progress(None)
                return
            time.sleep(2)
        progress(None)
        raise RuntimeError("no traffic through the mesh after two minutes: see the agents' "
                           f"logs in {self.logs}")

    def story(self):
        def show(*args):
            say(f"\n$ meshctl {' '.join(args)}")
            say(self.meshctl(*args).stdout.rstrip())

        pids_before = self.app_pids()
        say("\nemojivoto runs, and fails some of the time, but nothing shows why: it is not "
            "meshed.")
        show("stat", "deploy", "-n", NAMESPACE)
        say("\nMeshing the running app live: no restart, no sidecar.")
        show("inject", "ns/emojivoto")
        self.wait_for_mesh_traffic()
        say("\nWhich workloads fail? web and voting, not emoji:")
        show("stat", "deploy", "-n", NAMESPACE)
        say("\nWhat does web call, and how do those calls do?")
        show("stat", "deploy", "-n", NAMESPACE, "--from", "deploy/web")
        say("\nThe failing requests, live (web to voting):")
        tap = self.meshctl("tap", "deploy/web", "-n", NAMESPACE, "--to", "deploy/voting",
                           "--path", "/emojivoto.v1.VotingService/VoteDoughnut",
                           "--max-events", "6", timeout=60)
        say(f"$ meshctl tap deploy/web -n {NAMESPACE} --to deploy/voting "
            f"--path /emojivoto.v1.VotingService/VoteDoughnut")
        say(tap.stdout.rstrip())
        say("\nThe one failing method: /emojivoto.v1.VotingService/VoteDoughnut answers "
            "grpc-status Unknown. Tell the voting team.")
        pids_after = self.app_pids()
        unchanged = all(alive(pid) for pid in pids_after.values()) and pids_before == pids_after
        say("The app's processes were never restarted: " +
            ", ".join(f"{name} pid {pid}" for name, pid in sorted(pids_after.items())) +
            (" (unchanged)" if unchanged else " (CHANGED)"))
        if not unchanged:
            raise RuntimeError("an application process was restarted or died")

    def explain(self):
        # The aggregator's address always: without it, meshctl would go through the API
        # server of a kubeconfig the user may have.
        env = f"NODEMESH_INVENTORY={self.inventory} NODEMESH_AGGREGATOR={self.aggregator}"
        bin_dir = Path(self.binary("meshctl")).parent
        say(f"""
The cluster keeps running. Explore it:
  export PATH={bin_dir}:$PATH {env}
  meshctl dashboard '#/graph?ns=emojivoto'        # the call graph, workloads and tap in a browser
  meshctl stat deploy -n emojivoto -t 10s          # -o wide adds bytes/s, -o json for scripts
  meshctl routes deploy/voting -n emojivoto        # per-route metrics, no profile needed
  meshctl edges deploy -n emojivoto                # who calls whom
  meshctl tap deploy/web -n emojivoto              # every request, live (Ctrl-C stops)
  meshctl top deploy/voting -n emojivoto           # the busiest routes, refreshed in place
  meshctl uninject deploy/web -n emojivoto         # release a workload, live
  meshctl check                                    # nodes and pods
  meshctl shell --socket {self.state_dir}/node-2.sock   # node-2's agent (web, voting): pods, conns, explain POD, kernel, tap
  meshctl shell --node node-1                      # node-1's agent, through the aggregator (read only)
  curl -s 127.0.0.1:{self.metrics_port}/metrics | grep ^response_total   # node-1's Prometheus metrics
  curl -s --unix-socket {self.state_dir}/node-1.sock http://agent/connections
Logs are in {self.logs}. Tear everything down with:
  bash demo/run.sh down""")

    def status(self):
        if not self.state_file.exists():
            say(f"no cluster {self.name}")
            return 1
        for name, pid in sorted(self.state["pids"].items()):
            say(f"{name:<12} pid {pid:<8} {'running' if alive(pid) else 'EXITED'}")
        return 0


_last_progress = [0.0]


def progress(line):
    """One line rewritten in place on a terminal; elsewhere a line every ten seconds.
    None ends it."""
    if sys.stdout.isatty():
        print("\r  " + line if line else "", end="" if line else "\n", flush=True)
    elif line and time.monotonic() - _last_progress[0] >= 10:
        _last_progress[0] = time.monotonic()
        say("  " + line)


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie of ours is not alive.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def stop(pid, grace=5):
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and alive(pid):
        time.sleep(0.1)
    if alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def kill_cgroup(directory):
    kill = directory / "cgroup.kill"
    if kill.exists():
        try:
            kill.write_text("1")
        except OSError:
            pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            if not (directory / "cgroup.procs").read_text().strip():
                return
        except OSError:
            return
        time.sleep(0.1)


def tail(path, lines=15):
    try:
        return "".join(Path(path).read_text().splitlines(keepends=True)[-lines:])
    except OSError:
        return ""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "story", "down", "status"])
    parser.add_argument("--name", default="nodemesh-demo")
    parser.add_argument("--subnet", default="10.88.0.0/24")
    parser.add_argument("--bin", help="directory with meshctl, nodemesh-agent, "
                                      "nodemesh-aggregator (default build/release)")
    parser.add_argument("--aggregator-port", type=int, default=8085)
    parser.add_argument("--metrics-port", type=int, default=4191,
                        help="node-1's agent serves /metrics there, node-2's on the next")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("cluster.py: needs root (network namespaces, cgroups, eBPF): run it as root")
    cluster = Cluster(args.name, args.subnet, args.bin, args.aggregator_port, args.metrics_port)
    try:
        if args.command == "up":
            cluster.up()
        elif args.command == "story":
            if not cluster.state_file.exists():
                sys.exit(f"cluster.py: no cluster {args.name}: run `demo/cluster.py up` first")
            cluster.story()
            cluster.explain()
        elif args.command == "down":
            cluster.down()
        else:
            return cluster.status()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
        sys.exit(f"cluster.py: {error}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
