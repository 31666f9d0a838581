//! The access log through the real binary: one JSON line per request (and
//! per tcp flow), on standard output by default or in a file, with the
//! outcome of each request, gateway answers included.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{Empty, Full};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::backend::{echo, named, Proto};
use common::client::{request, Client};
use common::scrape::{scrape, value, wait_admin};
use common::{free_addr, Gateway};

/// The access lines in `text`: JSON objects tagged `"log":"access"`
/// (process logs share the gateway's output, as JSON without that tag).
fn access_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["log"] == "access")
        .collect()
}

/// Wait until `read` yields `n` access lines.
fn wait_lines(n: usize, read: impl Fn() -> String) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = access_lines(&read());
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} access lines in:\n{}",
            lines.len(),
            read()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn find<'a>(lines: &'a [Value], path: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["path"] == path)
        .unwrap_or_else(|| panic!("no line for {path} in {lines:?}"))
}

async fn send(proto: Proto, addr: SocketAddr, method: &str, path: &str, body: &'static str) -> u16 {
    let mut c = Client::connect(proto, addr).await;
    let req = request(proto, method, "gw.test", path, Full::new(Bytes::from(body)));
    let res = c.send(req).await.unwrap();
    let status = res.status().as_u16();
    common::body::text(res.into_body()).await;
    status
}

#[tokio::test]
async fn every_request_gets_one_json_line_on_stdout_by_default() {
    let api = named(Proto::H1, "api-answer");
    let up = echo(Proto::H2);
    let dead = free_addr();
    let listen = free_addr();
    let config = format!(
        r#"
[[clusters]]
name = "api"
[[clusters.backends]]
address = "{api}"
[[clusters]]
name = "upload"
[[clusters.backends]]
address = "{up}"
protocol = "h2"
[[clusters]]
name = "down"
[[clusters.backends]]
address = "{dead}"

[[listeners]]
address = "{listen}"
protocol = "h1"
[[listeners.routes]]
path_prefix = "/api"
cluster = "api"
[[listeners.routes]]
path_prefix = "/upload"
cluster = "upload"
[[listeners.routes]]
path_prefix = "/down"
cluster = "down"
[[listeners.routes]]
path_prefix = "/direct"
direct = {{ status = 201, body = "made" }}
"#,
        api = api.addr,
        up = up.addr
    );
    let gw = Gateway::start(&config, &[listen]);
    assert_eq!(
        send(Proto::H1, listen, "GET", "/api/a?token=secret", "").await,
        200
    );
    assert_eq!(
        send(Proto::H2, listen, "POST", "/upload", "eleven byte").await,
        200
    );
    assert_eq!(send(Proto::H1, listen, "GET", "/down", "").await, 502);
    assert_eq!(send(Proto::H1, listen, "GET", "/direct", "").await, 201);
    assert_eq!(send(Proto::H1, listen, "GET", "/missing", "").await, 404);

    let lines = wait_lines(5, || gw.log());
    assert_eq!(lines.len(), 5, "{lines:?}");
    for line in &lines {
        assert_eq!(line["listener"], listen.to_string());
        assert_eq!(line["authority"], "gw.test");
        assert!(line["client"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert!(line["time"].as_str().unwrap().ends_with('Z'));
        assert!(line["duration_ms"].as_f64().unwrap() > 0.0);
    }
    let ok = find(&lines, "/api/a");
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["protocol"], "HTTP/1.1");
    assert_eq!(ok["status"], 200);
    assert_eq!(
        (ok["bytes_in"].as_u64(), ok["bytes_out"].as_u64()),
        (Some(0), Some(10))
    );
    assert_eq!(ok["cluster"], "api");
    assert_eq!(ok["backend"], api.addr.to_string());
    assert_eq!(ok["retries"], 0);
    assert!(ok["upstream_ms"].as_f64().unwrap() > 0.0);
    assert!(ok.get("error").is_none());

    let upload = find(&lines, "/upload");
    assert_eq!(upload["protocol"], "HTTP/2");
    assert_eq!(upload["method"], "POST");
    assert_eq!(
        (upload["bytes_in"].as_u64(), upload["bytes_out"].as_u64()),
        (Some(11), Some(11))
    );
    assert_eq!(upload["backend"], up.addr.to_string());

    let failed = find(&lines, "/down");
    assert_eq!(failed["status"], 502);
    assert_eq!(failed["cluster"], "down");
    assert_eq!(failed["backend"], dead.to_string());
    // The default policy retries a connect failure once.
    assert_eq!(failed["retries"], 1);
    assert!(
        failed["error"].as_str().unwrap().contains("connect failed"),
        "{failed}"
    );

    let direct = find(&lines, "/direct");
    assert_eq!(
        (direct["status"].as_u64(), direct["bytes_out"].as_u64()),
        (Some(201), Some(4))
    );
    assert!(direct.get("cluster").is_none());

    let missing = find(&lines, "/missing");
    assert_eq!(missing["status"], 404);
    assert_eq!(missing["error"], "no route");
}

#[tokio::test]
async fn a_listener_logs_to_its_file_or_not_at_all() {
    let api = named(Proto::H1, "ok");
    let (to_file, silent, admin) = (free_addr(), free_addr(), free_addr());
    let config = format!(
        r#"
[observability]
metrics_bind = "{admin}"
[[listeners]]
address = "{to_file}"
protocol = "h1"
access_log = {{ path = "requests.log" }}
backends = [{{ address = "{api}" }}]
[[listeners]]
address = "{silent}"
protocol = "h1"
access_log = {{ enabled = false }}
backends = [{{ address = "{api}" }}]
"#,
        api = api.addr
    );
    let gw = Gateway::start(&config, &[to_file, silent]);
    for addr in [to_file, silent, to_file] {
        assert_eq!(send(Proto::H1, addr, "GET", "/", "").await, 200);
    }
    // Relative to the configuration file's directory.
    let file = gw.config_path.parent().unwrap().join("requests.log");
    let read = || std::fs::read_to_string(&file).unwrap_or_default();
    let lines = wait_lines(2, read);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines.iter().all(|l| l["listener"] == to_file.to_string()));
    assert!(access_lines(&gw.log()).is_empty(), "{}", gw.log());
    assert!(Path::new(&file).exists());
    // Each destination opened reports the lines it had to drop: none
    // here, and no stdout destination, which nothing writes to.
    wait_admin(admin).await;
    let text = scrape(admin).await;
    let dropped = "expressgateway_access_log_dropped_lines_total";
    let destination = file.display().to_string();
    assert_eq!(
        value(&text, dropped, &[("destination", &destination)]),
        Some(0.0),
        "{text}"
    );
    assert_eq!(value(&text, dropped, &[("destination", "stdout")]), None);
}

