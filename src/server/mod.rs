//! Running the daemon: opens the store, restores registrations, binds the
//! transports and control socket, then drives the core until a signal.

mod call_handler;
mod chat_handler;
mod core;
mod dns;
mod handler;
mod method_handlers;
mod presence_handler;
mod register_handler;

pub use self::core::{Command, RegistrationView, StatusView};
pub use handler::{Engines, Outcome, RequestContext, RequestHandler};

use crate::auth::{Authenticator, GuardPolicy};
use crate::config::{Config, ConfigErrors};
use crate::registrar::Registrar;
use crate::sip::transport::{self, TransportLimits};
use crate::store::{JournaledStore, StoreBackend, StoreError, StoreHandle};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen: {0}")]
    Listen(std::io::Error),
    #[error("TLS: {0}")]
    Tls(crate::sip::tls::TlsFileError),
    #[error("cannot start the dialplan threads: {0}")]
    DialplanThreads(std::io::Error),
    #[error("control socket {path}: {source}")]
    Control { path: String, source: std::io::Error },
}

pub fn guard_policy(config: &Config) -> GuardPolicy {
    let s = &config.security;
    GuardPolicy {
        // Throttling starts at half the ban threshold.
        throttle_after: (s.max_auth_failures / 2).max(1),
        throttle_interval: Duration::from_secs(1),
        max_failures: s.max_auth_failures.max(1),
        ban_after_usernames: s.ban_after_usernames,
        ban_after_failures: s.ban_after_failures,
        window: s.failure_window,
        ban: s.ban,
        trusted: s.trusted_networks.clone(),
    }
}

/// What the call manager needs from the configuration.
pub fn call_config(config: &Config) -> crate::call::CallConfig {
    crate::call::CallConfig {
        calls: config.calls.clone(),
        timers: config.sip.timers,
        user_agent: config.sip.user_agent.clone(),
        listen: config.local_addrs(),
        monitor_after_transfer: config
            .accounts
            .iter()
            .flat_map(|a| {
                a.users
                    .iter()
                    .filter(|u| u.monitor_after_transfer)
                    .map(move |u| format!("{}@{}", u.extension, a.domain))
            })
            .collect(),
    }
}

/// Registrations with the configured trunks' providers (those with
/// `register = true` go out at once).
pub fn trunk_registrations(config: &Config) -> crate::trunk::Registrations {
    let local = config.local_addrs();
    crate::trunk::Registrations::new(
        &config.trunks,
        |peer| crate::sip::dialog::local_addr_for(&local, peer),
        &config.sip.user_agent,
        std::time::Instant::now(),
    )
}

/// The providers connections may be opened to: trunks over TCP or TLS.
pub fn trunk_dialables(config: &Config) -> Vec<(crate::sip::transaction::Peer, transport::Dialable)> {
    use crate::sip::transaction::TransportKind;
    config
        .trunks
        .iter()
        .filter(|t| t.transport != TransportKind::Udp)
        .filter_map(|t| {
            let tls = match t.transport {
                TransportKind::Tls => match crate::sip::tls::client_config(t.ca_file.as_deref()) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        tracing::error!(trunk = %t.name, error = %e, "trunk TLS settings unusable");
                        return None;
                    }
                },
                _ => None,
            };
            let dial = transport::Dialable {
                server_name: t.host.clone(),
                tls,
            };
            Some((crate::trunk::registration::peer_of(t), dial))
        })
        .collect()
}

/// The RTP relay; a prompt that has been played is reported to the core.
fn relay(config: &Config, commands: mpsc::Sender<Command>) -> crate::media::Relay {
    let pool = crate::media::RelayPool::new(config.media.rtp_ip, config.media.port_min, config.media.port_max);
    // Called from the player's thread, which is not a runtime thread.
    let runtime = tokio::runtime::Handle::current();
    let dtmf_commands = commands.clone();
    let done: crate::media::relay::PlaybackDone = Arc::new(move |endpoint| {
        let commands = commands.clone();
        runtime.spawn(async move {
            let _ = commands.send(Command::PlaybackDone(endpoint)).await;
        });
    });
    let dtmf_runtime = tokio::runtime::Handle::current();
    let heard: crate::media::relay::DtmfHeard = Arc::new(move |endpoint, digit| {
        let commands = dtmf_commands.clone();
        dtmf_runtime.spawn(async move {
            let _ = commands.send(Command::Dtmf { endpoint, digit }).await;
        });
    });
    crate::media::Relay::new(pool, config.media.strict_source, done).with_dtmf(heard)
}

