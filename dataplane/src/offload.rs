//! Segmentation and coalescing between a TUN device with offloads and the
//! ESP path, so that the kernel's TCP stack and the TUN device deal in
//! packets of up to 64 KiB while ESP carries packets that fit the path.
//!
//! With IFF_VNET_HDR every TUN read and write starts with a virtio-net
//! header ([`VnetHdr`]). A read may be a TCP "super-packet" (TSO): one
//! IPv6 header, one TCP header and up to 64 KiB of payload that the kernel
//! would have cut at the MSS; [`Outgoing::Tcp`] cuts it here, one
//! segment at a time, each with its own sequence number, length and
//! checksum, exactly as the kernel would have sent them. A read that is a
//! single packet may still leave its checksum to us (NEEDS_CSUM), which
//! [`prepare`] completes in place. Going the other way, [`Coalescer`]
//! joins the consecutive in-order segments of one TCP flow that one batch
//! of ESP brought into one super-packet (GRO), which the kernel takes as
//! if its own GRO had built it. Only IPv6 is carried inside ESP here, so
//! only TCP over IPv6 is offloaded.

use std::net::Ipv6Addr;

/// The size of the virtio-net header (without the mergeable-buffers
/// field, which TUN does not use).
pub const VNET_HDR_LEN: usize = 10;

/// `flags`: the checksum at `csum_start + csum_offset` is to be completed
/// over everything from `csum_start` on; the field holds the pseudo-header
/// sum.
pub const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
/// `gso_type`: a single packet.
pub const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;
/// `gso_type`: TCP over IPv6, to be cut at `gso_size` payload octets.
pub const VIRTIO_NET_HDR_GSO_TCPV6: u8 = 4;
/// `gso_type` flag: the segments carry ECN (CWR on the first only).
pub const VIRTIO_NET_HDR_GSO_ECN: u8 = 0x80;

const IPV6_HEADER: usize = 40;
const TCP: u8 = 6;
const TCP_MIN_HEADER: usize = 20;
const TCP_CHECKSUM: usize = 16;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;
const TCP_CWR: u8 = 0x80;
/// The largest IPv6 packet without a jumbogram option.
const MAX_PACKET: usize = IPV6_HEADER + 65535;

/// The virtio-net header, in the host's byte order (as TUN has it unless
/// told otherwise).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    /// NEEDS_CSUM or not.
    pub flags: u8,
    /// GSO_NONE, GSO_TCPV6, ... with the ECN flag.
    pub gso_type: u8,
    /// Octets of headers before the payload.
    pub hdr_len: u16,
    /// Payload octets per segment.
    pub gso_size: u16,
    /// Where the checksummed part starts (the TCP or UDP header).
    pub csum_start: u16,
    /// Where in it the checksum field is.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// The header at the start of `bytes`.
    pub fn parse(bytes: &[u8]) -> Option<VnetHdr> {
        let b = bytes.get(..VNET_HDR_LEN)?;
        let u16_at = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        })
    }

    /// Its ten octets.
    pub fn to_bytes(self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }
}

/// Why a packet from the TUN device was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffloadError {
    /// Shorter than its headers say.
    Truncated,
    /// A GSO type that was not asked for (only TCP over IPv6 is).
    Unsupported(u8),
    /// Checksum offsets outside the packet.
    BadChecksumOffsets,
    /// GSO without a segment size, or on something that is not TCP over
    /// IPv6.
    BadGso,
}

/// What one TUN read holds, ready for ESP.
#[derive(Debug)]
pub enum Outgoing<'a> {
    /// One packet, its checksum complete.
    One(&'a [u8]),
    /// A TCP super-packet, to be cut into segments.
    Tcp(TcpSegments<'a>),
}

/// Makes what a TUN read returned (`read`: the virtio-net header, then the
/// packet) ready for ESP: a single packet's checksum completed in place,
/// or a super-packet's segments described.
pub fn prepare(read: &mut [u8]) -> Result<Outgoing<'_>, OffloadError> {
    let hdr = VnetHdr::parse(read).ok_or(OffloadError::Truncated)?;
    let packet = &mut read[VNET_HDR_LEN..];
    match hdr.gso_type & !VIRTIO_NET_HDR_GSO_ECN {
        VIRTIO_NET_HDR_GSO_NONE => {
            if hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
                complete_checksum(packet, hdr.csum_start.into(), hdr.csum_offset.into())?;
            }
            Ok(Outgoing::One(packet))
        }
        VIRTIO_NET_HDR_GSO_TCPV6 => TcpSegments::new(packet, &hdr).map(Outgoing::Tcp),
        other => Err(OffloadError::Unsupported(other)),
    }
}

