"""Data-parallel training across simulated machines: one Linux network namespace per rank.

Each rank runs in its own network namespace ("host" ``vnc<pid>-<i>``), whose only
interface is one end of a veth pair; the other ends hang on one bridge (the
"switch"). Both directions of every link are shaped by ``tc``'s token bucket
filter (``tbf``) to ``--gbit`` Gbit/s, so each host has a full-duplex NIC of that
speed. MPICH's ``mpiexec`` starts in host 0 and reaches the others through a
launcher that enters the host's namespace where a cluster would ssh into it
(``-launcher ssh -launcher-exec <script>``; the script knows only this cluster's
addresses and refuses any other host). Ranks talk TCP over the veths
(``MPIR_CVAR_CH4_NETMOD=ofi``, ``FI_PROVIDER=tcp``; ``MPIR_CVAR_NOLOCAL=1`` stops
MPICH from using shared memory between "hosts" that share one kernel), and the
byte counters of the shaped queues confirm that the gradients crossed the links.

Latency. This kernel has no ``netem``, so no delay is added: a message waits only
for the token bucket (a small one queued behind a large transfer waits until the
queue ahead of it drains at the link rate, up to the ``latency`` limit of the
queue, 5 ms here) and for the TCP and MPI software on both ends. On an idle link
that is tens of microseconds, like one switch hop in a rack, not a WAN.

Isolation and bounds. The namespaces have no route out: the bridge has no address
in the host's namespace and no uplink, so the only targets of any packet are the
cluster's private addresses (a /24 of 10.213.0.0/16 unused on this machine) and
each namespace's own loopback. Every run has a fixed number of steps and a
timeout (``--timeout``, default 300 s) after which the whole process group is
killed; the namespaces and the bridge are removed on exit, on Ctrl-C and on any
error, and leftovers of a killed run are removed by the next one (``--cleanup``
removes them alone).

Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) and iproute2's ``ip`` and ``tc``; says so
and exits with status 2 otherwise.

Measured per configuration (model x ranks x link x overlap): step time, images/s
over all ranks, the time per step spent after backward waiting for the gradient
allreduce (with overlap, what was not hidden behind backward), and the reducer's
time inside backward (copying gradients into buckets, starting them). Ranks share
the machine's cores, so absolute times are oversubscribed; the communication share
of a step and the gain of overlap are what carry over. ``--probe`` also times bare
ring allreduces of 4 kB to 16 MB for the alpha-beta fit of
``benchmarks/scaling_model.py``.

Usage:
    sudo python -m benchmarks.cluster                       # the README's table (about 15 min)
    sudo python -m benchmarks.cluster --models cifar_example --ranks 2 --gbit 1 --steps 3
    sudo python -m benchmarks.cluster --cleanup
"""

from __future__ import annotations

import argparse
import atexit
import ipaddress
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREFIX = "vnc"                       # namespaces vnc<pid>-<i>, bridge vnc<pid>br
SUPERNET = ipaddress.ip_network("10.213.0.0/16")
# per model: input side, images per rank per step
MODELS = {"cifar_example": (32, 32), "resnet18": (64, 16)}
MPI_ENV = {"MPIR_CVAR_CH4_NETMOD": "ofi", "FI_PROVIDER": "tcp", "MPIR_CVAR_NOLOCAL": "1",
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "NUMBA_NUM_THREADS": "1"}


class ClusterUnavailable(RuntimeError):
    """This machine cannot host the simulated cluster; the message says what is missing."""


