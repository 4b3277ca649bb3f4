//! IKE_SA_INIT (RFC 7296 1.2): the initiator's request and its retries
//! (COOKIE, INVALID_KE_PAYLOAD), and the responder's stateless checks and
//! answer.

use super::*;

/// A new IKE_SA_INIT request, and what the endpoint chose for the SA it
/// may become.
#[derive(Clone, Copy)]
pub(crate) struct InitRequest<'a> {
    pub(crate) id: SaId,
    pub(crate) spi_r: u64,
    pub(crate) remote: SocketAddr,
    pub(crate) local: SocketAddr,
    pub(crate) datagram: &'a [u8],
    pub(crate) header: &'a Header,
}

/// What the responder makes of an IKE_SA_INIT request before keeping any
/// state: an answer that refuses it (a notify), or the SA.
pub(crate) enum InitOutcome {
    /// Answered with this notify (and its data); nothing is kept.
    Refused(NotifyType, Vec<u8>),
    /// A half-open SA.
    HalfOpen(Box<IkeSa>),
}

impl IkeSa {
    pub(crate) fn initiate(
        shared: &mut Shared,
        now: Instant,
        id: SaId,
        spi: u64,
        request: ConnectRequest,
    ) -> IkeSa {
        let path = Path {
            local: request.local,
            remote: request.remote,
            on_nat_t_port: request.remote.port() == shared.config.nat_t_port,
        };
        let group = shared
            .config
            .ike_policy
            .ke
            .first()
            .copied()
            .unwrap_or(KeGroup::Curve25519);
        let ni = random_bytes(shared, NONCE_LEN);
        let ke = KeyExchangeSecret::generate(group, &mut *shared.rng);
        let init = InitiatorInit {
            request,
            spi_i: spi,
            ni,
            ke,
            cookie: None,
            retries: 0,
            outstanding: Outstanding {
                id: 0,
                datagrams: Vec::new(),
                tries: 0,
                next_at: now,
                kind: Request::Init,
            },
        };
        let mut sa = IkeSa::with_state(
            id,
            now,
            path,
            (path.remote, spi),
            State::InitSent(Box::new(init)),
        );
        sa.send_init(shared, now);
        sa
    }

    /// Sends (or sends again, with a cookie or another group) our
    /// IKE_SA_INIT request.
    fn send_init(&mut self, shared: &mut Shared, now: Instant) {
        let (local, remote) = (self.path.local, self.path.remote);
        let State::InitSent(init) = &mut self.state else {
            return;
        };
        let config = shared.config.clone();
        let spi_i = init.spi_i;
        let mut payloads = Vec::new();
        if let Some(cookie) = &init.cookie {
            payloads.push(notify(NotifyType::COOKIE, cookie.clone()));
        }
        payloads.push(
            PayloadBody::Sa(SecurityAssociation {
                proposals: config.ike_policy.proposals(),
            })
            .into(),
        );
        payloads.push(
            PayloadBody::Ke(KeyExchange::new(
                init.ke.group().id(),
                init.ke.public_value(),
            ))
            .into(),
        );
        payloads.push(PayloadBody::Nonce(init.ni.clone()).into());
        payloads.extend(nat_detection(shared, (spi_i, 0), local, remote));
        payloads.push(notify(NotifyType::FRAGMENTATION_SUPPORTED, Vec::new()));
        payloads.push(signature_hashes());
        let msg = Message {
            header: Header {
                spi_i,
                spi_r: 0,
                minor_version: 0,
                exchange: ExchangeType::IKE_SA_INIT,
                flags: Flags::new(true, false),
                message_id: 0,
            },
            payloads,
        };
        let Ok(bytes) = msg.emit() else { return };
        init.outstanding = Outstanding {
            id: 0,
            datagrams: vec![bytes.clone()],
            tries: 0,
            next_at: now + shared.config.retransmit_timeout,
            kind: Request::Init,
        };
        self.send(shared, std::slice::from_ref(&bytes));
    }

    /// A new IKE_SA_INIT request: the responder's half of the exchange.
    /// Refusals and cookie requests are answered here and keep no state.
    pub(crate) fn respond(
        shared: &mut Shared,
        now: Instant,
        init: InitRequest<'_>,
        cookies: Option<&crate::endpoint::cookie::CookieJar>,
    ) -> Option<IkeSa> {
        let (header, remote, local) = (init.header, init.remote, init.local);
        match Self::accept_init(shared, now, &init, cookies) {
            Ok(InitOutcome::HalfOpen(sa)) => Some(*sa),
            Ok(InitOutcome::Refused(ty, data)) => {
                init_error(shared, header, remote, local, ty, data);
                None
            }
            Err(e) => {
                if matches!(e, Error::InvalidMessage(_)) {
                    shared.stats.invalid += 1;
                }
                if let Some(ty) = e.notify() {
                    shared.stats.inits_refused += 1;
                    init_error(shared, header, remote, local, ty, e.notify_data());
                    // Asking for another group is part of a normal start.
                    if ty != NotifyType::INVALID_KE_PAYLOAD {
                        shared.tell_refusal(now, remote, e.to_string());
                    }
                }
                None
            }
        }
    }

