//! Shared harness for the binary's integration tests: start the real
//! `expressgateway` with a temp config, run small hyper backends, and talk
//! to it with hyper clients. Everything stays on 127.0.0.1.
#![allow(dead_code)]

pub mod backend;
pub mod body;
pub mod client;
pub mod h3;
pub mod h3client;
pub mod h3raw;
pub mod scrape;
pub mod tls;
pub mod traffic;

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

// Port choice. Every server a test runs itself (hyper backends, TLS
// backends, raw listeners) binds `127.0.0.1:0` and reports the address the
// kernel gave it, so nothing can take its port in between. The gateway's
// listeners are different: their addresses are written into its config
// before it starts, so the harness has to name ports in advance. Binding
// port 0 and releasing it would hand out a port from the kernel's ephemeral
// range, the very range the kernel then uses for outgoing connections and
// for other tests' port-0 binds, so a released port is soon taken again.
// Listener ports therefore come from below the ephemeral range
// (/proc/sys/net/ipv4/ip_local_port_range), split into blocks; a test
// process takes the block chosen by its pid and walks it with an atomic
// counter, so ports never repeat within a process and two processes only
// meet when their pids share a block (and even then they start at
// different places in it). Each candidate is bound once first
// to skip ports something else holds. What collision remains (another
// process in the same block binding the port between that check and the
// gateway's bind) is detected: `Gateway::start` reports a gateway that
// exits on "address in use" as a port collision, naming the address.

/// Listener ports per process block.
const PORT_BLOCK: u16 = 200;
/// Lowest port handed out: above the well-known and registered ports most
/// daemons use.
const PORT_FLOOR: u16 = 10_000;

/// The first port of the kernel's ephemeral range (32768 when unreadable).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A loopback port for a gateway listener: unique within this process, in
/// this process's block below the ephemeral range, and not bound by anyone
/// when returned. See the comment above for why not port 0.
pub fn free_port() -> u16 {
    port_in_block(|port| TcpListener::bind(("127.0.0.1", port)).is_ok())
}

/// The next port of this process's block that `bindable` says is free.
fn port_in_block(bindable: impl Fn(u16) -> bool) -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let top = ephemeral_start().max(PORT_FLOOR + PORT_BLOCK);
    let blocks = u32::from((top - PORT_FLOOR) / PORT_BLOCK);
    let pid = std::process::id();
    let block = pid % blocks;
    let base = u32::from(PORT_FLOOR) + block * u32::from(PORT_BLOCK);
    // Two processes sharing a block start at scattered places in it (pids
    // a block apart would otherwise start one port apart).
    let start = (pid / blocks).wrapping_mul(2_654_435_761) >> 16;
    for _ in 0..PORT_BLOCK {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let offset = start.wrapping_add(n) % u32::from(PORT_BLOCK);
        let port = u16::try_from(base + offset).unwrap();
        if bindable(port) {
            return port;
        }
    }
    panic!(
        "no free listener port in {base}..{}",
        base + u32::from(PORT_BLOCK)
    );
}