def requirements() -> str | None:
    """What is missing to build the cluster here, or None when everything is present."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (network namespaces need CAP_NET_ADMIN and CAP_SYS_ADMIN: "
                       "run with sudo)")
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            missing.append(f"the `{tool}` command (Debian/Ubuntu: apt-get install iproute2)")
    if _mpiexec() is None:
        missing.append("MPICH's mpiexec (pip install 'volnet[mpi]')")
    return "; ".join(missing) or None


def _mpiexec() -> str | None:
    return shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")


def _run(*cmd: str, check: bool = True) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if check and out.returncode:
        raise ClusterUnavailable(f"`{' '.join(cmd)}` failed: {out.stderr.strip()}")
    return out.stdout


def remove_stale() -> list[str]:
    """Remove namespaces and bridges left by cluster runs whose process no longer exists."""
    removed = []
    for line in _run("ip", "netns", "list", check=False).splitlines():
        match = re.match(rf"^({PREFIX}(\d+)-\d+)\b", line)
        if match and not _alive(int(match.group(2))):
            _run("ip", "netns", "delete", match.group(1), check=False)
            removed.append(match.group(1))
    for line in _run("ip", "-o", "link", "show", "type", "bridge", check=False).splitlines():
        match = re.search(rf"\d+: ({PREFIX}(\d+)br)[:@]", line)
        if match and not _alive(int(match.group(2))):
            _run("ip", "link", "delete", match.group(1), check=False)
            removed.append(match.group(1))
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Cluster:
    """``size`` namespaces on one bridge, links shaped to ``gbit``; a context manager.

    Example (as root):
        >>> with Cluster(2, gbit=1) as cluster:
        ...     out = cluster.mpiexec(2, [sys.executable, "-c", "print(1)"], timeout=60)
    """

    def __init__(self, size: int, gbit: float) -> None:
        if not 1 <= size <= 9:
            raise ValueError(f"a simulated cluster has 1 to 9 hosts, got {size}")
        problem = requirements()
        if problem:
            raise ClusterUnavailable(f"the simulated cluster needs {problem}")
        self.size, self.gbit, self.tag = size, gbit, f"{PREFIX}{os.getpid()}"
        self.names = [f"{self.tag}-{i}" for i in range(size)]
        self.bridge = f"{self.tag}br"
        self.addresses = [str(a) for a in list(self._subnet().hosts())[:size]]
        self._made: list[tuple[str, ...]] = []     # undo commands, newest last
        self._dir = self._sigterm = None

    def _subnet(self) -> ipaddress.IPv4Network:
        """A /24 of 10.213.0.0/16 that no interface or route of this machine uses."""
        used = []
        for line in _run("ip", "-4", "-o", "addr", "show").splitlines() + \
                _run("ip", "-4", "route", "show").splitlines():
            for text in re.findall(r"(\d+\.\d+\.\d+\.\d+(?:/\d+)?)", line):
                used.append(ipaddress.ip_network(text, strict=False))
        for candidate in list(SUPERNET.subnets(new_prefix=24))[os.getpid() % 200:]:
            if not any(candidate.overlaps(net) for net in used):
                return candidate
        raise ClusterUnavailable("no free /24 in 10.213.0.0/16 for the simulated cluster")

    # ---- building and removing ------------------------------------------------------------
    def __enter__(self) -> Cluster:
        atexit.register(self.close)
        self._sigterm = signal.signal(signal.SIGTERM, _exit_on_signal)
        remove_stale()
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _do(self, cmd: tuple[str, ...], undo: tuple[str, ...] | None = None) -> None:
        _run(*cmd)
        if undo:
            self._made.append(undo)

    def _build(self) -> None:
        self._do(("ip", "link", "add", self.bridge, "type", "bridge"),
                 ("ip", "link", "delete", self.bridge))
        self._do(("ip", "link", "set", self.bridge, "up"))
        for i, (ns, address) in enumerate(zip(self.names, self.addresses)):
            host, inside = f"{self.tag}h{i}", f"{self.tag}n{i}"
            self._do(("ip", "netns", "add", ns), ("ip", "netns", "delete", ns))
            # deleting the namespace deletes its veth end, and with it the peer
            self._do(("ip", "link", "add", host, "type", "veth", "peer", "name", inside))
            self._do(("ip", "link", "set", inside, "netns", ns))
            self._do(("ip", "link", "set", host, "master", self.bridge))
            self._do(("ip", "link", "set", host, "up"))
            self._do(("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", inside))
            self._do(("ip", "-n", ns, "link", "set", inside, "up"))
            self._do(("ip", "-n", ns, "link", "set", "lo", "up"))
        self.shape(self.gbit)
        self._dir = tempfile.mkdtemp(prefix=f"{self.tag}-")
        self.launcher = os.path.join(self._dir, "enter-namespace")
        cases = "\n".join(f"  {a}) ns={n} ;;" for a, n in zip(self.addresses, self.names))
        with open(self.launcher, "w") as f:   # Hydra calls it as it would call ssh
            f.write(f"""#!/bin/sh
