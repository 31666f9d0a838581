#!/usr/bin/env python3
"""Side-by-side proxy benchmark on one machine, in one run.

Targets: expressgateway, nginx (proxy_pass, upstream keepalive), HAProxy
(http-reuse always) and direct (the backend itself, the limit). All proxy
the same backend: an nginx serving fixed responses. The proxy under test is
pinned to CPU 0 with one worker; backend and load generators share CPU 1.

Figures per target and scenario: requests/s, p50/p99 at a fixed rate below
saturation, proxy CPU microseconds per request (utime+stime from /proc),
peak RSS, RSS per idle connection, upstream connections opened per request.
The proxies also terminate TLS (one self-signed ECDSA P-256 certificate,
ALPN h2 and http/1.1) for h2 over TLS and for handshakes per second, full
and resumed, still to the plain HTTP/1.1 backend.
Everything listens on 127.0.0.1 and every load run is bounded in time.
"""

import argparse
import asyncio
import datetime
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

TICK = os.sysconf("SC_CLK_TCK")
_HARD_NOFILE = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
NOFILE = 65536 if _HARD_NOFILE == resource.RLIM_INFINITY else min(65536, _HARD_NOFILE)
# HAProxy reserves two descriptors per connection; size everything to fit.
MAXCONN = (NOFILE - 200) // 2
IDLE_CONNECTIONS = min(10000, MAXCONN - 100)
PROXY_CPU = "0"
LOAD_CPU = "1"
# Parallel `openssl s_time` loops: each waits on the proxy between its
# handshakes, so one alone leaves the load CPU partly idle.
TLS_CLIENTS = 4


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc=None, limit=10.0):
    deadline = time.time() + limit
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited early: {proc.args}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def make_cert(work):
    """A self-signed ECDSA P-256 certificate for localhost and 127.0.0.1:
    (cert, key, cert and key in one file) paths."""
    d = os.path.join(work, "tls")
    os.makedirs(d)
    cert, key, pem = (os.path.join(d, n) for n in ("cert.pem", "key.pem", "cert+key.pem"))
    # 90 days: the gateway warns about a certificate that expires within 30.
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "90", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # The gateway refuses a private key that others may read.
    os.chmod(key, 0o600)
    with open(pem, "w") as f, open(cert) as c, open(key) as k:
        f.write(c.read() + k.read())
    os.chmod(pem, 0o600)
    return cert, key, pem


def family(pid):
    """pid and all its descendants (nginx master + workers)."""
    pids = [pid]
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    i = 0
    while i < len(pids):
        pids.extend(children.get(pids[i], []))
        i += 1
    return pids


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


