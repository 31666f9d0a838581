//! The XDP fast path, end to end, in network namespaces (root):
//!
//! ```text
//!  client ns           gateway ns                    backend ns (one each)
//!  c0 10.99.0.2 ─veth─ g0 10.99.0.1  [balancer]
//!                      gbN 10.99.N.1 ─veth (MTU 1600)─ bN 10.99.N.2  [decapsulator]
//!                                                      lo 10.99.100.1 (the VIP)
//! ```
//!
//! The client reaches the virtual IP 10.99.100.1 through the gateway
//! namespace; the balancer on `g0` sends each packet, IP-in-IP, to a
//! backend, whose decapsulator (`expressgateway xdp-decap`) unwraps it;
//! the backend owns the VIP on its loopback and answers the client
//! directly (its replies are routed back through the gateway namespace's
//! kernel, not the program). Every expectation about which backend a flow
//! reaches is computed from the same Maglev table and flow hash the
//! gateway uses.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Gateway;

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 100, 1);
const TCP_PORT: u16 = 80;
const UDP_PORT: u16 = 5300;
const METRICS: &str = "127.0.0.1:9464";

static SEQ: AtomicU32 = AtomicU32::new(0);

fn backend_ip(n: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 99, n as u8, 2)
}

/// Run `args` (a command line split on spaces), failing with its output.
fn sh(args: &str) {
    let mut parts = args.split_whitespace();
    let program = parts.next().unwrap();
    let out = Command::new(program)
        .args(parts)
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} could not run ({e}): the XDP tests need iproute2 and ethtool")
        });
    assert!(
        out.status.success(),
        "`{args}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The namespaces, links and processes of one test; all removed on drop.
struct Topology {
    prefix: String,
    backends: usize,
    children: Vec<Child>,
    servers: Vec<Arc<AtomicBool>>,
}

impl Topology {
    fn new(backends: usize) -> Topology {
        let prefix = format!(
            "egx{}n{}",
            std::process::id() % 100_000,
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let out = Command::new("ip")
            .args(["netns", "add", &format!("{prefix}c")])
            .output()
            .expect("ip (iproute2) could not run: the XDP tests need it");
        assert!(
            out.status.success(),
            "cannot create a network namespace (the XDP tests need root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let t = Topology {
            prefix,
            backends,
            children: Vec::new(),
            servers: Vec::new(),
        };
        let (c, g) = (t.ns("c"), t.ns("g"));
        sh(&format!("ip netns add {g}"));
        for n in 1..=backends {
            sh(&format!("ip netns add {}", t.backend_ns(n)));
        }
        for ns in std::iter::once(c.clone())
            .chain(std::iter::once(g.clone()))
            .chain((1..=backends).map(|n| t.backend_ns(n)))
        {
            sh(&format!("ip -n {ns} link set lo up"));
        }
        sh(&format!(
            "ip link add c0 netns {c} type veth peer name g0 netns {g}"
        ));
        sh(&format!("ip -n {c} addr add 10.99.0.2/24 dev c0"));
        sh(&format!("ip -n {c} link set c0 up"));
        sh(&format!("ip -n {g} addr add 10.99.0.1/24 dev g0"));
        sh(&format!("ip -n {g} link set g0 up"));
        sh(&format!("ip -n {c} route add 10.99.100.0/24 via 10.99.0.1"));
        // Forwarded packets must carry full checksums.
        sh(&format!("ip netns exec {c} ethtool -K c0 tx off"));
        sh(&format!(
            "ip netns exec {g} sysctl -qw net.ipv4.ip_forward=1"
        ));
        for n in 1..=backends {
            let b = t.backend_ns(n);
            sh(&format!(
                "ip link add gb{n} netns {g} mtu 1600 type veth peer name b{n} netns {b} mtu 1600"
            ));
            sh(&format!("ip -n {g} addr add 10.99.{n}.1/24 dev gb{n}"));
            sh(&format!("ip -n {g} link set gb{n} up"));
            sh(&format!("ip -n {b} addr add 10.99.{n}.2/24 dev b{n}"));
            sh(&format!("ip -n {b} link set b{n} up"));
            sh(&format!("ip -n {b} route add default via 10.99.{n}.1"));
            sh(&format!("ip -n {b} addr add {VIP}/32 dev lo"));
            sh(&format!("ip netns exec {b} ethtool -K b{n} tx off"));
        }
        t
    }

    fn ns(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn backend_ns(&self, n: usize) -> String {
        self.ns(&format!("b{n}"))
    }

    /// Run `f` on a thread inside namespace `ns`: sockets it makes belong
    /// there, wherever they are used afterwards.
    fn inside<T: Send + 'static>(&self, ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{ns}");
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap();
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&file),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .unwrap();
            f()
        })
        .join()
        .unwrap()
    }

    /// The decapsulator on every backend's link.
    fn decapsulate(&mut self, generic: bool) {
        for n in 1..=self.backends {
            self.decapsulator(&self.backend_ns(n), &format!("b{n}"), generic);
        }
    }

    /// `expressgateway xdp-decap` on `link` in namespace `ns`, until the
    /// topology is dropped.
    fn decapsulator(&mut self, ns: &str, link: &str, generic: bool) {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, common::binary(), "xdp-decap", link]);
        if generic {
            cmd.arg("--generic");
        }
        let log = common::temp_dir("xdp-decap").join("decap.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap();
        self.children.push(child);
        wait_for(
            || {
                std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .contains("decapsulator attached")
            },
            &format!("the decapsulator on {link}"),
        );
    }

    /// A backend on the client's own segment, 10.99.0.3 in namespace `t`:
    /// the client namespace's link becomes a bridge port, with the
    /// backend's link beside it, so the gateway reaches this backend
    /// through the interface client packets arrive on (`XDP_TX`). Its
    /// decapsulator runs in generic mode.
    fn segment_backend(&mut self) {
        let (c, t) = (self.ns("c"), self.ns("t"));
        sh(&format!("ip netns add {t}"));
        sh(&format!("ip -n {t} link set lo up"));
        sh(&format!("ip -n {c} link add br0 type bridge"));
        sh(&format!("ip -n {c} addr del 10.99.0.2/24 dev c0"));
        sh(&format!("ip -n {c} link set c0 master br0"));
        sh(&format!("ip -n {c} addr add 10.99.0.2/24 dev br0"));
        sh(&format!("ip -n {c} link set br0 up"));
        sh(&format!("ip -n {c} route add 10.99.100.0/24 via 10.99.0.1"));
        sh(&format!("ip netns exec {c} ethtool -K br0 tx off"));
        sh(&format!(
            "ip link add cb netns {c} type veth peer name bt netns {t}"
        ));
        sh(&format!("ip -n {c} link set cb master br0"));
        sh(&format!("ip -n {c} link set cb up"));
        sh(&format!("ip -n {t} addr add 10.99.0.3/24 dev bt"));
        sh(&format!("ip -n {t} link set bt up"));
        sh(&format!("ip -n {t} addr add {VIP}/32 dev lo"));
        sh(&format!("ip netns exec {t} ethtool -K bt tx off"));
        self.decapsulator(&t, "bt", true);
    }

    /// A TCP server on backend `n` (port 80, every address): it greets each
    /// connection with its name, then echoes lines. Returns its off switch.
    fn tcp_server(&mut self, n: usize) -> Arc<AtomicBool> {
        self.tcp_server_in(self.backend_ns(n), format!("b{n}"))
    }

    /// A TCP server in namespace `ns` greeting connections with `name`.
    fn tcp_server_in(&mut self, ns: String, name: String) -> Arc<AtomicBool> {
        let stop = Arc::new(AtomicBool::new(false));
        let listener = self.inside(&ns, move || {
            let l = TcpListener::bind(("0.0.0.0", TCP_PORT)).unwrap();
            l.set_nonblocking(true).unwrap();
            l
        });
        let off = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !off.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let name = name.clone();
                        std::thread::spawn(move || {
                            s.set_nonblocking(false).unwrap();
                            let _ = s.write_all(format!("{name}\n").as_bytes());
                            let mut r = BufReader::new(s.try_clone().unwrap());
                            let mut line = String::new();
                            while r.read_line(&mut line).map(|k| k > 0).unwrap_or(false) {
                                let _ = s.write_all(line.as_bytes());
                                line.clear();
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        self.servers.push(Arc::clone(&stop));
        stop
    }

    /// A UDP server on backend `n`, bound to the VIP (so its answers come
    /// from it): it answers each datagram with its name.
    fn udp_server(&mut self, n: usize) {
        let stop = Arc::new(AtomicBool::new(false));
        let socket = self.inside(&self.backend_ns(n), move || {
            let s = UdpSocket::bind((VIP, UDP_PORT)).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            s
        });
        let off = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !off.load(Ordering::Relaxed) {
                if let Ok((_, from)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(format!("b{n}").as_bytes(), from);
                }
            }
        });
        self.servers.push(stop);
    }

    /// Start the gateway in its namespace on `config`.
    fn gateway(&self, config: &str) -> Gateway {
        let dir = common::temp_dir("xdp");
        let path = dir.join("gateway.toml");
        std::fs::write(&path, config).unwrap();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns("g"), common::binary()])
            .arg(&path);
        let gw = Gateway::spawn(cmd, path, &[]);
        wait_for(
            || gw.log().contains("expressgateway started"),
            "the gateway to start",
        );
        gw
    }

    /// Greeting of a new TCP connection to the VIP from `sport`, and the
    /// connection.
    fn connect(&self, sport: u16) -> (String, TcpStream) {
        let socket = self.inside(&self.ns("c"), move || {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            s.set_reuse_address(true).unwrap();
            s.bind(&SocketAddr::from((CLIENT, sport)).into()).unwrap();
            s
        });
        socket
            .connect_timeout(
                &SocketAddr::from((VIP, TCP_PORT)).into(),
                Duration::from_secs(3),
            )
            .unwrap_or_else(|e| panic!("connecting from port {sport}: {e}"));
        let stream: TcpStream = socket.into();
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let mut line = String::new();
        BufReader::new(stream.try_clone().unwrap())
            .read_line(&mut line)
            .unwrap();
        (line.trim().to_owned(), stream)
    }

    /// The backend answering one datagram to the UDP VIP from `sport`.
    fn datagram(&self, sport: u16, payload: &[u8]) -> String {
        let socket = self.inside(&self.ns("c"), move || {
            UdpSocket::bind((CLIENT, sport)).unwrap()
        });
        socket.connect((VIP, UDP_PORT)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        socket.send(payload).unwrap();
        let mut buf = [0u8; 64];
        let n = socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no answer to the datagram from port {sport}: {e}"));
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// The gateway's `/metrics`, read inside its namespace.
    fn metrics(&self) -> String {
        self.inside(&self.ns("g"), || {
            let mut s = TcpStream::connect(METRICS).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        })
    }

    /// The gateway's `/api/v1/status`, read inside its namespace.
    fn status(&self) -> serde_json::Value {
        let response = self.inside(&self.ns("g"), || {
            let mut s = TcpStream::connect(METRICS).unwrap();
            s.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        });
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{response}");
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {response}"))
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for s in &self.servers {
            s.store(true, Ordering::Relaxed);
        }
        for c in &mut self.children {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.ns("c")])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.ns("g")])
            .status();
        for n in 1..=self.backends {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.backend_ns(n)])
                .status();
        }
        // The backend on the client's segment, when there is one.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.ns("t")])
            .output();
    }
}

