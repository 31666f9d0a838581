"""HTTP/3 front scenario of the side-by-side benchmark: expressgateway
(`protocol = "quic"`) and Caddy (`protocols h1 h2 h3`) in front of the same
HTTP/1.1 backend, loaded by `eg-loadgen h3` (closed loop, N connections x M
streams). Both present one certificate, issued here by a throwaway CA the
client trusts. Rounds alternate the targets; the report gives medians.
"""

import os
import subprocess
import time

import harness as hz

SERVER_NAME = "localhost"


def make_pki(work):
    """A CA and a certificate for `localhost` and 127.0.0.1 signed by it:
    (ca, cert, key) paths."""
    d = os.path.join(work, "pki")
    os.makedirs(d)
    p = lambda name: os.path.join(d, name)  # noqa: E731
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    quiet = {"check": True, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    subprocess.run(["openssl", "req", "-x509", *ec, "-keyout", p("ca.key"), "-out", p("ca.pem"),
                    "-days", "2", "-subj", "/CN=eg-bench CA"], **quiet)
    subprocess.run(["openssl", "req", *ec, "-keyout", p("server.key"), "-out", p("server.csr"),
                    "-subj", f"/CN={SERVER_NAME}"], **quiet)
    with open(p("ext.cnf"), "w") as f:
        f.write(f"subjectAltName=DNS:{SERVER_NAME},IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
    subprocess.run(["openssl", "x509", "-req", "-in", p("server.csr"), "-CA", p("ca.pem"),
                    "-CAkey", p("ca.key"), "-CAcreateserial", "-days", "2", "-extfile", p("ext.cnf"),
                    "-out", p("server.pem")], **quiet)
    return p("ca.pem"), p("server.pem"), p("server.key")


def udp_bound(port, pids):
    """Whether one of `pids` holds a UDP socket on 127.0.0.1:`port`."""
    inodes = set()
    for line in open("/proc/net/udp").read().splitlines()[1:]:
        fields = line.split()
        if fields[1] == f"0100007F:{port:04X}":
            inodes.add(fields[9])
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}").strip("socket:[]") in inodes:
                    return True
        except OSError:
            pass
    return False


class H3Target(hz.Target):
    """A proxy serving HTTP/3 on UDP 127.0.0.1:`quic`; ready once the
    process holds that socket."""

    def __init__(self, work, backend, pki):
        # Apart from the directories of the HTTP/1.1 scenarios' targets.
        super().__init__(os.path.join(work, "h3"), backend)
        self.ca, self.cert, self.key = pki
        self.quic = hz.free_port()
        self.h1 = self.h2c = self.tcp = None

    def start(self):
        super().start()
        deadline = time.time() + 10
        while not udp_bound(self.quic, self.pids()):
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"{self.name}: nothing on UDP {self.quic}; see {self.dir}/stderr.log")
            time.sleep(0.05)


class ExpressGatewayH3(H3Target):
    name = "expressgateway"

    def __init__(self, work, backend, pki, binary):
        super().__init__(work, backend, pki)
        self.binary = binary
        # Forwarding headers as Caddy's reverse_proxy sets them
        # (X-Forwarded-For, -Proto, -Host; no Via).
        conf = f"""
[runtime]
worker_threads = 1

[[clusters]]
name = "backend"
[[clusters.backends]]
address = "127.0.0.1:{backend.port}"
protocol = "h1"

[[listeners]]
address = "127.0.0.1:{self.quic}"
protocol = "quic"
access_log = {{ enabled = false }}
# One load client address stands for many clients (Caddy has no such cap).
max_requests_per_client = 0
[listeners.forwarding]
via = false
[listeners.tls]
[[listeners.tls.certificates]]
cert_path = "{self.cert}"
key_path = "{self.key}"
[[listeners.routes]]
cluster = "backend"
"""
        self.conf = os.path.join(self.dir, "gateway.toml")
        with open(self.conf, "w") as f:
            f.write(conf)

    def argv(self):
        return [self.binary, self.conf]

    def start(self):
        os.environ["RUST_LOG"] = "warn"
        super().start()


