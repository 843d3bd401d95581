//! Who is asking, and what they may see (the seed's roles): agents their
//! own things, supervisors also the members of the groups that report to
//! them, owners and admins everything of their account; nobody anything
//! of another account.

use crate::config::{Config, Role};
use crate::events::DomainEvent;
use std::collections::HashSet;

#[derive(Debug, Clone)]
pub struct Viewer {
    pub ext: String,
    pub domain: String,
    pub role: Role,
    /// Supervisors: the members of the groups that report to them.
    pub members: HashSet<String>,
}

impl Viewer {
    /// The viewer for user `aor` (`ext@domain`) as the configuration has
    /// it now (None if the user is gone).
    pub fn of(aor: &str, config: &Config) -> Option<Viewer> {
        let (ext, domain) = aor.split_once('@')?;
        let account = config.account(domain)?;
        let user = account.user(ext)?;
        let members = if user.role == Role::Supervisor {
            account
                .groups
                .iter()
                .filter(|g| g.supervisors.iter().any(|s| s == ext))
                .flat_map(|g| g.members.iter().cloned())
                .collect()
        } else {
            HashSet::new()
        };
        Some(Viewer {
            ext: ext.to_string(),
            domain: domain.to_string(),
            role: user.role,
            members,
        })
    }

    pub fn is_admin(&self) -> bool {
        matches!(self.role, Role::Owner | Role::Admin)
    }

    /// Whether the viewer may see (and act on) user `ext` of `domain`.
    pub fn sees_user(&self, domain: &str, ext: &str) -> bool {
        domain == self.domain && (self.is_admin() || ext == self.ext || self.members.contains(ext))
    }

    /// Whether the viewer sees a call between `caller` and `callee`.
    pub fn sees_call(&self, domain: &str, caller: &str, callee: &str) -> bool {
        self.sees_user(domain, caller) || self.sees_user(domain, callee)
    }

    pub fn sees_event(&self, event: &DomainEvent) -> bool {
        let user = |aor: &str| aor.split_once('@').is_some_and(|(e, d)| self.sees_user(d, e));
        match event {
            DomainEvent::Registration { aor, .. } | DomainEvent::AgentState { aor, .. } => user(aor),
            DomainEvent::LegState { account, party, .. } => self.sees_user(account, party),
            DomainEvent::ConversationEnded { account, .. } => self.is_admin() && *account == self.domain,
            DomainEvent::TrunkStatus { .. } => self.is_admin(),
            // The sender and those it is pushed to: no one else's chat, and
            // nothing for the muted.
            DomainEvent::ChatMessage {
                account,
                from,
                recipients,
                ..
            } => *account == self.domain && (*from == self.ext || recipients.contains(&self.ext)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_see_what_the_seed_says() {
        let config = Config::parse(
            std::path::Path::new("t.toml"),
            "[server]\nlisten = [\"127.0.0.1:5060\"]\n[[accounts]]\ndomain = \"a.test\"\n\
             [[accounts.users]]\nextension = \"1\"\npassword = \"x\"\nrole = \"owner\"\n\
             [[accounts.users]]\nextension = \"2\"\npassword = \"x\"\nrole = \"supervisor\"\n\
             [[accounts.users]]\nextension = \"3\"\npassword = \"x\"\n\
             [[accounts.users]]\nextension = \"4\"\npassword = \"x\"\n\
             [[accounts.groups]]\nnumber = \"20\"\nmembers = [\"3\"]\nsupervisors = [\"2\"]\n\
             [[accounts]]\ndomain = \"b.test\"\n[[accounts.users]]\nextension = \"1\"\npassword = \"x\"\nrole = \"owner\"\n",
        )
        .unwrap();
        let v = |aor| Viewer::of(aor, &config).unwrap();
        let (owner, sup, agent) = (v("1@a.test"), v("2@a.test"), v("3@a.test"));
        assert!(owner.sees_user("a.test", "4") && !owner.sees_user("b.test", "1"));
        assert!(sup.sees_user("a.test", "3") && sup.sees_user("a.test", "2") && !sup.sees_user("a.test", "4"));
        assert!(agent.sees_user("a.test", "3") && !agent.sees_user("a.test", "4"));
        let state = |aor: &str| DomainEvent::AgentState {
            aor: aor.into(),
            state: crate::events::AgentState::Ready,
        };
        assert!(sup.sees_event(&state("3@a.test")) && !sup.sees_event(&state("4@a.test")));
        assert!(!agent.sees_event(&DomainEvent::TrunkStatus {
            trunk: "t".into(),
            status: "registered".into(),
            code: None
        }));
        assert!(Viewer::of("9@a.test", &config).is_none());
    }
}
