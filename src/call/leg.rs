//! A leg: one dialog with one party, inbound or outbound, with its own
//! media endpoint and state (RFC 3261 §12 for the dialog, §13 for the
//! INVITE that makes it).

use super::bridge::BridgeId;
use super::CallRef;
use crate::events::LegPhase;
use crate::media::sdp::MediaInfo;
use crate::media::EndpointId;
use crate::sip::dialog::{tag_in, Dialog};
use crate::sip::transaction::{Peer, TxKey};
use crate::sip::SipMessage;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LegId(pub u64);

impl LegId {
    pub fn endpoint(self) -> EndpointId {
        EndpointId(self.0)
    }
}

/// Who sent the INVITE that made the leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The party called us: we are the UAS of its dialog.
    Inbound,
    /// We called the party: we are the UAC.
    Outbound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegState {
    /// INVITE sent or received, no provisional response with a tag yet.
    Trying,
    /// Ringing (outbound: a 1xx came; inbound: we sent one).
    Early,
    /// 2xx sent or received; `acked` once the ACK for our 2xx came.
    Answered { acked: bool },
    /// Outbound only: CANCEL sent, waiting for the INVITE to finish (a 2xx
    /// that crosses the CANCEL is ACKed and hung up).
    Cancelling,
}

impl LegState {
    pub fn phase(self) -> LegPhase {
        match self {
            LegState::Trying => LegPhase::Trying,
            LegState::Early => LegPhase::Early,
            LegState::Answered { .. } => LegPhase::Confirmed,
            LegState::Cancelling => LegPhase::Terminated,
        }
    }

    pub fn is_answered(self) -> bool {
        matches!(self, LegState::Answered { .. })
    }

    pub fn is_pending(self) -> bool {
        matches!(self, LegState::Trying | LegState::Early)
    }
}

/// The server side of an inbound leg's INVITE.
#[derive(Debug)]
pub struct Uas {
    pub key: TxKey,
    /// Where responses go.
    pub reply_peer: Peer,
}

/// A 2xx we sent to an INVITE or re-INVITE of the party: the transaction
/// ends with it, so we retransmit it ourselves until the ACK (§13.3.1.4).
#[derive(Debug)]
pub struct Unacked {
    pub resp: SipMessage,
    pub to: Peer,
    pub interval: Duration,
    /// CSeq number of the INVITE it answers (its ACK carries the same).
    pub cseq: u32,
}

/// An outbound leg through a trunk: the credentials for the provider's
/// challenge, answered once per leg.
#[derive(Debug, Clone)]
pub struct TrunkLeg {
    pub name: String,
    /// Only challenges of this realm are answered.
    pub realm: Option<String>,
    pub auth_username: String,
    pub password: String,
    pub answered: bool,
}

#[derive(Debug)]
pub struct Leg {
    pub id: LegId,
    /// Our tag in its dialog (ours from the start, never changes).
    pub local_tag: String,
    pub conversation: CallRef,
    /// The extension (or number) of the party this leg faces.
    pub party: String,
    pub direction: Direction,
    pub dialog: Dialog,
    pub state: LegState,
    /// The INVITE that made the leg: the party's, or ours.
    pub invite: SipMessage,
    /// Inbound legs: their INVITE's server transaction.
    pub uas: Option<Uas>,
    /// Our 2xx waiting for its ACK.
    pub unacked: Option<Unacked>,
    /// The party's media as its last SDP gave it.
    pub remote_media: Option<MediaInfo>,
    /// Our relay endpoint's address, which the party sends to.
    pub local_media: SocketAddr,
    /// The last SDP we sent the party (our answer to its INVITE, our
    /// offer, or a relayed one).
    pub local_sdp: Option<bytes::Bytes>,
    /// The party's SDP answer to our INVITE (outbound legs).
    pub remote_sdp: Option<bytes::Bytes>,
    /// The party put the call on hold (a re-INVITE we answered ourselves):
    /// the other party hears music meanwhile.
    pub holding: bool,
    /// The last DTMF digits the party sent (RFC 4733), for feature codes.
    pub dtmf: String,
    pub bridge: Option<BridgeId>,
    pub start_ms: u64,
    pub answer_ms: Option<u64>,
    /// Set for legs to a provider.
    pub trunk: Option<TrunkLeg>,
}

impl Leg {
    /// Whether a request received in dialog (Call-ID, our tag, the party's
    /// tag) belongs to this leg: all three match (§12.2.2).
    pub fn matches(&self, call_id: &str, local_tag: &str, remote_tag: &str) -> bool {
        self.dialog.call_id == call_id
            && self.local_tag == local_tag
            && tag_in(&self.dialog.remote).unwrap_or("") == remote_tag
    }

    /// Whether the party's last SDP put the call on hold (sendonly,
    /// recvonly, inactive, or no address): it may send no RTP meanwhile.
    pub fn on_hold(&self) -> bool {
        self.remote_media
            .as_ref()
            .is_some_and(|m| m.rtp.is_none() || m.direction != crate::media::sdp::Direction::SendRecv)
    }

    /// Payload type to play prompts with: PCMU if the party offered it,
    /// else PCMA.
    pub fn prompt_payload_type(&self) -> u8 {
        match &self.remote_media {
            Some(m) if !m.payload_types.contains(&0) => 8,
            _ => 0,
        }
    }
}
