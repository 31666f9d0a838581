"""UDP scenario of the side-by-side benchmark: expressgateway's `udp`
listener and nginx's `stream` UDP proxy (`listen ... udp`) in front of
the same echo backend (`eg-loadgen udp-echo`, on the load CPU). HAProxy
2.6 proxies no UDP (its only UDP side is syslog forwarding), so it has no
row.

`eg-loadgen udp` keeps 64 sessions (one socket each), each sending a
64-byte datagram and waiting for its echo before the next: every
exchange is two datagrams through the proxy, one each way. CPU is the
proxy's, per exchange completed.

Rounds alternate the targets; the report gives medians and every round.
"""

import os
import subprocess
import time

import grpcws
import harness as hz

SESSIONS = 64
SIZE = 64


class Echo:
    """The echo backend, pinned to the load CPU."""

    def __init__(self, loadgen):
        self.port = hz.free_port()
        self.proc = subprocess.Popen(["taskset", "-c", hz.LOAD_CPU, loadgen, "udp-echo", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self):
        self.proc.kill()
        self.proc.wait()


class Target(hz.Target):
    """A proxy with one UDP port; `start` waits for the process, not a port."""

    def __init__(self, work, echo):
        super().__init__(os.path.join(work, "udp"), None)
        self.echo = echo
        self.h1 = self.h2c = self.tcp = None
        self.udp = hz.free_port()


class ExpressGateway(Target):
    name = "expressgateway"

    def __init__(self, work, echo, binary):
        super().__init__(work, echo)
        self.binary = binary
        conf = f"""
[runtime]
worker_threads = 1
drain_timeout_ms = 1000

[[listeners]]
address = "127.0.0.1:{self.udp}"
protocol = "udp"
access_log = {{ enabled = false }}
backends = [{{ address = "127.0.0.1:{echo.port}", protocol = "udp" }}]
"""
        self.conf = os.path.join(self.dir, "gateway.toml")
        with open(self.conf, "w") as f:
            f.write(conf)

    def argv(self):
        return [self.binary, self.conf]

    def start(self):
        os.environ["RUST_LOG"] = "warn"
        super().start()
        # No TCP port to wait for: give it the time a start takes.
        time.sleep(0.5)


class Nginx(Target):
    name = "nginx"

    def __init__(self, work, echo):
        super().__init__(work, echo)
        conf = f"""
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
daemon off;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log warn;
worker_rlimit_nofile {hz.NOFILE};
events {{ worker_connections {hz.NOFILE - 100}; }}
stream {{
    server {{
        listen 127.0.0.1:{self.udp} udp;
        proxy_pass 127.0.0.1:{echo.port};
        proxy_timeout 30s;
    }}
}}
"""
        self.conf = os.path.join(self.dir, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(conf)

    def argv(self):
        return ["nginx", "-c", self.conf, "-p", self.dir]

    stop = hz.Nginx.stop

    def start(self):
        super().start()
        time.sleep(0.5)


def udp_load(loadgen, port, seconds):
    cmd = ["taskset", "-c", hz.LOAD_CPU, loadgen, "udp", "--sessions", str(SESSIONS), "--size", str(SIZE),
           "--duration", str(seconds), "--warmup", "1", f"127.0.0.1:{port}"]
    return grpcws.loadgen_result(hz.run(cmd, seconds + 30), "udp")


def scenario(work, binary, loadgen, seconds, rounds=3):
    """(scenario name, [(target, merged result)])."""
    echo = Echo(loadgen)
    try:
        targets = [ExpressGateway(work, echo, binary), Nginx(work, echo)]
        runs = {t.name: [] for t in targets}
        for _ in range(rounds):
            for t in targets:
                t.start()
                try:
                    runs[t.name].append(grpcws.measure(t, lambda: udp_load(loadgen, t.udp, seconds)))
                finally:
                    t.stop()
    finally:
        echo.stop()
    rows = [(t.name, grpcws.merge(runs[t.name])) for t in targets]
    name = (f"UDP echo ({SESSIONS} sessions, {SIZE}-byte datagrams, one exchange = a datagram each way), "
            f"median of {rounds} rounds")
    return name, rows