fn wait_for(mut done: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `[xdp]` and its cluster: backends `n` with their weights.
fn config(mode: &str, transport: &str, backends: &[(usize, u32)], health: bool) -> String {
    let port = if transport == "tcp" {
        TCP_PORT
    } else {
        UDP_PORT
    };
    let mut s = format!(
        "[observability]\nmetrics_bind = \"{METRICS}\"\n\n[xdp]\ninterface = \"g0\"\nmode = \"{mode}\"\n\
         [[xdp.vips]]\naddress = \"{VIP}:{port}\"\ntransport = \"{transport}\"\ncluster = \"vip\"\n\n\
         [[clusters]]\nname = \"vip\"\n"
    );
    if health {
        s.push_str(
            "[clusters.health_check]\nkind = \"tcp\"\ninterval_ms = 100\ntimeout_ms = 200\n\
             healthy_threshold = 1\nunhealthy_threshold = 2\n",
        );
    }
    for (n, w) in backends {
        s.push_str(&format!(
            "[[clusters.backends]]\naddress = \"{}:{port}\"\nprotocol = \"{transport}\"\nweight = {w}\n",
            backend_ip(*n)
        ));
    }
    s
}

/// Which backend a new flow takes: the Maglev table the gateway builds for
/// the serving backends, built once, and the flow hash its program uses.
struct Picker {
    names: Vec<String>,
    table: Vec<u32>,
    port: u16,
    proto: u8,
}

impl Picker {
    /// Backends `n` (named `bN`, at 10.99.N.2) with their weights.
    fn new(backends: &[(usize, u32)], transport: &str) -> Picker {
        let named: Vec<(Ipv4Addr, String, u32)> = backends
            .iter()
            .map(|(n, w)| (backend_ip(*n), format!("b{n}"), *w))
            .collect();
        Self::of(&named, transport)
    }

    /// Backends at these addresses, with their names and weights.
    fn of(backends: &[(Ipv4Addr, String, u32)], transport: &str) -> Picker {
        let (port, proto, protocol) = if transport == "tcp" {
            (TCP_PORT, 6, lb_config::BackendProtocol::Tcp)
        } else {
            (UDP_PORT, 17, lb_config::BackendProtocol::Udp)
        };
        let serving: Vec<&(Ipv4Addr, String, u32)> =
            backends.iter().filter(|(_, _, w)| *w > 0).collect();
        let specs: Vec<lb_config::Backend> = serving
            .iter()
            .map(|(ip, _, w)| {
                let addr = SocketAddr::from((*ip, port));
                lb_config::Backend {
                    address: addr.to_string(),
                    resolved: addr,
                    protocol,
                    weight: *w,
                    tls: None,
                    send_proxy_protocol: None,
                    quic_server_id: None,
                }
            })
            .collect();
        Picker {
            names: serving.iter().map(|(_, name, _)| name.clone()).collect(),
            table: lb_balancer::Maglev::new(&specs, 65_537).slots().to_vec(),
            port,
            proto,
        }
    }

    /// The backend's name for a new flow from the client's `sport`.
    fn pick(&self, sport: u16) -> String {
        let h = lb_xdp::flow_hash(CLIENT, VIP, sport, self.port, self.proto);
        self.names[self.table[h as usize % self.table.len()] as usize].clone()
    }
}

/// Share of 4,000 source ports whose new flows change backend between two
/// backend sets.
fn moved(before: &Picker, after: &Picker) -> f64 {
    let changed = (10_000..14_000u16)
        .filter(|p| before.pick(*p) != after.pick(*p))
        .count();
    changed as f64 / 4000.0
}

/// A counter's value in a `/metrics` text.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    lb_observability::sample(text, name, labels)
        .unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{text}"))
}

