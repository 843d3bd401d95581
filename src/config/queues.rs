//! Queues, ring-group settings and feature codes of an account, checked
//! once: members are users of the account, numbers are not used twice,
//! music files are readable 8 kHz WAVs, destinations exist.

use super::schema::{DestinationSection, FeatureCodesSection, GroupSection, MemberSection, QueueSection};
use super::{Account, Validator};
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

/// How a queue picks the agents a waiting caller is offered to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueStrategy {
    /// Every free member rings; the first to answer takes the call.
    RingAll,
    /// The member whose last queue call ended longest ago.
    LongestIdle,
    /// Members in turn, remembering where it stopped.
    RoundRobin,
    /// The member who answered the fewest queue calls.
    FewestCalls,
    /// The member with the least talk time on queue calls.
    LeastTalkTime,
    Random,
    /// Always the first free member in the list.
    Linear,
}

impl QueueStrategy {
    fn parse(s: &str) -> Option<QueueStrategy> {
        Some(match s {
            "ring_all" => QueueStrategy::RingAll,
            "longest_idle" => QueueStrategy::LongestIdle,
            "round_robin" => QueueStrategy::RoundRobin,
            "fewest_calls" => QueueStrategy::FewestCalls,
            "least_talk_time" => QueueStrategy::LeastTalkTime,
            "random" => QueueStrategy::Random,
            "linear" => QueueStrategy::Linear,
            _ => return None,
        })
    }
}

/// How a ring group rings its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RingStrategy {
    Simultaneous,
    Sequential,
    Random,
}

/// Where a call goes when a queue or group gives up on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A user, group, queue or remote extension of the account.
    Number(String),
    /// Hang up with this SIP status.
    Code(u16),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMember {
    pub extension: String,
    /// Lower tiers are offered first.
    pub tier: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    pub number: String,
    pub name: String,
    pub members: Vec<QueueMember>,
    pub strategy: QueueStrategy,
    pub agent_timeout: Duration,
    pub retry: Duration,
    pub max_wait: Option<Duration>,
    pub overflow: Option<Destination>,
    pub max_callers: Option<usize>,
    /// Refuse callers when no member is logged in.
    pub refuse_without_agents: bool,
    pub moh: PathBuf,
    /// The after-call-work limit, when switched on.
    pub acw_limit: Option<Duration>,
    pub max_no_answer: u32,
    pub service_level: Duration,
}

/// A group's ring settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRing {
    pub strategy: RingStrategy,
    pub member_timeout: Duration,
    pub ring_timeout: Duration,
    pub no_answer: Option<Destination>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureCodes {
    pub ready: String,
    pub not_ready: String,
    pub end_acw: String,
    pub listen: String,
    pub whisper: String,
    pub barge: String,
    pub blind_transfer: String,
    pub attended_transfer: String,
}

/// The music file used when a queue names none.
pub const DEFAULT_MOH: &str = "sounds/moh.wav";

