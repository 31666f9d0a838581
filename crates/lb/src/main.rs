//! The `expressgateway` binary: command line, wiring and signals only.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::todo,
    clippy::unimplemented
)]

mod cli;
mod summary;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;
use lb_config::{Config, ListenerKind};
use lb_core::{Drain, Snapshot};
use lb_tls::TlsState;
use tokio::net::{TcpListener, TcpSocket};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match cli::parse(&args) {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let check = matches!(command, cli::Command::Check(_));
    let path = match command {
        cli::Command::Version => {
            println!("expressgateway {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        cli::Command::Help => {
            print!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        cli::Command::Check(path) | cli::Command::Run(path) => path,
    };
    let config = match lb_config::load(&path) {
        Ok(c) => c,
        Err(e) => return invalid(&path, e.errors()),
    };
    // Certificates and keys are part of the configuration: a bad one stops
    // the start (and `--check`) the same way a bad key does.
    let (tls, warnings) = match lb_tls::TlsState::load(&config) {
        Ok(loaded) => loaded,
        Err(errors) => return invalid(&path, errors.iter().map(ToString::to_string).collect()),
    };
    if check {
        for warning in &warnings {
            eprintln!("warning: {warning}");
        }
        print!("{}", summary::render(&path, &config));
        return ExitCode::SUCCESS;
    }
    init_logging();
    for warning in &warnings {
        tracing::warn!(%warning, "configuration warning");
    }
    match run(path, config, tls) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "gateway stopped");
            eprintln!("expressgateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn invalid(path: &str, errors: Vec<String>) -> ExitCode {
    eprintln!(
        "configuration {path} is invalid ({} error(s)):",
        errors.len()
    );
    for line in errors {
        eprintln!("  {line}");
    }
    ExitCode::FAILURE
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
}

fn run(path: String, config: Config, tls: TlsState) -> anyhow::Result<()> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if config.runtime.worker_threads > 0 {
        builder.worker_threads(config.runtime.worker_threads);
    }
    let runtime = builder
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(serve(path, config, Arc::new(tls)))
}

async fn serve(path: String, config: Config, tls: Arc<TlsState>) -> anyhow::Result<()> {
    // Handled before anything is bound, so a signal sent as soon as a
    // listener answers cannot meet the default action.
    let reload_certificates = reload_certificates_on_sigusr1(Arc::clone(&tls))?;
    // Bind everything before serving anything: a listener that cannot bind
    // stops the start with nothing half up.
    let mut bound = Vec::new();
    for l in &config.listeners {
        let socket = bind(l.address).with_context(|| format!("binding listener {}", l.address))?;
        bound.push((l.address, socket));
    }
    let drain_budget = config.runtime.drain_timeout;
    let snapshot = Snapshot::build(config, &lb_balancer::for_cluster);
    let upstreams = lb_http::upstreams(&snapshot, &tls, None);
    // Kept for the life of the process: dropping it stops the checks.
    let health = lb_health::start(&snapshot, &tls);
    if !health.is_empty() {
        tracing::info!(backends = health.len(), "active health checks started");
    }
    let drain = Drain::new();
    let listeners: HashMap<SocketAddr, lb_config::Listener> = snapshot
        .config
        .listeners
        .iter()
        .map(|l| (l.address, l.clone()))
        .collect();
    let snapshot = Arc::new(ArcSwap::from_pointee(snapshot));
    let mut tasks = Vec::new();
    for (address, socket) in bound {
        let Some(listener) = listeners.get(&address) else {
            continue;
        };
        // A TLS listener without its material would serve cleartext.
        anyhow::ensure!(
            listener.tls.is_none() || tls.server(address).is_some(),
            "no TLS material loaded for listener {address}"
        );
        match &listener.kind {
            ListenerKind::Http(_) => {
                let plan = lb_http::ListenerPlan::build(listener, &upstreams)
                    .context("compiling an HTTP listener")?;
                let plan = Arc::new(ArcSwap::from_pointee(plan));
                tasks.push(tokio::spawn(lb_http::serve(
                    socket,
                    plan,
                    tls.server(address),
                    Arc::clone(&drain),
                )));
            }
            ListenerKind::Tcp { .. } => {
                let snap = Arc::clone(&snapshot);
                tasks.push(tokio::spawn(lb_l4::serve(
                    socket,
                    address,
                    snap,
                    Arc::clone(&tls),
                    Arc::clone(&drain),
                )));
            }
        }
        tracing::info!(%address, protocol = listener.protocol.as_str(), "listening");
    }
    tokio::spawn(reload_certificates);
    tracing::info!(config = %path, listeners = tasks.len(), "expressgateway started");

    shutdown_signal().await?;
    tracing::info!(budget_ms = drain_budget.as_millis() as u64, "draining");
    drain.start();
    for task in tasks {
        let _ = task.await;
    }
    let left = drain.wait_idle(drain_budget).await;
    if left > 0 {
        tracing::warn!(
            connections = left,
            "drain budget exhausted; aborting the rest"
        );
    }
    tracing::info!("stopped");
    Ok(())
}

fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(address)?;
    socket.listen(4096)
}

/// Installs the SIGUSR1 handler now (so a signal sent once the gateway
/// has started is never the default action, which would end the process)
/// and returns the loop that re-reads every certificate on each signal.
fn reload_certificates_on_sigusr1(
    tls: Arc<TlsState>,
) -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut usr1 = signal(SignalKind::user_defined1()).context("installing SIGUSR1 handler")?;
    Ok(async move {
        while usr1.recv().await.is_some() {
            tracing::info!("SIGUSR1 received: reloading certificates");
            // File reads and key parsing stay off the request threads.
            let tls = Arc::clone(&tls);
            match tokio::task::spawn_blocking(move || tls.reload()).await {
                Ok(report) => tracing::info!(
                    reloaded = report.reloaded,
                    kept = report.kept,
                    "certificate reload done"
                ),
                Err(e) => tracing::error!(error = %e, "certificate reload did not finish"),
            }
        }
    })
}

async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    Ok(())
}
