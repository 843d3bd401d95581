//! The `switchboard` command: run the daemon, check config, talk to a
//! running daemon.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use switchboard::config::{Config, LogFormat};

#[derive(Parser)]
#[command(name = "switchboard", version, about = "A programmable SIP PBX for call centres")]
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
    /// Dialplan tools.
    Dialplan {
        #[command(subcommand)]
        what: DialplanCmd,
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

#[derive(Subcommand)]
enum DialplanCmd {
    /// Run the account's dialplan against a simulated call, printing each decision.
    Test {
        #[arg(short, long, default_value = "conf/switchboard.toml")]
        config: PathBuf,
        /// Caller extension.
        #[arg(long)]
        from: String,
        /// Dialled number.
        #[arg(long)]
        to: String,
        /// What every dial() returns: answered, busy, no-answer, failed, cancelled.
        #[arg(long, default_value = "answered")]
        result: String,
        /// Account domain (default: the default account).
        #[arg(long)]
        account: Option<String>,
        /// Dialplan file to use instead of the account's.
        #[arg(long)]
        dialplan: Option<PathBuf>,
        /// Run the simulated call this many times and print the mean time per
        /// call instead of the decisions (for bench/).
        #[arg(long)]
        repeat: Option<u32>,
    },
}

#[derive(Subcommand, Clone)]
enum CtlCmd {
    /// Current registrations.
    Registrations,
    /// Counters, live calls, relay ports, memory and banned sources.
    Status,
    /// Live calls with relay counters.
    Calls,
    /// Banned source addresses, with the time left.
    Bans,
    /// Trunks and their registration status.
    Trunks,
    /// Agents and their states (JSON).
    Agents,
    /// Queues: callers waiting, longest wait, agents by state, today's
    /// answered / abandoned / timed out, service level (JSON).
    Queues,
    /// API tokens: `create USER [LABEL]` (prints the secret once),
    /// `list`, `revoke ID` (JSON).
    Token {
        #[arg(required = true, num_args = 1..)]
        args: Vec<String>,
    },
    /// Sets an agent ready, or not ready with a reason (JSON).
    Agent {
        /// The extension (default account) or ext@domain.
        user: String,
        /// `ready`, `not_ready` then the reason, or `end_acw`.
        #[arg(num_args = 1..)]
        choice: Vec<String>,
    },
    /// Click-to-call: rings USER's phones, then calls NUMBER from the one
    /// that answers, as if dialled there; `call 1003 *811004` has
    /// supervisor 1003 listen to agent 1004's call (JSON).
    Call {
        /// The extension (default account) or ext@domain.
        user: String,
        number: String,
    },
    /// An account's users, groups, queues and remote extensions (JSON).
    Directory {
        /// The account's domain (default: the default account).
        domain: Option<String>,
    },
    /// Lifts the ban of a source address (and its users' lock-outs).
    Unban { ip: std::net::IpAddr },
    /// Chat: `history USER PEER [LIMIT [BEFORE]]`, `unread USER`, `read USER PEER`, `mute USER on|off` (JSON).
    Chat {
        #[arg(required = true, num_args = 1..)]
        args: Vec<String>,
    },
    /// Call records, newest last.
    Cdr {
        /// Only calls from or to this extension.
        #[arg(long)]
        user: Option<String>,
        /// How many records.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Check { config } => check(&config),
        Cmd::Dialplan {
            what:
                DialplanCmd::Test {
                    config,
                    from,
                    to,
                    result,
                    account,
                    dialplan,
                    repeat,
                },
        } => match dialplan_test(&config, from, to, &result, account, dialplan, repeat) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("switchboard dialplan test: {e:#}");
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

fn check(config: &std::path::Path) -> ExitCode {
    let cfg = match Config::load(config) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    let mut ok = true;
    for a in &cfg.accounts {
        if let Err(e) = switchboard::dialplan::library_load(&a.dialplan) {
            eprintln!("{e}");
            ok = false;
        }
    }
    if !ok {
        return ExitCode::FAILURE;
    }
    let users: usize = cfg.accounts.iter().map(|a| a.users.len()).sum();
    println!(
        "{}: OK ({} accounts, {} users, dialplans compiled)",
        config.display(),
        cfg.accounts.len(),
        users
    );
    ExitCode::SUCCESS
}

fn dialplan_test(
    config: &std::path::Path,
    from: String,
    to: String,
    result: &str,
    account: Option<String>,
    dialplan: Option<PathBuf>,
    repeat: Option<u32>,
) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let acct = switchboard::config::account_or_default(&cfg.accounts, account.as_deref())
        .ok_or_else(|| anyhow::anyhow!("no such account"))?;
    let path = dialplan.unwrap_or_else(|| acct.dialplan.clone());
    let plan = std::sync::Arc::new(switchboard::dialplan::library_load(&path).map_err(|e| anyhow::anyhow!("{e}"))?);
    let display = acct.user(&from).map(|u| u.display_name.clone()).unwrap_or_default();
    let info = switchboard::dialplan::CallInfo {
        id: "dialplan-test".into(),
        from,
        to,
        display,
        domain: acct.domain.clone(),
        trunk: None,
    };
    let limits = switchboard::dialplan::Limits {
        instructions: cfg.dialplan_limits.instructions,
        memory_bytes: cfg.dialplan_limits.memory_bytes,
    };
    // Script log lines go to stderr next to the decisions.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .with_ansi(false)
        .try_init();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    if let Some(n) = repeat {
        let n = n.max(1);
        let started = std::time::Instant::now();
        // One runtime turn for all the calls, as in the daemon.
        rt.block_on(async {
            for _ in 0..n {
                let (_, r) =
                    switchboard::dialplan::simulate::simulate(plan.clone(), info.clone(), result, limits).await;
                r.map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            anyhow::Ok(())
        })?;
        let per_call = started.elapsed().as_secs_f64() * 1e6 / f64::from(n);
        println!("{n} calls, {per_call:.1} us per call");
        return Ok(ExitCode::SUCCESS);
    }
    let (lines, outcome) = rt.block_on(switchboard::dialplan::simulate::simulate(plan, info, result, limits));
    for l in lines {
        println!("{l}");
    }
    match outcome {
        Ok(()) => {
            println!("end");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("error: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn run(path: PathBuf, listen: Vec<SocketAddr>, data_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let load = move || Config::load(&path).map(|c| c.with_overrides(&listen, data_dir.as_deref()));
    let cfg = load().map_err(|e| anyhow::anyhow!("{e}"))?;
    init_logging(&cfg);
    exit_on_panic();
    raise_open_files_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(switchboard::server::run(cfg, load))?;
    Ok(())
}

/// A panic anywhere (the core task, the relay thread, a dialplan worker)
/// ends the process with status 101 and a log line, so that systemd
/// restarts it: tokio would otherwise keep the process up with its core
/// task gone, answering nothing.
fn exit_on_panic() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        tracing::error!(thread = name, "panic: {info}; exiting");
        eprintln!("switchboard: panic in thread {name}: {info}; exiting");
        std::process::exit(101);
    }));
}

/// Lifts the soft limit on open files to the hard one: each relayed call
/// holds four sockets (plus released ones kept for reuse), and the usual
/// soft limit of 1,024 would cap the daemon near 250 calls.
fn raise_open_files_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let wanted = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
                lim = wanted;
            }
        }
    }
    tracing::info!(open_files = lim.rlim_cur, "open files limit");
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
    let command = match &what {
        CtlCmd::Registrations => "registrations".to_string(),
        CtlCmd::Status => "status".to_string(),
        CtlCmd::Calls => "calls".to_string(),
        CtlCmd::Bans => "bans".to_string(),
        CtlCmd::Trunks => "trunks".to_string(),
        CtlCmd::Agents => "agents".to_string(),
        CtlCmd::Queues => "queues".to_string(),
        CtlCmd::Token { args } => match args.first().map(String::as_str) {
            Some("list") => "tokens".to_string(),
            _ => format!("token {}", args.join(" ")),
        },
        CtlCmd::Agent { user, choice } => format!("agent {user} {}", choice.join(" ")),
        CtlCmd::Directory { domain } => format!("directory {}", domain.as_deref().unwrap_or(""))
            .trim_end()
            .to_string(),
        CtlCmd::Unban { ip } => format!("unban {ip}"),
        CtlCmd::Call { user, number } => format!("call {user} {number}"),
        CtlCmd::Chat { args } => format!("chat {}", args.join(" ")),
        CtlCmd::Cdr { user, limit } => match user {
            Some(u) => format!("cdr {limit} {u}"),
            None => format!("cdr {limit}"),
        },
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let data = rt
        .block_on(switchboard::ctl::request(&socket, &command))
        .map_err(|e| anyhow::anyhow!(e))?;
    if json
        || matches!(
            what,
            CtlCmd::Chat { .. }
                | CtlCmd::Call { .. }
                | CtlCmd::Directory { .. }
                | CtlCmd::Agents
                | CtlCmd::Agent { .. }
                | CtlCmd::Queues
                | CtlCmd::Token { .. }
        )
    {
        println!("{}", serde_json::to_string_pretty(&data)?);
        return Ok(());
    }
    match what {
        CtlCmd::Registrations => print!(
            "{}",
            switchboard::ctl::format_registrations(&serde_json::from_value::<Vec<_>>(data)?)
        ),
        CtlCmd::Status => print!("{}", switchboard::ctl::format_status(&serde_json::from_value(data)?)),
        CtlCmd::Calls => print!(
            "{}",
            switchboard::ctl::format_calls(&serde_json::from_value::<Vec<_>>(data)?)
        ),
        CtlCmd::Chat { .. }
        | CtlCmd::Call { .. }
        | CtlCmd::Directory { .. }
        | CtlCmd::Agents
        | CtlCmd::Agent { .. }
        | CtlCmd::Queues
        | CtlCmd::Token { .. } => {}
        CtlCmd::Bans => {
            let list: Vec<String> = serde_json::from_value(data)?;
            if list.is_empty() {
                println!("no banned sources");
            }
            for b in list {
                println!("{b}");
            }
        }
        CtlCmd::Trunks => print!(
            "{}",
            switchboard::ctl::format_trunks(&serde_json::from_value::<Vec<_>>(data)?)
        ),
        CtlCmd::Unban { ip } => match data.as_bool() {
            Some(true) => println!("ban of {ip} lifted"),
            _ => println!("{ip} was not banned"),
        },
        CtlCmd::Cdr { .. } => print!(
            "{}",
            switchboard::ctl::format_cdr(&serde_json::from_value::<Vec<_>>(data)?)
        ),
    }
    Ok(())
}
