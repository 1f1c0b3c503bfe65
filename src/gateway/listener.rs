//! Binding a listening socket, with `SO_REUSEPORT` when
//! `server.reuse_port` asks for it (rolling restarts: a new mosaic binds
//! the same address while the old one drains).
//!
//! Linux spreads new connections over every socket bound to the port. When
//! the old process closes its socket, connections still in that socket's
//! accept queue are reset, unless the kernel migrates them to a sibling
//! (`net.ipv4.tcp_migrate_req = 1`, Linux 5.14+); mosaic warns at start
//! when that setting is off (README, "Rolling restarts").

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// The accept queue's length (actix-web's own default).
const BACKLOG: i32 = 1024;

/// Binds `addr`, sharing the port with other processes when `reuse_port`.
pub fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Says, once at start, when a rolling restart could reset connections:
/// `reuse_port` is on and the kernel does not migrate a closing socket's
/// queue. Read before the runtime starts serving (a small file under /proc).
pub fn warn_if_queue_not_migrated(reuse_port: bool) {
    if !reuse_port {
        return;
    }
    match std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req") {
        Ok(value) if value.trim() == "1" => {}
        Ok(_) => tracing::warn!(
            "server.reuse_port is on but net.ipv4.tcp_migrate_req is 0: connections still queued when an old process stops listening are reset; set it to 1 for restarts that drop nothing"
        ),
        // Not Linux, or not readable: nothing to say.
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::bind;

    #[test]
    fn two_sockets_share_a_port_only_with_reuse_port() {
        let first = bind("127.0.0.1:0".parse().unwrap(), true).unwrap();
        let addr = first.local_addr().unwrap();
        let second = bind(addr, true);
        assert!(second.is_ok(), "{second:?}");
        let plain = bind("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let taken = bind(plain.local_addr().unwrap(), false);
        assert_eq!(taken.unwrap_err().kind(), std::io::ErrorKind::AddrInUse);
    }
}
