//! The `tinyscale` command: wiring only. See `cli` for the subcommands.

use clap::Parser;
use std::process::ExitCode;
use tinyscale::cli::{Cli, Command};
use tinyscale::config::{self, Settings};
use tinyscale::server;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        // The balancer runs its own event-loop threads (see server::run).
        Command::Serve => run_serve(),
        Command::Demo => run(tinyscale::demo::run()),
        Command::Sim { count } => run(tinyscale::demo::run_sims(usize::from(count))),
        Command::Status { json } => {
            end_quietly_on_closed_pipe();
            run_checked(tinyscale::status::status(json))
        }
        Command::Check => {
            end_quietly_on_closed_pipe();
            run_checked(tinyscale::status::check())
        }
    }
}

/// `tinyscale check | head` must end quietly when `head` goes, not panic in
/// `println!`: these reports get the default SIGPIPE action back (Rust
/// ignores the signal). Never for `serve`, where a client that leaves must
/// not end the process.
fn end_quietly_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to its default before any
    // thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start: {e}"))
}

fn current_thread() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start: {e}"))
}

/// Runs a task; exit 1 with its one-line message if it fails.
fn run(task: impl std::future::Future<Output = Result<(), String>>) -> ExitCode {
    run_on(runtime(), task)
}

fn run_on(
    runtime: Result<tokio::runtime::Runtime, String>,
    task: impl std::future::Future<Output = Result<(), String>>,
) -> ExitCode {
    match runtime.and_then(|rt| rt.block_on(task)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("tinyscale: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a check: exit 0 when all is well, 1 when it found a problem, 2 when
/// it could not run (configuration unreadable).
fn run_checked(task: impl std::future::Future<Output = Result<bool, String>>) -> ExitCode {
    match runtime().and_then(|rt| rt.block_on(task)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("tinyscale: {message}");
            ExitCode::from(2)
        }
    }
}

/// Why `serve` stopped.
enum ServeError {
    /// The environment or the servers file is wrong: restarting cannot help.
    Config(String),
    /// Anything else (an address in use, no runtime): a restart may.
    Failed(String),
}

/// Exit status of a configuration error: sysexits' EX_CONFIG, which systemd
/// shows as "status=78/CONFIG" and the unit names in RestartPreventExitStatus,
/// so that a service not yet given its secret fails once, clearly, rather
/// than restarting every two seconds.
const EXIT_CONFIG: u8 = 78;

fn run_serve() -> ExitCode {
    let outcome = current_thread()
        .map_err(ServeError::Failed)
        .and_then(|rt| rt.block_on(serve()));
    let (code, message) = match outcome {
        Ok(()) => return ExitCode::SUCCESS,
        Err(ServeError::Config(message)) => (ExitCode::from(EXIT_CONFIG), message),
        Err(ServeError::Failed(message)) => (ExitCode::FAILURE, message),
    };
    eprintln!("tinyscale: {message}");
    code
}

async fn serve() -> Result<(), ServeError> {
    let config = |e: config::ConfigError| ServeError::Config(e.to_string());
    let settings = Settings::from_vars(|name| std::env::var(name).ok()).map_err(config)?;
    tinyscale::init_logging(&settings.log_filter, settings.log_format);
    let stop = tinyscale::stop_signal();
    let specs = config::load_servers(&settings.servers_path)
        .await
        .map_err(config)?;
    let (listeners, app, _) = server::start(&settings, specs)
        .await
        .map_err(ServeError::Failed)?;
    server::run(listeners, app, stop).await;
    Ok(())
}
