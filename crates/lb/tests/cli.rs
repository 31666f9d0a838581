//! The command line: `--check` summaries, `--version`, `--help`, unknown
//! flags and missing config files; with no argument the binary runs
//! `config/default.toml` of its working directory; a listener it cannot
//! bind stops the start with nothing served.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::backend::{named, Proto};
use common::{binary, free_addr, run_cli, temp_dir, Gateway};

const CONFIG: &str = r#"
[[clusters]]
name = "api"
[[clusters.backends]]
address = "127.0.0.1:9001"
protocol = "h2"
weight = 3
[[clusters.backends]]
address = "127.0.0.1:9002"
weight = 0

[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
[[listeners.routes]]
host = "API.example.com"
path_prefix = "/v1/"
cluster = "api"
[[listeners.routes]]
host = "*.example.com"
direct = { status = 404, body = "none" }
[[listeners.routes]]
path_exact = "/health"
direct = { status = 200 }

[[listeners]]
address = "127.0.0.1:8084"
protocol = "tcp"
backends = [{ address = "127.0.0.1:9010" }]
"#;

fn write_config(text: &str) -> String {
    let path = temp_dir("cli").join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn check_prints_listeners_routes_and_clusters() {
    let path = write_config(CONFIG);
    let (code, stdout, stderr) = run_cli(&["--check", &path]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    let expected = format!(
        "configuration {path} is valid
listeners:
  127.0.0.1:8081 h1
    api.example.com/v1/ -> cluster api
    *.example.com/ -> direct 404
    *=/health -> direct 200
  127.0.0.1:8084 tcp
    -> cluster listener:127.0.0.1:8084
clusters:
  api (round_robin)
    127.0.0.1:9001 h2 weight 3
    127.0.0.1:9002 h1 weight 0
  listener:127.0.0.1:8084 (round_robin)
    127.0.0.1:9010 tcp weight 1
"
    );
    assert_eq!(stdout, expected);
}

#[test]
fn check_short_flag_is_the_same_as_long() {
    let path = write_config(CONFIG);
    assert_eq!(run_cli(&["-t", &path]), run_cli(&["--check", &path]));
}

#[test]
fn check_of_an_invalid_config_prints_errors_only_to_stderr() {
    let path = write_config("[[listeners]]\naddress = \"127.0.0.1:8081\"\nprotocol = \"h1\"\n");
    let (code, stdout, stderr) = run_cli(&["--check", &path]);
    assert_eq!(code, 1);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.starts_with(&format!("configuration {path} is invalid (1 error(s)):")),
        "{stderr}"
    );
}

#[test]
fn version_prints_name_and_version() {
    let want = format!("expressgateway {}\n", env!("CARGO_PKG_VERSION"));
    for flag in ["--version", "-V"] {
        let (code, stdout, stderr) = run_cli(&[flag]);
        assert_eq!(
            (code, stdout.as_str(), stderr.as_str()),
            (0, want.as_str(), "")
        );
    }
}

#[test]
fn help_prints_usage() {
    for flag in ["--help", "-h"] {
        let (code, stdout, _) = run_cli(&[flag]);
        assert_eq!(code, 0);
        assert!(stdout.contains("USAGE:"), "{stdout}");
        for item in [
            "--check",
            "-t is the same as --check",
            "--version",
            "--help",
            "SIGHUP            reload the configuration",
            "SIGUSR1           re-read every TLS certificate",
            "SIGTERM, SIGINT   drain",
        ] {
            assert!(stdout.contains(item), "usage lacks {item}:\n{stdout}");
        }
    }
}

#[test]
fn unknown_flags_exit_2_with_usage() {
    let cases: [&[&str]; 3] = [
        &["--bogus"],
        &["--check", "a.toml", "b.toml"],
        &["a.toml", "b.toml"],
    ];
    for args in cases {
        let (code, stdout, stderr) = run_cli(args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
        assert!(
            stderr.contains(&format!("unrecognised arguments: {}", args.join(" "))),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains("USAGE:"), "{args:?}: {stderr}");
    }
}

#[test]
fn missing_config_file_is_named_in_the_error() {
    let missing = temp_dir("cli").join("does-not-exist.toml");
    let missing = missing.to_str().unwrap();
    for args in [vec!["--check", missing], vec![missing]] {
        let (code, stdout, stderr) = run_cli(&args);
        assert_eq!(code, 1, "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
        assert!(
            stderr.contains(&format!("cannot read {missing}: no such file")),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("is invalid"), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn without_an_argument_it_runs_config_default_toml_of_its_working_directory() {
    let backend = named(Proto::H1, "from the default config");
    let listen = free_addr();
    let dir = temp_dir("cli-default");
    std::fs::create_dir_all(dir.join("config")).unwrap();
    std::fs::write(
        dir.join("config/default.toml"),
        format!(
            "[[listeners]]\naddress = \"{listen}\"\nprotocol = \"h1\"\n\
             [[listeners.backends]]\naddress = \"{}\"\n",
            backend.addr
        ),
    )
    .unwrap();
    let gw = Gateway::start_default_in(&dir, &[listen]);
    assert_eq!(
        common::client::get(Proto::H1, listen, "cli.test", "/").await,
        (200, "from the default config".to_owned())
    );
    assert_eq!(backend.hits(), 1);
    let started = gw
        .log()
        .lines()
        .find(|l| l.contains("expressgateway started"))
        .map(str::to_owned)
        .unwrap();
    assert!(started.contains("config/default.toml"), "{started}");
}

#[test]
fn a_listener_that_cannot_be_bound_stops_the_start_with_nothing_served() {
    let first = free_addr();
    let second = free_addr();
    // Something else holds the second listener's address.
    let _occupant = std::net::TcpListener::bind(second).unwrap();
    let toml = format!(
        "[[listeners]]\naddress = \"{first}\"\nprotocol = \"h1\"\n\
         routes = [{{ direct = {{ status = 200 }} }}]\n\
         [[listeners]]\naddress = \"{second}\"\nprotocol = \"h1\"\n\
         routes = [{{ direct = {{ status = 200 }} }}]\n"
    );
    let path = temp_dir("cli-bind").join("gateway.toml");
    std::fs::write(&path, toml).unwrap();
    let mut child = Command::new(binary())
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut probes = 0;
    let status = loop {
        // The first listener may be bound for a moment; it never answers.
        if let Ok(mut stream) = TcpStream::connect_timeout(&first, Duration::from_millis(50)) {
            let _ = stream.write_all(b"GET / HTTP/1.1\r\nhost: cli.test\r\n\r\n");
            stream
                .set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let mut buf = [0u8; 64];
            let read = stream.read(&mut buf);
            assert!(
                !matches!(read, Ok(n) if n > 0),
                "{first} answered although {second} could not be bound"
            );
        }
        probes += 1;
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the gateway kept running without its second listener");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(probes > 0);
    let mut output = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut output)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut output)
        .unwrap();
    assert!(!status.success(), "exit status {status}:\n{output}");
    assert!(
        output.contains(&format!("binding listener {second}")),
        "{output}"
    );
    assert!(
        !output.contains(&format!("binding listener {first}")),
        "{output}"
    );
    assert!(!output.contains("expressgateway started"), "{output}");
    assert!(TcpStream::connect_timeout(&first, Duration::from_millis(200)).is_err());
}

#[test]
fn a_missing_default_config_points_at_the_help() {
    // The default path is relative, so an empty directory has none.
    let out = std::process::Command::new(common::binary())
        .current_dir(temp_dir("cli-default"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot read config/default.toml: no such file"),
        "{stderr}"
    );
    assert!(stderr.contains("see --help"), "{stderr}");
}