/// Completes a checksum left partial (CHECKSUM_PARTIAL): the field holds
/// the pseudo-header sum; the sum over everything from `start` on,
/// complemented, replaces it.
fn complete_checksum(packet: &mut [u8], start: usize, offset: usize) -> Result<(), OffloadError> {
    let field = start + offset;
    if field + 2 > packet.len() {
        return Err(OffloadError::BadChecksumOffsets);
    }
    let mut sum = !fold(ones_sum(&packet[start..], 0));
    // UDP sends a computed 0 as all ones (0 means "no checksum").
    if sum == 0 && packet.get(6) == Some(&17) {
        sum = 0xffff;
    }
    packet[field..field + 2].copy_from_slice(&sum.to_be_bytes());
    Ok(())
}

/// A TCP-over-IPv6 super-packet and how to cut it.
#[derive(Debug)]
pub struct TcpSegments<'a> {
    packet: &'a [u8],
    /// Where the TCP header starts.
    tcp: usize,
    /// Octets of IPv6 and TCP headers (with extension headers, options).
    headers: usize,
    /// Payload octets per segment.
    mss: usize,
}

impl<'a> TcpSegments<'a> {
    fn new(packet: &'a [u8], hdr: &VnetHdr) -> Result<TcpSegments<'a>, OffloadError> {
        let tcp = usize::from(hdr.csum_start);
        if hdr.gso_size == 0 || packet.first().map(|b| b >> 4) != Some(6) || tcp < IPV6_HEADER {
            return Err(OffloadError::BadGso);
        }
        if usize::from(hdr.csum_offset) != TCP_CHECKSUM {
            return Err(OffloadError::BadChecksumOffsets);
        }
        let data_offset = packet.get(tcp + 12).ok_or(OffloadError::Truncated)? >> 4;
        let headers = tcp + usize::from(data_offset) * 4;
        if usize::from(data_offset) * 4 < TCP_MIN_HEADER || headers > packet.len() {
            return Err(OffloadError::Truncated);
        }
        Ok(TcpSegments {
            packet,
            tcp,
            headers,
            mss: hdr.gso_size.into(),
        })
    }

    fn payload_len(&self) -> usize {
        self.packet.len() - self.headers
    }

    /// How many segments it makes.
    pub fn count(&self) -> usize {
        self.payload_len().div_ceil(self.mss).max(1)
    }

    /// The inner destination (for the route to the SA).
    pub fn destination(&self) -> Ipv6Addr {
        destination(self.packet).unwrap_or(Ipv6Addr::UNSPECIFIED)
    }

    /// Appends segment `i` (of [`TcpSegments::count`]) to `out`: the
    /// headers with its length, sequence number, flags and checksum, then
    /// its share of the payload.
    pub fn append(&self, i: usize, out: &mut Vec<u8>) {
        let start = self.headers + i * self.mss;
        let end = (start + self.mss).min(self.packet.len());
        let (first, last) = (i == 0, end == self.packet.len());
        let at = out.len();
        out.extend_from_slice(&self.packet[..self.headers]);
        out.extend_from_slice(&self.packet[start..end]);
        let segment = &mut out[at..];
        let ip_payload = (segment.len() - IPV6_HEADER) as u16;
        segment[4..6].copy_from_slice(&ip_payload.to_be_bytes());
        let tcp = &mut segment[self.tcp..];
        let seq0 = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
        let seq = seq0.wrapping_add((i * self.mss) as u32);
        tcp[4..8].copy_from_slice(&seq.to_be_bytes());
        // FIN and PSH belong to the last segment, CWR to the first.
        if !last {
            tcp[13] &= !(TCP_FIN | TCP_PSH);
        }
        if !first {
            tcp[13] &= !TCP_CWR;
        }
        set_tcp_checksum(segment, self.tcp);
    }
}

/// The destination of an IPv6 packet.
pub fn destination(packet: &[u8]) -> Option<Ipv6Addr> {
    let d: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
    (packet[0] >> 4 == 6).then(|| Ipv6Addr::from(d))
}

/// Computes the TCP checksum of `packet` (IPv6, the TCP header at `tcp`)
/// in full.
fn set_tcp_checksum(packet: &mut [u8], tcp: usize) {
    packet[tcp + TCP_CHECKSUM..tcp + TCP_CHECKSUM + 2].fill(0);
    let len = (packet.len() - tcp) as u32;
    let sum = ones_sum(&packet[tcp..], pseudo_header(packet, len));
    packet[tcp + TCP_CHECKSUM..tcp + TCP_CHECKSUM + 2].copy_from_slice(&(!fold(sum)).to_be_bytes());
}

/// The IPv6 pseudo-header's sum for a TCP segment of `len` octets.
fn pseudo_header(packet: &[u8], len: u32) -> u64 {
    ones_sum(&packet[8..40], u64::from(len) + u64::from(TCP))
}

/// The ones'-complement sum of `data` as 16-bit big-endian words, added
/// to `acc`, not yet folded. Four octets at a time into 64 bits: no
/// carry is lost before 2^32 words.
fn ones_sum(data: &[u8], mut acc: u64) -> u64 {
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    let rest = words.remainder();
    let mut tail = [0u8; 4];
    tail[..rest.len()].copy_from_slice(rest);
    acc + u64::from(u32::from_be_bytes(tail))
}

/// Folds a sum into 16 bits.
fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Joins in-order TCP segments of one flow into one super-packet for the
/// TUN device, and passes everything else on as it is. Packets leave in
/// the order they came: a packet that cannot join first sends what is
/// being built. What it sends is a virtio-net header and a packet, as two
/// slices for one vectored write.
pub struct Coalescer {
    /// The packet being built.
    buf: Vec<u8>,
    /// Segments in `buf`; 0 when empty.
    segments: usize,
    /// The first segment's payload length: the later ones' at most.
    mss: usize,
    /// The headers' length.
    headers: usize,
    /// The sequence number the next segment must have.
    next_seq: u32,
    /// No more may join (a shorter segment or PSH ended it).
    closed: bool,
}

impl Default for Coalescer {
    fn default() -> Self {
        Coalescer {
            buf: Vec::with_capacity(MAX_PACKET),
            segments: 0,
            mss: 0,
            headers: 0,
            next_seq: 0,
            closed: false,
        }
    }
}

/// The header of a packet that needs nothing done.
const PLAIN: [u8; VNET_HDR_LEN] = [0; VNET_HDR_LEN];

/// A TCP-over-IPv6 segment that may join others (no extension headers, a
/// payload, and ACK with at most PSH among its flags): its headers' length
/// and sequence number.
fn joinable(packet: &[u8]) -> Option<(usize, u32)> {
    if packet.len() < IPV6_HEADER + TCP_MIN_HEADER || packet[0] >> 4 != 6 || packet[6] != TCP {
        return None;
    }
    let tcp = &packet[IPV6_HEADER..];
    let headers = IPV6_HEADER + usize::from(tcp[12] >> 4) * 4;
    let declared = IPV6_HEADER + usize::from(u16::from_be_bytes([packet[4], packet[5]]));
    let flags = tcp[13];
    if headers < IPV6_HEADER + TCP_MIN_HEADER
        || declared != packet.len()
        || headers >= packet.len()
        || flags & !(TCP_ACK | TCP_PSH) != 0
        || flags & TCP_ACK == 0
    {
        return None;
    }
    Some((
        headers,
        u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
    ))
}

impl Coalescer {
    /// Offers `packet`; calls `write` with whatever must go to the TUN
    /// device first.
    pub fn push(&mut self, packet: &[u8], mut write: impl FnMut(&[&[u8]])) {
        let Some((headers, seq)) = joinable(packet) else {
            self.flush(&mut write);
            write(&[&PLAIN, packet]);
            return;
        };
        let payload = packet.len() - headers;
        let push = packet[IPV6_HEADER + 13] & TCP_PSH != 0;
        if self.segments > 0 && self.joins(packet, headers, seq, payload) {
            self.buf.extend_from_slice(&packet[headers..]);
            self.segments += 1;
            self.next_seq = seq.wrapping_add(payload as u32);
            self.closed = payload < self.mss || push;
            // The super-packet carries PSH if a segment in it did.
            self.buf[IPV6_HEADER + 13] |= packet[IPV6_HEADER + 13] & TCP_PSH;
            return;
        }
        self.flush(&mut write);
        self.buf.clear();
        self.buf.extend_from_slice(packet);
        self.segments = 1;
        self.mss = payload;
        self.headers = headers;
        self.next_seq = seq.wrapping_add(payload as u32);
        self.closed = push;
    }

