use super::*;
use crate::config::Config;
use std::path::Path;

const D: &str = "pbx.test";

fn config(queue: &str) -> Config {
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:5060\"]\n[[accounts]]\ndomain = \"{D}\"\n\
         [[accounts.users]]\nextension = \"1001\"\npassword = \"x\"\n\
         [[accounts.users]]\nextension = \"1002\"\npassword = \"x\"\n\
         [[accounts.users]]\nextension = \"1003\"\npassword = \"x\"\n\
         [[accounts.queues]]\nnumber = \"3001\"\nmoh = \"sounds/moh.wav\"\n{queue}\n"
    );
    Config::parse(Path::new("t.toml"), &text).unwrap()
}

fn ready(exts: &[&str]) -> Agents {
    let mut a = Agents::new();
    for e in exts {
        a.on_event(
            &DomainEvent::Registration {
                aor: format!("{e}@{D}"),
                contacts: 1,
            },
            Instant::now(),
        );
    }
    a
}

fn offers(q: &mut Queues) -> Vec<(CallRef, Vec<String>)> {
    std::iter::from_fn(|| q.poll_output())
        .filter_map(|o| match o {
            AcdOutput::Offer { call, agents, .. } => Some((call, agents)),
            _ => None,
        })
        .collect()
}

fn ended(leg: u64) -> DomainEvent {
    DomainEvent::LegState {
        account: D.into(),
        party: String::new(),
        leg,
        conversation: 0,
        phase: LegPhase::Terminated,
        caller: None,
    }
}

/// Nine callers one after the other, each answered by the agent offered
/// and hung up a second later: who took each call.
fn nine_calls(strategy: &str) -> Vec<String> {
    let c = config(&format!(
        "members = [\"1001\", \"1002\", \"1003\"]\nstrategy = \"{strategy}\""
    ));
    let mut q = Queues::new(&c.accounts);
    let agents = ready(&["1001", "1002", "1003"]);
    let mut now = Now::at(Instant::now());
    let mut took = Vec::new();
    for call in 1..=9u64 {
        assert_eq!(q.enqueue(D, "3001", call, None, &agents, now), Ok(1));
        q.dispatch(&agents, now);
        let o = offers(&mut q);
        assert_eq!(o.len(), 1, "{o:?}");
        let agent = o[0].1[0].clone();
        let aor = format!("{agent}@{D}");
        q.offer_ended(call, &aor, OfferOutcome::Answered { leg: call * 10 }, now);
        assert!(!q.is_waiting(call));
        now.mono += Duration::from_secs(1);
        q.on_event(&ended(call * 10), now.mono);
        took.push(agent);
    }
    took
}

fn count(took: &[String], ext: &str) -> usize {
    took.iter().filter(|t| *t == ext).count()
}

#[test]
fn longest_idle_and_round_robin_spread_calls_evenly_linear_takes_the_first() {
    for strategy in ["longest_idle", "round_robin", "fewest_calls", "least_talk_time"] {
        let took = nine_calls(strategy);
        for ext in ["1001", "1002", "1003"] {
            assert_eq!(count(&took, ext), 3, "{strategy}: {took:?}");
        }
        assert_eq!(&took[..3], ["1001", "1002", "1003"], "{strategy}");
    }
    let took = nine_calls("linear");
    assert_eq!(count(&took, "1001"), 9, "{took:?}");
}

#[test]
fn ring_all_offers_every_free_member_and_tiers_come_first() {
    let c = config("members = [\"1001\", { extension = \"1002\", tier = 2 }, \"1003\"]\nstrategy = \"ring_all\"");
    let mut q = Queues::new(&c.accounts);
    let agents = ready(&["1001", "1002", "1003"]);
    let now = Now::at(Instant::now());
    q.enqueue(D, "3001", 1, None, &agents, now).unwrap();
    q.dispatch(&agents, now);
    assert_eq!(offers(&mut q), vec![(1, vec!["1001".to_string(), "1003".to_string()])]);
    // A second caller: tier 1 is ringing for the first, so tier 2 rings.
    q.enqueue(D, "3001", 2, None, &agents, now).unwrap();
    q.dispatch(&agents, now);
    assert_eq!(offers(&mut q), vec![(2, vec!["1002".to_string()])]);
    // Nobody is offered twice at once.
    q.enqueue(D, "3001", 3, None, &agents, now).unwrap();
    q.dispatch(&agents, now);
    assert!(offers(&mut q).is_empty());
}

#[test]
fn only_ready_agents_are_offered_calls() {
    let c = config("members = [\"1001\", \"1002\", \"1003\"]\nstrategy = \"linear\"");
    let mut q = Queues::new(&c.accounts);
    let mut agents = ready(&["1001", "1002"]);
    agents.set_not_ready(&format!("1001@{D}"), Some("lunch".into()));
    let now = Now::at(Instant::now());
    q.enqueue(D, "3001", 1, None, &agents, now).unwrap();
    q.dispatch(&agents, now);
    assert_eq!(
        offers(&mut q),
        vec![(1, vec!["1002".to_string()])],
        "1001 not ready, 1003 offline"
    );
}