    fn accept_init(
        shared: &mut Shared,
        now: Instant,
        init: &InitRequest<'_>,
        cookies: Option<&crate::endpoint::cookie::CookieJar>,
    ) -> Result<InitOutcome, Error> {
        let InitRequest {
            id,
            spi_r,
            remote,
            local,
            datagram,
            header,
        } = *init;
        let msg = Message::parse(datagram)?;
        let found = Found::new(&msg.payloads);
        let sa = found.sa.ok_or_else(|| missing("SA"))?;
        let ke = found.ke.ok_or_else(|| missing("KE"))?;
        let ni = found.nonce()?;
        if let Some(jar) = cookies {
            let valid = found
                .notify(NotifyType::COOKIE)
                .is_some_and(|c| jar.check(&c.data, ni, remote.ip(), header.spi_i));
            if !valid {
                shared.stats.cookies_sent += 1;
                let cookie = jar.cookie(ni, remote.ip(), header.spi_i);
                return Ok(InitOutcome::Refused(NotifyType::COOKIE, cookie));
            }
        }
        let config = shared.config.clone();
        let choice = config.ike_policy.select(&sa.proposals, Some(ke.group))?;
        let suite = choice.suite;
        if suite.ke.id() != ke.group {
            return Err(PeerIncompatible::InvalidKePayload(suite.ke.id()).into());
        }
        // Under load (cookies demanded), an expensive exchange is worth a
        // round trip: ask for the cheapest group the peer offered.
        if cookies.is_some() {
            if let Some(cheaper) = config.ike_policy.cheaper_group(&sa.proposals, suite.ke) {
                shared.stats.cheaper_group_asked += 1;
                return Err(PeerIncompatible::InvalidKePayload(cheaper.id()).into());
            }
        }
        let secret = KeyExchangeSecret::generate(suite.ke, &mut *shared.rng);
        let shared_secret = secret.agree(&ke.data)?;
        let nr = random_bytes(shared, NONCE_LEN);
        let spi_i = header.spi_i;

        // NAT detection: the peer hashed the addresses it used, with SPIr 0.
        let nat = found.nat_detected(spi_i, 0, remote, local);
        let peer_fragmentation = found.notify(NotifyType::FRAGMENTATION_SUPPORTED).is_some();
        let peer_hashes = found.signature_hashes();

        let mut payloads = vec![
            PayloadBody::Sa(SecurityAssociation {
                proposals: vec![choice.reply],
            })
            .into(),
            PayloadBody::Ke(KeyExchange::new(suite.ke.id(), secret.public_value())).into(),
            PayloadBody::Nonce(nr.clone()).into(),
        ];
        if nat.is_some() {
            payloads.extend(nat_detection(shared, (spi_i, spi_r), local, remote));
        }
        payloads.extend(certreq(shared));
        if peer_fragmentation {
            payloads.push(notify(NotifyType::FRAGMENTATION_SUPPORTED, Vec::new()));
        }
        if peer_hashes.is_some() {
            payloads.push(signature_hashes());
        }
        let response = Message {
            header: Header {
                spi_i,
                spi_r,
                minor_version: 0,
                exchange: ExchangeType::IKE_SA_INIT,
                flags: Flags::new(false, true),
                message_id: 0,
            },
            payloads,
        }
        .emit()
        .map_err(|_| Error::InvalidMessage(InvalidMessage::InvalidValue("our own response")))?;

        let seed = skeyseed(suite.prf, ni, &nr, &shared_secret);
        let keys = IkeSaKeys::derive(&suite, &seed, ni, &nr, spi_i, spi_r);
        let mut gen = Generation::new(shared, id, suite, seed, keys, spi_i, spi_r, false)?;
        gen.expected_peer_id = 1;
        gen.last_response = Some((0, vec![response.clone()]));
        let exchange = InitExchange {
            ni: ni.to_vec(),
            nr,
            request: datagram.to_vec(),
            response: response.clone(),
            peer_hashes,
        };
        let phase = Phase::HalfOpen {
            exchange,
            deadline: now + config.half_open_timeout,
        };
        let path = Path {
            local,
            remote,
            on_nat_t_port: local.port() == config.nat_t_port,
        };
        let keyed = Keyed::new(gen, peer_fragmentation, phase);
        let mut sa = IkeSa::with_state(
            id,
            now,
            path,
            (remote, spi_i),
            State::Keyed(Box::new(keyed)),
        );
        sa.nat = nat;
        sa.send(shared, &[response]);
        Ok(InitOutcome::HalfOpen(Box::new(sa)))
    }