    /// Whether `packet` continues the super-packet being built.
    fn joins(&self, packet: &[u8], headers: usize, seq: u32, payload: usize) -> bool {
        let built = &self.buf;
        // The same version, class, flow label (octets 0..4), next header
        // and hop limit (6..8) and addresses (8..40); the same TCP header
        // but for the sequence number (4..8), PSH and the checksum
        // (16..18).
        let same_ip = built[..4] == packet[..4] && built[6..40] == packet[6..40];
        let (a, b) = (&built[IPV6_HEADER..], &packet[IPV6_HEADER..]);
        let tcp_len = headers - IPV6_HEADER;
        let same_tcp = headers == self.headers
            && a[..4] == b[..4]
            && a[8..13] == b[8..13]
            && a[13] & !TCP_PSH == b[13] & !TCP_PSH
            && a[14..16] == b[14..16]
            && a[18..tcp_len] == b[18..tcp_len];
        !self.closed
            && same_ip
            && same_tcp
            && seq == self.next_seq
            && payload <= self.mss
            && built.len() + payload <= MAX_PACKET
    }

    /// Sends what is being built, if anything.
    pub fn flush(&mut self, mut write: impl FnMut(&[&[u8]])) {
        match self.segments {
            0 => return,
            1 => write(&[&PLAIN, &self.buf]),
            _ => {
                let packet = &mut self.buf;
                let ip_payload = (packet.len() - IPV6_HEADER) as u16;
                packet[4..6].copy_from_slice(&ip_payload.to_be_bytes());
                // CHECKSUM_PARTIAL: the pseudo-header sum over the whole
                // length, which the kernel adjusts per segment if it cuts.
                let pseudo = fold(pseudo_header(packet, u32::from(ip_payload)));
                let field = IPV6_HEADER + TCP_CHECKSUM;
                packet[field..field + 2].copy_from_slice(&pseudo.to_be_bytes());
                let hdr = VnetHdr {
                    flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
                    gso_type: VIRTIO_NET_HDR_GSO_TCPV6,
                    hdr_len: self.headers as u16,
                    gso_size: self.mss as u16,
                    csum_start: IPV6_HEADER as u16,
                    csum_offset: TCP_CHECKSUM as u16,
                };
                write(&[&hdr.to_bytes(), &self.buf]);
            }
        }
        self.segments = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
    const DST: [u8; 16] = [
        0x20, 0x01, 0x0d, 0xb8, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2,
    ];

    /// An IPv6 TCP packet (with a timestamp option, as Linux sends) of
    /// `payload`, its checksum right.
    fn tcp_packet(seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&((32 + payload.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[TCP, 64]);
        p.extend_from_slice(&SRC);
        p.extend_from_slice(&DST);
        p.extend_from_slice(&[0x9c, 0x40, 0x14, 0x51]); // ports 40000, 5201
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&7u32.to_be_bytes()); // ack
        p.extend_from_slice(&[0x80, flags, 0x01, 0xf5, 0, 0, 0, 0]);
        p.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0x12, 0x34, 0, 0, 0x56, 0x78]);
        p.extend_from_slice(payload);
        set_tcp_checksum(&mut p, IPV6_HEADER);
        p
    }