# mpiexec's "ssh": run the command in the namespace of host $1; no other host exists
[ "$1" = "-x" ] && shift
case "$1" in
{cases}
  *) echo "enter-namespace: $1 is not a host of this simulated cluster" >&2; exit 1 ;;
esac
shift
exec ip netns exec "$ns" sh -c "$*"
""")
        os.chmod(self.launcher, stat.S_IRWXU)

    def shape(self, gbit: float) -> None:
        """Shape both directions of every link to ``gbit`` Gbit/s (token bucket)."""
        self.gbit = gbit
        rate = int(gbit * 1e9)
        burst = max(64 * 1024, rate // 8 // 1000)          # a millisecond of traffic
        tbf = ("root", "tbf", "rate", str(rate), "burst", str(burst), "latency", "5ms")
        for i, ns in enumerate(self.names):
            # host -> switch inside the namespace, switch -> host on the bridge's side
            self._do(("ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev",
                      f"{self.tag}n{i}") + tbf)
            self._do(("tc", "qdisc", "replace", "dev", f"{self.tag}h{i}") + tbf)

    def bytes_sent(self) -> list[int]:
        """Bytes each host has sent through its shaped link so far."""
        sent = []
        for i, ns in enumerate(self.names):
            text = _run("ip", "netns", "exec", ns, "tc", "-s", "qdisc", "show", "dev",
                        f"{self.tag}n{i}")
            sent.append(int(re.search(r"Sent (\d+) bytes", text).group(1)))
        return sent

    def close(self) -> None:
        """Remove everything this cluster made (idempotent)."""
        while self._made:
            _run(*self._made.pop(), check=False)
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        if self._sigterm is not None:
            signal.signal(signal.SIGTERM, self._sigterm)
            self._sigterm = None

    # ---- running ------------------------------------------------------------------------
    def mpiexec(self, ranks: int, argv: list[str], timeout: float) -> str:
        """Run ``argv`` on hosts 0..ranks-1 (one rank each) under mpiexec; returns stdout."""
        if not 1 <= ranks <= self.size:
            raise ValueError(f"{ranks} ranks on a cluster of {self.size} hosts")
        env = dict(os.environ, **MPI_ENV)
        cmd = ["ip", "netns", "exec", self.names[0], _mpiexec(),
               "-launcher", "ssh", "-launcher-exec", self.launcher,
               "-localhost", self.addresses[0], "-hosts", ",".join(self.addresses[:ranks]),
               "-n", str(ranks)]
        for key, value in MPI_ENV.items():
            cmd += ["-genv", key, value]
        proc = subprocess.Popen(cmd + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env, cwd=ROOT, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)   # mpiexec, its proxies and every rank
            proc.communicate()
            raise RuntimeError(f"{' '.join(argv)} on {ranks} hosts still running after "
                               f"{timeout:g} s; killed") from None
        if proc.returncode:
            raise RuntimeError(f"{' '.join(argv)} on {ranks} hosts failed ({proc.returncode}):"
                               f"\n{out}{err}")
        return out


def _exit_on_signal(signum, frame):
    raise SystemExit(128 + signum)   # unwinds through the finally blocks that clean up


# ---- inside each rank ----------------------------------------------------------------------

def worker(args) -> None:
    """One rank: train ``args.model`` for ``args.steps`` timed steps; rank 0 prints JSON."""
    import volnet as vn
    from volnet.data.batches import BatchIterator
    from volnet.models.registry import build
    from volnet.train.allreduce import GradientAllreducer, broadcast_model
    from volnet.train.communicator import get_communicator
    from volnet.train.optim import SGD

    comm = get_communicator(distributed=True)
    size, batch = args.input, args.batch
    net = build(args.model, num_classes=10)
    broadcast_model(net, comm)
    rng = np.random.default_rng(comm.rank)
    x = rng.integers(0, 256, size=(batch * 4, 3, size, size), dtype=np.uint8)
    data = list(BatchIterator(x, rng.integers(0, 10, size=len(x)), batch_size=batch).batches(0))
    reducer = GradientAllreducer(comm, bucket_mb=args.bucket_mb, net=net,
                                 overlap=args.overlap == "on")
    optimizer = SGD(lr=1e-3, momentum=0.9)
    named = list(net.named_params(trainable_only=True))

    def step(xb, yb):
        _, dscores = vn.softmax_cross_entropy(net.forward(xb, training=True), yb)
        net.backward(dscores, input_grad=False)
        reducer([(n, g) for n, _, g in net.named_params(trainable_only=True)])
        optimizer.step({k: p for k, p, _ in named},
                       {k: g for k, _, g in net.named_params(trainable_only=True)})

    for i in range(args.warmup):
        step(*data[i % len(data)])
    comm.barrier()
    before = (reducer.seconds, reducer.wait_seconds, reducer.early, reducer.collectives)
    times = []
    for i in range(args.steps):
        start = time.perf_counter()
        step(*data[i % len(data)])
        times.append(time.perf_counter() - start)
    comm.barrier()
    totals = np.array([sum(times), reducer.seconds - before[0], reducer.wait_seconds - before[1]])
    comm.allreduce_([totals], "timings")   # mean over the ranks
    totals /= comm.world_size * args.steps
    if comm.rank == 0:
        print(json.dumps({
            "model": args.model, "input": size, "batch": batch, "ranks": comm.world_size,
            "overlap": args.overlap, "steps": args.steps,
            "step_ms": 1e3 * totals[0], "images_per_s": comm.world_size * batch / totals[0],
            "wait_ms": 1e3 * totals[2], "in_backward_ms": 1e3 * (totals[1] - totals[2]),
            "median_step_ms": 1e3 * float(np.median(times)),
            "early_buckets": (reducer.early - before[2]) / args.steps,
            "buckets": len(reducer.buckets), "bytes_per_step": reducer.bytes_per_step,
            "params": net.num_params()}), flush=True)


def probe(args) -> None:
    """Time bare allreduces of 4 kB to 16 MB (float32); rank 0 prints one JSON line.

    MPI's own blocking ``Allreduce``, not volnet's polling wait (which sleeps between
    polls so that a waiting rank leaves its core to others): this is the network and
    MPICH. Each size is timed ``repeats`` times one by one; the fastest and the median
    are kept (on a shared machine other work only ever slows a transfer down).
    """
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rows = []
    for exponent in range(12, 25, 2):
        buf = np.ones(2 ** exponent // 4, np.float32)
        repeats = max(5, min(40, 2 ** 23 // buf.nbytes))   # at most ~80 MB per size
        comm.Allreduce(MPI.IN_PLACE, buf)
        times = []
        for _ in range(repeats):
            comm.Barrier()
            start = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, buf)
            times.append(time.perf_counter() - start)
        slowest = np.array(times)
        comm.Allreduce(MPI.IN_PLACE, slowest, op=MPI.MAX)   # a collective ends on its last rank
        rows.append({"bytes": buf.nbytes, "seconds": float(slowest.min()),
                     "median_seconds": float(np.median(slowest)), "repeats": repeats})
    if comm.rank == 0:
        print(json.dumps({"probe": rows, "ranks": comm.size}), flush=True)


# ---- the driver ----------------------------------------------------------------------------

def run(args) -> dict:
    """Build the cluster, run every configuration (interleaved repeats), return the records."""
    records, probes, traffic = [], [], []
    worker_cmd = [sys.executable, "-m", "benchmarks.cluster", "--worker"]
    with Cluster(max(args.ranks), args.gbit[0]) as cluster:
        print(f"simulated cluster: {cluster.size} namespaces {', '.join(cluster.addresses)} on "
              f"bridge {cluster.bridge}; links shaped with tbf", file=sys.stderr, flush=True)
        for repeat in range(args.repeat):
            for model in ([] if args.probe_only else args.models):
                size, batch = MODELS[model]
                base = worker_cmd + ["--model", model, "--input", str(size), "--batch", str(batch),
                                     "--steps", str(args.steps), "--warmup", str(args.warmup)]
                for gbit in args.gbit:
                    cluster.shape(gbit)
                    for ranks in args.ranks:
                        if ranks == 1 and gbit != args.gbit[0]:
                            continue   # one rank sends nothing: once is enough
                        for overlap in (("on",) if ranks == 1 else ("on", "off")):
                            sent = cluster.bytes_sent()
                            out = cluster.mpiexec(ranks, base + ["--overlap", overlap],
                                                  timeout=args.timeout)
                            record = json.loads(out.strip().splitlines()[-1])
                            record.update(gbit=gbit if ranks > 1 else None, repeat=repeat)
                            moved = [b - a for a, b in zip(sent, cluster.bytes_sent())]
                            record["link_bytes_per_step"] = max(moved[:ranks]) / (
                                args.steps + args.warmup)
                            records.append(record)
                            print(_line(record), file=sys.stderr, flush=True)
            if (args.probe or args.probe_only) and repeat == 0:
                for gbit in args.gbit:
                    cluster.shape(gbit)
                    for ranks in (r for r in args.ranks if r > 1):
                        out = cluster.mpiexec(ranks, worker_cmd[:-1] + ["--probe-worker"],
                                              timeout=args.timeout)
                        result = json.loads(out.strip().splitlines()[-1])
                        result["gbit"] = gbit
                        probes.append(result)
                        print(f"probe {ranks} ranks {gbit} Gbit/s: " + ", ".join(
                            f"{r['bytes'] // 1024} kB {1e3 * r['seconds']:.2f} ms"
                            for r in result["probe"]), file=sys.stderr, flush=True)
        traffic = cluster.bytes_sent()
    return {"records": records, "probes": probes, "conditions": _conditions(args),
            "bytes_sent_per_host": traffic}


def _conditions(args) -> dict:
    load = os.getloadavg()
    return {"cores": os.cpu_count(), "loadavg_at_end": [round(v, 2) for v in load],
            "steps": args.steps, "warmup": args.warmup, "repeat": args.repeat,
            "mpi_env": MPI_ENV, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def _line(r: dict) -> str:
    link = f"{r['gbit']:g} Gbit/s" if r["gbit"] else "-"
    return (f"{r['model']:>13} {r['ranks']} rank(s) {link:>10} overlap {r['overlap']:>3}: "
            f"step {r['step_ms']:7.1f} ms, {r['images_per_s']:6.0f} images/s, waiting "
            f"{r['wait_ms']:6.1f} ms after backward, {r['in_backward_ms']:5.1f} ms in hooks, "
            f"{r['link_bytes_per_step'] / 1e6:.2f} MB/step on the busiest link")


def summarise(result: dict) -> list[dict]:
    """Per model x ranks x link: best-of-repeats step time with and without overlap."""
    best: dict[tuple, dict] = {}
    for r in result["records"]:
        key = (r["model"], r["ranks"], r["gbit"], r["overlap"])
        if key not in best or r["step_ms"] < best[key]["step_ms"]:
            best[key] = r
    rows = []
    for (model, ranks, gbit, overlap), r in sorted(best.items(), key=lambda kv: (
            kv[0][0], kv[0][1], kv[0][2] or 0, kv[0][3])):
        if overlap != "on":
            continue
        off = best.get((model, ranks, gbit, "off"))
        rows.append({"model": model, "ranks": ranks, "gbit": gbit, "step_ms": r["step_ms"],
                     "images_per_s": r["images_per_s"], "wait_ms": r["wait_ms"],
                     "comm_share": r["wait_ms"] / r["step_ms"],
                     "off_step_ms": off["step_ms"] if off else None,
                     "off_wait_ms": off["wait_ms"] if off else None,
                     "off_comm_share": off["wait_ms"] / off["step_ms"] if off else None,
                     "overlap_gain": off["step_ms"] / r["step_ms"] - 1 if off else None,
                     "mb_per_step": r["bytes_per_step"] / 1e6,
                     "link_mb_per_step": r["link_bytes_per_step"] / 1e6})
    return rows


def table(rows: list[dict]) -> str:
    """Markdown table of :func:`summarise`'s rows."""
    lines = ["| model | ranks | link | step (overlap) | images/s | waiting after backward "
             "| step (no overlap) | waiting (no overlap) | overlap gain |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        link = f"{r['gbit']:g} Gbit/s" if r["gbit"] else "-"
        off = (f"{r['off_step_ms']:.0f} ms | {r['off_wait_ms']:.0f} ms "
               f"({100 * r['off_comm_share']:.0f}%) | {100 * r['overlap_gain']:+.0f}%"
               if r["off_step_ms"] else "- | - | -")
        lines.append(f"| {r['model']} | {r['ranks']} | {link} | {r['step_ms']:.0f} ms | "
                     f"{r['images_per_s']:.0f} | {r['wait_ms']:.0f} ms "
                     f"({100 * r['comm_share']:.0f}%) | {off} |")
    return "\n".join(lines)


def _parse(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cluster",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS),
                        default=["cifar_example", "resnet18"])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--gbit", type=float, nargs="+", default=[1.0, 10.0],
                        help="link speeds in Gbit/s")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--repeat", type=int, default=2,
                        help="interleaved repeats; the fastest is kept (other load only slows)")
    parser.add_argument("--probe", action="store_true",
                        help="also time bare allreduces of 4 kB to 16 MB (alpha-beta fit)")
    parser.add_argument("--probe-only", action="store_true",
                        help="only the bare allreduces (with --json: replaces the probes of "
                             "an existing file and keeps its training records)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds one mpiexec may run before everything is killed")
    parser.add_argument("--json", default=None, help="write the records here")
    parser.add_argument("--cleanup", action="store_true",
                        help="only remove namespaces and bridges left by killed runs")
    # inside the ranks
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--probe-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="cifar_example", help=argparse.SUPPRESS)
    parser.add_argument("--input", type=int, default=32, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=32, help=argparse.SUPPRESS)
    parser.add_argument("--overlap", choices=("on", "off"), default="on", help=argparse.SUPPRESS)
    parser.add_argument("--bucket-mb", type=float, default=25.0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = _parse(argv)
    if args.worker:
        worker(args)
        return 0
    if args.probe_worker:
        probe(args)
        return 0
    problem = requirements()
    if problem:
        print(f"benchmarks.cluster: the simulated cluster needs {problem}", file=sys.stderr)
        return 2
    if args.cleanup:
        print("removed: " + (", ".join(remove_stale()) or "nothing"))
        return 0
    if any(not 1 <= r <= 9 for r in args.ranks):
        print("benchmarks.cluster: --ranks must be between 1 and 9", file=sys.stderr)
        return 2
    result = run(args)
    if args.probe_only and args.json and os.path.exists(args.json):
        with open(args.json) as f:
            old = json.load(f)
        old.update(probes=result["probes"], probe_conditions=result["conditions"])
        result = old
    rows = summarise(result)
    result["summary"] = rows
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