class Backend:
    """nginx on CPU 1: `/` small text, `/64k` 64 KiB, `/bulk` for L4."""

    def __init__(self, work, bulk_bytes):
        self.dir = os.path.join(work, "backend")
        os.makedirs(os.path.join(self.dir, "www"))
        with open(os.path.join(self.dir, "www", "64k"), "wb") as f:
            f.write(b"x" * 65536)
        with open(os.path.join(self.dir, "www", "bulk"), "wb") as f:
            f.truncate(bulk_bytes)
        # Read once, so the page cache holds it before any target fetches
        # it: the first reader of a new sparse file pays for filling the
        # cache and moves a fraction of what later readers do.
        with open(os.path.join(self.dir, "www", "bulk"), "rb") as f:
            while f.read(1 << 20):
                pass
        self.port = free_port()
        self.h2c_port = free_port()
        conf = f"""
worker_processes 1;
daemon off;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log warn;
worker_rlimit_nofile {NOFILE};
events {{ worker_connections {NOFILE - 100}; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    sendfile on;
    root {self.dir}/www;
    server {{
        listen 127.0.0.1:{self.port} reuseport backlog=4096;
        listen 127.0.0.1:{self.h2c_port} http2;
        location = / {{ return 200 "hello from backend\\n"; }}
        location = /stats {{ stub_status; }}
        location / {{ }}
    }}
}}
"""
        path = os.path.join(self.dir, "nginx.conf")
        with open(path, "w") as f:
            f.write(conf)
        self.proc = subprocess.Popen(
            ["taskset", "-c", LOAD_CPU, "nginx", "-c", path, "-p", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc)

    def accepts(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats") as r:
            text = r.read().decode()
        # "server accepts handled requests\n N N N"
        nums = text.split("\n")[2].split()
        return int(nums[0])

    def stop(self):
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Target:
    name = "?"

    def __init__(self, work, backend):
        self.dir = os.path.join(work, self.name)
        os.makedirs(self.dir)
        self.backend = backend
        self.h1 = free_port()
        self.h2c = free_port()
        self.tcp = free_port()
        self.tls = None
        self.proc = None

    def start(self):
        argv = self.argv()
        self.proc = subprocess.Popen(["taskset", "-c", PROXY_CPU] + argv,
                                     stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, "stderr.log"), "w"))
        for p in (self.h1, self.h2c, self.tcp, self.tls):
            if p:
                wait_port(p, self.proc)
        time.sleep(0.3)

    def pids(self):
        return family(self.proc.pid)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class ExpressGateway(Target):
    name = "expressgateway"

    def __init__(self, work, backend, binary, cert):
        super().__init__(work, backend)
        self.binary = binary
        self.h2c = self.h1  # h1 listeners also speak h2c prior knowledge
        self.tls = free_port()
        b = backend
        conf = f"""
[runtime]
worker_threads = 1

[[clusters]]
name = "backend"
[[clusters.backends]]
address = "127.0.0.1:{b.port}"
protocol = "h1"

[[listeners]]
address = "127.0.0.1:{self.h1}"
protocol = "h1"
# nginx and HAProxy run without access logs here too.
access_log = {{ enabled = false }}
# One load client address stands for many clients: h2load's 512 streams
# at once would pass the default cap of 256 (nginx and HAProxy have none).
max_requests_per_client = 0
# Neither nginx nor HAProxy makes request IDs or forwarding headers here.
request_id = {{ enabled = false }}
[listeners.forwarding]
x_forwarded_for = false
x_forwarded_proto = false
x_forwarded_host = false
via = false
[[listeners.routes]]
cluster = "backend"

# HTTP/2 or HTTP/1.1 by ALPN; sessions resume by ticket, the default.
[[listeners]]
address = "127.0.0.1:{self.tls}"
protocol = "h1s"
access_log = {{ enabled = false }}
max_requests_per_client = 0
request_id = {{ enabled = false }}
[listeners.forwarding]
x_forwarded_for = false
x_forwarded_proto = false
x_forwarded_host = false
via = false
[listeners.tls]
cert_path = "{cert[0]}"
key_path = "{cert[1]}"
[[listeners.routes]]
cluster = "backend"

[[listeners]]
address = "127.0.0.1:{self.tcp}"
protocol = "tcp"
access_log = {{ enabled = false }}
[[listeners.backends]]
address = "127.0.0.1:{b.port}"
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

    def __init__(self, work, backend, cert):
        super().__init__(work, backend)
        self.tls = free_port()
        b = backend
        conf = f"""
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
daemon off;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log warn;
worker_rlimit_nofile {NOFILE};
events {{ worker_connections {NOFILE - 100}; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    upstream backend {{ server 127.0.0.1:{b.port}; keepalive 128; keepalive_requests 1000000; }}
    server {{
        listen 127.0.0.1:{self.h1} backlog=4096;
        listen 127.0.0.1:{self.h2c} http2;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering on;
        }}
    }}
    server {{
        listen 127.0.0.1:{self.tls} ssl http2 backlog=4096;
        ssl_certificate {cert[0]};
        ssl_certificate_key {cert[1]};
        # nginx before 1.23.4 leaves TLS 1.3 out by default.
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:10m;
        ssl_session_tickets on;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering on;
        }}
    }}
}}
stream {{
    server {{ listen 127.0.0.1:{self.tcp}; proxy_pass 127.0.0.1:{b.port}; }}
}}
"""
        self.conf = os.path.join(self.dir, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(conf)

    def argv(self):
        return ["nginx", "-c", self.conf, "-p", self.dir]

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Haproxy(Target):
    name = "haproxy"

    def __init__(self, work, backend, cert):
        super().__init__(work, backend)
        self.tls = free_port()
        b = backend
        conf = f"""
global
    nbthread 1
    maxconn {MAXCONN}
    maxpipes 64
defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
    http-reuse always
frontend h1
    bind 127.0.0.1:{self.h1}
    bind 127.0.0.1:{self.h2c} proto h2
    bind 127.0.0.1:{self.tls} ssl crt {cert[2]} alpn h2,http/1.1
    default_backend be
backend be
    server s1 127.0.0.1:{b.port}
listen tcp
    mode tcp
    option splice-auto
    bind 127.0.0.1:{self.tcp}
    server s1 127.0.0.1:{b.port}
"""
        self.conf = os.path.join(self.dir, "haproxy.cfg")
        with open(self.conf, "w") as f:
            f.write(conf)

    def argv(self):
        return ["haproxy", "-f", self.conf, "-db"]


class Direct(Target):
    """The backend itself: the limit every proxy is measured against."""
    name = "direct"

    def __init__(self, work, backend):
        super().__init__(work, backend)
        self.h1 = backend.port
        self.h2c = backend.h2c_port
        self.tcp = backend.port

    def start(self):
        pass

    def pids(self):
        return []

    def stop(self):
        pass


def run(cmd, limit):
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=limit)
    return out.stdout + out.stderr


def to_ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(port, path, seconds, conns, extra=(), script=None):
    cmd = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency"]
    cmd += list(extra)
    if script:
        cmd += ["-s", script]
    cmd.append(f"http://127.0.0.1:{port}{path}")
    text = run(cmd, seconds + 30)
    res = {"requests": 0, "rps": 0.0, "p50": None, "p99": None, "errors": 0}
    m = re.search(r"(\d+) requests in", text)
    if m:
        res["requests"] = int(m.group(1))
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if m:
        res["rps"] = float(m.group(1))
    for pct, key in (("50", "p50"), ("99", "p99")):
        m = re.search(rf"\s{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)\b", text)
        if m:
            res[key] = to_ms(m.group(1), m.group(2))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        res["errors"] += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        res["errors"] += sum(int(x) for x in m.groups())
    return res


def h2load(port, seconds, clients, streams, scheme="http"):
    cmd = ["taskset", "-c", LOAD_CPU, "h2load", "-c", str(clients), "-m", str(streams),
           "-D", str(seconds), f"{scheme}://127.0.0.1:{port}/"]
    text = run(cmd, seconds + 30)
    res = {"requests": 0, "rps": 0.0, "p50": None, "p99": None, "errors": 0}
    if scheme == "https":
        got = [re.search(rf"^{k}: (\S+)", text, re.M)
               for k in ("TLS Protocol", "Cipher", "Server Temp Key", "Application protocol")]
        version, cipher, group, alpn = (m.group(1) if m else "?" for m in got)
        res["negotiated"] = f"{version} {cipher} {group}, ALPN {alpn}"
        if alpn != "h2":
            print(f"{port}: h2load did not negotiate h2: {res['negotiated']}")
    m = re.search(r"finished in [\d.]+s, ([\d.]+) req/s", text)
    if m:
        res["rps"] = float(m.group(1))
    m = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", text)
    if m:
        res["requests"] = int(m.group(2))
        res["errors"] = int(m.group(3)) + int(m.group(4))
    return res


def tls_probe(port):
    """What one `openssl s_client` handshake negotiates (version, cipher,
    key exchange group), offering what `openssl s_time` offers: the same
    defaults and no ALPN."""
    text = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}"],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
                          timeout=10).stdout
    m = re.search(r"^New, (\S+), Cipher is (\S+)", text, re.M)
    group = re.search(r"^Server Temp Key: (\w+)", text, re.M)
    return f"{m.group(1) if m else '?'} {m.group(2) if m else '?'} {group.group(1) if group else '?'}, no ALPN offered"


def handshakes(port, seconds, resume, clients=TLS_CLIENTS):
    """`clients` parallel `openssl s_time` loops for `seconds` (s_time stops
    within the second after): a new TCP connection and TLS handshake each
    time, full (`-new`) or resuming the loop's session (`-reuse`), then
    `GET / HTTP/1.0` read to the end. The request is there for TLS 1.3:
    s_time reads the session ticket only while it reads a response, and
    without one `-reuse` handshakes in full."""
    cmd = ["taskset", "-c", LOAD_CPU, "openssl", "s_time", "-connect", f"127.0.0.1:{port}",
           "-reuse" if resume else "-new", "-time", str(seconds), "-www", "/"]
    start = time.time()
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(clients)]
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=max(1.0, start + seconds + 30 - time.time()))[0])
        except subprocess.TimeoutExpired:
            p.kill()
            outs.append(p.communicate()[0])
    elapsed = time.time() - start
    res = {"requests": 0, "rps": 0.0, "resumed": 0, "errors": 0, "p50": None, "p99": None}
    for p, text in zip(procs, outs):
        m = re.search(r"(\d+) connections in [\d.]+s;.*bytes read (\d+)", text)
        # One character per connection after "starting": `r` if it resumed.
        marks = re.search(r"^starting\n(\S*)", text, re.M)
        if p.returncode != 0 or not m or not int(m.group(2)):
            res["errors"] += 1
            print(f"{port}: openssl s_time said: {text.strip()[-300:]}")
        if m:
            res["requests"] += int(m.group(1))
        if marks:
            res["resumed"] += marks.group(1).count("r")
    res["rps"] = res["requests"] / elapsed if elapsed else 0.0
    return res


def fixed_rate(loadgen, port, rate, seconds, conns):
    """Open-loop load at `rate` req/s over `conns` keep-alive connections
    (bench/loadgen): latency from each request's due time to its last byte."""
    cmd = ["taskset", "-c", LOAD_CPU, loadgen, "--rate", str(int(rate)), "--connections", str(conns),
           "--duration", str(seconds), "--warmup", "1", f"http://127.0.0.1:{port}/"]
    text = run(cmd, seconds + 30)
    fields = dict(kv.split("=", 1) for kv in text.split() if "=" in kv)
    num = lambda k: float(fields[k]) if k in fields else None  # noqa: E731
    return {"requests": int(num("requests") or 0), "rps": num("rate") or 0.0, "p50": num("p50_ms"),
            "p99": num("p99_ms"), "p999": num("p999_ms"), "errors": int(num("errors") or 0)}


