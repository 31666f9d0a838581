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
}

/// The config used when no path is given.
pub const DEFAULT_CONFIG: &str = "config/default.toml";

pub const USAGE: &str = "\
expressgateway — L4/L7 load balancer

USAGE:
    expressgateway [CONFIG]          run with CONFIG (default: config/default.toml)
    expressgateway --check [CONFIG]  validate CONFIG, print a summary, exit 0 or 1
    expressgateway --version         print the version
    expressgateway --help            print this help

SIGNALS:
    SIGTERM, SIGINT   stop accepting, let in-flight requests finish, exit
    SIGUSR1           re-read every TLS certificate and key; new handshakes
                      use them, open connections keep theirs
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
        [path] if !path.starts_with('-') => Ok(Command::Run(path.clone())),
        _ => Err(format!(
            "unrecognised arguments: {}\n\n{USAGE}",
            args.join(" ")
        )),
    }
}