#[tokio::test]
async fn a_tcp_flow_gets_one_line_with_its_bytes() {
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = backend.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = backend.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 7];
                if s.read_exact(&mut buf).await.is_ok() {
                    let _ = s.write_all(b"pong").await;
                }
            });
        }
    });
    let listen = free_addr();
    let config = format!(
        "[[listeners]]\naddress = \"{listen}\"\nprotocol = \"tcp\"\n\
         [[listeners.backends]]\naddress = \"{backend_addr}\"\n"
    );
    let gw = Gateway::start(&config, &[listen]);
    let mut flow = tokio::net::TcpStream::connect(listen).await.unwrap();
    flow.write_all(b"ping-me").await.unwrap();
    let mut reply = Vec::new();
    flow.read_to_end(&mut reply).await.unwrap();
    assert_eq!(reply, b"pong");
    drop(flow);

    let lines = wait_lines(1, || gw.log());
    let line = &lines[0];
    assert_eq!(line["protocol"], "tcp");
    assert_eq!(line["listener"], listen.to_string());
    assert_eq!(
        (line["bytes_in"].as_u64(), line["bytes_out"].as_u64()),
        (Some(7), Some(4))
    );
    assert_eq!(line["backend"], backend_addr.to_string());
    assert_eq!(line["cluster"], format!("listener:{listen}"));
    assert!(line.get("status").is_none() && line.get("method").is_none());
}

#[tokio::test]
async fn a_head_request_is_logged_complete_without_a_body() {
    // A HEAD answered by the backend logs its status without a body.
    let api = named(Proto::H1, "body");
    let listen = free_addr();
    let config = format!(
        "[[listeners]]\naddress = \"{listen}\"\nprotocol = \"h1\"\nbackends = [{{ address = \"{}\" }}]\n",
        api.addr
    );
    let gw = Gateway::start(&config, &[listen]);
    let mut c = Client::connect(Proto::H1, listen).await;
    let res = c
        .send(request(
            Proto::H1,
            "HEAD",
            "gw.test",
            "/h",
            Empty::<Bytes>::new(),
        ))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let lines = wait_lines(1, || gw.log());
    let head = find(&lines, "/h");
    assert_eq!(head["method"], "HEAD");
    assert_eq!(head["bytes_out"], 0);
    assert!(head.get("error").is_none(), "{head}");
}

