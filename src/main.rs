//! The `switchboard` command: run the daemon, check config, talk to a
//! running daemon.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use switchboard::config::{Config, LogFormat};

#[derive(Parser)]
#[command(
    name = "switchboard",
    version,
    about = "A programmable SIP PBX for call centres"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon.
    Run {
        /// Configuration file.
        #[arg(short, long, default_value = "conf/switchboard.toml")]
        config: PathBuf,
        /// Listen address (IP:PORT), replacing server.listen; repeatable.
        #[arg(long)]
        listen: Vec<SocketAddr>,
        /// Data directory, replacing server.data_dir.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Validate the configuration; prints file:line:col for every error.
    Check {
        #[arg(short, long, default_value = "conf/switchboard.toml")]
        config: PathBuf,
    },
    /// Query a running daemon over its control socket.
    Ctl {
        #[arg(short, long, default_value = "conf/switchboard.toml")]
        config: PathBuf,
        /// Control socket path (default: from the config).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Print raw JSON.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        what: CtlCmd,
    },
}

#[derive(Subcommand, Clone, Copy)]
enum CtlCmd {
    /// Current registrations.
    Registrations,
    /// Counters and banned sources.
    Status,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Check { config } => match Config::load(&config) {
            Ok(cfg) => {
                let users: usize = cfg.accounts.iter().map(|a| a.users.len()).sum();
                println!(
                    "{}: OK ({} accounts, {} users)",
                    config.display(),
                    cfg.accounts.len(),
                    users
                );
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::FAILURE
            }
        },
        Cmd::Run {
            config,
            listen,
            data_dir,
        } => match run(config, listen, data_dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("switchboard: {e:#}");
                ExitCode::FAILURE
            }
        },
        Cmd::Ctl {
            config,
            socket,
            json,
            what,
        } => match ctl(config, socket, json, what) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("switchboard ctl: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run(path: PathBuf, listen: Vec<SocketAddr>, data_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let load = move || Config::load(&path).map(|c| c.with_overrides(&listen, data_dir.as_deref()));
    let cfg = load().map_err(|e| anyhow::anyhow!("{e}"))?;
    init_logging(&cfg);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(switchboard::server::run(cfg, load))?;
    Ok(())
}

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match cfg.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn ctl(config: PathBuf, socket: Option<PathBuf>, json: bool, what: CtlCmd) -> anyhow::Result<()> {
    let socket = match socket {
        Some(s) => s,
        None => {
            Config::load(&config)
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .control_socket
        }
    };
    let command = match what {
        CtlCmd::Registrations => "registrations",
        CtlCmd::Status => "status",
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let data = rt
        .block_on(switchboard::ctl::request(&socket, command))
        .map_err(|e| anyhow::anyhow!(e))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&data)?);
        return Ok(());
    }
    match what {
        CtlCmd::Registrations => print!(
            "{}",
            switchboard::ctl::format_registrations(&serde_json::from_value::<Vec<_>>(data)?)
        ),
        CtlCmd::Status => print!(
            "{}",
            switchboard::ctl::format_status(&serde_json::from_value(data)?)
        ),
    }
    Ok(())
}
