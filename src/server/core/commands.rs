//! The core's answers to commands from other tasks: control-socket
//! queries (registrations, status, calls, call records, chat), dialplan
//! actions and reloads.

use super::{heap_in_use_kib, rss_kib, Command, Core, RegistrationView, StatusView};
use crate::call::CallRef;
use crate::chat::queries::ChatQuery;
use crate::clock::Now;
use crate::dialplan::{Action, Reply};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

impl Core {
    /// `ctl chat …`: a mute changes the chat engine (and is stored); the
    /// other queries read the store off this task.
    fn on_chat_query(&mut self, query: ChatQuery, reply: oneshot::Sender<Result<serde_json::Value, String>>) {
        if let ChatQuery::Mute { on, .. } = query {
            let r = query.resolve(&self.config.accounts).and_then(|(account, user)| {
                let aor = format!("{}@{}", user.extension, account.domain);
                self.store
                    .write(&[crate::chat::stored::muted(&aor, on)])
                    .map_err(|_| "could not store the mute".to_string())?;
                self.engines.chat.set_muted(&aor, on);
                Ok(serde_json::json!({ "muted": on }))
            });
            let _ = reply.send(r);
            return;
        }
        let (config, store) = (self.config.clone(), self.store.clone());
        tokio::task::spawn_blocking(move || {
            let r = crate::chat::queries::answer(&query, &config.accounts, store.backend().as_ref()).and_then(
                |(value, write)| match write {
                    Some(op) => store
                        .write(&[op])
                        .map(|()| value)
                        .map_err(|_| "could not store the read mark".to_string()),
                    None => Ok(value),
                },
            );
            let _ = reply.send(r);
        });
    }

    /// Contact cards: reads from the book in memory; a change is stored,
    /// then made part of the book (so a ringing call shows it at once).
    fn on_contacts(&mut self, account: &str, request: crate::control::ContactRequest) -> crate::control::ContactReply {
        use crate::contacts::ContactError;
        use crate::control::ContactRequest;
        let now = Now::read().unix_ms;
        let book = self.engines.calls.contacts();
        let (id, card, op) = match request {
            ContactRequest::Search {
                text,
                tag,
                after,
                limit,
            } => return Ok(book.search(account, &text, tag.as_deref(), after, limit)),
            ContactRequest::Get(id) => return book.get(account, id).map(|c| vec![c]),
            ContactRequest::Lookup(number) => return Ok(book.lookup(account, &number).into_iter().collect()),
            ContactRequest::Create { by, fields } => {
                let (c, op) = book.create(account, &by, fields, now)?;
                (c.id, Some(c), op)
            }
            ContactRequest::Update { id, fields } => {
                let (c, op) = book.update(account, id, fields, now)?;
                (id, Some(c), op)
            }
            ContactRequest::Delete { id, by, admin } => (id, None, book.delete(account, id, &by, admin)?),
        };
        self.store.write(&[op]).map_err(|_| ContactError::Store)?;
        tracing::info!(
            account,
            id,
            kind = if card.is_some() { "saved" } else { "deleted" },
            "contact card"
        );
        self.engines.calls.contacts_mut().applied(id, card.clone());
        Ok(card.map(|c| vec![std::sync::Arc::new(c)]).unwrap_or_default())
    }

    /// A message sent through the API: checked, stored, then pushed, as
    /// the MESSAGE handler does it.
    fn on_chat_send(&mut self, user: &str, to: &str, text: String) -> Result<crate::chat::ChatMessage, (u16, String)> {
        let config = self.config.clone();
        let (account, sender) = crate::config::user_named(&config.accounts, user).map_err(|e| (404, e))?;
        let status = |e: crate::sip::SipError| (e.status, e.reason.map(|r| r.to_string()).unwrap_or_default());
        let accepted = self
            .engines
            .chat
            .accept_text(account, sender, to, text, config.chat, Now::read())
            .map_err(status)?;
        super::super::chat_handler::store_and_push(
            &mut self.engines,
            &self.store,
            account,
            &accepted,
            &config.sip.user_agent,
        )
        .map_err(|_| (500, "the message could not be stored".to_string()))?;
        Ok(accepted.message)
    }

