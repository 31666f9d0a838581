"""XDP scenario of the benchmark (root): the gateway's XDP virtual IPs
against its own userspace `udp` and `tcp` listeners, in the network
namespace setup of crates/lb/tests/xdp.rs (one backend):

    client ns           gateway ns                    backend ns
    c0 10.99.0.2 ─veth─ g0 10.99.0.1  [XDP, or the listeners]
                        gb1 10.99.1.1 ─veth─ b1 10.99.1.2  [xdp-decap]
                                             lo 10.99.100.1 (the VIP)

Gateway-side CPU is what runs on the gateway's behalf on the proxy CPU:
the gateway process and the kernel thread that polls `g0`, the gateway's
client-facing link (GRO on, so it polls in both setups, and threaded
NAPI pinned to the proxy CPU): the XDP program's work, or the kernel's
receive work for the listeners' sockets, lands there. The backend's NAPI
thread, the load and the backend run on the load CPU.

UDP: `eg-loadgen udp-blast` sends 64-byte datagrams from 16 sockets (16
flows) as fast as one thread can for the run; `eg-loadgen udp-sink`
counts what reaches the backend. Datagrams processed are the gateway's own
counts (XDP: `expressgateway_xdp_packets_total`; listener:
`expressgateway_udp_datagrams_received_total`). The figure that matters is
datagrams per second of gateway CPU (per core); the target is
at least 5 times the listener's.

Floor: `bench/xdp/floor.c`, a program that redirects every UDP packet
unchanged to the backend's link (no lookup, no counter, no
encapsulation), attached the same way: its cost per packet is what any
XDP program pays on this link before doing anything, and bounds how far
the XDP path can get ahead of the listener here. Each XDP row is run in
native and in generic mode.

TCP: `wrk` with `Connection: close` (one request per connection, 32 at a
time) against nginx in the backend namespace, through the XDP VIP and
through a `tcp` listener; connections per second and gateway CPU per
connection.
"""

import os
import re
import signal
import subprocess
import time
import urllib.request

import harness as hz

PREFIX = "egbench"
VIP = "10.99.100.1"
UDP_PORT = 5300
TCP_PORT = 80
LISTENER = "10.99.0.1"
ADMIN = "127.0.0.1:9464"
SOCKETS = 16
SIZE = 64
WRK_CONNECTIONS = 32


def sh(cmd):
    out = subprocess.run(cmd, shell=True, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"`{cmd}` failed: {out.stderr.strip()}")
    return out.stdout


def ns(name):
    return f"{PREFIX}{name}"


def in_ns(name, cpu, argv):
    return ["ip", "netns", "exec", ns(name), "taskset", "-c", cpu] + argv


class Topology:
    def __init__(self):
        self.down()
        for n in ("c", "g", "b1"):
            sh(f"ip netns add {ns(n)}")
            sh(f"ip -n {ns(n)} link set lo up")
        c, g, b = ns("c"), ns("g"), ns("b1")
        sh(f"ip link add c0 netns {c} type veth peer name g0 netns {g}")
        sh(f"ip -n {c} addr add 10.99.0.2/24 dev c0 && ip -n {c} link set c0 up")
        sh(f"ip -n {g} addr add 10.99.0.1/24 dev g0 && ip -n {g} link set g0 up")
        sh(f"ip -n {c} route add 10.99.100.0/24 via 10.99.0.1")
        sh(f"ip -n {c} route add 10.99.1.0/24 via 10.99.0.1")
        sh(f"ip netns exec {c} ethtool -K c0 tx off")
        sh(f"ip netns exec {g} sysctl -qw net.ipv4.ip_forward=1")
        # g0 polls (NAPI) in both setups, in a kernel thread pinned to the
        # proxy CPU: the receive work done for the gateway, its program's
        # or its sockets', is counted alike.
        sh(f"ip netns exec {g} ethtool -K g0 gro on")
        sh(f"ip netns exec {g} sh -c 'echo 1 > /sys/class/net/g0/threaded'")
        sh(f"ip link add gb1 netns {g} mtu 1600 type veth peer name b1 netns {b} mtu 1600")
        sh(f"ip -n {g} addr add 10.99.1.1/24 dev gb1 && ip -n {g} link set gb1 up")
        sh(f"ip -n {b} addr add 10.99.1.2/24 dev b1 && ip -n {b} link set b1 up")
        sh(f"ip -n {b} route add default via 10.99.1.1")
        sh(f"ip -n {b} addr add {VIP}/32 dev lo")
        sh(f"ip netns exec {b} ethtool -K b1 tx off")

    def down(self):
        for n in ("c", "g", "b1"):
            subprocess.run(["ip", "netns", "del", ns(n)], capture_output=True)


