//! The IKE and ESP sockets: UDP 500 and the NAT-T port (4500) on each
//! listen address, and the receive loops that sort what arrives.
//!
//! On the NAT-T port a datagram is IKE if it starts with the non-ESP
//! marker, a NAT keepalive if it is the single octet 0xFF, and ESP
//! otherwise. ESP goes straight to the attached data plane, in place, on
//! the receiving task; IKE goes to the IKE task through a bounded queue,
//! and when that queue is full the datagram is dropped and counted: a
//! flood of IKE never stalls the ESP of established clients.
//!
//! A socket on the unspecified IPv4 address (a client that roams between
//! networks) learns each datagram's destination with IP_PKTINFO, so the
//! IKE engine sees the address it was really sent to, and sends leave by
//! whatever route the kernel has now.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned, MsgFlags,
    SockaddrStorage,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// A data plane that takes ESP packets straight from the receive loop, in
/// place, with no copy and no channel.
pub trait EspHandler: Send + Sync + 'static {
    /// One ESP packet from `remote` to our `local` address.
    fn esp(&self, local: SocketAddr, remote: SocketAddr, packet: &mut [u8]);

    /// The end of a batch of [`EspHandler::esp`] calls (the datagrams of
    /// one receive): what was held back to be joined goes out now.
    fn flush(&self) {}
}

/// An IKE datagram received, for the IKE task: the UDP payload as it
/// arrived (on the NAT-T port still behind its non-ESP marker).
#[derive(Debug)]
pub struct Datagram {
    /// Our address it arrived on.
    pub local: SocketAddr,
    /// Sender.
    pub remote: SocketAddr,
    /// The UDP payload.
    pub payload: Vec<u8>,
}

/// What the receive loops dropped.
#[derive(Debug, Default)]
pub struct ReceiveCounters {
    /// IKE datagrams dropped because the IKE task's queue was full.
    pub ike_queue_full: AtomicU64,
    /// ESP packets on a socket with no data plane attached.
    pub esp_unclaimed: AtomicU64,
}

/// The sockets, bound and ready.
pub struct IkeSockets {
    sockets: Vec<(SocketAddr, Arc<UdpSocket>)>,
    nat_t_port: u16,
}

impl IkeSockets {
    /// Binds `port` and `nat_t_port` on every address.
    pub async fn bind(addrs: &[IpAddr], port: u16, nat_t_port: u16) -> io::Result<IkeSockets> {
        let mut sockets = Vec::new();
        for ip in addrs {
            for p in [port, nat_t_port] {
                let sock = UdpSocket::bind(SocketAddr::new(*ip, p)).await?;
                if ip.is_unspecified() && ip.is_ipv4() {
                    setsockopt(&sock, sockopt::Ipv4PacketInfo, &true)?;
                }
                sockets.push((sock.local_addr()?, Arc::new(sock)));
            }
        }
        Ok(IkeSockets {
            sockets,
            nat_t_port,
        })
    }

    /// The NAT-T port.
    pub fn nat_t_port(&self) -> u16 {
        self.nat_t_port
    }

    /// The bound addresses.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.sockets.iter().map(|(a, _)| *a).collect()
    }

    /// The socket bound to `local`, or to the unspecified address and
    /// `local`'s port (to send ESP from the NAT-T port).
    pub fn socket(&self, local: SocketAddr) -> Option<Arc<UdpSocket>> {
        let exact = self.sockets.iter().find(|(a, _)| *a == local);
        exact
            .or_else(|| {
                self.sockets.iter().find(|(a, _)| {
                    a.ip().is_unspecified()
                        && a.is_ipv4() == local.is_ipv4()
                        && a.port() == local.port()
                })
            })
            .map(|(_, s)| s.clone())
    }

    /// Starts one receive task per socket: ESP on the NAT-T sockets to
    /// `esp` (or counted, without one), IKE into `ike`.
    pub fn spawn_receivers(
        &self,
        esp: Option<Arc<dyn EspHandler>>,
        ike: mpsc::Sender<Datagram>,
        counters: Arc<ReceiveCounters>,
    ) {
        for (local, sock) in &self.sockets {
            let nat_t = local.port() == self.nat_t_port;
            tokio::spawn(receive(
                *local,
                sock.clone(),
                nat_t,
                esp.clone(),
                ike.clone(),
                counters.clone(),
            ));
        }
    }
}

