//! Dialplan files: read and compiled on first use, re-read when the file
//! changes on disk (checked at each new call) or on SIGHUP. A new version
//! that does not compile is refused and the previous one kept; calls in
//! progress keep the version they started with (they hold an `Arc`).

use super::{compile, Dialplan, DialplanError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

struct Entry {
    plan: Arc<Dialplan>,
    modified: Option<SystemTime>,
}

#[derive(Default)]
pub struct DialplanLibrary {
    plans: HashMap<PathBuf, Entry>,
}

impl DialplanLibrary {
    pub fn new() -> DialplanLibrary {
        DialplanLibrary::default()
    }

    /// The current version of the dialplan at `path`.
    pub fn get(&mut self, path: &Path) -> Result<Arc<Dialplan>, DialplanError> {
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        if let Some(e) = self.plans.get(path) {
            if e.modified == modified {
                return Ok(e.plan.clone());
            }
        }
        match load(path) {
            Ok(plan) => {
                if self.plans.contains_key(path) {
                    tracing::info!(dialplan = %path.display(), "dialplan reloaded");
                }
                let plan = Arc::new(plan);
                self.plans.insert(
                    path.to_path_buf(),
                    Entry {
                        plan: plan.clone(),
                        modified,
                    },
                );
                Ok(plan)
            }
            Err(e) => match self.plans.get_mut(path) {
                Some(old) => {
                    tracing::error!(error = %e, "dialplan change refused; keeping the previous version");
                    old.modified = modified; // do not retry until the file changes again
                    Ok(old.plan.clone())
                }
                None => Err(e),
            },
        }
    }

    /// Forgets cached versions so the next call re-reads every file.
    pub fn invalidate(&mut self) {
        for e in self.plans.values_mut() {
            e.modified = None;
        }
    }
}

/// Reads and compiles a dialplan file.
pub fn load(path: &Path) -> Result<Dialplan, DialplanError> {
    let name = path.display().to_string();
    let source =
        std::fs::read_to_string(path).map_err(|e| DialplanError::Script(format!("{name}: cannot read: {e}")))?;
    compile(&name, &source)?;
    Ok(Dialplan::new(name, source))
}