/// The permission bits a file created with `mode` gets under this
/// process's umask (which the gateway inherits).
fn under_umask(mode: u32) -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let umask = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .map(|v| u32::from_str_radix(v.trim(), 8).unwrap())
        .unwrap();
    mode & !umask
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn sighup_reopens_the_file_logrotate_renamed_and_files_are_0640() {
    let api = named(Proto::H1, "ok");
    let listen = free_addr();
    let config = format!(
        "[[listeners]]\naddress = \"{listen}\"\nprotocol = \"h1\"\n\
         access_log = {{ path = \"requests.log\" }}\nbackends = [{{ address = \"{}\" }}]\n",
        api.addr
    );
    let gw = Gateway::start(&config, &[listen]);
    let file = gw.config_path.parent().unwrap().join("requests.log");
    let rotated = file.with_extension("log.1");
    assert_eq!(send(Proto::H1, listen, "GET", "/before", "").await, 200);
    wait_lines(1, || std::fs::read_to_string(&file).unwrap_or_default());
    assert_eq!(mode(&file), under_umask(0o640));

    // logrotate: rename, then `postrotate kill -HUP`.
    std::fs::rename(&file, &rotated).unwrap();
    gw.signal("HUP");
    common::tls::wait_for_log(&gw, "access log files reopened", 1);
    assert_eq!(send(Proto::H1, listen, "GET", "/after", "").await, 200);
    let lines = wait_lines(1, || std::fs::read_to_string(&file).unwrap_or_default());
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["path"], "/after");
    assert_eq!(mode(&file), under_umask(0o640));
    let old = access_lines(&std::fs::read_to_string(&rotated).unwrap());
    assert_eq!(old.len(), 1, "{old:?}");
    assert_eq!(old[0]["path"], "/before");
}

#[tokio::test]
async fn writes_the_destination_refuses_are_counted() {
    // Every write to /dev/full fails with ENOSPC.
    let api = named(Proto::H1, "ok");
    let (listen, admin) = (free_addr(), free_addr());
    let config = format!(
        "[observability]\nmetrics_bind = \"{admin}\"\n[[listeners]]\naddress = \"{listen}\"\n\
         protocol = \"h1\"\naccess_log = {{ path = \"/dev/full\" }}\n\
         backends = [{{ address = \"{}\" }}]\n",
        api.addr
    );
    let gw = Gateway::start(&config, &[listen]);
    wait_admin(admin).await;
    let errors = "expressgateway_access_log_write_errors_total";
    let labels = [("destination", "/dev/full")];
    assert_eq!(value(&scrape(admin).await, errors, &labels), Some(0.0));
    assert_eq!(send(Proto::H1, listen, "GET", "/", "").await, 200);
    common::scrape::wait_for(admin, errors, &labels, |v| v >= 1.0).await;
    assert!(gw.log().contains("access log write failed"), "{}", gw.log());
}

#[tokio::test]
async fn malformed_heads_are_logged_and_counted() {
    let api = named(Proto::H1, "ok");
    let (listen, admin) = (free_addr(), free_addr());
    let config = format!(
        r#"
[observability]
metrics_bind = "{admin}"
[[listeners]]
address = "{listen}"
protocol = "h1"
backends = [{{ address = "{api}" }}]
"#,
        api = api.addr
    );
    let gw = Gateway::start(&config, &[listen]);
    let cases: [(&[u8], u16, &str); 3] = [
        (
            b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
            400,
            "malformed request head",
        ),
        (
            b"POST /both HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 3\r\n\
              Transfer-Encoding: chunked\r\n\r\n",
            400,
            "both Transfer-Encoding and Content-Length",
        ),
        (
            b"POST /gz HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            501,
            "transfer coding other than chunked",
        ),
    ];
    for (raw, status, _) in cases {
        let mut s = tokio::net::TcpStream::connect(listen).await.unwrap();
        s.write_all(raw).await.unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.unwrap();
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{answer}"
        );
    }
    let lines = wait_lines(3, || gw.log());
    for (_, status, reason) in cases {
        assert!(
            lines
                .iter()
                .any(|l| l["status"] == status && l["error"] == reason),
            "no {status} line for {reason:?} in {lines:?}"
        );
    }
    assert_eq!(find(&lines, "/both")["method"], "POST");
    assert_eq!(api.hits(), 0);
    wait_admin(admin).await;
    let text = scrape(admin).await;
    let l = listen.to_string();
    let unrouted = |class| {
        value(
            &text,
            "expressgateway_http_requests_total",
            &[
                ("listener", &l),
                ("route", ""),
                ("cluster", ""),
                ("status", class),
            ],
        )
    };
    assert_eq!(unrouted("4xx"), Some(2.0), "{text}");
    assert_eq!(unrouted("5xx"), Some(1.0), "{text}");
}