fn reload(gw: &Gateway, config: &str) {
    let before = gw.log().matches("XDP tables updated").count();
    std::fs::write(&gw.config_path, config).unwrap();
    gw.signal("HUP");
    wait_for(
        || gw.log().matches("XDP tables updated").count() > before,
        "the reload to update the XDP tables",
    );
}

#[test]
fn tcp_vip_spreads_new_flows_by_maglev_and_keeps_established_ones_through_changes() {
    let mut t = Topology::new(4);
    t.decapsulate(false);
    for n in 1..=4 {
        t.tcp_server(n);
    }
    // b3 weighs twice as much; b4 is not in the cluster yet.
    let three = [(1, 1), (2, 1), (3, 2)];
    let p_three = Picker::new(&three, "tcp");
    let gw = t.gateway(&config("native", "tcp", &three, false));

    let mut counts = std::collections::HashMap::new();
    let mut open = Vec::new();
    for sport in 20_000..20_090u16 {
        let (got, stream) = t.connect(sport);
        assert_eq!(got, p_three.pick(sport), "new flow from port {sport}");
        *counts.entry(got.clone()).or_insert(0) += 1;
        if sport % 3 == 0 {
            open.push((got, stream));
        }
    }
    assert!(
        counts["b3"] > counts["b1"] && counts["b3"] > counts["b2"],
        "the heavier backend takes more flows: {counts:?}"
    );

    // A fourth backend: about a fifth of new flows move (its share), the
    // established ones stay where they are.
    let four = [(1, 1), (2, 1), (3, 2), (4, 1)];
    let p_four = Picker::new(&four, "tcp");
    let share = moved(&p_three, &p_four);
    assert!((0.12..0.3).contains(&share), "{share} of new flows moved");
    reload(&gw, &config("native", "tcp", &four, false));
    let ping = |open: &mut Vec<(String, TcpStream)>| {
        for (backend, stream) in open.iter_mut() {
            stream.write_all(b"ping\n").unwrap();
            let mut line = String::new();
            BufReader::new(stream.try_clone().unwrap())
                .read_line(&mut line)
                .unwrap_or_else(|e| panic!("established flow to {backend} broken: {e}"));
            assert_eq!(line, "ping\n", "established flow to {backend}");
        }
    };
    ping(&mut open);
    let mut fourth = 0;
    for sport in 21_000..21_100u16 {
        let (got, _) = t.connect(sport);
        assert_eq!(got, p_four.pick(sport), "new flow from port {sport}");
        fourth += usize::from(got == "b4");
    }
    assert!(
        fourth > 5,
        "the added backend takes new flows ({fourth} of 100)"
    );

    // b1 removed: its share of new flows moves, nobody else's, and flows
    // established to the others go on.
    let without = [(2, 1), (3, 2), (4, 1)];
    let p_without = Picker::new(&without, "tcp");
    let share = moved(&p_four, &p_without);
    assert!((0.12..0.3).contains(&share), "{share} of new flows moved");
    reload(&gw, &config("native", "tcp", &without, false));
    open.retain(|(b, _)| b != "b1");
    ping(&mut open);
    for sport in 22_000..22_060u16 {
        let (got, _) = t.connect(sport);
        assert_eq!(got, p_without.pick(sport), "new flow from port {sport}");
    }

    // Traffic that is not for the VIP still reaches the gateway
    // namespace's own sockets.
    let local = t.inside(&t.ns("g"), || TcpListener::bind("10.99.0.1:8080").unwrap());
    let client = t.inside(&t.ns("c"), || TcpStream::connect("10.99.0.1:8080").unwrap());
    let (mut accepted, _) = local.accept().unwrap();
    drop(client);
    let mut rest = Vec::new();
    accepted.read_to_end(&mut rest).unwrap();
    let m = t.metrics();
    assert!(
        sample(
            &m,
            "expressgateway_xdp_passes_total",
            &[("reason", "not_vip")]
        ) > 0.0
    );
    let vip = format!("{VIP}:{TCP_PORT}");
    for n in 2..=4 {
        let backend = format!("{}:{TCP_PORT}", backend_ip(n));
        let packets = sample(
            &m,
            "expressgateway_xdp_packets_total",
            &[
                ("vip", vip.as_str()),
                ("transport", "tcp"),
                ("backend", backend.as_str()),
            ],
        );
        assert!(packets > 0.0, "packets to b{n}: {packets}");
    }
    assert_eq!(
        sample(
            &m,
            "expressgateway_xdp_drops_total",
            &[("reason", "no_backend")]
        ),
        0.0
    );
}