/// The handler chain, in order.
fn handlers() -> Vec<Box<dyn RequestHandler>> {
    vec![
        Box::new(register_handler::RegisterHandler),
        Box::new(call_handler::CallHandler),
        Box::new(chat_handler::ChatHandler),
        Box::new(presence_handler::PresenceHandler),
        Box::new(method_handlers::OptionsHandler),
        Box::new(method_handlers::FallbackHandler),
    ]
}

/// Runs until SIGTERM/SIGINT. `reload` re-reads the configuration on SIGHUP.
pub async fn run<F>(config: Config, reload: F) -> Result<(), RunError>
where
    F: Fn() -> Result<Config, ConfigErrors> + Send + 'static,
{
    let config = Arc::new(config);
    let backend: Arc<dyn StoreBackend> = JournaledStore::open(&config.data_dir, config.store_cache_bytes)?;
    let store = StoreHandle::new(backend.clone());
    let mut registrar = Registrar::new();
    let purge = registrar.restore(crate::registrar::stored::load(backend.as_ref())?, crate::unix_now());
    if !purge.is_empty() {
        let _ = store.write(&purge);
    }
    // Calls in progress when the daemon died get their records now.
    let interrupted = crate::cdr::recover_interrupted(backend.as_ref(), crate::clock::Now::read().unix_ms)?;
    if !interrupted.is_empty() {
        store.write(&interrupted)?;
        let calls = interrupted
            .iter()
            .filter(|o| o.table == crate::store::Table::Cdr)
            .count();
        tracing::warn!(calls, "calls interrupted by the last stop recorded");
    }
    let mut chat = crate::chat::ChatService::new(config.local_addrs());
    let chat_state = crate::chat::stored::state(backend.as_ref())?;
    let waiting = chat_state.pending.len();
    chat.restore(chat_state.last_id, chat_state.pending, chat_state.muted);
    tracing::info!(bindings = registrar.binding_count(), chat_waiting = waiting, data_dir = %config.data_dir.display(), "store opened");
    let (cmd_tx, cmd_rx) = mpsc::channel(1024);
    let mut engines = Engines {
        auth: Authenticator::new(&config.security, guard_policy(&config)),
        registrar,
        chat,
        presence: crate::presence::PresenceService::new(config.local_addrs()),
        calls: crate::call::CallEngine::new(call_config(&config), Box::new(relay(&config, cmd_tx.clone()))),
        trunks: trunk_registrations(&config),
        agents: crate::acd::Agents::new(),
        queues: crate::acd::Queues::new(&config.accounts),
    };
    *engines.calls.contacts_mut() = crate::contacts::ContactBook::from_rows(crate::store::all_rows(
        backend.as_ref(),
        crate::store::Table::Contact,
    )?);
    // Agents' own choices (not ready, with a reason) survive a restart.
    let stored = crate::store::all_rows(backend.as_ref(), crate::store::Table::Agent)?;
    for (aor, reason) in crate::acd::agents::choices_from_rows(stored) {
        engines.agents.set_not_ready(&aor, Some(reason));
    }
    // Devices registered before the restart make their users agents again.
    let registered: Vec<(String, usize)> = engines.registrar.all().map(|(aor, b)| (aor.clone(), b.len())).collect();
    for (aor, contacts) in registered {
        engines.agents.on_event(
            &crate::events::DomainEvent::Registration { aor, contacts },
            std::time::Instant::now(),
        );
    }
    let (in_tx, in_rx) = mpsc::channel(8192);
    let limits = TransportLimits {
        max_message_size: config.sip.max_message_size,
        partial_message_timeout: config.sip.tcp_partial_timeout,
        idle_timeout: config.sip.tcp_idle_timeout,
        max_connections: config.sip.tcp_max_connections,
        max_connections_per_ip: config.sip.tcp_max_connections_per_ip,
    };
    let tls = match &config.tls {
        Some(t) => Some(transport::TlsListen {
            addrs: config.tls_listen(),
            config: Arc::new(arc_swap::ArcSwap::new(
                crate::sip::tls::server_config(&t.certificate, &t.private_key).map_err(RunError::Tls)?,
            )),
        }),
        None => None,
    };
    let tls_config = tls.as_ref().map(|t| t.config.clone());
    let transports = transport::start(&config.listen, config.udp, config.tcp, tls, limits, in_tx)
        .await
        .map_err(RunError::Listen)?;
    transports.set_dialable(trunk_dialables(&config));
    dns::spawn(&config, cmd_tx.clone());
    crate::ctl::serve(&config.control_socket, cmd_tx.clone()).map_err(|source| RunError::Control {
        path: config.control_socket.display().to_string(),
        source,
    })?;
    let dialplan_runtime = tokio::runtime::Builder::new_multi_thread()
        // One by default: each hand-over to another dialplan thread costs a
        // context switch per call step (bench/ab-calls: 2 threads switched
        // 2.2 times as often per call as 1) for no gain on small machines.
        .worker_threads(config.dialplan_limits.threads)
        .thread_name("dialplan")
        .enable_all()
        .build()
        .map_err(RunError::DialplanThreads)?;
    let tokens = crate::auth::tokens::from_rows(crate::store::all_rows(backend.as_ref(), crate::store::Table::Token)?);
    let api = self::core::ApiLink {
        config: Arc::new(arc_swap::ArcSwap::new(config.clone())),
        tokens: Arc::new(std::sync::RwLock::new(tokens)),
        fanout: crate::api::Fanout::default(),
    };
    if let Some(settings) = &config.api {
        let state = crate::api::ApiState::new(
            cmd_tx.clone(),
            api.config.clone(),
            api.tokens.clone(),
            api.fanout.clone(),
        );
        let tls = match &settings.tls {
            Some(t) => Some(crate::sip::tls::server_config(&t.certificate, &t.private_key).map_err(RunError::Tls)?),
            None => None,
        };
        crate::api::serve(settings.listen, tls, state)
            .await
            .map_err(RunError::Listen)?;
    }
    let io = self::core::CoreIo {
        transports,
        store,
        commands: cmd_tx.clone(),
        dialplan_runtime: dialplan_runtime.handle().clone(),
        api,
    };
    let core = self::core::Core::new(config.clone(), engines, handlers(), io);
    let core_task = tokio::spawn(core.run(in_rx, cmd_rx));
    tracing::info!(listen = ?config.listen, control = %config.control_socket.display(), "switchboard ready");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    spawn_watchdog(cmd_tx.clone());
    wait_for_signals(cmd_tx, reload, tls_config).await;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    core_task.abort();
    dialplan_runtime.shutdown_background();
    let _ = std::fs::remove_file(&config.control_socket);
    tracing::info!("switchboard stopped");
    Ok(())
}

