//! A blocking request/response netlink socket, shared by the XFRM and
//! rtnetlink code: send one request, read until its acknowledgement or the
//! end of its dump, and turn kernel errors into `io::Error`s that keep the
//! errno (so callers can tell "no such entry" from "not permitted").
//!
//! Requests are rare (an SA or a route per Child SA change) and each takes
//! microseconds, so the daemons call these from their event loop directly.

use std::io;

use netlink_packet_core::{
    NetlinkBuffer, NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    NetlinkSerializable, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_sys::{Socket, SocketAddr};

/// One netlink socket of a given protocol (`NETLINK_XFRM`, `NETLINK_ROUTE`).
pub struct NetlinkSocket {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

/// Serializes a request with the header fields iproute2 would use (the
/// sequence number aside, which callers choose).
pub fn serialize<T: NetlinkSerializable>(message: T, flags: u16, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
    packet.finalize();
    let mut buf = vec![0u8; packet.buffer_len()];
    packet.serialize(&mut buf);
    buf
}

impl NetlinkSocket {
    /// Opens and binds a socket of `protocol`.
    pub fn open(protocol: isize) -> io::Result<NetlinkSocket> {
        let mut socket = Socket::new(protocol)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        // Dumps of many SAs arrive in bursts; do not lose them.
        let _ = socket.set_rx_buf_sz(1 << 20);
        Ok(NetlinkSocket {
            socket,
            seq: 0,
            buf: vec![0u8; 1 << 16],
        })
    }

    /// Opens a socket that listens to the multicast `groups`.
    pub fn listen(protocol: isize, groups: &[u32]) -> io::Result<NetlinkSocket> {
        let s = NetlinkSocket::open(protocol)?;
        for g in groups {
            s.socket.add_membership(*g)?;
        }
        Ok(s)
    }

    /// Sends `message` with `extra_flags` beside REQUEST|ACK and waits for
    /// the acknowledgement.
    pub fn request<T>(&mut self, message: T, extra_flags: u16) -> io::Result<()>
    where
        T: NetlinkSerializable + NetlinkDeserializable,
    {
        self.exchange(message, NLM_F_REQUEST | NLM_F_ACK | extra_flags, |_| false)
    }

    /// Sends a dump request and collects every answer.
    pub fn dump<T>(&mut self, message: T) -> io::Result<Vec<T>>
    where
        T: NetlinkSerializable + NetlinkDeserializable,
    {
        let mut out = Vec::new();
        self.exchange(message, NLM_F_REQUEST | NLM_F_DUMP, |m| {
            out.push(m);
            false
        })?;
        Ok(out)
    }

    /// Sends a request that the kernel answers with one message (a GET).
    pub fn get<T>(&mut self, message: T) -> io::Result<T>
    where
        T: NetlinkSerializable + NetlinkDeserializable,
    {
        let mut answer = None;
        self.exchange(message, NLM_F_REQUEST, |m| {
            answer = Some(m);
            true
        })?;
        answer.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no answer"))
    }

    /// Sends `message` and feeds the answers to `each` until an ack, an
    /// error, the end of a dump, or `each` says it has what it wanted.
    fn exchange<T>(
        &mut self,
        message: T,
        flags: u16,
        mut each: impl FnMut(T) -> bool,
    ) -> io::Result<()>
    where
        T: NetlinkSerializable + NetlinkDeserializable,
    {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let packet = serialize(message, flags, seq);
        self.socket.send(&packet, 0)?;
        loop {
            let n = self.socket.recv(&mut &mut self.buf[..], 0)?;
            for bytes in datagram_messages(&self.buf[..n]) {
                let bytes = bytes?;
                // `datagram_messages` checked the header.
                if NetlinkBuffer::new(bytes).sequence_number() != seq {
                    continue; // a late answer to an earlier request
                }
                // A message whose body the crates cannot parse is skipped,
                // not fatal to the rest of a dump.
                let m = match NetlinkMessage::<T>::deserialize(bytes) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!("skipping a netlink message: {e}");
                        continue;
                    }
                };
                let finished = match m.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(()),
                            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                        }
                    }
                    // A dump the kernel could not finish ends with an error.
                    NetlinkPayload::Done(d) if d.code < 0 => {
                        return Err(io::Error::from_raw_os_error(-d.code));
                    }
                    NetlinkPayload::Done(_) => true,
                    NetlinkPayload::InnerMessage(inner) => each(inner),
                    _ => false,
                };
                if finished {
                    return Ok(());
                }
            }
        }
    }

    /// Blocks until the next multicast message arrives, returning every
    /// message in that datagram that parses.
    pub fn next_messages<T>(&mut self) -> io::Result<Vec<T>>
    where
        T: NetlinkDeserializable,
    {
        let n = self.socket.recv(&mut &mut self.buf[..], 0)?;
        Ok(datagram_messages(&self.buf[..n])
            .map_while(Result::ok)
            .filter_map(|bytes| match NetlinkMessage::<T>::deserialize(bytes) {
                Ok(NetlinkMessage {
                    payload: NetlinkPayload::InnerMessage(inner),
                    ..
                }) => Some(inner),
                _ => None,
            })
            .collect())
    }
}

/// The messages of one netlink datagram, each with its header checked (a
/// whole header, and a length inside the datagram); an error ends it.
fn datagram_messages(datagram: &[u8]) -> impl Iterator<Item = io::Result<&[u8]>> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= datagram.len() {
            return None;
        }
        match NetlinkBuffer::new_checked(&datagram[at..]) {
            Ok(header) => {
                let len = header.length() as usize;
                let message = &datagram[at..at + len];
                at += (len + 3) & !3;
                Some(Ok(message))
            }
            Err(e) => {
                at = datagram.len();
                Some(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    e.to_string(),
                )))
            }
        }
    })
}