async fn receive(
    local: SocketAddr,
    sock: Arc<UdpSocket>,
    nat_t: bool,
    esp: Option<Arc<dyn EspHandler>>,
    ike: mpsc::Sender<Datagram>,
    counters: Arc<ReceiveCounters>,
) {
    let mut buf = vec![0u8; 65536];
    loop {
        let received = sock
            .async_io(Interest::READABLE, || receive_batch(&sock, &mut buf))
            .await;
        let batch = match received {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("receive on {local}: {e}");
                continue;
            }
        };
        let local = batch
            .destination
            .map_or(local, |ip| SocketAddr::new(ip, local.port()));
        let mut esp_seen = false;
        // With UDP GRO one receive brings several datagrams of one sender,
        // each `segment` octets but the last.
        for datagram in buf[..batch.len].chunks_mut(batch.segment.unwrap_or(batch.len).max(1)) {
            let len = datagram.len();
            if nat_t {
                // ESP: the SPI is never zero; IKE starts with the marker.
                if len > 8 && datagram[..4] != [0; 4] {
                    match &esp {
                        Some(handler) => {
                            handler.esp(local, batch.remote, datagram);
                            esp_seen = true;
                        }
                        None => {
                            counters.esp_unclaimed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    continue;
                }
                if len == 1 {
                    continue; // NAT keepalive
                }
            }
            let d = Datagram {
                local,
                remote: batch.remote,
                payload: datagram.to_vec(),
            };
            match ike.try_send(d) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    counters.ike_queue_full.fetch_add(1, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
        if let (true, Some(handler)) = (esp_seen, &esp) {
            handler.flush();
        }
    }
}

/// What one receive brought.
struct Batch {
    len: usize,
    remote: SocketAddr,
    /// The address it was sent to (on a socket with IP_PKTINFO).
    destination: Option<IpAddr>,
    /// The size of each datagram in it but the last (UDP GRO).
    segment: Option<usize>,
}

/// One datagram, or with UDP GRO several of one sender, with the sender
/// and (on a socket with IP_PKTINFO) the address it was sent to.
fn receive_batch(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<Batch> {
    let mut iov = [io::IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!(libc::in_pktinfo, libc::c_int);
    let msg = recvmsg::<SockaddrStorage>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )?;
    let remote = msg
        .address
        .and_then(|a| {
            a.as_sockaddr_in()
                .map(|v4| SocketAddr::V4((*v4).into()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into())))
        })
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no sender address"))?;
    let (mut destination, mut segment) = (None, None);
    for c in msg.cmsgs()? {
        match c {
            ControlMessageOwned::Ipv4PacketInfo(info) => {
                destination = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    info.ipi_addr.s_addr,
                ))))
            }
            ControlMessageOwned::UdpGroSegments(size) => {
                segment = usize::try_from(size).ok().filter(|s| *s > 0)
            }
            _ => {}
        }
    }
    Ok(Batch {
        len: msg.bytes,
        remote,
        destination,
        segment,
    })
}

/// Has the kernel join datagrams of one sender that arrive together into
/// one receive (UDP GRO), which [`IkeSockets::spawn_receivers`]' loops
/// take apart again.
pub fn enable_gro(socket: &UdpSocket) -> io::Result<()> {
    Ok(setsockopt(socket, sockopt::UdpGroSegment, &true)?)
}

/// Sends runs of datagrams of one size (but the last of each run, which
/// may be shorter) to one peer: in one call with UDP GSO, where the kernel
/// (or the NIC) cuts them apart, while the path takes it; one by one once
/// it has refused (a kernel without UDP_SEGMENT, or an egress device
/// without checksum offload, answers EIO or EINVAL).
#[derive(Debug)]
pub struct SegmentSender {
    gso: AtomicBool,
}

impl SegmentSender {
    /// With UDP GSO, until the kernel refuses it.
    pub fn new() -> SegmentSender {
        SegmentSender {
            gso: AtomicBool::new(true),
        }
    }

    /// Without UDP GSO.
    pub fn one_by_one() -> SegmentSender {
        SegmentSender {
            gso: AtomicBool::new(false),
        }
    }

    /// Sends `datagrams`, each `segment` octets but the last, to `remote`.
    pub async fn send(
        &self,
        socket: &UdpSocket,
        remote: SocketAddr,
        datagrams: &[u8],
        segment: usize,
    ) -> io::Result<()> {
        let segment = segment.max(1);
        if datagrams.len() > segment && self.gso.load(Ordering::Relaxed) {
            match send_gso(socket, remote, datagrams, segment).await {
                Ok(()) => return Ok(()),
                Err(e) if gso_refused(&e) => {
                    self.gso.store(false, Ordering::Relaxed);
                    tracing::info!("UDP GSO refused ({e}): sending ESP datagrams one by one");
                }
                Err(e) => return Err(e),
            }
        }
        for datagram in datagrams.chunks(segment) {
            socket.send_to(datagram, remote).await?;
        }
        Ok(())
    }
}

impl Default for SegmentSender {
    fn default() -> Self {
        SegmentSender::new()
    }
}