def bulk(port, nbytes):
    start = time.time()
    out = run(["taskset", "-c", LOAD_CPU, "curl", "-s", "-o", "/dev/null", "-w", "%{size_download}",
               f"http://127.0.0.1:{port}/bulk"], 300)
    elapsed = time.time() - start
    size = int(out.strip() or 0)
    return {"requests": 1, "rps": 0.0, "mbps": size / elapsed / 1e6 if elapsed else 0.0,
            "bytes": size, "errors": 0 if size == nbytes else 1, "p50": None, "p99": None}


# An HTTP/2 GET / on stream 1 with prior knowledge: the preface, an empty
# SETTINGS frame, and a HEADERS frame (END_STREAM, END_HEADERS) whose HPACK
# block is :method GET, :scheme http, :path / (static table) and
# :authority "bench" (literal, indexed name).
H2_HELLO = (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
            + bytes([0, 0, 10, 1, 5, 0, 0, 0, 1, 0x82, 0x86, 0x84, 0x41, 5]) + b"bench")


async def h1_once(r, w):
    w.write(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
    await w.drain()
    head = await r.readuntil(b"\r\n\r\n")
    m = re.search(rb"content-length: (\d+)", head, re.I)
    if m:
        await r.readexactly(int(m.group(1)))


async def h2_once(r, w):
    """One HTTP/2 request; frames are read until stream 1 ends, and the
    server's SETTINGS are acknowledged as a client must."""
    w.write(H2_HELLO)
    await w.drain()
    while True:
        head = await r.readexactly(9)
        length = int.from_bytes(head[:3], "big")
        kind, flags, stream = head[3], head[4], int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
        await r.readexactly(length)
        if kind == 4 and not flags & 1:
            w.write(bytes([0, 0, 0, 4, 1, 0, 0, 0, 0]))
        if kind in (0, 1) and stream == 1 and flags & 1:
            return


async def hold_idle(port, count, once=h1_once, tls=None):
    """Open `count` keep-alive connections, one request each, and hold them."""
    conns = []
    sem = asyncio.Semaphore(500)

    async def one():
        async with sem:
            r, w = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
            await once(r, w)
            conns.append((r, w))

    await asyncio.gather(*(one() for _ in range(count)))
    return conns


def tls_http11():
    """A client TLS context offering only HTTP/1.1 (the benchmark's
    self-signed certificate is not verified)."""
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def idle_memory(target, count, port=None, once=h1_once, tls=None):
    pids = target.pids()
    before = rss_kib(pids)
    loop = asyncio.new_event_loop()
    conns = loop.run_until_complete(hold_idle(port or target.h1, count, once, tls))
    time.sleep(1.0)
    after = rss_kib(target.pids())
    for _, w in conns:
        w.close()
    loop.close()
    return {"rss_before": before, "rss_after": after,
            "kib_per_conn": (after - before) / count if count else 0.0}


def measure(target, backend, fn):
    pids = target.pids()
    t0 = cpu_ticks(pids)
    a0 = backend.accepts()
    res = fn()
    t1 = cpu_ticks(target.pids())
    a1 = backend.accepts()
    res["upstream_conns"] = max(0, a1 - a0 - 1)  # the stats request itself
    # `cpu_requests`, where a load client reports it, counts the warm-up's
    # requests too, which the CPU time covers.
    served = res.get("cpu_requests", res["requests"])
    res["cpu_us_per_req"] = ((t1 - t0) / TICK * 1e6 / served) if served and pids else None
    res["peak_rss_kib"] = rss_kib(target.pids()) if pids else None
    return res


def merge_rounds(rs):
    """One row from a target's rounds: the median of every figure, errors
    and request counts summed, and each round's CPU per request kept."""
    merged = {}
    for k in rs[0]:
        vals = [r[k] for r in rs if isinstance(r.get(k), (int, float))]
        if k in ("errors", "requests", "upstream_conns", "resumed"):
            merged[k] = sum(vals)
        elif vals:
            merged[k] = sorted(vals)[len(vals) // 2]
        else:
            merged[k] = rs[0][k]
    merged["cpu_runs"] = [r.get("cpu_us_per_req") for r in rs]
    return merged


def fmt(v, digits=1):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}"


def svg_panel(rows, scenario, metric, title):
    """One horizontal bar panel: (height, svg elements at y=0)."""
    vals = [(t, r.get(metric)) for t, r in rows if r.get(metric) is not None]
    if not vals:
        return 0, []
    top = max(v for _, v in vals) or 1.0
    width, bar_h, gap, left = 760, 22, 8, 130
    parts = [f'<text x="10" y="18" font-size="14">{scenario}: {title}</text>']
    colors = {"expressgateway": "#2b7bb9", "nginx": "#3a9d23", "haproxy": "#c0392b", "caddy": "#1f8a70",
              "direct": "#888888"}
    for i, (t, v) in enumerate(vals):
        y = 28 + i * (bar_h + gap)
        w = (width - left - 110) * v / top
        parts.append(f'<text x="10" y="{y + 15}">{t}</text>')
        parts.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colors.get(t, "#555")}"/>')
        parts.append(f'<text x="{left + w + 5:.1f}" y="{y + 15}">{fmt(v)}</text>')
    return 36 + len(vals) * (bar_h + gap), parts


