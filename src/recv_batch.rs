//! The receive path of the RTP relay and of the SIP UDP transport: every
//! datagram waiting on a socket, up to [`BATCH`], read with one
//! `recvmmsg(2)` (Linux).
//!
//! A batch short of full means the socket's queue is empty, so the caller
//! need not read again to find nothing (one syscall a packet instead of
//! two). The relay reads into a buffer per thread, so no leg carries a
//! receive buffer of its own.

use std::cell::RefCell;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Datagrams read at most per call.
pub const BATCH: usize = 8;
/// The relay's datagrams: longer ones are cut (RTP packets are ~200 bytes).
const RTP_DATAGRAM: usize = 2048;

pub struct Batch {
    /// [`BATCH`] buffers of `datagram` bytes, end to end.
    bufs: Box<[u8]>,
    datagram: usize,
    addrs: [libc::sockaddr_storage; BATCH],
    lens: [usize; BATCH],
    count: usize,
}

thread_local! {
    static SCRATCH: RefCell<Batch> = RefCell::new(Batch::new(RTP_DATAGRAM));
}

/// Runs `f` with this thread's batch buffer, emptied. `f` must not call
/// `with_batch` itself.
pub fn with_batch<R>(f: impl FnOnce(&mut Batch) -> R) -> R {
    SCRATCH.with(|s| {
        let mut batch = s.borrow_mut();
        batch.count = 0;
        f(&mut batch)
    })
}

impl Batch {
    /// Room for [`BATCH`] datagrams of up to `datagram` bytes each; a
    /// longer one is cut to that length.
    pub fn new(datagram: usize) -> Batch {
        assert!(datagram > 0, "a batch needs room for a byte");
        Batch {
            bufs: vec![0; datagram * BATCH].into_boxed_slice(),
            datagram,
            // SAFETY: sockaddr_storage is plain data; all zeroes is valid.
            addrs: unsafe { std::mem::zeroed() },
            lens: [0; BATCH],
            count: 0,
        }
    }

    /// Reads what the non-blocking socket `fd` holds, up to [`BATCH`]
    /// datagrams; returns how many (an error if none: `WouldBlock` when the
    /// queue was empty).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.count = 0;
        // SAFETY: all-zero iovec and mmsghdr are valid (null pointers, zero
        // lengths); each is pointed at this batch's buffers below.
        let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (i, buf) in self.bufs.chunks_exact_mut(self.datagram).enumerate() {
            iov[i].iov_base = buf.as_mut_ptr().cast();
            iov[i].iov_len = self.datagram;
            let hdr = &mut msgs[i].msg_hdr;
            hdr.msg_name = std::ptr::from_mut(&mut self.addrs[i]).cast();
            hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_iov = &mut iov[i];
            hdr.msg_iovlen = 1;
        }
        // SAFETY: `msgs` holds BATCH headers whose buffers and name fields
        // point into `self` and `iov`, which outlive the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for (len, msg) in self.lens.iter_mut().zip(&msgs[..n]) {
            *len = msg.msg_len as usize;
        }
        self.count = n;
        Ok(n)
    }

    /// The datagrams read, with their sources.
    pub fn datagrams(&self) -> impl Iterator<Item = (&[u8], SocketAddr)> + '_ {
        (0..self.count).filter_map(|i| {
            let start = i * self.datagram;
            Some((&self.bufs[start..start + self.lens[i]], socket_addr(&self.addrs[i])?))
        })
    }
}

fn socket_addr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a = unsafe { &*std::ptr::from_ref(s).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a = unsafe { &*std::ptr::from_ref(s).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn reads_what_is_queued_with_sources_then_would_block() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..3u8 {
            tx.send_to(&[i; 5], rx.local_addr().unwrap()).unwrap();
        }
        with_batch(|b| {
            assert_eq!(b.recv(rx.as_raw_fd()).unwrap(), 3);
            let got: Vec<_> = b.datagrams().map(|(d, src)| (d.to_vec(), src)).collect();
            let from = tx.local_addr().unwrap();
            assert_eq!(got, vec![(vec![0; 5], from), (vec![1; 5], from), (vec![2; 5], from)]);
            let e = b.recv(rx.as_raw_fd()).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
            assert_eq!(b.datagrams().count(), 0);
        });
        // More than a batch: the first read returns a full one.
        for i in 0..(BATCH as u8 + 2) {
            tx.send_to(&[i], rx.local_addr().unwrap()).unwrap();
        }
        with_batch(|b| {
            assert_eq!(b.recv(rx.as_raw_fd()).unwrap(), BATCH);
            assert_eq!(b.recv(rx.as_raw_fd()).unwrap(), 2);
        });
    }
}