    /// `/phonebook.xml`: the directory for a desk phone that proves it
    /// holds an account's SIP credentials (HTTP digest, with SIP's nonces,
    /// failure guard and bans).
    fn phonebook(
        &mut self,
        domain: Option<&str>,
        authorization: Option<&str>,
        target: &str,
        source: std::net::IpAddr,
    ) -> crate::control::PhonebookReply {
        use crate::auth::AuthVerdict;
        use crate::control::PhonebookReply;
        let config = self.config.clone();
        let Some(account) = crate::config::account_or_default(&config.accounts, domain) else {
            return PhonebookReply::NoAccount;
        };
        let now_unix = crate::unix_now();
        let verdict =
            self.engines
                .auth
                .verify_http(authorization, "GET", target, account, source, Instant::now(), now_unix);
        match verdict {
            AuthVerdict::Authenticated(user) => {
                tracing::debug!(user = %user.extension, "phonebook read");
                PhonebookReply::Entries(self.directory(Some(&account.domain)).unwrap_or_default())
            }
            AuthVerdict::Challenge { stale } => PhonebookReply::Challenge(self.engines.auth.challenges(
                &account.domain,
                stale,
                now_unix,
                rand::random(),
                source,
            )),
            AuthVerdict::Rejected => PhonebookReply::Rejected,
            AuthVerdict::Throttled | AuthVerdict::Banned => PhonebookReply::Throttled,
        }
    }

    /// Banned sources as `ctl` shows them.
    /// Users, groups and remote extensions of an account, by number.
    fn directory(&self, domain: Option<&str>) -> Result<Vec<crate::control::DirectoryEntry>, String> {
        use crate::config::RemoteTarget;
        use crate::control::DirectoryEntry;
        let account = crate::config::account_or_default(&self.config.accounts, domain)
            .ok_or_else(|| format!("no account {}", domain.unwrap_or("(default)")))?;
        let entry = |number: &str, name: &str, kind: &str, detail: String, registered| DirectoryEntry {
            number: number.to_string(),
            name: name.to_string(),
            kind: kind.to_string(),
            detail,
            registered,
        };
        let mut out: Vec<DirectoryEntry> = account
            .users
            .iter()
            .map(|u| {
                let aor = format!("{}@{}", u.extension, account.domain);
                let registered = !self.engines.registrar.lookup(&aor).is_empty();
                entry(
                    &u.extension,
                    &u.display_name,
                    "user",
                    format!("{:?}", u.role).to_lowercase(),
                    Some(registered),
                )
            })
            .collect();
        out.extend(
            account
                .groups
                .iter()
                .map(|g| entry(&g.number, &g.name, "group", g.members.join(","), None)),
        );
        out.extend(account.queues.iter().map(|q| {
            let members: Vec<&str> = q.members.iter().map(|m| m.extension.as_str()).collect();
            entry(&q.number, &q.name, "queue", members.join(","), None)
        }));
        out.extend(account.remote_extensions.iter().map(|r| {
            let target = match &r.target {
                RemoteTarget::Uri { uri, .. } => uri.clone(),
                RemoteTarget::Number(n) => n.clone(),
            };
            entry(&r.number, &r.name, "remote", target, None)
        }));
        out.sort_by(|a, b| a.number.cmp(&b.number));
        Ok(out)
    }