#[test]
fn udp_vip_in_generic_mode_counts_every_datagram_and_pins_flows_through_drains() {
    let mut t = Topology::new(4);
    t.decapsulate(true);
    for n in 1..=4 {
        t.udp_server(n);
    }
    let three = [(1, 1), (2, 1), (3, 1)];
    let p_three = Picker::new(&three, "udp");
    let gw = t.gateway(&config("generic", "udp", &three, false));
    let payload = [7u8; 100];
    let mut sent = std::collections::HashMap::new();
    for sport in 30_000..30_060u16 {
        let got = t.datagram(sport, &payload);
        assert_eq!(got, p_three.pick(sport), "datagram from port {sport}");
        *sent.entry(got).or_insert(0u64) += 1;
    }
    let m = t.metrics();
    let vip = format!("{VIP}:{UDP_PORT}");
    for n in 1..=3 {
        let backend = format!("{}:{UDP_PORT}", backend_ip(n));
        let labels = [
            ("vip", vip.as_str()),
            ("transport", "udp"),
            ("backend", backend.as_str()),
        ];
        let count = sent.get(&format!("b{n}")).copied().unwrap_or(0);
        assert_eq!(
            sample(&m, "expressgateway_xdp_packets_total", &labels),
            count as f64,
            "datagrams to b{n}"
        );
        // Ethernet, IPv4 and UDP headers and the payload, as received.
        assert_eq!(
            sample(&m, "expressgateway_xdp_bytes_total", &labels),
            (count * (14 + 20 + 8 + 100)) as f64,
            "bytes to b{n}"
        );
    }

    // A flow whose table slot moves when b4 joins stays on its backend;
    // a new flow whose slot moved goes to the new owner.
    let four = [(1, 1), (2, 1), (3, 1), (4, 1)];
    let p_four = Picker::new(&four, "udp");
    let movers: Vec<u16> = (31_000..33_000u16)
        .filter(|p| p_three.pick(*p) != p_four.pick(*p))
        .take(2)
        .collect();
    let (pinned, fresh) = (movers[0], movers[1]);
    let first = t.datagram(pinned, b"x");
    assert_eq!(first, p_three.pick(pinned));
    reload(&gw, &config("generic", "udp", &four, false));
    assert_eq!(
        t.datagram(pinned, b"x"),
        first,
        "an established flow keeps its backend"
    );
    assert_eq!(t.datagram(fresh, b"x"), p_four.pick(fresh));

    // Weight 0 drains b2: no new flow reaches it, its flows stay.
    let on_b2 = (34_000..36_000u16)
        .find(|p| p_four.pick(*p) == "b2")
        .unwrap();
    assert_eq!(t.datagram(on_b2, b"x"), "b2");
    let drained = [(1, 1), (2, 0), (3, 1), (4, 1)];
    let p_drained = Picker::new(&drained, "udp");
    reload(&gw, &config("generic", "udp", &drained, false));
    assert_eq!(
        t.datagram(on_b2, b"x"),
        "b2",
        "a drained backend keeps its flows"
    );
    for sport in 36_000..36_060u16 {
        let got = t.datagram(sport, b"x");
        assert_ne!(
            got, "b2",
            "a new flow from {sport} reached the drained backend"
        );
        assert_eq!(got, p_drained.pick(sport));
    }

    // The status page shows the attachment and the counts.
    let status = t.status();
    let x = &status["xdp"];
    assert_eq!(x["interface"], "g0", "{status}");
    assert_eq!(x["mode"], "generic", "{status}");
    let vip = x["vips"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["address"] == format!("{VIP}:{UDP_PORT}").as_str())
        .unwrap_or_else(|| panic!("no VIP {VIP}:{UDP_PORT}: {status}"));
    assert_eq!(vip["transport"], "udp", "{status}");
    assert!(
        vip["backends"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["packets"].as_u64().unwrap() > 0),
        "no backend counted packets: {status}"
    );
}