#[test]
fn rung_out_offers_retry_after_the_pause_and_too_many_make_the_agent_not_ready() {
    let c = config("members = [\"1001\", \"1002\"]\nstrategy = \"linear\"\nretry_s = 5\nmax_no_answer = 2");
    let mut q = Queues::new(&c.accounts);
    let agents = ready(&["1001", "1002"]);
    let mut now = Now::at(Instant::now());
    let a1 = format!("1001@{D}");
    q.enqueue(D, "3001", 1, None, &agents, now).unwrap();
    q.dispatch(&agents, now);
    assert_eq!(offers(&mut q), vec![(1, vec!["1001".to_string()])]);
    q.offer_ended(1, &a1, OfferOutcome::NoAnswer, now);
    q.dispatch(&agents, now);
    assert!(offers(&mut q).is_empty(), "the retry pause");
    assert_eq!(q.poll_timeout(), Some(now.mono + Duration::from_secs(5)));
    now.mono += Duration::from_secs(5);
    q.handle_timeout(now);
    q.dispatch(&agents, now);
    assert_eq!(offers(&mut q), vec![(1, vec!["1001".to_string()])]);
    q.offer_ended(1, &a1, OfferOutcome::NoAnswer, now);
    let out: Vec<AcdOutput> = std::iter::from_fn(|| q.poll_output()).collect();
    assert_eq!(out, vec![AcdOutput::TooManyMissed { aor: a1.clone() }]);
    // A stale end (the offer is over) changes nothing.
    q.offer_ended(1, &a1, OfferOutcome::Failed, now);
    assert!(q.is_waiting(1));
}

#[test]
fn full_queues_and_queues_without_agents_refuse_and_max_wait_ends_the_wait() {
    let c = config("members = [\"1001\"]\nmax_callers = 1\nwhen_no_agents = \"refuse\"\nmax_wait_s = 30");
    let mut q = Queues::new(&c.accounts);
    let now = Now::at(Instant::now());
    assert_eq!(
        q.enqueue(D, "3001", 1, None, &Agents::new(), now),
        Err(Refusal::NoAgents)
    );
    let mut agents = ready(&["1001"]);
    agents.set_not_ready(&format!("1001@{D}"), Some("x".into()));
    assert_eq!(q.enqueue(D, "3001", 1, None, &agents, now), Err(Refusal::NoAgents));
    agents.set_not_ready(&format!("1001@{D}"), None);
    assert_eq!(q.enqueue(D, "3001", 1, None, &agents, now), Ok(1));
    assert_eq!(q.enqueue(D, "3001", 2, None, &agents, now), Err(Refusal::Full));
    let later = Now {
        mono: now.mono + Duration::from_secs(30),
        ..now
    };
    q.handle_timeout(later);
    let out: Vec<AcdOutput> = std::iter::from_fn(|| q.poll_output()).collect();
    assert_eq!(
        out,
        vec![AcdOutput::WaitedTooLong {
            call: 1,
            domain: D.into(),
            queue: "3001".into(),
            overflow: None,
        }]
    );
    assert!(!q.is_waiting(1));
    assert_eq!(q.views(&agents, later)[0].timed_out, 1);
}

#[test]
fn views_count_answered_abandoned_and_the_service_level() {
    let c = config("members = [\"1001\"]\nservice_level_s = 10");
    let mut q = Queues::new(&c.accounts);
    let agents = ready(&["1001"]);
    let now = Now::at(Instant::now());
    let a1 = format!("1001@{D}");
    for call in 1..=3 {
        q.enqueue(D, "3001", call, None, &agents, now).unwrap();
    }
    let v = &q.views(&agents, now)[0];
    assert_eq!((v.waiting, v.service_level_pct), (3, 100));
    q.offer_ended(1, &a1, OfferOutcome::Answered { leg: 5 }, now);
    let late = Now {
        mono: now.mono + Duration::from_secs(11),
        ..now
    };
    q.offer_ended(2, &a1, OfferOutcome::Answered { leg: 6 }, late);
    q.abandoned(3, late);
    let v = &q.views(&agents, late)[0];
    assert_eq!((v.waiting, v.answered, v.abandoned, v.service_level_pct), (0, 2, 1, 50));
    assert_eq!(v.agents.get("ready"), Some(&1));
}

#[test]
fn callers_of_a_removed_queue_leave_it_for_its_overflow_and_others_stay() {
    let c = config("members = [\"1001\"]\noverflow = \"1002\"");
    let mut q = Queues::new(&c.accounts);
    let agents = Agents::new();
    let now = Now::at(Instant::now());
    q.enqueue(D, "3001", 1, None, &agents, now).unwrap();
    // Reloaded with the same queue: the caller still waits.
    q.reconfigure(&c.accounts);
    assert!(q.is_waiting(1) && q.poll_output().is_none());
    // Reloaded without it: the caller leaves for the overflow.
    let without = Config::parse(
        Path::new("t.toml"),
        &format!("[server]\nlisten = [\"127.0.0.1:5060\"]\n[[accounts]]\ndomain = \"{D}\"\n"),
    )
    .unwrap();
    q.reconfigure(&without.accounts);
    assert!(!q.is_waiting(1));
    assert_eq!(
        q.poll_output(),
        Some(AcdOutput::WaitedTooLong {
            call: 1,
            domain: D.into(),
            queue: "3001".into(),
            overflow: Some(crate::config::Destination::Number("1002".into())),
        })
    );
}
