//! Listening sockets: one `SO_REUSEPORT` socket per worker, all on one port,
//! so the kernel spreads connections over the workers without a shared queue.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

const BACKLOG: i32 = 4096;

fn bind_one(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Binds `count` listeners on `addr`. With port 0 the first one picks the
/// port and the others join it.
pub fn bind_listeners(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let first = bind_one(addr)?;
    let bound = first.local_addr()?;
    let mut listeners = Vec::with_capacity(count);
    listeners.push(first);
    for _ in 1..count {
        listeners.push(bind_one(bound)?);
    }
    Ok(listeners)
}
