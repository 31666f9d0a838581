//! The shipped configurations (`config/default.toml` and every file in
//! `config/examples/`) pass `--check` and actually boot the binary with
//! every listener bound.
//!
//! Each runs from a copy staged in a temp directory next to a copy of
//! `config/examples/certs/` whose keys are mode 0600: git keeps no file
//! mode but the executable bit, so a fresh clone's example keys are
//! group- and world-readable, and the gateway rightly refuses them.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::backend::Proto;
use common::client::get;
use common::{free_addr, run_cli, workspace_root, Gateway};

/// The deployment shapes documented in the task; fewer files means one was
/// lost.
const MIN_EXAMPLES: usize = 9;

fn examples() -> Vec<PathBuf> {
    let dir = workspace_root().join("config/examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= MIN_EXAMPLES,
        "expected at least {MIN_EXAMPLES} examples in {}, found {files:?}",
        dir.display()
    );
    files
}

fn shipped_configs() -> Vec<PathBuf> {
    let mut all = examples();
    all.push(workspace_root().join("config/default.toml"));
    all
}

/// The config text with every listener moved to a free loopback port, and
/// the addresses to wait for.
fn on_free_ports(path: &Path) -> (String, Vec<SocketAddr>) {
    let mut text = std::fs::read_to_string(path).unwrap();
    let table: toml::Table = text
        .parse()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let listeners = table
        .get("listeners")
        .and_then(toml::Value::as_array)
        .unwrap_or_else(|| panic!("{} has no [[listeners]]", path.display()));
    let mut bound = Vec::new();
    let addresses: Vec<&str> = listeners
        .iter()
        .map(|listener| {
            listener
                .get("address")
                .and_then(toml::Value::as_str)
                .unwrap_or_else(|| panic!("{}: a listener has no address", path.display()))
        })
        .collect();
    let mut seen = Vec::new();
    for address in &addresses {
        if seen.contains(address) {
            continue;
        }
        seen.push(*address);
        // A quic listener may share its address with a TCP one: both
        // move to the same free port.
        let quoted = format!("{address:?}");
        let sharing = addresses.iter().filter(|a| *a == address).count();
        assert_eq!(
            text.matches(&quoted).count(),
            sharing,
            "{}: listener address {quoted} must appear only as listener addresses to be rewritten",
            path.display()
        );
        let free = free_addr();
        text = text.replace(&quoted, &format!("\"{free}\""));
        bound.push(free);
    }
    // The admin listener too, so runs in parallel never share its port.
    let admin = table
        .get("observability")
        .and_then(|o| o.get("metrics_bind"))
        .and_then(toml::Value::as_str);
    if let Some(admin) = admin {
        text = text.replace(&format!("{admin:?}"), &format!("\"{}\"", free_addr()));
    }
    (text, bound)
}

/// The `metrics_bind` address of a config text, if any.
fn admin_of(text: &str) -> Option<SocketAddr> {
    let table: toml::Table = text.parse().unwrap();
    let admin = table.get("observability")?.get("metrics_bind")?.as_str()?;
    Some(admin.parse().unwrap())
}

/// Every backend address an example names, inline or in a cluster.
fn backend_addresses(table: &toml::Table) -> Vec<String> {
    let owners = ["listeners", "clusters"]
        .into_iter()
        .filter_map(|key| table.get(key).and_then(toml::Value::as_array))
        .flatten();
    owners
        .filter_map(|owner| owner.get("backends").and_then(toml::Value::as_array))
        .flatten()
        .filter_map(|b| b.get("address").and_then(toml::Value::as_str))
        .map(str::to_owned)
        .collect()
}

