//! Listening sockets: one `SO_REUSEPORT` socket per worker, all on one port,
//! so the kernel spreads connections over the workers without a shared queue.
//!
//! `SO_REUSEPORT` would also let a second process of the same user join the
//! port, and the kernel would then split connections between two servers
//! with different stores. So the group is kept to this process's workers
//! (see docs/architecture.md, "One server per address"):
//! - before binding, a probe socket without `SO_REUSEPORT` is bound to the
//!   address: if anything listens there, it fails and the server refuses to
//!   start without ever having joined the other's group;
//! - after binding, the process's own listeners must be the only listening
//!   sockets on that port (read from `/proc/net/tcp{,6}`): this closes the
//!   race of two servers started at the same moment, as whichever looks
//!   second sees the other.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

use socket2::{Domain, Protocol, Socket, Type};

const BACKLOG: i32 = 4096;

fn new_socket(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    Ok(socket)
}

fn bind_one(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = new_socket(addr)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// The error every "someone else serves this address" case ends in.
fn in_use(addr: SocketAddr) -> io::Error {
    io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("address {addr} is already in use by another process"),
    )
}

/// Binds `count` listeners on `addr`. With port 0 the first one picks the
/// port and the others join it. Fails with `ErrorKind::AddrInUse` when
/// another process listens on the address.
pub fn bind_listeners(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let named = |error: io::Error| match error.kind() {
        io::ErrorKind::AddrInUse => in_use(addr),
        _ => error,
    };
    if addr.port() != 0 {
        // Without SO_REUSEPORT this bind fails if any socket listens on the
        // address, whoever owns it; the probe is closed at once.
        new_socket(addr)?.bind(&addr.into()).map_err(named)?;
    }
    let first = bind_one(addr).map_err(named)?;
    let bound = first.local_addr()?;
    let mut listeners = Vec::with_capacity(count);
    listeners.push(first);
    for _ in 1..count {
        listeners.push(bind_one(bound).map_err(named)?);
    }
    if shared_with_another_socket(bound, &listeners) {
        // Dropping ours leaves the other server as it was.
        return Err(in_use(addr));
    }
    Ok(listeners)
}

/// Whether a listening socket other than `ours` is on `bound`'s port, on
/// the same address or a wildcard one. Unknown (no `/proc`) counts as no:
/// the probe before binding has then done what it could.
fn shared_with_another_socket(bound: SocketAddr, ours: &[std::net::TcpListener]) -> bool {
    let mut inodes = Vec::with_capacity(ours.len());
    for listener in ours {
        match std::fs::metadata(format!("/proc/self/fd/{}", listener.as_raw_fd())) {
            Ok(meta) => inodes.push(meta.ino()),
            Err(error) => {
                tracing::debug!(%error, "cannot tell the listeners' inodes; skipping the check");
                return false;
            }
        }
    }
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        let Ok(text) = std::fs::read_to_string(table) else {
            return false;
        };
        listening_sockets(&text).any(|(addr, inode)| {
            addr.port() == bound.port()
                && overlaps(addr.ip(), bound.ip())
                && !inodes.contains(&inode)
        })
    })
}

/// TCP state `LISTEN` in `/proc/net/tcp`.
const TCP_LISTEN: &str = "0A";

/// The listening sockets of a `/proc/net/tcp` or `/proc/net/tcp6` table:
/// local address and inode.
fn listening_sockets(table: &str) -> impl Iterator<Item = (SocketAddr, u64)> + '_ {
    table.lines().skip(1).filter_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 10 || fields[3] != TCP_LISTEN {
            return None;
        }
        let (ip, port) = fields[1].split_once(':')?;
        let port = u16::from_str_radix(port, 16).ok()?;
        let inode = fields[9].parse().ok()?;
        Some((SocketAddr::new(proc_ip(ip)?, port), inode))
    })
}

/// An address as `/proc/net/tcp{,6}` writes it: 32-bit words in hex, each
/// in the machine's byte order.
fn proc_ip(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| {
        let text = hex.get(i * 8..i * 8 + 8)?;
        u32::from_str_radix(text, 16).ok().map(u32::to_ne_bytes)
    };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut octets = [0u8; 16];
            for i in 0..4 {
                octets[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        _ => None,
    }
}

/// Whether connections to one address could reach a socket bound to the
/// other: the same address (an IPv4-mapped IPv6 one included), or either
/// one a wildcard.
fn overlaps(a: IpAddr, b: IpAddr) -> bool {
    let plain = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let (a, b) = (plain(a), plain(b));
    a == b || a.is_unspecified() || b.is_unspecified()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_net_tcp() {
        // As Linux writes it on a little-endian machine.
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0 100 0 0 10 0\n   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000  1000        0 4243 1 0 100 0 0 10 0\n";
        if cfg!(target_endian = "little") {
            let found: Vec<_> = listening_sockets(table).collect();
            assert_eq!(found, vec![("127.0.0.1:8080".parse().unwrap(), 4242)]);
        }
        let six = "  sl  local_address                         remote_address                        st\n   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 77 1\n";
        let found: Vec<_> = listening_sockets(six).collect();
        assert_eq!(found, vec![("[::]:8080".parse().unwrap(), 77)]);
    }

    #[test]
    fn wildcards_and_mapped_addresses_overlap() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(overlaps(ip("127.0.0.1"), ip("127.0.0.1")));
        assert!(overlaps(ip("0.0.0.0"), ip("127.0.0.1")));
        assert!(overlaps(ip("::"), ip("127.0.0.1")));
        assert!(overlaps(ip("::ffff:127.0.0.1"), ip("127.0.0.1")));
        assert!(!overlaps(ip("127.0.0.2"), ip("127.0.0.1")));
    }

    #[test]
    fn a_second_binding_of_a_served_address_is_refused() {
        let ours = bind_listeners("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let addr = ours[0].local_addr().unwrap();
        for listener in &ours[1..] {
            assert_eq!(listener.local_addr().unwrap(), addr);
        }
        let error = bind_listeners(addr, 2).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AddrInUse);
        assert_eq!(
            error.to_string(),
            format!("address {addr} is already in use by another process")
        );
        // Another process that joined with SO_REUSEPORT is seen after binding.
        let intruder = bind_one(addr).unwrap();
        let mut all = ours;
        let theirs = all.split_off(1);
        assert!(shared_with_another_socket(addr, &all));
        drop((theirs, intruder));
        assert!(!shared_with_another_socket(addr, &all));
    }
}