    pub(super) fn handle_init_response(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        datagram: &[u8],
        header: &Header,
    ) -> Effects {
        let effects = Effects::default();
        if !matches!(self.state, State::InitSent(_)) || header.message_id != 0 {
            shared.stats.stray += 1;
            return effects;
        }
        let msg = match Message::parse(datagram) {
            Ok(m) => m,
            Err(_) => {
                shared.stats.invalid += 1;
                return effects;
            }
        };
        let found = Found::new(&msg.payloads);
        let legacy = shared.config.ike_policy.legacy;
        let State::InitSent(init) = &mut self.state else {
            return effects;
        };
        if let Some(cookie) = found.notify(NotifyType::COOKIE) {
            if init.retries < MAX_INIT_RETRIES {
                init.retries += 1;
                init.cookie = Some(cookie.data.clone());
                self.send_init(shared, now);
            }
            return effects;
        }
        if let Some(n) = found.notify(NotifyType::INVALID_KE_PAYLOAD) {
            let wanted = <[u8; 2]>::try_from(n.data.as_slice())
                .ok()
                .map(|b| TransformId(u16::from_be_bytes(b)))
                .and_then(|id| KeGroup::from_id(id, legacy))
                .filter(|g| shared.config.ike_policy.ke.contains(g));
            match wanted {
                Some(group) if init.retries < MAX_INIT_RETRIES && group != init.ke.group() => {
                    init.retries += 1;
                    init.ke = KeyExchangeSecret::generate(group, &mut *shared.rng);
                    self.send_init(shared, now);
                }
                _ => self.close(
                    shared,
                    now,
                    DownReason::RefusedByPeer(NotifyType::INVALID_KE_PAYLOAD),
                ),
            }
            return effects;
        }
        if let Some(err) = found.error() {
            self.close(shared, now, DownReason::RefusedByPeer(err));
            return effects;
        }
        if let Err(e) = self.complete_init(shared, now, datagram, header, &found) {
            self.close(
                shared,
                now,
                DownReason::RefusedPeer(NotifyType::INVALID_SYNTAX, e.to_string()),
            );
        }
        effects
    }

    /// The responder's IKE_SA_INIT answer: keys, NAT detection, then our
    /// IKE_AUTH request.
    fn complete_init(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        datagram: &[u8],
        header: &Header,
        found: &Found<'_>,
    ) -> Result<(), Error> {
        let sa_payload = found.sa.ok_or_else(|| missing("SA"))?;
        let ke = found.ke.ok_or_else(|| missing("KE"))?;
        let nr = found.nonce()?;
        if header.spi_r == 0 {
            return Err(PeerMisbehaved::BadResponse("responder SPI is zero").into());
        }
        let suite = shared
            .config
            .ike_policy
            .accept_reply(&sa_payload.proposals)
            .map_err(|_| PeerMisbehaved::BadResponse("a proposal we did not offer"))?;
        let State::InitSent(init) = &self.state else {
            return Err(PeerMisbehaved::BadResponse("not initiating").into());
        };
        if suite.ke != init.ke.group() || ke.group != init.ke.group().id() {
            return Err(PeerMisbehaved::BadResponse("key exchange group mismatch").into());
        }
        let shared_secret = init.ke.agree(&ke.data)?;
        let (spi_i, spi_r) = (header.spi_i, header.spi_r);
        let seed = skeyseed(suite.prf, &init.ni, nr, &shared_secret);
        let keys = IkeSaKeys::derive(&suite, &seed, &init.ni, nr, spi_i, spi_r);
        let mut gen = Generation::new(shared, self.id, suite, seed, keys, spi_i, spi_r, true)?;
        gen.next_request_id = 1;
        let (local, remote) = (self.path.local, self.path.remote);
        self.nat = found.nat_detected(spi_i, spi_r, remote, local);
        let State::InitSent(init) = std::mem::replace(
            &mut self.state,
            State::Closed {
                until: now,
                gen: None,
            },
        ) else {
            return Err(PeerMisbehaved::BadResponse("not initiating").into());
        };
        let init = *init;
        let exchange = InitExchange {
            ni: init.ni,
            nr: nr.to_vec(),
            request: init
                .outstanding
                .datagrams
                .into_iter()
                .next()
                .unwrap_or_default(),
            response: datagram.to_vec(),
            peer_hashes: found.signature_hashes(),
        };
        let peer_fragmentation = found.notify(NotifyType::FRAGMENTATION_SUPPORTED).is_some();
        let child_spi = random_spi32(shared);
        let phase = Phase::AuthSent {
            request: init.request,
            exchange,
            child_spi,
        };
        self.state = State::Keyed(Box::new(Keyed::new(gen, peer_fragmentation, phase)));
        // MOBIKE needs IKE on the NAT-T port, where a NAT met later will
        // not cut it off (RFC 4555 3.3).
        if (self.esp_in_udp(shared) || shared.config.mobike) && !self.path.on_nat_t_port {
            self.nat_t_switch(shared);
        }
        self.last_heard = now;
        self.send_auth(shared, now);
        Ok(())
    }
}
