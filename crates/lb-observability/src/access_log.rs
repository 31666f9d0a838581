//! The access log: one JSON line per request, written by a background
//! thread so the data path never blocks on disk or a slow stdout. When the
//! writer falls behind, lines are dropped and counted rather than queued
//! without bound. Files are created mode 0640, reopened by path on
//! request (SIGHUP, for logrotate), and a write the destination refuses is
//! counted.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::SystemTime;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use serde::Serialize;

use crate::ratelimit::LogLimiter;

/// How long the writer gathers lines before writing them out while
/// traffic flows; the most a line waits.
const BATCH_PAUSE: std::time::Duration = std::time::Duration::from_millis(5);

/// Lines buffered per sink before new ones are dropped.
const QUEUE: usize = 16 * 1024;

/// One request (or, on a tcp listener, one flow), as logged. Borrowed so
/// that writing a line costs one allocation, the line itself. Fields that
/// do not apply are left out of the line: an HTTP line always has a
/// `status`, a tcp line never does.
#[derive(Debug, Serialize)]
pub struct AccessRecord<'a> {
    /// When the request arrived (or the flow was accepted).
    #[serde(serialize_with = "rfc3339")]
    pub time: SystemTime,
    /// The listener: its address, `ADDRESS/quic` for a `quic` listener.
    #[serde(serialize_with = "display")]
    pub listener: lb_config::ListenerId,
    /// Client address.
    pub client: SocketAddr,
    /// `HTTP/1.1`, `HTTP/2`, `tcp`, `tls`.
    pub protocol: &'static str,
    /// Request method.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub method: &'a str,
    /// Host / `:authority`.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub authority: &'a str,
    /// Request path (no query: it may carry secrets).
    #[serde(skip_serializing_if = "str::is_empty")]
    pub path: &'a str,
    /// Response status; 0 when the client left before any was sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Body bytes received from the client.
    pub bytes_in: u64,
    /// Body bytes sent to the client.
    pub bytes_out: u64,
    /// Total time in milliseconds, until the last byte (or the abandon).
    pub duration_ms: f64,
    /// Time from sending to the backend to its response headers, in
    /// milliseconds (HTTP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_ms: Option<f64>,
    /// Cluster name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<&'a str>,
    /// Backend address, as configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<&'a str>,
    /// Retries made.
    pub retries: u32,
    /// Why the request or flow failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
    /// The request's ID (HTTP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<&'a str>,
    /// The W3C `traceparent` the client sent (HTTP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<&'a str>,
    /// The path sent to the backend, when a rewrite changed it (HTTP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_path: Option<&'a str>,
    /// A gRPC call's status, from the response head or its trailers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<u8>,
}

impl AccessRecord<'_> {
    /// `d` in milliseconds, to the microsecond, as durations are logged.
    pub fn millis(d: std::time::Duration) -> f64 {
        d.as_micros() as f64 / 1000.0
    }
}

/// The line as written: the record behind a tag that tells access lines
/// from process log lines sharing a stream.
#[derive(Serialize)]
struct Line<'r, 'a> {
    log: &'static str,
    #[serde(flatten)]
    record: &'r AccessRecord<'a>,
}

fn display<S: serde::Serializer>(v: &impl std::fmt::Display, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn rfc3339<S: serde::Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::logging::rfc3339(*time))
}

/// What a sink's writer and its users share.
#[derive(Debug, Default)]
struct SinkState {
    /// Lines dropped because the writer fell behind.
    dropped: AtomicU64,
    /// Writes the destination refused (the lines in them are lost).
    write_errors: AtomicU64,
    /// Set by [`AccessLogs::reopen`]; the writer reopens its file before
    /// its next write.
    reopen: AtomicBool,
}

/// Where a listener's access log goes.
#[derive(Debug, Clone)]
pub struct AccessLog {
    tx: SyncSender<String>,
    state: Arc<SinkState>,
}