#[test]
fn a_backend_failing_its_tcp_health_check_gets_no_new_flows_until_it_passes_again() {
    let mut t = Topology::new(3);
    t.decapsulate(false);
    let mut switches = Vec::new();
    for n in 1..=3 {
        switches.push(t.tcp_server(n));
    }
    let all = [(1, 1), (2, 1), (3, 1)];
    let p_all = Picker::new(&all, "tcp");
    let gw = t.gateway(&config("native", "tcp", &all, true));
    for sport in 40_000..40_030u16 {
        assert_eq!(t.connect(sport).0, p_all.pick(sport));
    }
    // b2's server goes away: its checks fail and the table is rebuilt
    // without it.
    let updates = gw.log().matches("XDP tables updated").count();
    switches[1].store(true, Ordering::Relaxed);
    wait_for(
        || gw.log().matches("XDP tables updated").count() > updates,
        "the failed backend to leave the XDP table",
    );
    let without = [(1, 1), (2, 0), (3, 1)];
    let p_without = Picker::new(&without, "tcp");
    for sport in 41_000..41_060u16 {
        let got = t.connect(sport).0;
        assert_ne!(got, "b2");
        assert_eq!(got, p_without.pick(sport));
    }
    // Back: it passes again and takes its share of new flows.
    let updates = gw.log().matches("XDP tables updated").count();
    t.tcp_server(2);
    wait_for(
        || gw.log().matches("XDP tables updated").count() > updates,
        "the recovered backend to rejoin the XDP table",
    );
    for sport in 42_000..42_060u16 {
        assert_eq!(t.connect(sport).0, p_all.pick(sport));
    }
}

