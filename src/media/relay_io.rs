//! The relay's I/O thread: one epoll set over every relay socket, each
//! ready socket read with recvmmsg and its packets forwarded on the spot,
//! the way bench/rtp/fwd.c (the machine's floor) does it.
//!
//! Why a thread of its own and not a tokio task per call side: at 100,000
//! packets/s the runtime's waking, scheduling and polling of a task per
//! readiness is paid on every packet, and the relay shared the runtime's
//! thread with signalling. Here a readiness costs an entry in epoll_wait's
//! array.
//!
//! Sessions come and go through a command queue woken by an eventfd. Only
//! this thread touches the epoll set and the legs it relays for, so a leg
//! is never dropped while one of its packets is in hand, and events still
//! in hand for a removed leg find nothing (ids are never reused).

use super::relay::{relay_packet, EndpointShared};
use crate::recv_batch;
use foldhash::{HashMap, HashMapExt};
use std::io;
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

/// One socket the thread reads: what arrives on `recv` from the party of
/// `endpoint` goes where that endpoint is linked.
pub(super) struct Watched {
    pub recv: Arc<UdpSocket>,
    pub endpoint: Arc<EndpointShared>,
    pub rtcp: bool,
}

enum Command {
    Add(u64, Watched),
    Remove(u64),
    /// Answered once every command before it is applied (tests).
    #[cfg(test)]
    Barrier(mpsc::Sender<()>),
}

/// The epoll data of the eventfd (leg ids start at 1).
const WAKE: u64 = 0;
/// Readiness events taken per epoll_wait.
const EVENTS: usize = 256;
/// Batches read from one socket per readiness before serving the others
/// (level-triggered: what is left is reported again).
const BATCHES_PER_EVENT: usize = 4;

pub(super) struct RelayIo {
    commands: mpsc::Sender<Command>,
    wake: Arc<OwnedFd>,
    next_id: AtomicU64,
    thread: Option<JoinHandle<()>>,
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn epoll_ctl(ep: RawFd, op: libc::c_int, fd: RawFd, data: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: data,
    };
    // SAFETY: plain syscall on descriptors we own, with a valid event struct.
    check(unsafe { libc::epoll_ctl(ep, op, fd, &mut ev) }).map(|_| ())
}

impl RelayIo {
    pub fn start() -> io::Result<RelayIo> {
        // SAFETY: creating descriptors; ownership passes to OwnedFd at once.
        let ep = unsafe { OwnedFd::from_raw_fd(check(libc::epoll_create1(libc::EPOLL_CLOEXEC))?) };
        let wake = unsafe { OwnedFd::from_raw_fd(check(libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC))?) };
        epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, wake.as_raw_fd(), WAKE)?;
        let wake = Arc::new(wake);
        let (commands, queue) = mpsc::channel();
        let thread_wake = wake.clone();
        let thread = std::thread::Builder::new()
            .name("rtp-relay".into())
            .spawn(move || run(ep, &thread_wake, queue))?;
        Ok(RelayIo {
            commands,
            wake,
            next_id: AtomicU64::new(WAKE + 1),
            thread: Some(thread),
        })
    }

    /// Starts relaying `legs`; returns the ids that remove them.
    pub fn add<const N: usize>(&self, legs: [Watched; N]) -> [u64; N] {
        let ids = legs.map(|leg| {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let _ = self.commands.send(Command::Add(id, leg));
            id
        });
        self.signal();
        ids
    }

    pub fn remove(&self, ids: &[u64]) {
        for &id in ids {
            let _ = self.commands.send(Command::Remove(id));
        }
        self.signal();
    }

    /// Waits until the thread has applied every command sent before.
    #[cfg(test)]
    pub fn flush(&self) {
        let (done, wait) = mpsc::channel();
        let _ = self.commands.send(Command::Barrier(done));
        self.signal();
        let _ = wait.recv();
    }

    fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd. A full
        // counter (EAGAIN) still leaves the thread woken.
        unsafe { libc::write(self.wake.as_raw_fd(), std::ptr::from_ref(&one).cast(), 8) };
    }
}

impl Drop for RelayIo {
    fn drop(&mut self) {
        // A closed queue tells the thread to end.
        let (closed, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.commands, closed));
        self.signal();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(ep: OwnedFd, wake: &OwnedFd, queue: mpsc::Receiver<Command>) {
    let mut legs: HashMap<u64, Watched> = HashMap::new();
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENTS];
    loop {
        // SAFETY: the array outlives the call and holds EVENTS entries.
        let n = unsafe { libc::epoll_wait(ep.as_raw_fd(), events.as_mut_ptr(), EVENTS as libc::c_int, -1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            tracing::error!(error = %e, "relay epoll_wait failed; RTP relay stopped");
            return;
        }
        let mut woken = false;
        for ev in &events[..n as usize] {
            let id = ev.u64;
            if id == WAKE {
                woken = true;
            } else if let Some(leg) = legs.get(&id) {
                relay_ready(leg);
            }
        }
        if woken {
            let mut count = [0u8; 8];
            // SAFETY: reads 8 bytes into a live buffer from our eventfd.
            unsafe { libc::read(wake.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
            loop {
                match queue.try_recv() {
                    Ok(Command::Add(id, leg)) => {
                        match epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, leg.recv.as_raw_fd(), id) {
                            Ok(()) => {
                                legs.insert(id, leg);
                            }
                            Err(e) => tracing::warn!(error = %e, "relay socket not watched"),
                        }
                    }
                    Ok(Command::Remove(id)) => {
                        if let Some(leg) = legs.remove(&id) {
                            let _ = epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_DEL, leg.recv.as_raw_fd(), id);
                        }
                    }
                    #[cfg(test)]
                    Ok(Command::Barrier(done)) => {
                        let _ = done.send(());
                    }
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => return,
                }
            }
        }
    }
}

/// Reads what waits on a leg's socket and relays it.
fn relay_ready(leg: &Watched) {
    recv_batch::with_batch(|batch| {
        for _ in 0..BATCHES_PER_EVENT {
            let got = batch.recv(leg.recv.as_raw_fd()).unwrap_or(0);
            for (packet, src) in batch.datagrams() {
                relay_packet(packet, src, &leg.endpoint, leg.rtcp);
            }
            if got < recv_batch::BATCH {
                break;
            }
        }
    });
}