impl AccessLog {
    /// Queue one record; never blocks.
    pub fn write(&self, record: &AccessRecord<'_>) {
        let line = Line {
            log: "access",
            record,
        };
        let Ok(line) = serde_json::to_string(&line) else {
            return;
        };
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.state.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Lines dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.state.dropped.load(Ordering::Relaxed)
    }

    /// Writes the destination refused.
    pub fn write_errors(&self) -> u64 {
        self.state.write_errors.load(Ordering::Relaxed)
    }
}

/// Open (or create, mode 0640: the log names clients and paths, which
/// the world should not read) the access log file at `path` for appending.
fn open_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

/// Bytes gathered before a write, at most; a batch larger than this is
/// written in several.
const WRITE_CHUNK: usize = 64 * 1024;

/// The writer thread of one sink: gathers lines into batches and writes
/// each batch with one call.
struct Writer {
    path: Option<PathBuf>,
    out: Box<dyn Write + Send>,
    buf: Vec<u8>,
    state: Arc<SinkState>,
    errors_logged: LogLimiter,
}

impl Writer {
    fn run(mut self, rx: &Receiver<String>) {
        // Blocking in `recv` only while idle: a sender wakes a receiver
        // that waits, so under load the writer sleeps between batches
        // instead and the request threads never pay for a wake-up per line.
        while let Ok(line) = rx.recv() {
            self.push(&line);
            loop {
                std::thread::sleep(BATCH_PAUSE);
                let mut gathered = 0;
                while let Ok(line) = rx.try_recv() {
                    self.push(&line);
                    gathered += 1;
                }
                self.flush();
                if gathered == 0 {
                    break;
                }
            }
        }
    }

    fn push(&mut self, line: &str) {
        self.buf.extend_from_slice(line.as_bytes());
        self.buf.push(b'\n');
        if self.buf.len() >= WRITE_CHUNK {
            self.flush();
        }
    }

    /// Write what was gathered, to a freshly opened file when a reopen was
    /// asked for. A failed write loses its lines (retrying would hold the
    /// queue on a destination that may never recover) and is counted.
    fn flush(&mut self) {
        if self.state.reopen.swap(false, Ordering::AcqRel) {
            self.reopen();
        }
        if self.buf.is_empty() {
            return;
        }
        let written = self
            .out
            .write_all(&self.buf)
            .and_then(|()| self.out.flush());
        self.buf.clear();
        if let Err(e) = written {
            self.state.write_errors.fetch_add(1, Ordering::Relaxed);
            if let Some(suppressed) = self.errors_logged.allow() {
                tracing::error!(
                    path = ?self.path,
                    error = %e,
                    suppressed,
                    "access log write failed; its lines are lost"
                );
            }
        }
    }

    /// Open the configured path again: after logrotate renamed the file,
    /// lines go to a new file under the configured name.
    fn reopen(&mut self) {
        let Some(path) = &self.path else {
            return;
        };
        match open_file(path) {
            Ok(file) => self.out = Box::new(file),
            Err(e) => tracing::error!(
                path = %path.display(),
                error = %e,
                "cannot reopen the access log; writing on to the open file"
            ),
        }
    }
}

/// Opens and shares sinks: one writer thread per destination.
#[derive(Debug, Default)]
pub struct AccessLogs {
    sinks: Mutex<HashMap<Option<PathBuf>, AccessLog>>,
}