def write_svg(panels, path):
    y = 0
    body = []
    for height, parts in panels:
        if not parts:
            continue
        body.append(f'<g transform="translate(0,{y})">' + "".join(parts) + "</g>")
        y += height + 10
    with open(path, "w") as f:
        f.write(f'<svg xmlns="http://www.w3.org/2000/svg" width="760" height="{y}" '
                f'font-family="sans-serif" font-size="12">' + "".join(body) + "</svg>\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--loadgen", required=True, help="the fixed-rate client, bench/loadgen")
    ap.add_argument("--quick", action="store_true", help="short runs (smoke test of the harness)")
    ap.add_argument("--only", default="", help="comma-separated scenario keys: small,64k,close,h2c,tcp,idle,tls,rate,h3,grpcws,udp,xdp "
                    "(xdp: root, network namespaces; only when asked for)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = ap.parse_args()

    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, _HARD_NOFILE))
    seconds = 2 if args.quick else 8
    idle_count = 1000 if args.quick else IDLE_CONNECTIONS
    bulk_bytes = (256 if args.quick else 2048) * 1024 * 1024
    rounds = 1 if args.quick else 3
    work = tempfile.mkdtemp(prefix="eg-bench-")
    # nginx workers drop privileges and must read the backend's files.
    os.chmod(work, 0o755)
    backend = Backend(work, bulk_bytes)
    cert = make_cert(work)
    targets = [ExpressGateway(work, backend, os.path.abspath(args.binary), cert), Nginx(work, backend, cert),
               Haproxy(work, backend, cert), Direct(work, backend)]
    results = {}  # scenario -> [(target, result)]
    started = time.time()
    try:
        # Saturation runs first: nginx's max rate sets the fixed rate below.
        only = set(filter(None, args.only.split(",")))
        want = lambda key: not only or key in only  # noqa: E731
        per_target = any(want(k) for k in ("small", "64k", "close", "h2c", "tcp", "idle", "tls"))
        # Every target runs each scenario once per round, in an order that
        # rotates between rounds, so neither a noisy moment on the machine
        # nor going first lands on one target only; the tables give medians.
        per = {}  # scenario -> {target: [result per round]}
        for rnd in range(rounds if per_target else 0):
            shift = rnd % len(targets)
            for t in targets[shift:] + targets[:shift]:
                t.start()
                try:
                    r = lambda name, res: per.setdefault(name, {}).setdefault(t.name, []).append(res)  # noqa: E731
                    if want("small"):
                        r("h1 keep-alive small (c=64)", measure(t, backend, lambda: wrk(t.h1, "/", seconds, 64)))
                    if want("64k"):
                        r("h1 keep-alive 64 KiB (c=64)", measure(t, backend, lambda: wrk(t.h1, "/64k", seconds, 64)))
                    if want("close"):
                        r("h1 new connection per request (c=32)", measure(
                            t, backend, lambda: wrk(t.h1, "/", seconds, 32, ["-H", "Connection: close"])))
                    if want("h2c"):
                        r("h2c multiplexed (c=16, m=32) to h1 backend", measure(
                            t, backend, lambda: h2load(t.h2c, seconds, 16, 32)))
                    if want("tcp"):
                        r(f"tcp bulk ({bulk_bytes >> 20} MiB download)", measure(
                            t, backend, lambda: bulk(t.tcp, bulk_bytes)))
                    if want("tls") and t.tls:
                        r("h2 over TLS multiplexed (c=16, m=32) to h1 backend", measure(
                            t, backend, lambda: h2load(t.tls, seconds, 16, 32, "https")))
                        for resume, kind in ((False, "full"), (True, "resumed")):
                            negotiated = tls_probe(t.tls)
                            res = measure(t, backend, lambda: handshakes(t.tls, seconds, resume))
                            res["negotiated"] = negotiated
                            r(f"TLS handshakes, {kind} (openssl s_time -{'reuse' if resume else 'new'} "
                              f"x{TLS_CLIENTS}, one HTTP/1.0 request per connection)", res)
                    if want("idle") and t.name != "direct":
                        r(f"{idle_count:,} idle keep-alive connections", idle_memory(t, idle_count))
                        # A fresh process for each: memory the previous
                        # connections left with the allocator would
                        # otherwise serve the next ones.
                        t.stop()
                        t.start()
                        r(f"{idle_count:,} idle HTTP/2 (h2c) keep-alive connections",
                          idle_memory(t, idle_count, t.h2c, h2_once))
                        if t.tls:
                            t.stop()
                            t.start()
                            r(f"{idle_count:,} idle HTTP/1.1-over-TLS keep-alive connections",
                              idle_memory(t, idle_count, t.tls, h1_once, tls_http11()))
                finally:
                    t.stop()
        for scenario, by_target in per.items():
            results[scenario] = [(t.name, merge_rounds(by_target[t.name])) for t in targets if t.name in by_target]
        if not want("rate"):
            targets = []
        nginx_max = dict(results.get("h1 keep-alive small (c=64)", [])).get("nginx", {}).get("rps", 20000.0)
        # A quarter of nginx's saturated rate: on two cores the backend and
        # the client share one, which is already ~90% busy at half of it,
        # and the latencies would then measure the load side.
        rate = max(1000.0, nginx_max * 0.25)
        conns = 64
        name = f"h1 small at a fixed {int(rate):,} req/s (25% of nginx max, c={conns}), median of {rounds} rounds"
        rate_seconds = 2 if args.quick else 4
        runs = {t.name: [] for t in targets}
        # Rounds go through every target in turn, so a noisy moment on the
        # machine does not land on one target only.
        for _ in range(rounds if targets else 0):
            for t in targets:
                t.start()
                try:
                    runs[t.name].append(measure(t, backend, lambda: fixed_rate(
                        args.loadgen, t.h1, rate, rate_seconds, conns)))
                finally:
                    t.stop()
        for t in targets:
            rs = runs[t.name]
            def median(k):
                v = sorted(r[k] for r in rs if r.get(k) is not None)
                return v[len(v) // 2] if v else None
            merged = {k: median(k) for k in ("rps", "p50", "p99", "p999", "cpu_us_per_req", "peak_rss_kib")}
            merged.update(requests=sum(r["requests"] for r in rs), errors=sum(r["errors"] for r in rs),
                          upstream_conns=sum(r["upstream_conns"] for r in rs),
                          p99_runs=[r["p99"] for r in rs])
            results.setdefault(name, []).append((t.name, merged))
        if want("h3"):
            import h3bench
            name, rows = h3bench.scenario(work, backend, os.path.abspath(args.binary),
                                          os.path.abspath(args.loadgen), seconds)
            results[name] = rows
        if want("grpcws"):
            import grpcws
            for name, rows in grpcws.scenarios(work, os.path.abspath(args.binary),
                                               os.path.abspath(args.loadgen), seconds):
                results[name] = rows
        if "xdp" in only:
            import xdpbench
            if os.geteuid() != 0:
                raise SystemExit("--only xdp needs root (network namespaces, XDP)")
            for name, rows in xdpbench.scenarios(work, os.path.abspath(args.binary),
                                                 os.path.abspath(args.loadgen), seconds, rounds):
                results[name] = rows
        if want("udp"):
            import udpbench
            name, rows = udpbench.scenario(work, os.path.abspath(args.binary),
                                           os.path.abspath(args.loadgen), seconds)
            results[name] = rows
    finally:
        backend.stop()

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H-%M-%SZ")
    outdir = os.path.join(args.out, stamp)
    os.makedirs(outdir, exist_ok=True)
    lines = [f"# Benchmark {stamp}", "",
             f"Machine: {os.cpu_count()} CPUs, {platform_line()}; proxy pinned to CPU {PROXY_CPU}, "
             f"backend and load generator on CPU {LOAD_CPU}; one worker per proxy; {seconds}s per run; "
             f"total {time.time() - started:.0f}s.", ""]
    panels = []
    for scenario, rows in results.items():
        lines.append(f"## {scenario}")
        lines.append("")
        if " idle " in scenario and scenario.endswith("keep-alive connections"):
            lines.append("| target | RSS before (KiB) | RSS with connections (KiB) | KiB per connection |")
            lines.append("|---|---:|---:|---:|")
            for t, r in rows:
                lines.append(f"| {t} | {fmt(r['rss_before'])} | {fmt(r['rss_after'])} | {fmt(r['kib_per_conn'], 2)} |")
        elif scenario.startswith("XDP "):
            import xdpbench
            lines.extend(xdpbench.table(scenario, rows))
        elif scenario.startswith("tcp bulk"):
            lines.append("| target | MB/s | CPU µs per MB | CPU µs per MB, each round | errors |")
            lines.append("|---|---:|---:|---:|---:|")
            for t, r in rows:
                mb = r["bytes"] / 1e6 if r.get("bytes") else None
                cpu_per_mb = (r["cpu_us_per_req"] / mb) if r.get("cpu_us_per_req") and mb else None
                each = ", ".join(fmt(v / mb) if v and mb else "–" for v in r.get("cpu_runs", []))
                lines.append(f"| {t} | {fmt(r['mbps'])} | {fmt(cpu_per_mb)} | {each} | {r['errors']} |")
        elif scenario.startswith("h3 front"):
            import h3bench
            lines.extend(h3bench.table(rows))
            panels.append(svg_panel(rows, scenario, "rps", "requests/s"))
            panels.append(svg_panel(rows, scenario, "cpu_us_per_req", "proxy CPU µs per request"))
        elif scenario.startswith(("gRPC unary", "WebSocket echo", "UDP echo")):
            import grpcws
            unit = {"g": "call", "W": "message", "U": "exchange"}[scenario[0]]
            lines.extend(grpcws.table(rows, unit))
            panels.append(svg_panel(rows, scenario, "rps", f"{unit}s/s"))
            panels.append(svg_panel(rows, scenario, "cpu_us_per_req", f"proxy CPU µs per {unit}"))
        elif scenario.startswith("TLS handshakes"):
            full = ", full " in scenario
            lines.append("| target | handshakes/s | CPU µs per handshake | CPU µs per handshake, each round "
                         "| resumed | peak RSS KiB | upstream conns / handshake | errors |")
            lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
            warnings = []
            for t, r in rows:
                reuse = (r["upstream_conns"] / r["requests"]) if r["requests"] else None
                each = ", ".join(fmt(v, 2) for v in r.get("cpu_runs", []))
                share = f"{r['resumed'] / r['requests']:.1%}" if r["requests"] else "–"
                lines.append(f"| {t} | {fmt(r['rps'])} | {fmt(r['cpu_us_per_req'], 2)} | {each} | {share} | "
                             f"{fmt(r['peak_rss_kib'])} | {fmt(reuse, 5)} | {r['errors']} |")
                # A full run that resumed, or a resumed run that did not,
                # measures the other scenario.
                if r["requests"] and (r["resumed"] > 0 if full else r["resumed"] < 0.99 * r["requests"]):
                    warnings.append(f"{t}: {r['resumed']:,} of {r['requests']:,} handshakes resumed, so this "
                                    f"row does not measure {'full' if full else 'resumed'} handshakes.")
            for warn in warnings:
                lines.extend(["", f"**{warn}**"])
                print(warn)
            panels.append(svg_panel(rows, scenario, "rps", "handshakes/s"))
            panels.append(svg_panel(rows, scenario, "cpu_us_per_req", "proxy CPU µs per handshake"))
        elif "fixed" in scenario:
            lines.append("| target | req/s | p50 ms | p99 ms | p99.9 ms | p99 of each round, ms | CPU µs/req | errors |")
            lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
            for t, r in rows:
                each = ", ".join(fmt(v, 2) for v in r["p99_runs"])
                lines.append(f"| {t} | {fmt(r['rps'])} | {fmt(r['p50'], 3)} | {fmt(r['p99'], 3)} | "
                             f"{fmt(r['p999'], 3)} | {each} | {fmt(r['cpu_us_per_req'], 2)} | {r['errors']} |")
            panels.append(svg_panel(rows, scenario, "p99", "p99 latency ms"))
        else:
            lines.append("| target | req/s | p50 ms | p99 ms | CPU µs/req | CPU µs/req, each round | peak RSS KiB "
                         "| upstream conns / req | errors |")
            lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
            for t, r in rows:
                reuse = (r["upstream_conns"] / r["requests"]) if r["requests"] and t != "direct" else None
                each = ", ".join(fmt(v, 2) for v in r.get("cpu_runs", []))
                lines.append(f"| {t} | {fmt(r['rps'])} | {fmt(r['p50'], 3)} | {fmt(r['p99'], 3)} | "
                             f"{fmt(r['cpu_us_per_req'], 2)} | {each} | {fmt(r['peak_rss_kib'])} | {fmt(reuse, 5)} "
                             f"| {r['errors']} |")
            panels.append(svg_panel(rows, scenario, "rps", "requests/s"))
            panels.append(svg_panel([(t, r) for t, r in rows if t != "direct"], scenario,
                                    "cpu_us_per_req", "proxy CPU µs per request"))
        negotiated = [f"{t} {r['negotiated']}" for t, r in rows if r.get("negotiated")]
        if negotiated:
            lines.append("")
            lines.append("Negotiated (version, cipher, key exchange): " + "; ".join(negotiated) + ".")
        lines.append("")
    write_svg(panels, os.path.join(outdir, "chart.svg"))
    report = "\n".join(lines)
    with open(os.path.join(outdir, "results.md"), "w") as f:
        f.write(report)
    print(report)
    print(f"written: {outdir}/results.md, {outdir}/chart.svg")
    shutil.rmtree(work, ignore_errors=True)


def platform_line():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
