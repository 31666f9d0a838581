"""gRPC and WebSocket scenarios of the side-by-side benchmark:
expressgateway, nginx and HAProxy in front of the same two backends, both
`eg-loadgen` servers on the load CPU: a gRPC echo over h2c (`grpc-echo`)
and a WebSocket echo over HTTP/1.1 (`ws-echo`).

- gRPC unary: h2load posts a fixed gRPC request (a 100-byte message) with
  `content-type: application/grpc` and `te: trailers` over h2c; the proxy
  speaks h2c to the backend (nginx `grpc_pass`, HAProxy `proto h2`).
  h2load cannot read trailers, so every answer's data is counted instead:
  an echo carries the 105-byte request back, a gateway's trailers-only
  error nothing.
- WebSocket echo: `eg-loadgen ws`, 64 WebSockets each sending a 128-byte
  binary message and waiting for its echo, through an HTTP/1.1 upgrade.

Rounds alternate the targets; the report gives medians and every round.
"""

import os
import re
import subprocess

import harness as hz

MESSAGE = 100
GRPC_PATH = "/bench.Echo/Unary"


class Echoes:
    """The two echo backends, pinned to the load CPU."""

    def __init__(self, loadgen):
        self.grpc = hz.free_port()
        self.ws = hz.free_port()
        self.procs = []
        for mode, port in (("grpc-echo", self.grpc), ("ws-echo", self.ws)):
            proc = subprocess.Popen(["taskset", "-c", hz.LOAD_CPU, loadgen, mode, str(port)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            hz.wait_port(port, proc)
            self.procs.append(proc)

    def stop(self):
        for p in self.procs:
            p.kill()
            p.wait()


class Target(hz.Target):
    """A proxy with a gRPC front (h2c) on `h1` and a WebSocket front on `h2c`."""

    def __init__(self, work, echoes):
        super().__init__(os.path.join(work, "grpcws"), None)
        self.echoes = echoes
        self.tcp = None


class ExpressGateway(Target):
    name = "expressgateway"

    def __init__(self, work, echoes, binary):
        super().__init__(work, echoes)
        self.binary = binary
        listener = """access_log = { enabled = false }
max_requests_per_client = 0
[listeners.forwarding]
x_forwarded_for = false
x_forwarded_proto = false
x_forwarded_host = false
via = false"""
        conf = f"""
[runtime]
worker_threads = 1

[[clusters]]
name = "grpc"
backends = [{{ address = "127.0.0.1:{echoes.grpc}", protocol = "h2" }}]

[[clusters]]
name = "ws"
backends = [{{ address = "127.0.0.1:{echoes.ws}", protocol = "h1" }}]

[[listeners]]
address = "127.0.0.1:{self.h1}"
protocol = "h1"
{listener}
[[listeners.routes]]
cluster = "grpc"

[[listeners]]
address = "127.0.0.1:{self.h2c}"
protocol = "h1"
{listener}
[[listeners.routes]]
cluster = "ws"
"""
        self.conf = os.path.join(self.dir, "gateway.toml")
        with open(self.conf, "w") as f:
            f.write(conf)

    def argv(self):
        return [self.binary, self.conf]

    def start(self):
        os.environ["RUST_LOG"] = "warn"
        super().start()


class Nginx(Target):
    name = "nginx"

    def __init__(self, work, echoes):
        super().__init__(work, echoes)
        conf = f"""
worker_processes 1;
daemon off;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log warn;
worker_rlimit_nofile {hz.NOFILE};
events {{ worker_connections {hz.NOFILE - 100}; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    http2_max_concurrent_streams 1024;
    upstream grpc {{ server 127.0.0.1:{echoes.grpc}; keepalive 128; keepalive_requests 1000000; }}
    upstream ws {{ server 127.0.0.1:{echoes.ws}; }}
    server {{
        listen 127.0.0.1:{self.h1} http2;
        location / {{ grpc_pass grpc://grpc; }}
    }}
    server {{
        listen 127.0.0.1:{self.h2c} backlog=4096;
        location / {{
            proxy_pass http://ws;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_read_timeout 300s;
        }}
    }}
}}
"""
        self.conf = os.path.join(self.dir, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(conf)

    def argv(self):
        return ["nginx", "-c", self.conf, "-p", self.dir]

    stop = hz.Nginx.stop


class Haproxy(Target):
    name = "haproxy"

    def __init__(self, work, echoes):
        super().__init__(work, echoes)
        conf = f"""
global
    nbthread 1
    maxconn {hz.MAXCONN}
defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout tunnel 300s
    http-reuse always
frontend grpc
    bind 127.0.0.1:{self.h1} proto h2
    default_backend grpc
backend grpc
    server s1 127.0.0.1:{echoes.grpc} proto h2
frontend ws
    bind 127.0.0.1:{self.h2c}
    default_backend ws
backend ws
    server s1 127.0.0.1:{echoes.ws}
"""
        self.conf = os.path.join(self.dir, "haproxy.cfg")
        with open(self.conf, "w") as f:
            f.write(conf)

    def argv(self):
        return ["haproxy", "-f", self.conf, "-db"]


def measure(target, fn):
    """`fn`'s result with the proxy's CPU µs per completed call or message."""
    t0 = hz.cpu_ticks(target.pids())
    res = fn()
    t1 = hz.cpu_ticks(target.pids())
    done = res.get("cpu_requests") or res["requests"]
    res["cpu_us_per_req"] = (t1 - t0) / hz.TICK * 1e6 / done if done else None
    res["peak_rss_kib"] = hz.rss_kib(target.pids())
    return res


def grpc_load(work, port, seconds, clients=16, streams=32):
    body = os.path.join(work, "grpc-request.bin")
    with open(body, "wb") as f:
        f.write(b"\x00" + MESSAGE.to_bytes(4, "big") + b"m" * MESSAGE)
    cmd = ["taskset", "-c", hz.LOAD_CPU, "h2load", "-c", str(clients), "-m", str(streams),
           "-D", str(seconds), "-d", body, "-H", "content-type: application/grpc", "-H", "te: trailers",
           f"http://127.0.0.1:{port}{GRPC_PATH}"]
    text = hz.run(cmd, seconds + 30)
    res = {"requests": 0, "rps": 0.0, "p50": None, "p99": None, "errors": 0}
    m = re.search(r"finished in [\d.]+s, ([\d.]+) req/s", text)
    if m:
        res["rps"] = float(m.group(1))
    m = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored",
                  text)
    if m:
        res["requests"] = int(m.group(2))
        res["errors"] = int(m.group(3)) + int(m.group(4))
    m = re.search(r"\((\d+)\) data", text)
    data = int(m.group(1)) if m else 0
    # Answers without the echoed message were not served by the backend.
    echoed = data // (MESSAGE + 5)
    res["errors"] += max(0, res["requests"] - echoed)
    if res["requests"] == 0:
        print(f"h2load said: {text.strip()}")
    return res


def ws_load(loadgen, port, seconds, conns=64, size=128):
    cmd = ["taskset", "-c", hz.LOAD_CPU, loadgen, "ws", "--connections", str(conns), "--size", str(size),
           "--duration", str(seconds), "--warmup", "1", f"ws://127.0.0.1:{port}/ws"]
    return loadgen_result(hz.run(cmd, seconds + 30), "ws")


def loadgen_result(text, mode):
    """A result from the line a closed-loop `eg-loadgen` mode prints."""
    fields = dict(kv.split("=", 1) for kv in text.split() if "=" in kv)
    num = lambda k: float(fields[k]) if k in fields else None  # noqa: E731
    if "requests" not in fields:
        print(f"eg-loadgen {mode} said: {text.strip()}")
    return {"requests": int(num("requests") or 0), "cpu_requests": int(num("completed") or 0),
            "rps": num("rate") or 0.0, "p50": num("p50_ms"), "p99": num("p99_ms"),
            "errors": int(num("errors") or 0)}


def scenarios(work, binary, loadgen, seconds, rounds=3):
    """[(scenario name, [(target, merged result)])] for gRPC and WebSocket."""
    echoes = Echoes(loadgen)
    try:
        targets = [ExpressGateway(work, echoes, binary), Nginx(work, echoes), Haproxy(work, echoes)]
        runs = {(kind, t.name): [] for kind in ("grpc", "ws") for t in targets}
        for _ in range(rounds):
            for t in targets:
                t.start()
                try:
                    runs[("grpc", t.name)].append(measure(t, lambda: grpc_load(work, t.h1, seconds)))
                    runs[("ws", t.name)].append(measure(t, lambda: ws_load(loadgen, t.h2c, seconds)))
                finally:
                    t.stop()
    finally:
        echoes.stop()
    out = []
    for kind, name in (("grpc", f"gRPC unary over h2c (c=16, m=32, {MESSAGE}-byte messages), median of {rounds} rounds"),
                       ("ws", f"WebSocket echo (64 connections, 128-byte messages), median of {rounds} rounds")):
        out.append((name, [(t.name, merge(runs[(kind, t.name)])) for t in targets]))
    return out


def merge(rs):
    """One row from a target's rounds: medians, summed counts, and each
    round's rate and CPU."""
    def median(k):
        v = sorted(r[k] for r in rs if r.get(k) is not None)
        return v[len(v) // 2] if v else None
    merged = {k: median(k) for k in ("rps", "p50", "p99", "cpu_us_per_req", "peak_rss_kib")}
    merged.update(requests=sum(r["requests"] for r in rs), errors=sum(r["errors"] for r in rs),
                  rps_runs=[r["rps"] for r in rs], cpu_runs=[r["cpu_us_per_req"] for r in rs])
    return merged


def table(rows, unit):
    """Markdown lines of a scenario's table; `unit` is "call" or "message"."""
    lines = [f"| target | {unit}s/s | CPU µs per {unit} | {unit}s/s of each round | CPU µs per {unit} of each round "
             f"| p50 ms | p99 ms | peak RSS KiB | errors |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for t, r in rows:
        each_rps = ", ".join(hz.fmt(v, 0) for v in r["rps_runs"])
        each_cpu = ", ".join(hz.fmt(v, 2) for v in r["cpu_runs"])
        lines.append(f"| {t} | {hz.fmt(r['rps'])} | {hz.fmt(r['cpu_us_per_req'], 2)} | {each_rps} | {each_cpu} | "
                     f"{hz.fmt(r['p50'], 3)} | {hz.fmt(r['p99'], 3)} | {hz.fmt(r['peak_rss_kib'])} | {r['errors']} |")
    return lines