/// An `[xdp]` configuration on the loopback interface, with a tcp listener
/// beside it.
fn on_loopback(mode: &str) -> String {
    let listener = common::free_addr();
    format!(
        "[xdp]\ninterface = \"lo\"\nmode = \"{mode}\"\n[[xdp.vips]]\naddress = \"10.98.0.1:80\"\n\
         transport = \"tcp\"\ncluster = \"vip\"\n[[clusters]]\nname = \"vip\"\n[[clusters.backends]]\n\
         address = \"127.0.0.1:80\"\nprotocol = \"tcp\"\n\n[[listeners]]\naddress = \"{listener}\"\n\
         protocol = \"tcp\"\ncluster = \"other\"\n[[clusters]]\nname = \"other\"\n[[clusters.backends]]\n\
         address = \"127.0.0.1:9\"\nprotocol = \"tcp\"\n"
    )
}

/// Run the gateway on `config` through `wrapper` (a command line, or
/// none), expecting it to stop at start; its output.
fn failed_start(config: &str, wrapper: &[&str]) -> String {
    let path = common::temp_dir("xdp-start").join("gateway.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg("--").arg(common::binary());
            c
        }
        None => Command::new(common::binary()),
    };
    let out = cmd.arg(&path).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        !text.contains("\"listening\""),
        "a listener served:\n{text}"
    );
    assert!(!text.contains("expressgateway started"), "{text}");
    text
}

