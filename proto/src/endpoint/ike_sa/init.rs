//! IKE_SA_INIT (RFC 7296 1.2): the initiator's request and its retries
//! (COOKIE, INVALID_KE_PAYLOAD), and the responder's stateless checks and
//! answer.

use super::*;

impl IkeSa {
    pub(crate) fn initiate(
        shared: &mut Shared,
        now: Instant,
        id: SaId,
        spi: u64,
        request: ConnectRequest,
    ) -> IkeSa {
        let mut sa = IkeSa::blank(id, now, request.local, request.remote, State::InitSent);
        sa.dpd_interval = shared.config.dpd_interval;
        sa.on_nat_t_port = request.remote.port() == shared.config.nat_t_port;
        let group = shared
            .config
            .ike_policy
            .ke
            .first()
            .copied()
            .unwrap_or(KeGroup::Curve25519);
        let ni = random_bytes(shared, NONCE_LEN);
        let ke = KeyExchangeSecret::generate(group, &mut *shared.rng);
        sa.init = Some(InitiatorInit {
            request,
            ni,
            ke,
            cookie: None,
            retries: 0,
        });
        sa.init_key = Some((sa.remote, spi));
        sa.send_init(shared, now, spi);
        sa
    }

    pub(super) fn send_init(&mut self, shared: &mut Shared, now: Instant, spi_i: u64) {
        let Some(init) = &self.init else { return };
        let config = &shared.config;
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
            PayloadBody::Ke(KeyExchange {
                group: init.ke.group().id(),
                data: init.ke.public_value(),
            })
            .into(),
        );
        payloads.push(PayloadBody::Nonce(init.ni.clone()).into());
        let source = if config.force_udp_encapsulation {
            random_bytes(shared, 20)
        } else {
            nat_hash(spi_i, 0, self.local)
        };
        payloads.push(notify(NotifyType::NAT_DETECTION_SOURCE_IP, source));
        payloads.push(notify(
            NotifyType::NAT_DETECTION_DESTINATION_IP,
            nat_hash(spi_i, 0, self.remote),
        ));
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
        self.send(shared, std::slice::from_ref(&bytes));
        self.outstanding = Some(Outstanding {
            id: 0,
            datagrams: vec![bytes],
            tries: 0,
            next_at: now + shared.config.retransmit_timeout,
            kind: Request::Init,
        });
    }

    /// A new IKE_SA_INIT request: the responder's half of the exchange.
    /// Returns the half-open SA, or `None` after answering with an error
    /// or a cookie request (keeping no state).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn respond(
        shared: &mut Shared,
        now: Instant,
        id: SaId,
        spi_r: u64,
        remote: SocketAddr,
        local: SocketAddr,
        datagram: &[u8],
        header: &Header,
        cookies: Option<&crate::endpoint::cookie::CookieJar>,
    ) -> Option<IkeSa> {
        let msg = match Message::parse(datagram) {
            Ok(m) => m,
            Err(e) => {
                shared.stats.invalid += 1;
                if let Some(ty) = Error::from(e).notify() {
                    init_error(shared, header, remote, local, ty, Vec::new());
                }
                return None;
            }
        };
        let found = Found::new(&msg.payloads);
        let (Some(sa), Some(ke), Some(ni)) = (found.sa, found.ke, found.nonce_ok()) else {
            init_error(
                shared,
                header,
                remote,
                local,
                NotifyType::INVALID_SYNTAX,
                Vec::new(),
            );
            return None;
        };
        if let Some(jar) = cookies {
            let valid = found
                .notify(NotifyType::COOKIE)
                .is_some_and(|c| jar.check(&c.data, ni, remote.ip(), header.spi_i));
            if !valid {
                shared.stats.cookies_sent += 1;
                let cookie = jar.cookie(ni, remote.ip(), header.spi_i);
                init_error(shared, header, remote, local, NotifyType::COOKIE, cookie);
                return None;
            }
        }
        let config = shared.config.clone();
        let choice = match config.ike_policy.select(&sa.proposals, Some(ke.group)) {
            Ok(c) => c,
            Err(_) => {
                init_error(
                    shared,
                    header,
                    remote,
                    local,
                    NotifyType::NO_PROPOSAL_CHOSEN,
                    Vec::new(),
                );
                return None;
            }
        };
        let suite = choice.suite;
        if suite.ke.id() != ke.group {
            let wanted = suite.ke.id().0.to_be_bytes().to_vec();
            init_error(
                shared,
                header,
                remote,
                local,
                NotifyType::INVALID_KE_PAYLOAD,
                wanted,
            );
            return None;
        }
        let secret = KeyExchangeSecret::generate(suite.ke, &mut *shared.rng);
        let Ok(shared_secret) = secret.agree(&ke.data) else {
            init_error(
                shared,
                header,
                remote,
                local,
                NotifyType::INVALID_SYNTAX,
                Vec::new(),
            );
            return None;
        };
        let nr = random_bytes(shared, NONCE_LEN);
        let spi_i = header.spi_i;

        // NAT detection: the peer hashed the addresses it used, with SPIr 0.
        let nat = found.nat_detected(spi_i, 0, remote, local);
        let peer_nat_d = nat.is_some();
        let peer_fragmentation = found.notify(NotifyType::FRAGMENTATION_SUPPORTED).is_some();
        let peer_hashes = found.signature_hashes();

        let mut payloads = vec![
            PayloadBody::Sa(SecurityAssociation {
                proposals: vec![choice.reply],
            })
            .into(),
            PayloadBody::Ke(KeyExchange {
                group: suite.ke.id(),
                data: secret.public_value(),
            })
            .into(),
            PayloadBody::Nonce(nr.clone()).into(),
        ];
        if peer_nat_d {
            let source = if config.force_udp_encapsulation {
                random_bytes(shared, 20)
            } else {
                nat_hash(spi_i, spi_r, local)
            };
            payloads.push(notify(NotifyType::NAT_DETECTION_SOURCE_IP, source));
            payloads.push(notify(
                NotifyType::NAT_DETECTION_DESTINATION_IP,
                nat_hash(spi_i, spi_r, remote),
            ));
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
        .ok()?;

        let seed = skeyseed(suite.prf, ni, &nr, &shared_secret);
        let keys = IkeSaKeys::derive(&suite, &seed, ni, &nr, spi_i, spi_r);
        let mut gen = Generation::new(shared, id, suite, seed, keys, spi_i, spi_r, false)?;
        gen.expected_peer_id = 1;
        gen.last_response = Some((0, vec![response.clone()]));

        let mut sa = IkeSa::blank(id, now, local, remote, State::HalfOpen);
        sa.dpd_interval = config.dpd_interval;
        sa.on_nat_t_port = local.port() == config.nat_t_port;
        sa.nat = nat.is_some_and(|translated| translated || config.force_udp_encapsulation);
        sa.gen = Some(gen);
        sa.exchange = Some(InitExchange {
            ni: ni.to_vec(),
            nr,
            request: datagram.to_vec(),
            response: response.clone(),
            peer_fragmentation,
            peer_hashes,
        });
        sa.init_key = Some((remote, spi_i));
        sa.half_open_deadline = Some(now + config.half_open_timeout);
        sa.send(shared, &[response]);
        Some(sa)
    }

    pub(super) fn handle_init_response(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        datagram: &[u8],
        header: &Header,
    ) -> Effects {
        let effects = Effects::default();
        if self.state != State::InitSent || header.message_id != 0 {
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
        let spi_i = header.spi_i;
        let Some(init) = &mut self.init else {
            return effects;
        };
        if let Some(cookie) = found.notify(NotifyType::COOKIE) {
            if init.retries < MAX_INIT_RETRIES {
                init.retries += 1;
                init.cookie = Some(cookie.data.clone());
                self.send_init(shared, now, spi_i);
            }
            return effects;
        }
        if let Some(n) = found.notify(NotifyType::INVALID_KE_PAYLOAD) {
            let wanted = <[u8; 2]>::try_from(n.data.as_slice())
                .ok()
                .map(|b| TransformId(u16::from_be_bytes(b)))
                .and_then(|id| KeGroup::from_id(id, shared.config.ike_policy.legacy))
                .filter(|g| shared.config.ike_policy.ke.contains(g));
            match wanted {
                Some(group) if init.retries < MAX_INIT_RETRIES && group != init.ke.group() => {
                    init.retries += 1;
                    init.ke = KeyExchangeSecret::generate(group, &mut *shared.rng);
                    self.send_init(shared, now, spi_i);
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
        let refuse = |sa: &mut IkeSa, shared: &mut Shared, why: &str| {
            sa.close(
                shared,
                now,
                DownReason::RefusedPeer(NotifyType::INVALID_SYNTAX, why.to_string()),
            );
            Effects::default()
        };
        let (Some(sa_payload), Some(ke), Some(nr)) = (found.sa, found.ke, found.nonce_ok()) else {
            return refuse(self, shared, "IKE_SA_INIT response lacks SA, KE or nonce");
        };
        if header.spi_r == 0 {
            return refuse(self, shared, "responder SPI is zero");
        }
        let Ok(suite) = shared.config.ike_policy.accept_reply(&sa_payload.proposals) else {
            return refuse(self, shared, "responder chose a proposal we did not offer");
        };
        let Some(init) = self.init.take() else {
            return effects;
        };
        if suite.ke != init.ke.group() || ke.group != init.ke.group().id() {
            return refuse(self, shared, "key exchange group mismatch");
        }
        let Ok(shared_secret) = init.ke.agree(&ke.data) else {
            return refuse(self, shared, "invalid KE public value");
        };
        let spi_r = header.spi_r;
        let seed = skeyseed(suite.prf, &init.ni, nr, &shared_secret);
        let keys = IkeSaKeys::derive(&suite, &seed, &init.ni, nr, spi_i, spi_r);
        let Some(mut gen) = Generation::new(shared, self.id, suite, seed, keys, spi_i, spi_r, true)
        else {
            return refuse(self, shared, "keys");
        };
        gen.next_request_id = 1;
        self.nat = found
            .nat_detected(spi_i, spi_r, self.remote, self.local)
            .is_some_and(|translated| translated || shared.config.force_udp_encapsulation);
        if self.nat && !self.on_nat_t_port {
            self.nat_t_switch(shared);
        }
        self.gen = Some(gen);
        self.exchange = Some(InitExchange {
            ni: init.ni.clone(),
            nr: nr.to_vec(),
            request: self
                .outstanding
                .take()
                .and_then(|o| o.datagrams.into_iter().next())
                .unwrap_or_default(),
            response: datagram.to_vec(),
            peer_fragmentation: found.notify(NotifyType::FRAGMENTATION_SUPPORTED).is_some(),
            peer_hashes: found.signature_hashes(),
        });
        self.last_heard = now;
        self.send_auth(shared, now, &init.request);
        self.init = Some(init);
        effects
    }
}
