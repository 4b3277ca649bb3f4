//! systemd's service notification protocol (`sd_notify`, for `Type=notify`
//! units): one datagram of `KEY=VALUE` lines to the socket in
//! `$NOTIFY_SOCKET`, which is a path or, with a leading `@`, an abstract
//! socket. Without the variable (not under systemd) nothing is sent.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (`READY=1`, `STOPPING=1`, `STATUS=...`) to systemd;
/// returns whether it was sent. A lost notification is not an error the
/// daemon could act on, so failures are only logged.
pub fn notify(state: &str) -> bool {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    let sent = UnixDatagram::unbound().and_then(|socket| {
        let bytes = path.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &addr)
        } else {
            socket.send_to(state.as_bytes(), &path)
        }
    });
    match sent {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!("telling systemd {state:?}: {e}");
            false
        }
    }
}

/// `RELOADING=1` with the monotonic time systemd wants beside it.
pub fn reloading() -> bool {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000
    });
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={now}"))
}
