//! Moving an IKE SA and its Child SAs to other addresses, without a new
//! IKE SA: implicitly where a NAT changed its mapping (RFC 7296 2.23), and
//! explicitly with MOBIKE (RFC 4555) when the initiator's own address
//! changed.
//!
//! A NAT'd peer is followed to the source of each authenticated request or
//! response and of each authenticated ESP packet the data plane reports;
//! a peer behind no NAT is followed only to the NAT-T port (the float of
//! 2.23) or by an UPDATE_SA_ADDRESSES, since its address is its identity
//! on the path. Retransmissions move nothing, so a late copy cannot pull an
//! SA back to an old address. The initiator's UPDATE_SA_ADDRESSES carries
//! NAT detection for the new path (hashed with both IKE SPIs) and a
//! COOKIE2 the answer must return, which shows the answer came back over
//! the new path (the return-routability check, 3.5 and 3.6). Each move
//! raises [`Event::PathChanged`] with the Child SAs as they now are.

use super::*;

impl IkeSa {
    /// An authenticated message (or ESP packet) came from `remote` to
    /// `local`: move there if RFC 7296 2.23 lets us.
    pub(super) fn follow_peer(
        &mut self,
        shared: &mut Shared,
        remote: SocketAddr,
        local: SocketAddr,
    ) {
        let to_nat_t_port = !self.path.on_nat_t_port
            && remote.ip() == self.path.remote.ip()
            && local.ip() == self.path.local.ip()
            && local.port() == shared.config.nat_t_port;
        if to_nat_t_port {
            self.move_to(shared, remote, local);
            return;
        }
        // Our own address is ours to change (by MOBIKE), never a
        // message's: one still arriving at an address we left must not
        // pull the SA back there.
        if remote == self.path.remote {
            return;
        }
        // Only a peer behind a NAT, and only where we are behind none
        // ourselves (a broker behind a 1:1 NAT sees every client moved).
        if self.nat.is_some_and(|n| n.peer_behind && !n.we_behind) {
            self.move_to(shared, remote, self.path.local);
        } else {
            shared.stats.moves_refused += 1;
        }
    }

    /// Uses `remote` and `local` from now on, for IKE and for the Child
    /// SAs, and tells the embedder.
    fn move_to(&mut self, shared: &mut Shared, remote: SocketAddr, local: SocketAddr) {
        self.path = Path {
            local,
            remote,
            on_nat_t_port: local.port() == shared.config.nat_t_port,
        };
        let (id, esp_in_udp) = (self.id, self.esp_in_udp(shared));
        let Some(s) = self.session_mut() else {
            return;
        };
        // Who is where, for `unique`: the same device is the one at this
        // address now.
        if let Some(seen) = shared
            .by_identity
            .get_mut(&s.peer)
            .and_then(|ids| ids.get_mut(&id))
        {
            *seen = remote;
        }
        for c in &mut s.children {
            c.sa.local = local;
            c.sa.remote = remote;
            c.sa.udp_encapsulation = esp_in_udp;
        }
        let children = s.children.iter().map(|c| c.sa.clone()).collect();
        shared.stats.moves += 1;
        shared.push_event(Event::PathChanged {
            sa: id,
            local,
            remote,
            children,
        });
    }

    /// The data plane opened an ESP packet of this SA from `remote`, which
    /// is not the peer's address we know.
    pub(crate) fn esp_from(&mut self, shared: &mut Shared, remote: SocketAddr) {
        if self.keyed().and_then(Keyed::session).is_some() {
            self.follow_peer(shared, remote, self.path.local);
        }
    }

    /// Our own address towards the peer is now `ip` (another network, a new
    /// lease). Returns whether the SA follows: with MOBIKE by an
    /// UPDATE_SA_ADDRESSES; behind a NAT (real or pretended, so the peer
    /// follows us) by a liveness check from the new address. Otherwise
    /// the caller must build a new IKE SA.
    pub(crate) fn roam(&mut self, shared: &mut Shared, now: Instant, ip: IpAddr) -> bool {
        let established = self
            .keyed()
            .and_then(Keyed::session)
            .is_some_and(|s| !s.deleting);
        if !established {
            return false;
        }
        let local = SocketAddr::new(ip, self.path.local.port());
        if local == self.path.local {
            return true;
        }
        let peer_follows = self
            .nat
            .is_some_and(|n| n.we_behind || shared.config.force_udp_encapsulation);
        if self.mobike {
            self.path.local = local;
            self.queue(Task::UpdateAddresses);
        } else if peer_follows {
            // Our own Child SAs move now; the peer follows the liveness
            // check that comes from here.
            self.move_to(shared, self.path.remote, local);
            self.queue(Task::Dpd);
        } else {
            return false;
        }
        self.kick(shared, now);
        true
    }

    /// MOBIKE initiator: tells the peer to use the addresses this request
    /// travels between.
    pub(super) fn send_update_addresses(&mut self, shared: &mut Shared, now: Instant) {
        let Some(spis) = self.spis() else {
            return;
        };
        let cookie2 = random_bytes(shared, COOKIE2_LEN);
        let mut inner = vec![notify(NotifyType::UPDATE_SA_ADDRESSES, Vec::new())];
        inner.extend(nat_detection(
            shared,
            spis,
            self.path.local,
            self.path.remote,
        ));
        inner.push(notify(NotifyType::COOKIE2, cookie2.clone()));
        self.send_request(
            shared,
            now,
            ExchangeType::INFORMATIONAL,
            &inner,
            Request::UpdateAddresses { cookie2 },
        );
    }