#[test]
fn without_privileges_the_start_fails_naming_what_is_missing() {
    // Root without a single capability (an empty bounding set).
    let text = failed_start(
        &on_loopback("generic"),
        &["setpriv", "--bounding-set=-all", "--inh-caps=-all"],
    );
    assert!(
        text.contains("loading the XDP program")
            && text.contains("Operation not permitted")
            && text.contains("needs root, or CAP_BPF with CAP_NET_ADMIN"),
        "{text}"
    );
}

#[test]
fn an_interface_without_native_xdp_fails_the_start_with_nothing_attached() {
    // The loopback interface has no native XDP.
    let text = failed_start(&on_loopback("native"), &[]);
    assert!(
        text.contains("attaching the XDP program to lo in native mode")
            && text.contains("Operation not supported"),
        "{text}"
    );
    let attached = Command::new("ip")
        .args(["link", "show", "lo"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&attached.stdout).contains("xdp"),
        "an XDP program stayed on lo"
    );
}

#[test]
fn a_backend_on_the_clients_segment_is_reached_by_xdp_tx_in_generic_mode() {
    // One backend behind its own link (redirect), one on the segment the
    // client packets arrive from (XDP_TX back out of the same interface).
    let mut t = Topology::new(1);
    t.decapsulate(true);
    t.tcp_server(1);
    t.segment_backend();
    t.tcp_server_in(t.ns("t"), "t".to_owned());
    let config = format!(
        "[observability]\nmetrics_bind = \"{METRICS}\"\n\n[xdp]\ninterface = \"g0\"\nmode = \"generic\"\n\
         [[xdp.vips]]\naddress = \"{VIP}:{TCP_PORT}\"\ntransport = \"tcp\"\ncluster = \"vip\"\n\n\
         [[clusters]]\nname = \"vip\"\n\
         [[clusters.backends]]\naddress = \"10.99.1.2:{TCP_PORT}\"\nprotocol = \"tcp\"\n\
         [[clusters.backends]]\naddress = \"10.99.0.3:{TCP_PORT}\"\nprotocol = \"tcp\"\n"
    );
    let _gw = t.gateway(&config);
    let picker = Picker::of(
        &[
            (backend_ip(1), "b1".to_owned(), 1),
            (Ipv4Addr::new(10, 99, 0, 3), "t".to_owned(), 1),
        ],
        "tcp",
    );
    let mut seen = std::collections::HashSet::new();
    for sport in 50_000..50_040u16 {
        let want = picker.pick(sport);
        let (got, mut stream) = t.connect(sport);
        assert_eq!(got, want, "new flow from port {sport}");
        stream.write_all(b"ping\n").unwrap();
        let mut line = String::new();
        BufReader::new(stream.try_clone().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "ping\n");
        seen.insert(got);
    }
    assert_eq!(seen.len(), 2, "both backends took flows: {seen:?}");
}