/// A loopback address for a gateway listener, or one that must refuse
/// connections (see [`free_port`]). For a server the test runs itself,
/// bind `127.0.0.1:0` instead.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A loopback UDP address for a gateway's `udp` or `quic` listener, from
/// the same block as [`free_port`]'s and for the same reason: a port the
/// kernel handed out once is soon handed to another socket (a test's own
/// client among them) before the gateway binds it.
pub fn free_udp() -> SocketAddr {
    let port = port_in_block(|port| std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok());
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A fresh temp directory for one test.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = temp_root().join(format!("{tag}-{}", N.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// This test process's directory under the system temp dir, removed when
/// the process exits; the first call also removes what processes that
/// died without exiting left behind.
fn temp_root() -> &'static PathBuf {
    static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        let base = std::env::temp_dir();
        sweep_stale(&base);
        let root = base.join(format!("eg-test-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        extern "C" {
            fn atexit(callback: extern "C" fn()) -> i32;
        }
        extern "C" fn remove_root() {
            if let Some(root) = ROOT.get() {
                let _ = std::fs::remove_dir_all(root);
            }
        }
        // SAFETY: registers a plain function to run at process exit.
        unsafe { atexit(remove_root) };
        root
    })
}

/// Remove `eg-test-PID` directories of processes that are gone.
fn sweep_stale(base: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("eg-test-"))
            .and_then(|rest| rest.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Path of the binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_expressgateway")
}

/// A running gateway process; killed on drop.
pub struct Gateway {
    pub child: Child,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
}

impl Gateway {
    /// Write `toml` to a temp file, start the binary on it and wait until
    /// every address in `wait_for` accepts connections.
    pub fn start(toml: &str, wait_for: &[SocketAddr]) -> Gateway {
        let dir = temp_dir("gw");
        let config_path = dir.join("gateway.toml");
        std::fs::write(&config_path, toml).unwrap();
        Self::start_file(config_path, wait_for)
    }

    /// Start the binary on an existing config file.
    pub fn start_file(config_path: PathBuf, wait_for: &[SocketAddr]) -> Gateway {
        Self::start_file_with_env(config_path, wait_for, &[])
    }

    /// Start the binary on an existing config file with extra environment
    /// variables.
    pub fn start_file_with_env(
        config_path: PathBuf,
        wait_for: &[SocketAddr],
        env: &[(&str, &str)],
    ) -> Gateway {
        let mut command = Command::new(binary());
        command.arg(&config_path).envs(env.iter().copied());
        Self::spawn(command, config_path, wait_for)
    }

    /// Start the binary without arguments in `dir`, where it reads its
    /// default `config/default.toml`.
    pub fn start_default_in(dir: &std::path::Path, wait_for: &[SocketAddr]) -> Gateway {
        let mut command = Command::new(binary());
        command.current_dir(dir);
        Self::spawn(command, dir.join("config/default.toml"), wait_for)
    }

    /// Run `command` with its output in `<config>.log` and wait for it to
    /// serve `wait_for`.
    pub fn spawn(mut command: Command, config_path: PathBuf, wait_for: &[SocketAddr]) -> Gateway {
        let log_path = config_path.with_extension("log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = command
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let mut gw = Gateway {
            child,
            config_path,
            log_path,
        };
        if !wait_for.is_empty() {
            gw.wait_started(wait_for);
        }
        gw
    }

    /// Wait for the gateway's own word that every listener is bound and
    /// served, rather than probing the ports: a probe would be proxied by
    /// tcp listeners (taking a connection slot and a backend flow), and a
    /// port recycled by another process could answer it.
    fn wait_started(&mut self, addrs: &[SocketAddr]) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = self.log();
                if log.to_ascii_lowercase().contains("address in use") {
                    panic!(
                        "port collision: a listener address of {addrs:?} was taken by \
                         another process before the gateway bound it ({status}):\n{log}"
                    );
                }
                panic!("gateway exited early ({status}):\n{log}");
            }
            let log = self.log();
            let listening = |addr: &SocketAddr| {
                let addr = addr.to_string();
                log.lines()
                    .any(|l| l.contains("listening") && l.contains(&addr))
            };
            if log.contains("expressgateway started") && addrs.iter().all(listening) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "gateway never reported listening on {addrs:?}:\n{}",
            self.log()
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the gateway logged so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log_path) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Resident set size in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    /// Send a signal to the gateway.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Wait for exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "gateway did not exit:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// VmRSS of a process in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Samples a process's RSS in the background; `stop` returns the peak.
pub struct RssSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<u64>,
}

impl RssSampler {
    pub fn start(pid: u32) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid));
                std::thread::sleep(Duration::from_millis(25));
            }
            peak.max(rss_kib(pid))
        });
        Self { stop, handle }
    }

    pub fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

/// Run `expressgateway ARGS`, returning (exit code, stdout, stderr).
pub fn run_cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(binary()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The workspace root (for config/ and docs/).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Fail loudly if a required external tool is missing: a test that passes
/// without its tool proves nothing.
pub fn require_tool(name: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "required tool `{name}` is not installed (.ci/run installs it)"
    );
}