    /// MOBIKE initiator: the answer to our UPDATE_SA_ADDRESSES. It came
    /// over the new path with our COOKIE2: the Child SAs move.
    pub(super) fn handle_update_response(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        cookie2: &[u8],
        payloads: &[Payload],
        arrived: Arrived,
    ) {
        let found = Found::new(payloads);
        let failed = if let Some(ty) = found.error() {
            Some(format!(
                "the peer refused our new address: {}",
                ty.describe()
            ))
        } else if found.notify(NotifyType::COOKIE2).map(|n| n.data.as_slice()) != Some(cookie2) {
            Some("the answer to our address update did not return its COOKIE2".to_string())
        } else {
            None
        };
        if let Some(why) = failed {
            self.close(shared, now, DownReason::MoveFailed(why));
            return;
        }
        let Some((spi_i, spi_r)) = self.spis() else {
            return;
        };
        if let Some(nat) = found.nat_detected(spi_i, spi_r, arrived.remote, arrived.local) {
            self.nat = Some(nat);
        }
        self.move_to(shared, self.path.remote, self.path.local);
    }

    /// What a MOBIKE peer's INFORMATIONAL asks to have answered in kind
    /// (RFC 4555 3.7 and 3.8): its COOKIE2 returned, and NAT detection for
    /// the addresses the request came between, with which a liveness
    /// check finds out that a NAT's mapping changed.
    pub(super) fn answer_in_kind(
        &self,
        shared: &mut Shared,
        found: &Found<'_>,
        arrived: Arrived,
    ) -> Vec<Payload> {
        let mut answer = Vec::new();
        if !self.mobike {
            return answer;
        }
        let spis = self.spis();
        if let (Some(spis), Some(_)) = (spis, found.notify(NotifyType::NAT_DETECTION_SOURCE_IP)) {
            answer.extend(nat_detection(shared, spis, arrived.local, arrived.remote));
        }
        if let Some(c) = found.notify(NotifyType::COOKIE2) {
            answer.push(notify(NotifyType::COOKIE2, c.data.clone()));
        }
        answer
    }

    /// MOBIKE responder: the peer's UPDATE_SA_ADDRESSES. The SA moves to
    /// the addresses the request came between, NAT detection is redone
    /// for them, and the answer returns the peer's COOKIE2.
    pub(super) fn handle_update_addresses(
        &mut self,
        shared: &mut Shared,
        id: u32,
        found: &Found<'_>,
        arrived: Arrived,
    ) {
        if !self.mobike {
            // Not negotiated: nothing moves, the window does.
            shared.stats.moves_refused += 1;
            self.send_response(shared, ExchangeType::INFORMATIONAL, id, &[]);
            return;
        }
        let cookie2 = found.notify(NotifyType::COOKIE2).map(|n| n.data.clone());
        if cookie2
            .as_ref()
            .is_some_and(|c| !(COOKIE2_MIN..=COOKIE2_MAX).contains(&c.len()))
        {
            let e = Error::InvalidMessage(InvalidMessage::InvalidValue("COOKIE2"));
            self.send_error_response(shared, ExchangeType::INFORMATIONAL, id, &e);
            return;
        }
        let Some(spis) = self.spis() else {
            return;
        };
        let nat = found.nat_detected(spis.0, spis.1, arrived.remote, arrived.local);
        let translated = found
            .notify(NotifyType::NO_NATS_ALLOWED)
            .is_some_and(|n| !sent_as_arrived(&n.data, arrived));
        if translated {
            // The peer wants no NAT on the way, and there is one (RFC 4555
            // 3.9): nothing moves.
            shared.stats.moves_refused += 1;
            let refusal = notify(NotifyType::UNEXPECTED_NAT_DETECTED, Vec::new());
            self.send_response(shared, ExchangeType::INFORMATIONAL, id, &[refusal]);
            return;
        }
        if nat.is_some() {
            self.nat = nat;
        }
        // Moved first, so that the answer takes the new path too.
        self.move_to(shared, arrived.remote, arrived.local);
        let mut reply = nat_detection(shared, spis, arrived.local, arrived.remote).to_vec();
        if let Some(c) = cookie2 {
            reply.push(notify(NotifyType::COOKIE2, c));
        }
        self.send_response(shared, ExchangeType::INFORMATIONAL, id, &reply);
    }
}

/// Our COOKIE2 length, and what RFC 4555 3.5 allows of a peer's.
const COOKIE2_LEN: usize = 16;
const COOKIE2_MIN: usize = 8;
const COOKIE2_MAX: usize = 64;

/// Whether NO_NATS_ALLOWED's data (RFC 4555 3.9: the request's source and
/// destination addresses, then ports, as the peer sent it) is what
/// arrived. Data that does not parse counts as a mismatch.
fn sent_as_arrived(data: &[u8], arrived: Arrived) -> bool {
    let octets = |a: SocketAddr| match a.ip() {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    let mut expected = octets(arrived.remote);
    expected.extend(octets(arrived.local));
    expected.extend(arrived.remote.port().to_be_bytes());
    expected.extend(arrived.local.port().to_be_bytes());
    data == expected.as_slice()
}
