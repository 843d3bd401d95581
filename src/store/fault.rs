//! Fault injection for tests: makes every store write fail, to show that
//! memory and disk never disagree after a failed write. Only the control
//! socket of a daemon started with `SWITCHBOARD_FAULT_INJECTION` set can
//! switch it on (`fault store-fail on|off`).

use std::sync::atomic::{AtomicBool, Ordering};

static FAILING: AtomicBool = AtomicBool::new(false);

pub fn set_failing(on: bool) {
    FAILING.store(on, Ordering::Relaxed);
}

pub fn failing() -> bool {
    FAILING.load(Ordering::Relaxed)
}
