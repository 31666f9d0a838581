//! Command line: `expressgateway [--check] [PATH]`, `--version`, `--help`.

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Run the gateway with the config at this path.
    Run(String),
    /// Validate the config and print a summary.
    Check(String),
    /// Print the version.
    Version,
    /// Print usage.
    Help,
    /// Attach the IP-in-IP decapsulator to an interface (on a backend of
    /// an XDP virtual IP) until SIGTERM or SIGINT.
    Decap {
        /// The interface.
        interface: String,
        /// `generic` instead of native XDP.
        generic: bool,
    },
}

/// The config used when no path is given.
pub const DEFAULT_CONFIG: &str = "config/default.toml";

pub const USAGE: &str = "\
expressgateway — L4/L7 load balancer

USAGE:
    expressgateway [CONFIG]          run with CONFIG (default: config/default.toml)
    expressgateway --check [CONFIG]  validate CONFIG, print a summary, exit 0 or 1
                                     (-t is the same as --check)
    expressgateway xdp-decap IFACE [--generic]
                                     on a backend of an XDP virtual IP: unwrap
                                     the IP-in-IP packets the gateway sends,
                                     on IFACE, until SIGTERM or SIGINT
    expressgateway --version         print the version (-V)
    expressgateway --help            print this help (-h)

SIGNALS:
    SIGHUP            reload the configuration: validated whole and applied
                      as one snapshot; a rejected one leaves the old serving
    SIGUSR1           re-read every TLS certificate and key; new handshakes
                      use them, open connections keep theirs
    SIGTERM, SIGINT   drain: stop accepting, let in-flight requests finish
                      (up to runtime.drain_timeout_ms), exit

Logs go to stderr (level from RUST_LOG, default info); the access log goes
to stdout unless the listener's access_log says otherwise.
";

/// Parse the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Command, String> {
    match args {
        [] => Ok(Command::Run(DEFAULT_CONFIG.to_owned())),
        [flag] if flag == "--version" || flag == "-V" => Ok(Command::Version),
        [flag] if flag == "--help" || flag == "-h" => Ok(Command::Help),
        [flag] if flag == "--check" || flag == "-t" => {
            Ok(Command::Check(DEFAULT_CONFIG.to_owned()))
        }
        [flag, path] if flag == "--check" || flag == "-t" => Ok(Command::Check(path.clone())),
        [cmd, interface] if cmd == "xdp-decap" => Ok(Command::Decap {
            interface: interface.clone(),
            generic: false,
        }),
        [cmd, interface, flag] if cmd == "xdp-decap" && flag == "--generic" => Ok(Command::Decap {
            interface: interface.clone(),
            generic: true,
        }),
        [path] if !path.starts_with('-') => Ok(Command::Run(path.clone())),
        _ => Err(format!(
            "unrecognised arguments: {}\n\n{USAGE}",
            args.join(" ")
        )),
    }
}
