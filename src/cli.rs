//! The command line: subcommands and flags, parsed by clap, with `--help`
//! and `--version` for each. Configuration itself comes from the
//! environment (see `config`); the help lists the variables by name and
//! never shows a value, so no secret reaches a terminal or a log.

use clap::{Parser, Subcommand};

const ENVIRONMENT: &str = "\
Environment (see the README for every variable):
  TINYSCALE_SECRET        shared secret the LMS signs with (required to serve)
  PORT, TINYSCALE_BIND    listen port (8000) and address (0.0.0.0)
  TINYSCALE_SERVERS       servers file (./servers.json)
  TINYSCALE_METRICS_BIND  /metrics and /healthz (127.0.0.1:9464, or off)
  TINYSCALE_STRATEGY      round-robin or least-loaded
  TINYSCALE_LOG, TINYSCALE_LOG_FORMAT   log filter (info), text or json

Signals: SIGHUP re-reads the servers file; SIGTERM/SIGINT stop gracefully.";

#[derive(Debug, Parser)]
#[command(
    name = "tinyscale",
    version,
    about = "One BigBlueButton API URL and secret in front of many BBB servers",
    after_help = ENVIRONMENT,
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the balancer (the default), configured by the environment.
    #[command(after_help = ENVIRONMENT, display_name = "tinyscale")]
    Serve,
    /// Run the balancer in front of three simulated BBB servers, with
    /// ready-signed URLs to try.
    #[command(display_name = "tinyscale")]
    Demo,
    /// Run simulated BBB servers on 127.0.0.1 and print a servers.json for them.
    #[command(display_name = "tinyscale")]
    Sim {
        /// How many servers.
        #[arg(default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1000))]
        count: u16,
    },
    /// Ask every server in the servers file, live, and show a table (no
    /// running tinyscale needed). Exits 1 if a server did not answer.
    #[command(display_name = "tinyscale")]
    Status {
        /// One JSON object per server, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Check the environment and the servers file, and ask every server
    /// with its secret. Says what is wrong in plain words; exits 1 on any
    /// problem (for deploy scripts and CI).
    #[command(display_name = "tinyscale")]
    Check,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_subcommands() {
        let cli = Cli::try_parse_from(["tinyscale", "status", "--json"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Status { json: true })));
        let cli = Cli::try_parse_from(["tinyscale"]).unwrap();
        assert!(cli.command.is_none());
        assert!(Cli::try_parse_from(["tinyscale", "sim", "0"]).is_err());
        assert!(Cli::try_parse_from(["tinyscale", "serve", "--port"]).is_err());
    }
}