/// Pings systemd only while the core answers, so a stuck core is restarted.
fn spawn_watchdog(commands: mpsc::Sender<Command>) {
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) {
        return;
    }
    let period = Duration::from_micros(usec / 2);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            let (tx, rx) = oneshot::channel();
            if commands.send(Command::Ping(tx)).await.is_err() {
                return;
            }
            if tokio::time::timeout(period, rx).await.is_ok_and(|r| r.is_ok()) {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
            }
        }
    });
}

/// New TLS connections use the certificate and key read now; open ones
/// keep theirs. (Turning TLS on or off, or its port, needs a restart.)
fn reload_certificate(config: &Config, current: Option<&transport::TlsConfigHandle>) {
    let (Some(t), Some(current)) = (&config.tls, current) else {
        return;
    };
    match crate::sip::tls::server_config(&t.certificate, &t.private_key) {
        Ok(fresh) => {
            current.store(fresh);
            tracing::info!(certificate = %t.certificate.display(), "TLS certificate reloaded");
        }
        Err(e) => tracing::error!("TLS certificate not reloaded, keeping the running one: {e}"),
    }
}

async fn wait_for_signals<F>(commands: mpsc::Sender<Command>, reload: F, tls: Option<transport::TlsConfigHandle>)
where
    F: Fn() -> Result<Config, ConfigErrors>,
{
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); return; }
            _ = int.recv() => { tracing::info!("SIGINT: stopping"); return; }
            _ = hup.recv() => {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
                match reload() {
                    Ok(cfg) => {
                        reload_certificate(&cfg, tls.as_ref());
                        let _ = commands.send(Command::Reload(Arc::new(cfg))).await;
                    }
                    Err(errors) => tracing::error!("reload refused, keeping the running configuration:\n{errors}"),
                }
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
            }
        }
    }
}