def pin_polling():
    """g0's polling thread on the proxy CPU, b1's on the load CPU (attaching
    an XDP program makes them anew)."""
    time.sleep(0.2)
    for pid in napi_threads("g0"):
        sh(f"taskset -p -c {hz.PROXY_CPU} {pid}")
    for pid in napi_threads("b1"):
        sh(f"taskset -p -c {hz.LOAD_CPU} {pid}")


def napi_threads(dev):
    """PIDs of the kernel threads polling `dev` (threaded NAPI)."""
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip().startswith(f"napi/{dev}-"):
                    pids.append(int(pid))
        except OSError:
            pass
    return pids


def scrape(name, label=""):
    """Sum of the series of a counter family whose labels contain `label`,
    from the gateway's admin listener (read inside its namespace)."""
    text = sh(f"ip netns exec {ns('g')} curl -s http://{ADMIN}/metrics")
    return sum(float(m.group(2)) for m in re.finditer(rf"^{name}(\{{[^}}]*\}})? (\S+)$", text, re.M)
               if label in (m.group(1) or ""))


class Gateway:
    """The gateway in its namespace on the proxy CPU, with either an XDP
    VIP (`xdp`) or userspace listeners."""

    def __init__(self, work, binary, mode):
        """`mode`: `native` or `generic` for the XDP VIPs, None for the
        userspace listeners."""
        xdp = mode is not None
        self.xdp = xdp
        self.dir = os.path.join(work, f"xdp-{mode}" if xdp else "listeners")
        os.makedirs(self.dir, exist_ok=True)
        if xdp:
            conf = f"""
[runtime]
worker_threads = 1
[observability]
metrics_bind = "{ADMIN}"
[xdp]
interface = "g0"
mode = "{mode}"
[[xdp.vips]]
address = "{VIP}:{UDP_PORT}"
transport = "udp"
cluster = "udp"
[[xdp.vips]]
address = "{VIP}:{TCP_PORT}"
transport = "tcp"
cluster = "tcp"
[[clusters]]
name = "udp"
backends = [{{ address = "10.99.1.2:{UDP_PORT}", protocol = "udp" }}]
[[clusters]]
name = "tcp"
backends = [{{ address = "10.99.1.2:{TCP_PORT}", protocol = "tcp" }}]
"""
        else:
            conf = f"""
[runtime]
worker_threads = 1
[observability]
metrics_bind = "{ADMIN}"
[[listeners]]
address = "{LISTENER}:{UDP_PORT}"
protocol = "udp"
access_log = {{ enabled = false }}
backends = [{{ address = "10.99.1.2:{UDP_PORT}", protocol = "udp" }}]
[[listeners]]
address = "{LISTENER}:{TCP_PORT}"
protocol = "tcp"
access_log = {{ enabled = false }}
backends = [{{ address = "10.99.1.2:{TCP_PORT}", protocol = "tcp" }}]
"""
        self.conf = os.path.join(self.dir, "gateway.toml")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.binary = binary
        self.proc = None
        self.name = f"expressgateway XDP VIP, {mode}" if xdp else "expressgateway listener"

    def start(self):
        log = open(os.path.join(self.dir, "gateway.log"), "w")
        env = dict(os.environ, RUST_LOG="warn,expressgateway=info")
        self.proc = subprocess.Popen(in_ns("g", hz.PROXY_CPU, [self.binary, self.conf]),
                                     stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 20
        while "expressgateway started" not in open(os.path.join(self.dir, "gateway.log")).read():
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"the gateway did not start: {open(os.path.join(self.dir, 'gateway.log')).read()}")
            time.sleep(0.05)
        pin_polling()

    def cpu_pids(self):
        """The gateway process and the kernel thread polling g0."""
        pids = napi_threads("g0")
        if not pids:
            raise RuntimeError("g0 has no NAPI thread: the gateway-side CPU would not be measured")
        return pids + hz.family(self.proc.pid)

    def datagrams(self):
        """Datagrams the gateway has handled: forwarded by the program, or
        received by the listener."""
        if self.xdp:
            return scrape("expressgateway_xdp_packets_total", 'transport="udp"')
        return scrape("expressgateway_udp_datagrams_received_total")

    def target(self, port):
        return f"{VIP if self.xdp else LISTENER}:{port}"

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Floor:
    """`bench/xdp/floor.c` on g0, in `mode`: no gateway process."""

    def __init__(self, work, mode):
        self.mode = mode
        self.name = f"floor: redirect only, {mode}"
        self.obj = os.path.join(work, "floor.o")
        self.proc = None

    def build(self):
        egress = sh(f"ip netns exec {ns('g')} cat /sys/class/net/gb1/ifindex").strip()
        src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "xdp", "floor.c")
        sh(f"clang -O2 -g -target bpf -I/usr/include/$(uname -m)-linux-gnu -DEGRESS={egress} -c {src} -o {self.obj}")

    def flag(self):
        return "xdpdrv" if self.mode == "native" else "xdpgeneric"

    def start(self):
        sh(f"ip -n {ns('g')} link set dev g0 {self.flag()} obj {self.obj} sec xdp")
        pin_polling()

    def cpu_pids(self):
        pids = napi_threads("g0")
        if not pids:
            raise RuntimeError("g0 has no NAPI thread: the floor's CPU would not be measured")
        return pids

    def datagrams(self):
        """Packets g0 received (the program redirects every UDP one)."""
        return float(sh(f"ip netns exec {ns('g')} cat /sys/class/net/g0/statistics/rx_packets"))

    def target(self, port):
        return f"{VIP}:{port}"

    def stop(self):
        sh(f"ip -n {ns('g')} link set dev g0 {self.flag()} off")


