//! Bridges: sets of legs whose media is joined, and the operations every
//! later feature is written with: bridge two legs, park a leg (alone,
//! hearing a source or silence), move a leg to another bridge while
//! everyone stays up.
//!
//! Media follows the bridge: two talking legs are two one-way relay links
//! (packets forwarded untouched, the fast path); a bridge of one leg does
//! not exist (the leg is parked); any other bridge (listen or whisper
//! members, a third talker) is mixed: each member hears the talkers but
//! itself, and a whisperer is heard by its target only. Only relay links
//! change, never the addresses the parties were given, so no re-INVITE is
//! needed.

use super::leg::LegId;
use super::CallEngine;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BridgeId(pub u64);

/// What a leg does in a bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Hears everyone who talks, is heard by everyone.
    Talk,
    /// Hears the talkers, is heard by nobody (a supervisor listening).
    Listen,
    /// Hears the talkers, is heard only by this leg (coaching an agent).
    Whisper(LegId),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bridge {
    pub id: BridgeId,
    pub members: Vec<(LegId, Role)>,
}

impl Bridge {
    pub fn talkers(&self) -> impl Iterator<Item = LegId> + '_ {
        self.members.iter().filter(|(_, r)| *r == Role::Talk).map(|(l, _)| *l)
    }
}

/// What a parked leg hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Silence,
    /// An 8 kHz mono WAV file, played once.
    Prompt(String),
    /// An 8 kHz mono WAV file, looped (music on hold).
    Music(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BridgeError {
    #[error("no such leg")]
    NoLeg,
    #[error("no such bridge")]
    NoBridge,
    #[error("{0}")]
    Media(String),
}

impl CallEngine {
    pub fn bridge(&self, id: BridgeId) -> Option<&Bridge> {
        self.bridges.get(&id)
    }

    pub fn bridge_of(&self, leg: LegId) -> Option<BridgeId> {
        self.legs.get(&leg)?.bridge
    }

    /// Joins `a` and `b` talking in a new bridge; each leaves the bridge
    /// it was in first.
    pub fn bridge_legs(&mut self, a: LegId, b: LegId) -> Result<BridgeId, BridgeError> {
        if !self.legs.contains_key(&a) || !self.legs.contains_key(&b) {
            return Err(BridgeError::NoLeg);
        }
        if let Some(shared) = self.legs[&a].bridge.filter(|x| self.legs[&b].bridge == Some(*x)) {
            return Ok(shared);
        }
        let id = BridgeId(self.next_id());
        self.bridges.insert(
            id,
            Bridge {
                id,
                members: Vec::new(),
            },
        );
        self.join(a, id, Role::Talk)?;
        self.join(b, id, Role::Talk)?;
        Ok(id)
    }

    /// Adds `leg` to bridge `to` with `role`, taking it out of the bridge
    /// it was in; both bridges' media are joined anew.
    pub fn join(&mut self, leg: LegId, to: BridgeId, role: Role) -> Result<(), BridgeError> {
        if !self.bridges.contains_key(&to) {
            return Err(BridgeError::NoBridge);
        }
        self.leave(leg)?;
        self.bridges.get_mut(&to).expect("checked").members.push((leg, role));
        self.legs.get_mut(&leg).expect("checked by leave").bridge = Some(to);
        self.relink(to);
        Ok(())
    }

    /// Moves a talking leg to another bridge (a transfer's last step).
    pub fn move_leg(&mut self, leg: LegId, to: BridgeId) -> Result<(), BridgeError> {
        self.join(leg, to, Role::Talk)
    }

    /// Takes `leg` out of its bridge and lets it hear `source` alone.
    pub fn park(&mut self, leg: LegId, source: Source) -> Result<(), BridgeError> {
        self.leave(leg)?;
        let (file, looped) = match source {
            Source::Silence => {
                self.media.stop_sound(leg.endpoint());
                return Ok(());
            }
            Source::Prompt(file) => (file, false),
            Source::Music(file) => (file, true),
        };
        let pt = self.legs[&leg].prompt_payload_type();
        self.media
            .play(leg.endpoint(), &file, pt, looped)
            .map_err(BridgeError::Media)
    }

    /// Takes `leg` out of its bridge and stops relaying its packets; a
    /// bridge left with one leg is removed (that leg is parked, silent).
    pub(super) fn leave(&mut self, leg: LegId) -> Result<(), BridgeError> {
        let l = self.legs.get_mut(&leg).ok_or(BridgeError::NoLeg)?;
        let Some(old) = l.bridge.take() else {
            return Ok(());
        };
        self.media.unlink(leg.endpoint());
        if let Some(b) = self.bridges.get_mut(&old) {
            b.members.retain(|(m, _)| *m != leg);
            if b.members.len() > 1 {
                self.relink(old);
                return Ok(());
            }
            // A bridge left with one leg is gone: that leg is parked.
            self.media.unmix(old.0);
            if let Some(b) = self.bridges.remove(&old) {
                for (alone, _) in b.members {
                    self.media.unlink(alone.endpoint());
                    if let Some(l) = self.legs.get_mut(&alone) {
                        l.bridge = None;
                    }
                }
            }
        }
        Ok(())
    }

    /// Sets the relay links of a bridge's members from its roles.
    pub(super) fn relink(&mut self, id: BridgeId) {
        let Some(b) = self.bridges.get(&id) else { return };
        let talkers: Vec<LegId> = b.talkers().collect();
        for (leg, _) in &b.members {
            self.media.unlink(leg.endpoint());
        }
        if talkers.len() == 2 && b.members.len() == 2 {
            self.media.unmix(id.0);
            self.media.link(talkers[0].endpoint(), talkers[1].endpoint());
            self.media.link(talkers[1].endpoint(), talkers[0].endpoint());
            return;
        }
        let members: Vec<(crate::media::EndpointId, Vec<crate::media::EndpointId>, u8)> = b
            .members
            .iter()
            .map(|(leg, _)| {
                let hears = b
                    .members
                    .iter()
                    .filter(|(other, role)| other != leg && (*role == Role::Talk || *role == Role::Whisper(*leg)))
                    .map(|(other, _)| other.endpoint())
                    .collect();
                let pt = self.legs.get(leg).map_or(0, |l| l.prompt_payload_type());
                (leg.endpoint(), hears, pt)
            })
            .collect();
        self.media.mix(id.0, &members);
    }

    /// The monitors of `leg`'s bridge: members that listen or whisper.
    pub(super) fn monitors_of(&self, leg: LegId) -> Vec<LegId> {
        let Some(b) = self
            .legs
            .get(&leg)
            .and_then(|l| l.bridge)
            .and_then(|b| self.bridges.get(&b))
        else {
            return Vec::new();
        };
        b.members
            .iter()
            .filter(|(_, r)| *r != Role::Talk)
            .map(|(l, _)| *l)
            .collect()
    }
}