    fn checksum_ok(packet: &[u8]) -> bool {
        let len = (packet.len() - IPV6_HEADER) as u32;
        fold(ones_sum(&packet[IPV6_HEADER..], pseudo_header(packet, len))) == 0xffff
    }

    fn payload(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// What the kernel reads out with TSO: the virtio-net header, then
    /// the super-packet with the pseudo-header sum in the checksum field.
    fn tso_read(flags: u8, data: &[u8], mss: u16) -> Vec<u8> {
        let mut packet = tcp_packet(1000, flags, data);
        let len = (packet.len() - IPV6_HEADER) as u32;
        let pseudo = fold(pseudo_header(&packet, len));
        packet[IPV6_HEADER + 16..IPV6_HEADER + 18].copy_from_slice(&pseudo.to_be_bytes());
        let hdr = VnetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: VIRTIO_NET_HDR_GSO_TCPV6,
            hdr_len: 72,
            gso_size: mss,
            csum_start: 40,
            csum_offset: 16,
        };
        [&hdr.to_bytes()[..], &packet].concat()
    }

    fn segments_of(read: &mut [u8]) -> Vec<Vec<u8>> {
        match prepare(read).unwrap() {
            Outgoing::Tcp(s) => (0..s.count())
                .map(|i| {
                    let mut out = Vec::new();
                    s.append(i, &mut out);
                    out
                })
                .collect(),
            Outgoing::One(_) => panic!("not cut"),
        }
    }