def udp_run(gw, loadgen, seconds):
    sink = subprocess.Popen(in_ns("b1", hz.LOAD_CPU, [loadgen, "udp-sink", f"0.0.0.0:{UDP_PORT}",
                                                       "--duration", str(seconds + 3)]),
                            stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    before = gw.datagrams()
    pids = gw.cpu_pids()
    t0 = hz.cpu_ticks(pids)
    blast = hz.run(in_ns("c", hz.LOAD_CPU, [loadgen, "udp-blast", "--sockets", str(SOCKETS), "--size", str(SIZE),
                                            "--duration", str(seconds), gw.target(UDP_PORT)]), seconds + 30)
    cpu = (hz.cpu_ticks(pids) - t0) / hz.TICK
    time.sleep(0.3)
    processed = gw.datagrams() - before
    out, _ = sink.communicate(timeout=seconds + 30)
    m = re.search(r"received=(\d+) seconds=([\d.]+)", out)
    received, span = (int(m.group(1)), float(m.group(2))) if m else (0, 0.0)
    s = re.search(r"sent=(\d+) errors=(\d+) seconds=([\d.]+)", blast)
    sent, errors, elapsed = (int(s.group(1)), int(s.group(2)), float(s.group(3))) if s else (0, 0, seconds)
    return {"rate": received / span if span else 0.0, "sent_rate": sent / elapsed if elapsed else 0.0,
            "processed": processed, "cpu_s": cpu, "errors": errors,
            "cpu_us": cpu / processed * 1e6 if processed else None,
            "per_core": processed / cpu if cpu else None}


class Nginx:
    """The TCP backend: nginx in the backend namespace, on the load CPU."""

    def __init__(self, work):
        self.dir = os.path.join(work, "xdp-nginx")
        os.makedirs(self.dir, exist_ok=True)
        self.conf = os.path.join(self.dir, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(f"""
worker_processes 1;
daemon off;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    server {{
        listen {TCP_PORT} backlog=4096;
        location / {{ return 200 "ok\\n"; }}
    }}
}}
""")
        self.proc = subprocess.Popen(in_ns("b1", hz.LOAD_CPU, ["nginx", "-c", self.conf, "-p", self.dir]),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)

    def stop(self):
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def tcp_run(gw, seconds):
    pids = gw.cpu_pids()
    t0 = hz.cpu_ticks(pids)
    text = hz.run(in_ns("c", hz.LOAD_CPU, ["wrk", "-t1", f"-c{WRK_CONNECTIONS}", f"-d{seconds}s",
                                           "-H", "Connection: close", f"http://{gw.target(TCP_PORT)}/"]),
                  seconds + 30)
    cpu = (hz.cpu_ticks(pids) - t0) / hz.TICK
    m = re.search(r"(\d+) requests in ([\d.]+)s", text)
    conns, span = (int(m.group(1)), float(m.group(2))) if m else (0, float(seconds))
    e = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    errors = sum(int(x) for x in e.groups()) if e else 0
    return {"rate": conns / span if span else 0.0, "processed": conns, "cpu_s": cpu, "errors": errors,
            "cpu_us": cpu / conns * 1e6 if conns else None,
            "per_core": conns / cpu if cpu else None}


def median(values):
    v = sorted(x for x in values if x is not None)
    return v[len(v) // 2] if v else None


def merge(runs):
    out = {k: median(r.get(k) for r in runs) for k in ("rate", "sent_rate", "cpu_us", "per_core")}
    out["errors"] = sum(r["errors"] for r in runs)
    out["rates"] = [r["rate"] for r in runs]
    out["cpu_runs"] = [r["cpu_us"] for r in runs]
    return out


def scenarios(work, binary, loadgen, seconds, rounds=3):
    """[(scenario name, [(target, merged result)])]."""
    topo = Topology()
    decap = subprocess.Popen(in_ns("b1", hz.LOAD_CPU, [binary, "xdp-decap", "b1"]),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    nginx = Nginx(work)
    try:
        time.sleep(0.5)
        # The backend's receive work (its veth polls once an XDP program is
        # on it) in a thread of its own, on the load CPU.
        sh(f"ip netns exec {ns('b1')} sh -c 'echo 1 > /sys/class/net/b1/threaded'")
        floors = [Floor(work, "native"), Floor(work, "generic")]
        floors[0].build()
        targets = [Gateway(work, binary, "native"), Gateway(work, binary, "generic"),
                   Gateway(work, binary, None)] + floors
        udp = {t.name: [] for t in targets}
        tcp = {t.name: [] for t in targets if isinstance(t, Gateway)}
        for rnd in range(rounds):
            shift = rnd % len(targets)
            for t in targets[shift:] + targets[:shift]:
                t.start()
                try:
                    udp[t.name].append(udp_run(t, loadgen, seconds))
                    if t.name in tcp:
                        tcp[t.name].append(tcp_run(t, seconds))
                finally:
                    t.stop()
    finally:
        nginx.stop()
        decap.send_signal(signal.SIGTERM)
        decap.wait(10)
        topo.down()
    return [
        (f"XDP UDP: {SIZE}-byte datagrams from {SOCKETS} flows, open loop, one backend (root, network "
         f"namespaces), median of {rounds} rounds", [(n, merge(r)) for n, r in udp.items()]),
        (f"XDP TCP: new connection per request (wrk -c{WRK_CONNECTIONS}, Connection: close), one backend "
         f"(root, network namespaces), median of {rounds} rounds", [(n, merge(r)) for n, r in tcp.items()]),
    ]


def table(scenario, rows):
    unit = "datagram" if scenario.startswith("XDP UDP") else "connection"
    lines = [f"| target | {unit}s/s delivered | gateway CPU µs per {unit} | {unit}s per gateway CPU-second "
             f"| gateway CPU µs, each round | {unit}s/s, each round | errors |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for t, r in rows:
        each = ", ".join(hz.fmt(v, 2) for v in r["cpu_runs"])
        rates = ", ".join(hz.fmt(v) for v in r["rates"])
        lines.append(f"| {t} | {hz.fmt(r['rate'])} | {hz.fmt(r['cpu_us'], 3)} | {hz.fmt(r['per_core'])} | {each} "
                     f"| {rates} | {r['errors']} |")
    by = dict(rows)
    base = by.get("expressgateway listener", {}).get("per_core")
    for mode in ("native", "generic"):
        xdp = by.get(f"expressgateway XDP VIP, {mode}", {}).get("per_core")
        floor = by.get(f"floor: redirect only, {mode}", {}).get("per_core")
        if base and xdp:
            line = f"{mode}: the XDP VIP handles {xdp / base:.1f}× the listener's {unit}s per second of gateway CPU"
            if floor:
                line += f"; the redirect-only floor, {floor / base:.1f}×"
            lines.extend(["", line + "."])
    if unit == "datagram":
        sent = by.get("expressgateway XDP VIP, native", {}).get("sent_rate")
        if sent:
            lines.extend(["", f"The sender offered {hz.fmt(sent)} datagrams/s to the native XDP VIP (one thread, "
                              "on the load CPU with the backend). The floor's datagrams are never delivered (they "
                              "reach the backend unencapsulated, addressed to the gateway's MAC)."])
    return lines