impl AccessLogs {
    /// The process's sinks: every listener writing to one destination
    /// shares its writer, so lines never interleave.
    pub fn global() -> &'static Self {
        static LOGS: LazyLock<AccessLogs> = LazyLock::new(AccessLogs::default);
        &LOGS
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Option<PathBuf>, AccessLog>> {
        match self.sinks.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The sink of `listener`'s access log to `path` (`None` = stdout);
    /// `None` when its file cannot be opened, which is logged (the
    /// listener serves on, unlogged).
    pub fn open(&self, listener: lb_config::ListenerId, path: Option<&Path>) -> Option<AccessLog> {
        self.sink(path)
            .inspect_err(|e| {
                tracing::error!(
                    %listener,
                    path = ?path,
                    error = %e,
                    "cannot open the access log; traffic on this listener goes unlogged"
                );
            })
            .ok()
    }

    /// The sink for `path` (`None` = stdout), opened on first use.
    pub fn sink(&self, path: Option<&Path>) -> std::io::Result<AccessLog> {
        let mut sinks = self.lock();
        let key = path.map(Path::to_path_buf);
        if let Some(sink) = sinks.get(&key) {
            return Ok(sink.clone());
        }
        let out: Box<dyn Write + Send> = match path {
            Some(p) => Box::new(open_file(p)?),
            None => Box::new(std::io::stdout()),
        };
        let (tx, rx) = sync_channel::<String>(QUEUE);
        let state = Arc::new(SinkState::default());
        let writer = Writer {
            path: key.clone(),
            out,
            buf: Vec::with_capacity(WRITE_CHUNK),
            state: Arc::clone(&state),
            errors_logged: LogLimiter::new(1, std::time::Duration::from_secs(10)),
        };
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer.run(&rx))?;
        let sink = AccessLog { tx, state };
        sinks.insert(key, sink.clone());
        Ok(sink)
    }

    /// Have every file sink reopen its path before its next write (SIGHUP,
    /// after logrotate renamed the files); returns how many files.
    pub fn reopen(&self) -> usize {
        let sinks = self.lock();
        let files = sinks.iter().filter(|(path, _)| path.is_some());
        files
            .map(|(_, sink)| sink.state.reopen.store(true, Ordering::Release))
            .count()
    }

    /// `(destination, value)` of every destination opened (`stdout` or
    /// the file's path), sorted.
    fn per_destination(&self, value: impl Fn(&AccessLog) -> u64) -> Vec<(String, u64)> {
        let sinks = self.lock();
        let mut all: Vec<(String, u64)> = sinks
            .iter()
            .map(|(path, sink)| {
                let name = path
                    .as_ref()
                    .map_or_else(|| "stdout".to_owned(), |p| p.display().to_string());
                (name, value(sink))
            })
            .collect();
        all.sort();
        all
    }

    /// Lines dropped so far by each destination opened.
    pub fn dropped(&self) -> Vec<(String, u64)> {
        self.per_destination(AccessLog::dropped)
    }

    /// Failed writes so far by each destination opened.
    pub fn write_errors(&self) -> Vec<(String, u64)> {
        self.per_destination(AccessLog::write_errors)
    }
}

/// `access_log_dropped_lines` and `access_log_write_errors` per
/// destination, read from the sinks when scraped.
#[derive(Debug)]
pub struct AccessLogCollector;

impl AccessLogCollector {
    fn counter(
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        values: Vec<(String, u64)>,
    ) -> std::fmt::Result {
        let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (destination, n) in values {
            let labels = [("destination", destination.as_str())];
            metric
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
        }
        Ok(())
    }
}