    #[test]
    fn a_super_packet_is_cut_as_the_kernel_would_send_it() {
        let data = payload(10 * 1000 - 123);
        let mut read = tso_read(TCP_ACK | TCP_PSH | TCP_FIN | TCP_CWR, &data, 1000);
        let segments = segments_of(&mut read);
        assert_eq!(segments.len(), 10);
        for (i, s) in segments.iter().enumerate() {
            let len = if i == 9 { 1000 - 123 } else { 1000 };
            // Exactly what a plain (non-TSO) sender puts on the wire.
            let flags = match i {
                0 => TCP_ACK | TCP_CWR,
                9 => TCP_ACK | TCP_PSH | TCP_FIN,
                _ => TCP_ACK,
            };
            let expected = tcp_packet(
                1000 + i as u32 * 1000,
                flags,
                &data[i * 1000..i * 1000 + len],
            );
            assert_eq!(s, &expected, "segment {i}");
            assert!(checksum_ok(s));
        }
    }

    #[test]
    fn segments_joined_and_cut_again_are_the_same_bytes() {
        let data = payload(20 * 1348);
        let sent: Vec<Vec<u8>> = (0..20)
            .map(|i| {
                let flags = if i == 19 { TCP_ACK | TCP_PSH } else { TCP_ACK };
                tcp_packet(
                    5 + i * 1348,
                    flags,
                    &data[i as usize * 1348..(i as usize + 1) * 1348],
                )
            })
            .collect();
        let mut gro = Coalescer::default();
        let mut written: Vec<Vec<u8>> = Vec::new();
        for p in &sent {
            gro.push(p, |pieces| written.push(pieces.concat()));
        }
        gro.flush(|pieces| written.push(pieces.concat()));
        assert_eq!(written.len(), 1, "one super-packet");
        let hdr = VnetHdr::parse(&written[0]).unwrap();
        assert_eq!(
            (hdr.gso_type, hdr.gso_size, hdr.hdr_len, hdr.flags),
            (
                VIRTIO_NET_HDR_GSO_TCPV6,
                1348,
                72,
                VIRTIO_NET_HDR_F_NEEDS_CSUM
            )
        );
        // The kernel would cut it back into what was sent.
        assert_eq!(segments_of(&mut written[0]), sent);
    }