    fn trunk_views(&self) -> Vec<crate::control::TrunkView> {
        use crate::trunk::RegStatus;
        self.engines
            .trunks
            .statuses()
            .into_iter()
            .map(|(name, status, failures)| {
                let address = self
                    .config
                    .trunks
                    .iter()
                    .find(|t| t.name == name)
                    .map_or(String::new(), |t| t.address.to_string());
                let (last_code, last_reason, expires_s) = match &status {
                    RegStatus::Failing { code, reason } => (Some(*code), Some(reason.clone()), None),
                    RegStatus::Registered { expires_s } => (None, None, Some(*expires_s)),
                    _ => (None, None, None),
                };
                crate::control::TrunkView {
                    name,
                    address,
                    status: status.name().to_string(),
                    last_code,
                    last_reason,
                    expires_s,
                    failures,
                }
            })
            .collect()
    }

    fn banned_list(&self) -> Vec<String> {
        let mut list: Vec<String> = self
            .engines
            .auth
            .guard()
            .banned(Instant::now())
            .into_iter()
            .map(|(ip, left)| format!("{ip} ({}s left)", left.as_secs()))
            .collect();
        list.sort();
        list
    }

    pub(super) fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Registrations(reply) => {
                let now = crate::unix_now();
                let mut list: Vec<RegistrationView> = self
                    .engines
                    .registrar
                    .all()
                    .flat_map(|(aor, bs)| {
                        bs.iter().map(move |b| RegistrationView {
                            aor: aor.clone(),
                            contact: b.contact.clone(),
                            expires_in: b.remaining(now),
                            source: b.source.clone(),
                            transport: b.transport.clone(),
                            user_agent: b.user_agent.clone(),
                        })
                    })
                    .collect();
                list.sort_by(|a, b| (&a.aor, &a.contact).cmp(&(&b.aor, &b.contact)));
                let _ = reply.send(list);
            }
            Command::Status(reply) => {
                let (relay_packets, relay_seq_gaps) = self.engines.calls.media_totals();
                let (store_commits, store_commit_nanos) = self.store.write_timing();
                let _ = reply.send(StatusView {
                    bindings: self.engines.registrar.binding_count(),
                    transactions: self.txl.len(),
                    calls: self.engines.calls.len(),
                    relay_ports_in_use: self.engines.calls.relay_ports_in_use(),
                    rss_kib: rss_kib(),
                    heap_in_use_kib: heap_in_use_kib(),
                    dialplans_running: self.dialplans_running.load(std::sync::atomic::Ordering::Relaxed),
                    tables: {
                        let (legs, client_tx, timers, bridges) = self.engines.calls.table_sizes();
                        vec![legs, client_tx, timers, bridges, self.engines.auth.nonces_tracked()]
                    },
                    banned: self.banned_list(),
                    relay_packets,
                    relay_seq_gaps,
                    auth_failures: self.engines.auth.guard().failures_total(),
                    store_commits,
                    store_commit_nanos,
                    dialplan_errors: self.dialplan_errors,
                });
            }
            Command::Reload(mut config) => {
                // Addresses DNS found stay (the lookups go on as started).
                let found: Vec<_> = self
                    .config
                    .trunks
                    .iter()
                    .filter(|t| t.srv_name.is_some())
                    .cloned()
                    .collect();
                for t in std::sync::Arc::make_mut(&mut config).trunks.iter_mut() {
                    if let Some(old) = found.iter().find(|o| o.name == t.name && o.srv_name == t.srv_name) {
                        t.address = old.address;
                    }
                }
                self.txl.set_timers(config.sip.timers);
                self.engines
                    .auth
                    .reconfigure(&config.security, crate::server::guard_policy(&config));
                self.engines.calls.reconfigure(crate::server::call_config(&config));
                self.engines.queues.reconfigure(&config.accounts);
                if config.trunks != self.config.trunks {
                    // New or changed trunks register afresh.
                    self.engines.trunks = crate::server::trunk_registrations(&config);
                    self.transports.set_dialable(crate::server::trunk_dialables(&config));
                }
                self.dialplans.invalidate();
                self.api.config.store(config.clone());
                self.config = config;
                tracing::info!("configuration reloaded; registrations and calls kept");
            }
            Command::Ping(reply) => {
                let _ = reply.send(());
            }
            Command::Dialplan { call, action, reply } => self.on_dialplan_action(call, action, reply),
            Command::DialplanDone { call, result } => {
                self.dialplan_replies.remove(&call);
                if result.is_err() {
                    self.dialplan_errors += 1;
                }
                self.engines.calls.script_done(call, result, Now::read());
            }
            Command::Bans(reply) => {
                let _ = reply.send(self.banned_list());
            }
            Command::Trunks(reply) => {
                let _ = reply.send(self.trunk_views());
            }
            Command::Agents(reply) => {
                let list = self.engines.agents.list();
                let _ = reply.send(list.into_iter().map(|(aor, s)| agent_view(aor, &s)).collect());
            }
            Command::SetAgent { user, choice, reply } => {
                let r = crate::config::user_named(&self.config.accounts, &user).map(|(account, user)| {
                    let aor = format!("{}@{}", user.extension, account.domain);
                    aor
                });
                let r = r.map(|aor| {
                    match choice {
                        crate::control::AgentChoice::Ready => self.set_agent_choice(&aor, None),
                        crate::control::AgentChoice::NotReady(reason) => self.set_agent_choice(&aor, Some(reason)),
                        crate::control::AgentChoice::EndAcw => {
                            self.engines.agents.end_acw(&aor);
                        }
                    }
                    let state = self.engines.agents.state(&aor);
                    agent_view(aor, &state)
                });
                let _ = reply.send(r);
            }
            Command::EventsSince { since, reply } => {
                let _ = reply.send(self.event_log.as_ref().map_or(Ok(Vec::new()), |l| l.since(since)));
            }
            Command::TokenCreate { user, label, reply } => {
                let r = crate::config::user_named(&self.config.accounts, &user).and_then(|(account, user)| {
                    let aor = format!("{}@{}", user.extension, account.domain);
                    let (secret, info) = crate::auth::tokens::new_token(&aor, &label, Now::read().unix_ms);
                    self.store
                        .write(&[crate::auth::tokens::stored(&info)])
                        .map_err(|_| "could not store the token".to_string())?;
                    self.api
                        .tokens
                        .write()
                        .expect("tokens lock")
                        .insert(info.hash.clone(), info.clone());
                    tracing::info!(user = %aor, id = %info.id, "API token created");
                    Ok((secret, info))
                });
                let _ = reply.send(r);
            }
            Command::Tokens(reply) => {
                let mut list: Vec<_> = self.api.tokens.read().expect("tokens lock").values().cloned().collect();
                list.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
                let _ = reply.send(list);
            }
            Command::TokenRevoke { id, reply } => {
                let found = {
                    let tokens = self.api.tokens.read().expect("tokens lock");
                    tokens.values().find(|t| t.id == id).map(|t| t.hash.clone())
                };
                if let Some(hash) = &found {
                    if self.store.write(&[crate::auth::tokens::revoked(&id)]).is_ok() {
                        self.api.tokens.write().expect("tokens lock").remove(hash);
                        tracing::info!(id = %id, "API token revoked");
                    }
                }
                let _ = reply.send(found.is_some());
            }
            Command::Queues(reply) => {
                let _ = reply.send(self.engines.queues.views(&self.engines.agents, Now::read()));
            }
            Command::Directory { domain, reply } => {
                let _ = reply.send(self.directory(domain.as_deref()));
            }
            Command::TrunkAddress { trunk, address } => {
                // Everything reads trunks from the configuration: a copy
                // with the new address replaces it.
                let mut config = (*self.config).clone();
                if let Some(t) = config.trunks.iter_mut().find(|t| t.name == trunk) {
                    // A TCP/TLS provider's connection settings move with it
                    // (not read again from the CA file).
                    let old = crate::trunk::registration::peer_of(t);
                    t.address = address;
                    self.transports
                        .readdress_dialable(old, crate::trunk::registration::peer_of(t));
                }
                self.config = std::sync::Arc::new(config);
                self.engines.trunks.set_address(&trunk, address, Instant::now());
            }
            Command::Unban { ip, reply } => {
                let lifted = self.engines.auth.unban(ip);
                if lifted {
                    tracing::info!(source = %ip, "ban lifted by ctl");
                }
                let _ = reply.send(lifted);
            }
            Command::InjectPanic => panic!("fault injection: panic in the core task"),
            Command::PlaybackDone(endpoint) => self.engines.calls.playback_done(endpoint, Now::read()),
            Command::Dtmf { endpoint, digit } => {
                tracing::debug!(endpoint = endpoint.0, %digit, "DTMF heard");
                let codes = self
                    .engines
                    .calls
                    .account_of_leg(endpoint)
                    .and_then(|d| self.config.account(&d))
                    .map(|a| {
                        (
                            a.feature_codes.blind_transfer.clone(),
                            a.feature_codes.attended_transfer.clone(),
                        )
                    })
                    .unwrap_or_default();
                let codes = crate::call::DtmfCodes {
                    blind: &codes.0,
                    attended: &codes.1,
                };
                self.engines.calls.on_dtmf(endpoint, digit, codes, Now::read());
            }
            Command::Calls(reply) => {
                let _ = reply.send(self.engines.calls.views(Now::read()));
            }
            Command::Chat { query, reply } => self.on_chat_query(query, reply),
            Command::ClickToCall { user, target, reply } => {
                let config = self.config.clone();
                let r = crate::config::user_named(&config.accounts, &user)
                    .map_err(|e| (404, e))
                    .and_then(|(account, u)| {
                        let devices = crate::call::user_contacts(&self.engines.registrar, account, &u.extension);
                        let click = crate::call::ClickToCall {
                            account: &account.domain,
                            user: &u.extension,
                            name: &u.display_name,
                            may_call_out: account.outbound_calls && u.outbound,
                            devices,
                            target: &target,
                        };
                        self.engines
                            .calls
                            .click_to_call(click, Now::read())
                            .map_err(|e| (409, e))
                    });
                let _ = reply.send(r);
            }
            Command::EndCall { conversation, reply } => {
                let _ = reply.send(self.engines.calls.end_call(conversation, Now::read()));
            }
            Command::TransferCall {
                conversation,
                party,
                target,
                reply,
            } => {
                let r = self
                    .engines
                    .calls
                    .transfer_partner_of(conversation, &party, target, Now::read());
                let _ = reply.send(r);
            }
            Command::Phonebook {
                domain,
                authorization,
                target,
                source,
                reply,
            } => {
                let _ = reply.send(self.phonebook(domain.as_deref(), authorization.as_deref(), &target, source));
            }
            Command::TransferAttended {
                conversation,
                consult,
                party,
                reply,
            } => {
                let r = self
                    .engines
                    .calls
                    .transfer_attended_of(conversation, consult, &party, Now::read());
                let _ = reply.send(r);
            }
            Command::HoldCall {
                conversation,
                party,
                on,
                reply,
            } => {
                let _ = reply.send(self.engines.calls.hold_partner_of(conversation, &party, on));
            }
            Command::ChatMuted { user, reply } => {
                let _ = reply.send(self.engines.chat.is_muted(&user));
            }
            Command::ChatSend { user, to, text, reply } => {
                let _ = reply.send(self.on_chat_send(&user, &to, text));
            }
            Command::Contacts {
                account,
                request,
                reply,
            } => {
                let _ = reply.send(self.on_contacts(&account, request));
            }
            Command::History {
                filter,
                visible,
                before,
                limit,
                reply,
            } => {
                let backend = self.store.backend().clone();
                tokio::task::spawn_blocking(move || {
                    let r = crate::cdr::history::page(backend.as_ref(), &filter, &*visible, before.as_deref(), limit)
                        .map_err(|e| e.to_string());
                    let _ = reply.send(r);
                });
            }
            Command::Annotate {
                id,
                visible,
                tags,
                notes,
                by,
                reply,
            } => {
                // On this task, so that two changes of one record are
                // applied one after the other.
                use crate::cdr::history::{annotate, AnnotateError};
                let now = Now::read().unix_ms;
                let r = annotate(self.store.backend().as_ref(), &id, &*visible, tags, notes, &by, now).and_then(
                    |(entry, op)| {
                        self.store.write(&[op]).map_err(|_| AnnotateError::Store)?;
                        Ok(entry)
                    },
                );
                let _ = reply.send(r);
            }
            Command::CallRecords { user, limit, reply } => {
                // Reads do not wait for the writer; redb serves them from a snapshot.
                let backend = self.store.backend().clone();
                tokio::task::spawn_blocking(move || {
                    let r = crate::cdr::read(backend.as_ref(), user.as_deref(), limit).map_err(|e| e.to_string());
                    let _ = reply.send(r);
                });
            }
        }
    }

    fn on_dialplan_action(&mut self, call: CallRef, action: Action, reply: oneshot::Sender<Reply>) {
        let now = Now::read();
        // The engine answers every action once, as an output.
        self.dialplan_replies.insert(call, reply);
        let calls = &mut self.engines.calls;
        match action {
            Action::Dial {
                targets,
                timeout_s,
                external,
                trunk,
            } => self.route_dial(call, targets, timeout_s, external, trunk, now),
            Action::Queue { number, max_wait_s } => {
                let config = self.config.clone();
                match calls.account_of(call).and_then(|d| config.account(&d)) {
                    Some(account) => self.route_queue(call, account, &number, max_wait_s, now),
                    None => self.reply_now(call, Reply::CallEnded),
                }
            }
            Action::Group(number) => {
                let config = self.config.clone();
                match calls.account_of(call).and_then(|d| config.account(&d)) {
                    Some(account) => self.route_group(call, account, &number, now),
                    None => self.reply_now(call, Reply::CallEnded),
                }
            }
            Action::AgentState { ext, set } => self.dialplan_agent_state(call, &ext, set),
            Action::Answer => calls.answer(call, now),
            Action::Playback(file) => calls.playback(call, &file, now),
            Action::Hangup(code) => calls.hangup(call, code, now),
            Action::SetCallerId { number, name } => calls.set_caller_id(call, number, name),
        }
    }

    pub(super) fn start_dialplan(&mut self, call: CallRef, account: &str, info: crate::dialplan::CallInfo) {
        let config = self.config.clone();
        let Some(acct) = config.account(account) else {
            return;
        };
        // Feature codes of users are handled here, before any dialplan.
        if info.trunk.is_none() && self.feature_code(call, acct, &info.from, &info.to) {
            return;
        }
        let path = acct.dialplan.clone();
        let plan = match self.dialplans.get(&path) {
            Ok(p) => p,
            Err(e) => {
                self.engines.calls.script_done(call, Err(e), Now::read());
                return;
            }
        };
        let limits = crate::dialplan::Limits {
            instructions: self.config.dialplan_limits.instructions,
            memory_bytes: self.config.dialplan_limits.memory_bytes,
        };
        let commands = self.commands.clone();
        let running = self.dialplans_running.clone();
        running.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.dialplan_runtime.spawn(async move {
            let (tx, mut rx) = mpsc::channel::<(Action, oneshot::Sender<Reply>)>(4);
            let forward = async {
                while let Some((action, reply)) = rx.recv().await {
                    if commands.send(Command::Dialplan { call, action, reply }).await.is_err() {
                        return;
                    }
                }
            };
            let (result, ()) = tokio::join!(crate::dialplan::run(plan, info, tx, limits), forward);
            running.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            let _ = commands.send(Command::DialplanDone { call, result }).await;
        });
    }
}

fn agent_view(aor: String, state: &crate::acd::AgentState) -> crate::control::AgentView {
    crate::control::AgentView {
        aor,
        state: state.name().to_string(),
        reason: match state {
            crate::acd::AgentState::NotReady { reason } => Some(reason.clone()),
            _ => None,
        },
    }
}