impl Collector for AccessLogCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let logs = AccessLogs::global();
        Self::counter(
            &mut encoder,
            "access_log_dropped_lines",
            "Access log lines dropped because the writer fell behind",
            logs.dropped(),
        )?;
        Self::counter(
            &mut encoder,
            "access_log_write_errors",
            "Access log writes the destination refused (their lines are lost)",
            logs.write_errors(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn record(status: Option<u16>) -> AccessRecord<'static> {
        AccessRecord {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            listener: lb_config::ListenerId {
                address: "127.0.0.1:80".parse().unwrap(),
                transport: lb_config::Transport::Tcp,
            },
            client: "127.0.0.1:5000".parse().unwrap(),
            protocol: if status.is_some() { "HTTP/1.1" } else { "tcp" },
            method: if status.is_some() { "GET" } else { "" },
            authority: "",
            path: if status.is_some() { "/x" } else { "" },
            status,
            bytes_in: 3,
            bytes_out: 5,
            duration_ms: 1.5,
            upstream_ms: None,
            cluster: Some("api"),
            backend: Some("127.0.0.1:81"),
            retries: 1,
            error: None,
            request_id: None,
            traceparent: None,
            upstream_path: None,
            grpc_status: None,
        }
    }

    #[test]
    fn lines_are_tagged_json_and_leave_out_what_does_not_apply() {
        let dir = std::env::temp_dir().join(format!("eg-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        let _ = std::fs::remove_file(&path);
        let sink = AccessLogs::default().sink(Some(&path)).unwrap();
        sink.write(&record(Some(200)));
        sink.write(&record(None));
        let deadline = Instant::now() + Duration::from_secs(5);
        let text = loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.lines().count() == 2 || Instant::now() > deadline {
                break text;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            r#"{"log":"access","time":"2023-11-14T22:13:20.123Z","listener":"127.0.0.1:80","client":"127.0.0.1:5000","protocol":"HTTP/1.1","method":"GET","path":"/x","status":200,"bytes_in":3,"bytes_out":5,"duration_ms":1.5,"cluster":"api","backend":"127.0.0.1:81","retries":1}"#
        );
        assert_eq!(
            lines[1],
            r#"{"log":"access","time":"2023-11-14T22:13:20.123Z","listener":"127.0.0.1:80","client":"127.0.0.1:5000","protocol":"tcp","bytes_in":3,"bytes_out":5,"duration_ms":1.5,"cluster":"api","backend":"127.0.0.1:81","retries":1}"#
        );
        assert_eq!(sink.dropped(), 0);
        drop(sink);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_full_queue_drops_and_counts_and_the_collector_exports_it() {
        // A sink whose writer never reads: the second and third lines
        // find the one-line queue full.
        let (tx, rx) = sync_channel::<String>(1);
        let sink = AccessLog {
            tx,
            state: Arc::new(SinkState::default()),
        };
        for _ in 0..3 {
            sink.write(&record(Some(200)));
        }
        assert_eq!(sink.dropped(), 2);
        drop(rx);

        let logs = AccessLogs::global();
        let key = Some(PathBuf::from("/eg-test/full.log"));
        logs.sinks.lock().unwrap().insert(key.clone(), sink);
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(AccessLogCollector));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        logs.sinks.lock().unwrap().remove(&key);
        assert!(
            text.contains(r#"access_log_dropped_lines_total{destination="/eg-test/full.log"} 2"#),
            "{text}"
        );
    }

    fn wait_for(what: &str, ok: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !ok() {
            assert!(Instant::now() < deadline, "never: {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_file_is_created_0640_and_reopened_by_path_after_a_rename() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("eg-access-reopen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (path, rotated) = (dir.join("access.log"), dir.join("access.log.1"));
        let _ = std::fs::remove_file(&path);
        let logs = AccessLogs::default();
        let sink = logs.sink(Some(&path)).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077 & !0o040, 0, "mode {mode:o}");
        sink.write(&record(Some(200)));
        wait_for("first line", || {
            std::fs::read_to_string(&path).is_ok_and(|t| t.lines().count() == 1)
        });
        std::fs::rename(&path, &rotated).unwrap();
        assert_eq!(logs.reopen(), 1);
        sink.write(&record(None));
        wait_for("line in the new file", || {
            std::fs::read_to_string(&path).is_ok_and(|t| t.lines().count() == 1)
        });
        let old = std::fs::read_to_string(&rotated).unwrap();
        assert_eq!(old.lines().count(), 1, "{old}");
        assert_eq!(sink.write_errors(), 0);
        drop(sink);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_refused_write_is_counted() {
        let sink = AccessLogs::default()
            .sink(Some(Path::new("/dev/full")))
            .unwrap();
        sink.write(&record(Some(200)));
        wait_for("a write error", || sink.write_errors() == 1);
    }
}