    #[test]
    fn only_in_order_segments_of_one_flow_join_and_order_is_kept() {
        let a = |seq: u32, len: usize| tcp_packet(seq, TCP_ACK, &payload(len));
        let mut other_flow = a(0, 100);
        other_flow[IPV6_HEADER + 1] ^= 1; // another source port
        set_tcp_checksum(&mut other_flow, IPV6_HEADER);
        let syn = tcp_packet(0, 0x02, &[]);
        let input = [
            a(0, 500),
            a(500, 500),
            other_flow.clone(),
            a(1000, 500),
            a(2000, 500), // a gap
            a(2500, 300), // shorter: ends it
            a(2800, 300),
            syn.clone(),
        ];
        let mut gro = Coalescer::default();
        let mut written: Vec<Vec<u8>> = Vec::new();
        for p in &input {
            gro.push(p, |pieces| written.push(pieces.concat()));
        }
        gro.flush(|pieces| written.push(pieces.concat()));
        let shapes: Vec<(u8, usize)> = written
            .iter()
            .map(|w| (w[1], w.len() - VNET_HDR_LEN))
            .collect();
        assert_eq!(
            shapes,
            [
                (VIRTIO_NET_HDR_GSO_TCPV6, 72 + 1000),
                (0, other_flow.len()),
                (0, 72 + 500),
                (VIRTIO_NET_HDR_GSO_TCPV6, 72 + 800),
                (0, 72 + 300),
                (0, syn.len()),
            ]
        );
        // A single packet goes as it came.
        assert_eq!(&written[1][VNET_HDR_LEN..], &other_flow[..]);
    }

    #[test]
    fn a_partial_checksum_is_completed() {
        let mut packet = tcp_packet(1, TCP_ACK, &payload(333));
        let good = packet.clone();
        let len = (packet.len() - IPV6_HEADER) as u32;
        let pseudo = fold(pseudo_header(&packet, len));
        packet[IPV6_HEADER + 16..IPV6_HEADER + 18].copy_from_slice(&pseudo.to_be_bytes());
        let hdr = VnetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            csum_start: 40,
            csum_offset: 16,
            ..VnetHdr::default()
        };
        let mut read = [&hdr.to_bytes()[..], &packet].concat();
        match prepare(&mut read).unwrap() {
            Outgoing::One(p) => assert_eq!(p, &good[..]),
            Outgoing::Tcp(_) => panic!("not a super-packet"),
        }
    }

    #[test]
    fn bad_offload_metadata_is_an_error_not_a_panic() {
        let packet = tcp_packet(1, TCP_ACK, &payload(3000));
        let with = |hdr: VnetHdr, packet: &[u8]| {
            let mut read = [&hdr.to_bytes()[..], packet].concat();
            prepare(&mut read).map(|_| ())
        };
        let tso = VnetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: VIRTIO_NET_HDR_GSO_TCPV6,
            hdr_len: 72,
            gso_size: 1000,
            csum_start: 40,
            csum_offset: 16,
        };
        assert_eq!(
            prepare(&mut [0u8; 5]).map(|_| ()),
            Err(OffloadError::Truncated)
        );
        assert_eq!(
            with(VnetHdr { gso_size: 0, ..tso }, &packet),
            Err(OffloadError::BadGso)
        );
        assert_eq!(
            with(VnetHdr { gso_type: 1, ..tso }, &packet),
            Err(OffloadError::Unsupported(1))
        );
        assert_eq!(
            with(
                VnetHdr {
                    csum_start: 60000,
                    ..tso
                },
                &packet
            ),
            Err(OffloadError::Truncated)
        );
        assert_eq!(
            with(
                VnetHdr {
                    gso_type: 0,
                    csum_start: 9000,
                    ..tso
                },
                &packet
            ),
            Err(OffloadError::BadChecksumOffsets)
        );
        assert_eq!(with(tso, &packet[..50]), Err(OffloadError::Truncated));
        // Whatever the bytes, nothing panics.
        let mut seed = 0x1234_5678u32;
        for _ in 0..20_000 {
            let mut bytes: Vec<u8> = (0..(seed % 200) as usize)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as u8
                })
                .collect();
            if let Ok(Outgoing::Tcp(s)) = prepare(&mut bytes) {
                let mut out = Vec::new();
                for i in 0..s.count().min(100) {
                    s.append(i, &mut out);
                }
            }
            let mut gro = Coalescer::default();
            gro.push(&bytes, |_| {});
            gro.push(&bytes, |_| {});
            gro.flush(|_| {});
        }
    }
}
