//! The `tinyscale` command: wiring only.
//!
//! - `tinyscale` (or `tinyscale serve`): the balancer, configured by the
//!   environment (see README);
//! - `tinyscale demo`: the balancer in front of three simulated BBB servers;
//! - `tinyscale sim [N]`: simulated BBB servers alone, for trying things by hand.

use std::process::ExitCode;
use tinyscale::config::{self, Settings};
use tinyscale::server;

const USAGE: &str = "\
tinyscale — one BigBlueButton API URL in front of many BBB servers

Usage:
  tinyscale [serve]    run the balancer (configured by the environment);
                       SIGHUP re-reads the servers file, SIGTERM stops
  tinyscale demo       run it in front of three simulated BBB servers
  tinyscale sim [N]    run N simulated BBB servers (default 1) on 127.0.0.1
                       and print a servers.json for them
  tinyscale --help     this text
  tinyscale --version  the version

Environment (serve):
  TINYSCALE_SECRET               shared secret the LMS signs with (required)
  PORT                           listen port (default 8000)
  TINYSCALE_BIND                 listen address (default 0.0.0.0)
  TINYSCALE_SERVERS              servers file (default ./servers.json)
  TINYSCALE_CHECKSUM_ALGORITHMS  accepted from clients (default sha1,sha256,sha384,sha512)
  TINYSCALE_CONNECT_TIMEOUT      seconds to connect to a BBB server (default 3)
  TINYSCALE_RESPONSE_TIMEOUT     seconds for a BBB server's answer (default 10)
  TINYSCALE_MAX_BODY             largest request body (default 64M)
  TINYSCALE_LOG                  log filter (default info)
  TINYSCALE_POLL_INTERVAL        seconds between polls of each server (default 10)
  TINYSCALE_POLL_TIMEOUT         seconds one poll may take (default 3)
  TINYSCALE_DOWN_AFTER           failed polls in a row before a server is down (default 2)
  TINYSCALE_UP_AFTER             good polls in a row before it is up again (default 2)
  TINYSCALE_STRATEGY             round-robin (default) or least-loaded
  TINYSCALE_NEW_MEETING_LOAD     users a new meeting counts as until the next poll (default 15)
  TINYSCALE_SHUTDOWN_TIMEOUT     seconds to finish requests after SIGTERM (default 10)
  SSL_CERT_FILE                  extra CA certificates for https backends
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] | ["serve"] => run(serve()),
        ["demo"] => run(tinyscale::demo::run()),
        ["sim"] => run(tinyscale::demo::run_sims(1)),
        ["sim", count] => match count.parse::<usize>() {
            Ok(n) if (1..=1000).contains(&n) => run(tinyscale::demo::run_sims(n)),
            _ => {
                eprintln!(
                    "tinyscale sim: expected a number of servers from 1 to 1000, not {count:?}"
                );
                ExitCode::from(2)
            }
        },
        ["--help" | "-h" | "help"] => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        ["--version" | "-V"] => {
            println!("tinyscale {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("tinyscale: unknown arguments {args:?}; see tinyscale --help");
            ExitCode::from(2)
        }
    }
}

fn run(task: impl std::future::Future<Output = Result<(), String>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("tinyscale: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("tinyscale: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve() -> Result<(), String> {
    let settings =
        Settings::from_vars(|name| std::env::var(name).ok()).map_err(|e| e.to_string())?;
    tinyscale::init_logging(&settings.log_filter, settings.log_format);
    let specs = config::load_servers(&settings.servers_path)
        .await
        .map_err(|e| e.to_string())?;
    let (listeners, app, _) = server::start(&settings, specs).await?;
    server::run(listeners, app, tinyscale::stop_signal()).await;
    Ok(())
}