class Caddy(H3Target):
    name = "caddy"

    def __init__(self, work, backend, pki):
        super().__init__(work, backend, pki)
        # Upstream keep-alive sized like nginx's and HAProxy's pools, so
        # connections to the backend are reused, not churned.
        conf = f"""{{
    admin off
    auto_https off
    log {{
        output discard
    }}
    servers {{
        protocols h1 h2 h3
    }}
}}
https://{SERVER_NAME}:{self.quic} {{
    bind 127.0.0.1
    tls {self.cert} {self.key}
    reverse_proxy 127.0.0.1:{backend.port} {{
        transport http {{
            keepalive_idle_conns 1024
            keepalive_idle_conns_per_host 1024
        }}
    }}
}}
"""
        self.conf = os.path.join(self.dir, "Caddyfile")
        with open(self.conf, "w") as f:
            f.write(conf)

    def argv(self):
        return ["caddy", "run", "--adapter", "caddyfile", "--config", self.conf]

    def start(self):
        # Caddy keeps its state under $HOME or $XDG_DATA_HOME; keep it in
        # the run's directory.
        os.environ["XDG_DATA_HOME"] = os.path.join(self.dir, "data")
        os.environ["XDG_CONFIG_HOME"] = os.path.join(self.dir, "config")
        super().start()


def h3load(loadgen, target, seconds, conns, streams):
    """`eg-loadgen h3`: closed loop over `conns` x `streams`, at most
    `seconds` plus a second of warm-up and 2,000,000 requests."""
    cmd = ["taskset", "-c", hz.LOAD_CPU, loadgen, "h3", "--ca", target.ca, "--server-name", SERVER_NAME,
           "--connections", str(conns), "--streams", str(streams), "--requests", "2000000",
           "--duration", str(seconds), "--warmup", "1", f"https://127.0.0.1:{target.quic}/"]
    text = hz.run(cmd, seconds + 30)
    fields = dict(kv.split("=", 1) for kv in text.split() if "=" in kv)
    num = lambda k: float(fields[k]) if k in fields else None  # noqa: E731
    if "requests" not in fields:
        print(f"{target.name}: eg-loadgen h3 said: {text.strip()}")
    # CPU over the run covers the warm-up too: divide it by every request
    # answered (`completed`), not only the measured ones.
    return {"requests": int(num("requests") or 0), "cpu_requests": int(num("completed") or 0),
            "rps": num("rate") or 0.0, "p50": num("p50_ms"), "p99": num("p99_ms"), "p999": num("p999_ms"),
            "errors": int(num("errors") or 0)}


def scenario(work, backend, binary, loadgen, seconds, rounds=3, conns=16, streams=32):
    """(scenario name, [(target, merged result)]) over `rounds` rounds."""
    pki = make_pki(work)
    targets = [ExpressGatewayH3(work, backend, pki, binary), Caddy(work, backend, pki)]
    runs = {t.name: [] for t in targets}
    for _ in range(rounds):
        for t in targets:
            t.start()
            try:
                runs[t.name].append(hz.measure(t, backend, lambda: h3load(loadgen, t, seconds, conns, streams)))
            finally:
                t.stop()
    rows = []
    for t in targets:
        rs = runs[t.name]

        def median(k):
            v = sorted(r[k] for r in rs if r.get(k) is not None)
            return v[len(v) // 2] if v else None
        merged = {k: median(k) for k in ("rps", "p50", "p99", "cpu_us_per_req", "peak_rss_kib")}
        merged.update(requests=sum(r["requests"] for r in rs), cpu_requests=sum(r["cpu_requests"] for r in rs),
                      errors=sum(r["errors"] for r in rs),
                      upstream_conns=sum(r["upstream_conns"] for r in rs),
                      rps_runs=[r["rps"] for r in rs], cpu_runs=[r["cpu_us_per_req"] for r in rs])
        rows.append((t.name, merged))
    name = f"h3 front (c={conns}, m={streams}) to h1 backend, median of {rounds} rounds"
    return name, rows


def table(rows):
    """Markdown lines of the scenario's table."""
    lines = ["| target | req/s | p50 ms | p99 ms | CPU µs/req | req/s of each round | CPU µs/req of each round "
             "| peak RSS KiB | upstream conns / req | errors |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for t, r in rows:
        reuse = (r["upstream_conns"] / r["cpu_requests"]) if r["cpu_requests"] else None
        each_rps = ", ".join(hz.fmt(v, 0) for v in r["rps_runs"])
        each_cpu = ", ".join(hz.fmt(v, 2) for v in r["cpu_runs"])
        lines.append(f"| {t} | {hz.fmt(r['rps'])} | {hz.fmt(r['p50'], 3)} | {hz.fmt(r['p99'], 3)} | "
                     f"{hz.fmt(r['cpu_us_per_req'], 2)} | {each_rps} | {each_cpu} | {hz.fmt(r['peak_rss_kib'])} | "
                     f"{hz.fmt(reuse, 5)} | {r['errors']} |")
    return lines