impl Validator<'_> {
    pub(super) fn group_ring(&mut self, g: &GroupSection) -> GroupRing {
        let strategy = match g.strategy.as_ref().map(|s| (s.get_ref().as_str(), s.span())) {
            None | Some(("simultaneous", _)) => RingStrategy::Simultaneous,
            Some(("sequential", _)) => RingStrategy::Sequential,
            Some(("random", _)) => RingStrategy::Random,
            Some((other, span)) => {
                self.error(
                    span,
                    format!(
                        "unknown group strategy {other:?}: expected \"simultaneous\", \"sequential\" or \"random\""
                    ),
                );
                RingStrategy::Simultaneous
            }
        };
        GroupRing {
            strategy,
            member_timeout: Duration::from_secs(g.member_timeout_s.max(1)),
            ring_timeout: Duration::from_secs(g.ring_timeout_s.max(1)),
            no_answer: g.no_answer.as_ref().and_then(|d| self.destination(d)),
        }
    }

    /// `calls.hold_music`, checked like a queue's music.
    pub(super) fn hold_music(&mut self, raw: Option<&Spanned<String>>) -> PathBuf {
        let Some(m) = raw else {
            return PathBuf::from(DEFAULT_MOH);
        };
        let path = PathBuf::from(m.get_ref());
        if let Err(e) = crate::media::playback::load_wav(&path) {
            self.error(m.span(), format!("hold music: {e}"));
        }
        path
    }

    pub(super) fn feature_codes(&mut self, raw: FeatureCodesSection) -> FeatureCodes {
        FeatureCodes {
            ready: raw.ready,
            not_ready: raw.not_ready,
            end_acw: raw.end_acw,
            listen: raw.listen,
            whisper: raw.whisper,
            barge: raw.barge,
            blind_transfer: raw.blind_transfer,
            attended_transfer: raw.attended_transfer,
        }
    }

    fn destination(&mut self, d: &Spanned<DestinationSection>) -> Option<Destination> {
        match d.get_ref() {
            DestinationSection::Code(c) => match u16::try_from(*c) {
                Ok(code) if (400..=699).contains(&code) => Some(Destination::Code(code)),
                _ => {
                    self.error(d.span(), format!("{c} is not a SIP error status (400-699)"));
                    None
                }
            },
            DestinationSection::Number(n) => Some(Destination::Number(n.trim().to_string())),
        }
    }

    /// An account's queues (its users and groups are known already).
    pub(super) fn queues(&mut self, raw: Vec<QueueSection>, account: &Account) -> Vec<Queue> {
        let mut out: Vec<Queue> = Vec::new();
        for q in raw {
            let number = q.number.get_ref().trim().to_string();
            let taken = account.user(&number).is_some()
                || account.group(&number).is_some()
                || out.iter().any(|o| o.number == number);
            if number.is_empty() || taken {
                self.error(
                    q.number.span(),
                    format!(
                        "queue number {number:?} is empty or already used in account {:?}",
                        account.domain
                    ),
                );
                continue;
            }
            let mut members: Vec<QueueMember> = Vec::new();
            for m in &q.members {
                let (extension, tier) = match m.get_ref() {
                    MemberSection::Extension(e) => (e.trim().to_string(), 1),
                    MemberSection::Tiered(t) => (t.extension.trim().to_string(), t.tier),
                };
                if account.user(&extension).is_none() {
                    self.error(
                        m.span(),
                        format!("queue {number:?} names unknown extension {extension:?}"),
                    );
                } else if members.iter().any(|x| x.extension == extension) {
                    self.error(m.span(), format!("queue {number:?} lists {extension:?} twice"));
                } else {
                    members.push(QueueMember { extension, tier });
                }
            }
            let strategy = match &q.strategy {
                None => QueueStrategy::LongestIdle,
                Some(s) => QueueStrategy::parse(s.get_ref()).unwrap_or_else(|| {
                    self.error(
                        s.span(),
                        format!(
                            "unknown queue strategy {:?}: expected ring_all, longest_idle, round_robin, fewest_calls, least_talk_time, random or linear",
                            s.get_ref()
                        ),
                    );
                    QueueStrategy::LongestIdle
                }),
            };
            let refuse_without_agents = match q.when_no_agents.as_ref().map(|w| (w.get_ref().as_str(), w.span())) {
                None | Some(("wait", _)) => false,
                Some(("refuse", _)) => true,
                Some((other, span)) => {
                    self.error(
                        span,
                        format!("when_no_agents {other:?}: expected \"wait\" or \"refuse\""),
                    );
                    false
                }
            };
            let moh = match &q.moh {
                Some(m) => {
                    let path = PathBuf::from(m.get_ref());
                    if let Err(e) = crate::media::playback::load_wav(&path) {
                        self.error(m.span(), format!("queue {number:?} music: {e}"));
                    }
                    path
                }
                None => PathBuf::from(DEFAULT_MOH),
            };
            out.push(Queue {
                name: if q.name.is_empty() { number.clone() } else { q.name },
                number,
                members,
                strategy,
                agent_timeout: Duration::from_secs(q.agent_timeout_s.max(1)),
                retry: Duration::from_secs(q.retry_s),
                max_wait: q.max_wait_s.map(Duration::from_secs),
                overflow: q.overflow.as_ref().and_then(|d| self.destination(d)),
                max_callers: q.max_callers,
                refuse_without_agents,
                moh,
                acw_limit: q.acw_limit_enabled.then(|| Duration::from_secs(q.acw_limit_s)),
                max_no_answer: q.max_no_answer,
                service_level: Duration::from_secs(q.service_level_s),
            });
        }
        out
    }

    /// Overflow and no-answer destinations name a number of the account
    /// (checked once everything of the account is known).
    pub(super) fn check_destinations(&mut self, account: &Account, spans: &[(std::ops::Range<usize>, String)]) {
        for (span, number) in spans {
            let known = account.user(number).is_some()
                || account.group(number).is_some()
                || account.queue(number).is_some()
                || account.remote_extension(number).is_some();
            if !known {
                self.error(
                    span.clone(),
                    format!("destination {number:?} is no user, group, queue or remote extension of the account"),
                );
            }
        }
    }
}

/// The spans and numbers of destinations written as numbers.
pub(super) fn destination_numbers<'a>(
    all: impl Iterator<Item = &'a Spanned<DestinationSection>>,
) -> Vec<(std::ops::Range<usize>, String)> {
    all.filter_map(|d| match d.get_ref() {
        DestinationSection::Number(n) => Some((d.span(), n.trim().to_string())),
        DestinationSection::Code(_) => None,
    })
    .collect()
}