fn gso_refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
    )
}

async fn send_gso(
    socket: &UdpSocket,
    remote: SocketAddr,
    datagrams: &[u8],
    segment: usize,
) -> io::Result<()> {
    let size = u16::try_from(segment)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "segment size"))?;
    let to = SockaddrStorage::from(remote);
    socket
        .async_io(Interest::WRITABLE, || {
            let iov = [io::IoSlice::new(datagrams)];
            let cmsg = [ControlMessage::UdpGsoSegments(&size)];
            sendmsg(
                socket.as_raw_fd(),
                &iov,
                &cmsg,
                MsgFlags::empty(),
                Some(&to),
            )
            .map(drop)
            .map_err(io::Error::from)
        })
        .await
}

/// NAT keepalives (RFC 3948 2.3): one 0xFF octet every 20 s from the
/// NAT-T socket to each peer `peers` names, so NAT mappings on the way stay
/// open; until `peers` answers `None` (its data plane is gone).
pub async fn keepalive_loop(
    socket: Arc<UdpSocket>,
    mut peers: impl FnMut() -> Option<Vec<SocketAddr>>,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(20));
    loop {
        tick.tick().await;
        let Some(mut remotes) = peers() else {
            return;
        };
        remotes.sort();
        remotes.dedup();
        for remote in remotes {
            let _ = socket.send_to(&[0xff], remote).await;
        }
    }
}

/// Turns on the kernel's ESP-in-UDP decapsulation on the NAT-T socket:
/// the kernel then takes ESP arriving there and leaves IKE (behind the
/// non-ESP marker) to us.
pub fn enable_kernel_espinudp(socket: &UdpSocket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    const UDP_ENCAP: libc::c_int = 100;
    const UDP_ENCAP_ESPINUDP: libc::c_int = 2;
    let value: libc::c_int = UDP_ENCAP_ESPINUDP;
    // SAFETY: the descriptor is the socket's own and open for the whole
    // call; the option value is a c_int on our stack, with its size.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_UDP,
            UDP_ENCAP,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs of datagrams, with GSO and one by one, arrive as the same
    /// datagrams at a socket that does not join them; and a receiver with
    /// GRO takes them apart again.
    #[tokio::test]
    async fn runs_of_datagrams_arrive_as_sent_with_and_without_gso() {
        let datagrams: Vec<u8> = (0..(5 * 1200 + 700)).map(|i| i as u8).collect();
        let expected: Vec<Vec<u8>> = datagrams.chunks(1200).map(<[u8]>::to_vec).collect();
        for sender in [SegmentSender::new(), SegmentSender::one_by_one()] {
            let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let to = rx.local_addr().unwrap();
            sender.send(&tx, to, &datagrams, 1200).await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 65536];
            while got.len() < expected.len() {
                let (n, _) = rx.recv_from(&mut buf).await.unwrap();
                got.push(buf[..n].to_vec());
            }
            assert_eq!(got, expected, "{sender:?}");
        }
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        enable_gro(&rx).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        SegmentSender::new()
            .send(&tx, rx.local_addr().unwrap(), &datagrams, 1200)
            .await
            .unwrap();
        let mut buf = vec![0u8; 65536];
        let mut got = Vec::new();
        while got.len() < expected.len() {
            let batch = rx
                .async_io(Interest::READABLE, || receive_batch(&rx, &mut buf))
                .await
                .unwrap();
            let size = batch.segment.unwrap_or(batch.len);
            got.extend(buf[..batch.len].chunks(size).map(<[u8]>::to_vec));
        }
        assert_eq!(got, expected);
    }

    #[tokio::test]
    async fn a_socket_on_the_unspecified_address_reports_where_datagrams_went() {
        let sockets = IkeSockets::bind(&[IpAddr::from([0u8; 4])], 0, 0)
            .await
            .unwrap();
        let bound = sockets.local_addrs()[0];
        assert!(bound.ip().is_unspecified());
        let (tx, mut rx) = mpsc::channel(4);
        sockets.spawn_receivers(None, tx, Arc::default());
        let to = SocketAddr::new(IpAddr::from([127, 0, 0, 1]), bound.port());
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.send_to(b"an IKE datagram", to).unwrap();
        let d = rx.recv().await.unwrap();
        assert_eq!(d.local, to, "the destination, not the wildcard");
        assert_eq!(d.remote, sender.local_addr().unwrap());
        assert_eq!(d.payload, b"an IKE datagram");
        // Sends from any of our addresses find the socket.
        assert!(sockets.socket(to).is_some());
        assert!(sockets
            .socket(SocketAddr::new(IpAddr::from([127, 0, 0, 1]), 1))
            .is_none());
    }
}