/// Write `text` as `name` into a fresh directory holding a copy of the
/// example certificates with private keys mode 0600; returns its path.
fn stage(name: &str, text: &str) -> PathBuf {
    let dir = common::temp_dir("example");
    let certs = workspace_root().join("config/examples/certs");
    std::fs::create_dir(dir.join("certs")).unwrap();
    for entry in std::fs::read_dir(&certs).unwrap() {
        let from = entry.unwrap().path();
        let to = dir.join("certs").join(from.file_name().unwrap());
        std::fs::copy(&from, &to).unwrap();
        if to.extension().is_some_and(|ext| ext == "key") {
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn staged(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap().to_str().unwrap();
    stage(name, &on_this_host(&std::fs::read_to_string(path).unwrap()))
}

/// An XDP example names the interface of its own deployment (`eth0`);
/// here it is checked against one every host has.
fn on_this_host(text: &str) -> String {
    text.replace("interface = \"eth0\"", "interface = \"lo\"")
}

/// Whether a config attaches an XDP program: booting one needs the
/// network namespaces of `tests/xdp.rs`, which boot the XDP path with
/// real backends.
fn attaches_xdp(path: &Path) -> bool {
    let table: toml::Table = std::fs::read_to_string(path).unwrap().parse().unwrap();
    table.contains_key("xdp")
}

#[test]
fn every_shipped_config_passes_check() {
    for path in shipped_configs() {
        let path = staged(&path);
        let path = path.to_str().unwrap();
        let (code, stdout, stderr) = run_cli(&["--check", path]);
        assert_eq!(code, 0, "--check {path} failed:\n{stderr}");
        assert!(
            stdout.starts_with(&format!("configuration {path} is valid")),
            "{stdout}"
        );
    }
}

#[test]
fn every_example_names_its_shape_and_run_command() {
    for path in examples() {
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(
            text.starts_with('#'),
            "{name} must start with a comment describing its shape"
        );
        let command = format!("./target/release/expressgateway config/examples/{name}");
        let header: String = text
            .lines()
            .take_while(|l| l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            header.contains(&command),
            "{name}'s opening comment must give `{command}`"
        );
        // Which backends to start, with a command for each.
        let backends = header
            .split_once("# Backends:")
            .map(|(_, rest)| rest.split("# Run it with:").next().unwrap_or_default())
            .unwrap_or_else(|| panic!("{name}'s opening comment must say `Backends:`"));
        let table: toml::Table = text.parse().unwrap();
        for address in backend_addresses(&table) {
            let port = address.rsplit_once(':').unwrap().1;
            assert!(
                backends.contains(port),
                "{name}: the Backends: command does not start {address}"
            );
        }
    }
}

#[test]
fn every_shipped_config_boots_with_all_listeners_bound() {
    for path in shipped_configs().into_iter().filter(|p| !attaches_xdp(p)) {
        let (text, listeners) = on_free_ports(&path);
        assert!(!listeners.is_empty(), "{}", path.display());
        let name = path.file_name().unwrap().to_str().unwrap();
        let mut gw = Gateway::start_file(stage(name, &text), &listeners);
        assert!(
            gw.child.try_wait().unwrap().is_none(),
            "{} exited after binding:\n{}",
            path.display(),
            gw.log()
        );
    }
}

#[tokio::test]
async fn default_config_answers_with_its_own_path() {
    let (text, listeners) = on_free_ports(&workspace_root().join("config/default.toml"));
    let _gw = Gateway::start(&text, &listeners);
    let (status, body) = get(Proto::H1, listeners[0], "localhost", "/").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("config/default.toml"), "{body}");
}

#[tokio::test]
async fn routing_example_falls_back_to_its_direct_response() {
    let (text, listeners) = on_free_ports(&workspace_root().join("config/examples/routing.toml"));
    let _gw = Gateway::start(&text, &listeners);
    let (status, body) = get(Proto::H1, listeners[0], "other.org", "/nothing/here").await;
    assert_eq!((status, body.as_str()), (404, "no such service\n"));
}

#[tokio::test]
async fn observability_example_serves_metrics_status_page_and_a_file_access_log() {
    let path = workspace_root().join("config/examples/observability.toml");
    let (text, listeners) = on_free_ports(&path);
    let admin = admin_of(&text).expect("the example has an admin listener");
    assert!(admin.ip().is_loopback());
    let config = stage("observability.toml", &text);
    let _gw = Gateway::start_file(config.clone(), &listeners);
    common::scrape::wait_admin(admin).await;
    // Its backend is not running here: the request still gets an answer
    // and an access log line.
    let (status, _) = get(Proto::H1, listeners[0], "localhost", "/observed").await;
    let (page, html) = get(Proto::H1, admin, "localhost", "/").await;
    assert_eq!(page, 200, "{html}");
    let l = listeners[0].to_string();
    common::scrape::wait_value(
        admin,
        "expressgateway_http_requests_total",
        &[
            ("listener", l.as_str()),
            ("route", "/"),
            ("status", &format!("{}xx", status / 100)),
        ],
        1.0,
    )
    .await;
    let log = config.with_file_name("access.log");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let lines = std::fs::read_to_string(&log).unwrap_or_default();
        if lines.contains("\"path\":\"/observed\"") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no access log line in {}:\n{lines}",
            log.display()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
