//! IKE_AUTH (RFC 7296 1.2, 2.15): both AUTH payloads, the peer's
//! certificate chain and identity, and the first Child SA with its
//! configuration payload and narrowed traffic selectors. The responder's
//! answer waits for the peer's address to be durable
//! ([`Event::AddressRequested`]).

use super::*;

impl IkeSa {
    /// The IKE_SA_INIT values of a phase that still has them.
    fn exchange(&self) -> Result<&InitExchange, Error> {
        match self.keyed().map(|k| &k.phase) {
            Some(Phase::AuthSent { exchange, .. } | Phase::HalfOpen { exchange, .. }) => {
                Ok(exchange)
            }
            _ => Err(LocalPolicy::TemporaryFailure.into()),
        }
    }

    /// Our AUTH payload (RFC 7296 2.15): our IKE_SA_INIT message, the
    /// peer's nonce and prf(SK_p, our ID'), signed; with RFC 7427 when the
    /// peer announced SIGNATURE_HASH_ALGORITHMS.
    fn our_auth(&self, shared: &Shared) -> Result<Authentication, Error> {
        let ex = self.exchange()?;
        let gen = &self.keyed().ok_or(LocalPolicy::TemporaryFailure)?.gen;
        let (message, nonce, sk_p) = if gen.initiator {
            (&ex.request, &ex.nr, &gen.keys.sk_pi)
        } else {
            (&ex.response, &ex.ni, &gen.keys.sk_pr)
        };
        let octets = signed_octets(
            message,
            nonce,
            gen.suite.prf,
            sk_p,
            &shared.config.identity.body(),
        );
        Ok(shared
            .config
            .private_key
            .sign(&octets, ex.sign_mode(shared.config.ike_policy.legacy))?)
    }

    fn cert_payloads(shared: &Shared) -> Vec<Payload> {
        shared
            .config
            .certificates
            .iter()
            .map(|c| PayloadBody::Cert(Certificate::x509(c.clone())).into())
            .collect()
    }

    /// Sends our IKE_AUTH request (initiator).
    pub(super) fn send_auth(&mut self, shared: &mut Shared, now: Instant) {
        let auth = match self.our_auth(shared) {
            Ok(a) => a,
            Err(e) => {
                let reason =
                    DownReason::RefusedPeer(NotifyType::AUTHENTICATION_FAILED, e.to_string());
                self.close(shared, now, reason);
                return;
            }
        };
        let Some(Phase::AuthSent {
            request, child_spi, ..
        }) = self.keyed().map(|k| &k.phase)
        else {
            return;
        };
        let config = shared.config.clone();
        let mut inner: Vec<Payload> = vec![PayloadBody::IdI(config.identity.clone()).into()];
        inner.extend(Self::cert_payloads(shared));
        if request.initial_contact {
            inner.push(notify(NotifyType::INITIAL_CONTACT, Vec::new()));
        }
        if config.mobike {
            inner.push(notify(NotifyType::MOBIKE_SUPPORTED, Vec::new()));
        }
        inner.extend(certreq(shared));
        if let Some(idr) = request.remote_identity.as_ref().and_then(|i| i.to_wire()) {
            inner.push(PayloadBody::IdR(idr).into());
        }
        inner.push(PayloadBody::Auth(auth).into());
        if request.request_address {
            inner.push(PayloadBody::Cp(Configuration::address_request()).into());
        }
        inner.push(
            PayloadBody::Sa(SecurityAssociation {
                proposals: config.esp_policy.proposals(child_spi.to_be_bytes(), false),
            })
            .into(),
        );
        inner.push(PayloadBody::TsI(TrafficSelectors::new(request.local_ts.clone())).into());
        inner.push(PayloadBody::TsR(TrafficSelectors::new(request.remote_ts.clone())).into());
        self.send_request(shared, now, ExchangeType::IKE_AUTH, &inner, Request::Auth);
    }

    /// Checks the peer's certificate chain (for the role it plays),
    /// revocation, identity and AUTH payload; returns what it proved.
    fn authenticate_peer(
        &mut self,
        shared: &Shared,
        now: Instant,
        id: &Identification,
        certs: &[Vec<u8>],
        auth: &Authentication,
        peer_is_initiator: bool,
    ) -> Result<Credentials, Error> {
        self.claimed = Some(CanonicalIdentity::from_wire(id).map_or_else(
            |_| "an identity that does not parse".to_string(),
            |i| i.to_string(),
        ));
        let ex = self.exchange()?;
        let gen = &self.keyed().ok_or(LocalPolicy::TemporaryFailure)?.gen;
        let config = &shared.config;
        let purpose = if peer_is_initiator {
            Purpose::Client
        } else {
            Purpose::Server
        };
        let valid = config.trust_anchors.validate(
            certs,
            shared.unix_time(now),
            purpose,
            config.ike_policy.legacy,
        )?;
        let identity = match_identity(valid.leaf, id)?;
        shared.revocations.check(&valid.path, &identity)?;
        let (message, nonce, sk_p) = if peer_is_initiator {
            (&ex.request, &ex.nr, &gen.keys.sk_pi)
        } else {
            (&ex.response, &ex.ni, &gen.keys.sk_pr)
        };
        let octets = signed_octets(message, nonce, gen.suite.prf, sk_p, &id.body());
        auth::verify(auth, &octets, valid.leaf, config.ike_policy.legacy)?;
        Ok(Credentials {
            identity,
            path: valid.path,
        })
    }

    /// The responder's half of IKE_AUTH: authenticate, then the first
    /// Child SA, at once or once its address is durable.
    pub(super) fn handle_auth_request(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        id: u32,
        payloads: &[Payload],
    ) -> Result<Effects, Error> {
        let found = Found::new(payloads);
        let config = shared.config.clone();
        let idi = found.idi.ok_or_else(|| missing("IDi"))?;
        let auth = found.auth.ok_or_else(|| missing("AUTH"))?;
        let ours = CanonicalIdentity::from_wire(&config.identity);
        if let Some(idr) = found.idr {
            if CanonicalIdentity::from_wire(idr) != ours {
                return Err(LocalPolicy::WrongIdentity(format!(
                    "the peer asked for {:?}",
                    idr.identity()
                ))
                .into());
            }
        }
        let proved = self.authenticate_peer(shared, now, idi, &found.certs, auth, true)?;
        let initial_contact = found.notify(NotifyType::INITIAL_CONTACT).is_some();
        let live: Vec<SocketAddr> = shared
            .by_identity
            .get(&proved.identity)
            .map(|ids| ids.values().copied().collect())
            .unwrap_or_default();
        let here = SameDevice {
            ip: self.path.remote.ip(),
            port: self
                .nat
                .is_some_and(|n| n.peer_behind)
                .then_some(self.path.remote.port()),
        };
        let from_here = live.iter().filter(|a| here.is_at(**a)).count();
        // (whether it replaces, and whom: everyone, or only SAs from here)
        let (replaces, only_from) = match config.unique {
            Unique::Replace => (!live.is_empty(), None),
            // INITIAL_CONTACT where the identity's SA came from: the same
            // device, restarted. From elsewhere it is another device,
            // whose own first SA it is.
            Unique::Keep | Unique::Never if initial_contact && from_here > 0 => (true, Some(here)),
            Unique::Keep if !live.is_empty() => return Err(LocalPolicy::IdentityConnected.into()),
            Unique::Keep | Unique::Never => (false, None),
        };
        let remaining = match (replaces, only_from) {
            (true, None) => 0,
            (true, Some(_)) => live.len() - from_here,
            (false, _) => live.len(),
        };
        if remaining >= config.ike_sas_per_identity {
            return Err(LocalPolicy::TooManyIkeSas(remaining).into());
        }
        let our_auth = self.our_auth(shared)?;
        let mut effects = Effects {
            left_half_open: true,
            ..Effects::default()
        };
        if replaces {
            effects.replace_identity = Some((proved.identity.clone(), only_from));
        }
        let mut head: Vec<Payload> = vec![PayloadBody::IdR(config.identity.clone()).into()];
        head.extend(Self::cert_payloads(shared));
        head.push(PayloadBody::Auth(our_auth).into());
        self.mobike = config.mobike && found.notify(NotifyType::MOBIKE_SUPPORTED).is_some();
        if self.mobike {
            head.push(notify(NotifyType::MOBIKE_SUPPORTED, Vec::new()));
        }
        let request = ChildRequest::from_found(shared, &found);
        let (ni, nr) = {
            let ex = self.exchange()?;
            (ex.ni.clone(), ex.nr.clone())
        };
        match request {
            Err(e) => {
                self.establish(shared, now, proved, None);
                self.finish_auth(shared, now, id, head, Err(e));
            }
            Ok(request) => {
                // The lease is written elsewhere (a disk, a cluster); the
                // answer waits for it, nobody else does.
                let pending = PendingAuth {
                    message_id: id,
                    peer: proved.clone(),
                    head,
                    request,
                    ni,
                    nr,
                    deadline: now + config.half_open_timeout,
                };
                if let Some(k) = self.keyed_mut() {
                    k.phase = Phase::Admitting(Box::new(pending));
                }
                shared.push_event(Event::AddressRequested {
                    sa: self.id,
                    identity: proved.identity,
                });
            }
        }
        Ok(effects)
    }

    /// The address for a pending IKE_AUTH has come (or `None`: the pool
    /// is full or the store failed): answer it. Returns whether the SA was
    /// waiting for it; if not (it closed meanwhile), the caller gives the
    /// lease back.
    pub(crate) fn address_assigned(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        address: Option<Ipv6Addr>,
    ) -> bool {
        let Some(Phase::Admitting(p)) = self.keyed().map(|k| &k.phase) else {
            return false;
        };
        let peer = p.peer.clone();
        let Some(Phase::Admitting(pending)) = self.establish(shared, now, peer, address) else {
            return false;
        };
        let pending = *pending;
        let outcome = match address {
            Some(a) => Ok(ChildInput {
                request: pending.request,
                address: a,
                ni: pending.ni,
                nr: pending.nr,
            }),
            None => Err(LocalPolicy::InternalAddressFailure.into()),
        };
        // From here the SA holds the address, until it closes.
        self.finish_auth(shared, now, pending.message_id, pending.head, outcome);
        true
    }

    /// Sends the IKE_AUTH response: `head` (IDr, CERT, AUTH), then the
    /// Child SA made from `child`, or the notify that refuses it.
    fn finish_auth(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        id: u32,
        mut head: Vec<Payload>,
        child: Result<ChildInput, Error>,
    ) {
        match child.and_then(|input| self.responder_child(shared, input)) {
            Ok((child, reply)) => {
                head.extend(reply);
                self.send_response(shared, ExchangeType::IKE_AUTH, id, &head);
                self.child_up(shared, now, child, None);
            }
            Err(e) => {
                head.extend(error_notify(&e));
                self.send_response(shared, ExchangeType::IKE_AUTH, id, &head);
                shared.push_event(Event::ChildSaRefused {
                    sa: self.id,
                    notify: e.notify().unwrap_or(NotifyType::INVALID_SYNTAX),
                });
            }
        }
    }

    /// The initial Child SA of a road warrior, once its address is known:
    /// narrowed selectors, keys, and the reply payloads.
    fn responder_child(
        &mut self,
        shared: &mut Shared,
        input: ChildInput,
    ) -> Result<(ChildSa, Vec<Payload>), Error> {
        let config = shared.config.clone();
        let ChildInput {
            request,
            address,
            ni,
            nr,
        } = input;
        let host = ipv6_host(address);
        if !request.tsi.iter().any(|t| contains(t, &host)) {
            return Err(LocalPolicy::TsUnacceptable.into());
        }
        let inbound_spi = random_spi32(shared);
        let keymat = KeymatInput {
            pfs: None,
            ni: &ni,
            nr: &nr,
            we_initiated: false,
        };
        let child = self.make_child(
            shared,
            &request.choice,
            inbound_spi,
            keymat,
            request.local_ts.clone(),
            vec![host.clone()],
        )?;
        let mut reply_proposal = request.choice.reply.clone();
        reply_proposal.spi = inbound_spi.to_be_bytes().to_vec();
        let mut attributes = vec![CfgAttribute::ip6_prefix(
            CfgAttributeType::INTERNAL_IP6_ADDRESS,
            address,
            128,
        )];
        for dns in &config.dns {
            let ty = match dns {
                IpAddr::V6(_) => CfgAttributeType::INTERNAL_IP6_DNS,
                IpAddr::V4(_) => CfgAttributeType::INTERNAL_IP4_DNS,
            };
            if request.wanted.contains(&ty) {
                attributes.push(CfgAttribute::address(ty, *dns));
            }
        }
        let reply = vec![
            PayloadBody::Cp(Configuration::new(CfgType::REPLY, attributes)).into(),
            PayloadBody::Sa(SecurityAssociation {
                proposals: vec![reply_proposal],
            })
            .into(),
            PayloadBody::TsI(TrafficSelectors::new(vec![host])).into(),
            PayloadBody::TsR(TrafficSelectors::new(request.local_ts)).into(),
        ];
        Ok((child, reply))
    }

    /// Derives a Child SA's keys from the exchange that creates it:
    /// `ni`/`nr` are that exchange's nonces (its initiator's first), `pfs`
    /// its fresh shared secret, and `we_initiated` our role in it, which
    /// decides which direction is inbound.
    pub(super) fn make_child(
        &self,
        shared: &Shared,
        choice: &EspChoice,
        inbound_spi: u32,
        keymat: KeymatInput<'_>,
        local_ts: Vec<TrafficSelector>,
        remote_ts: Vec<TrafficSelector>,
    ) -> Result<ChildSa, Error> {
        let outbound_spi = <[u8; 4]>::try_from(choice.peer_spi.as_slice())
            .map(u32::from_be_bytes)
            .map_err(|_| InvalidMessage::InvalidValue("ESP SPI"))?;
        let gen = &self.keyed().ok_or(LocalPolicy::TemporaryFailure)?.gen;
        let len = ChildSaKeys::keymat_len(choice.encr, choice.integ);
        let bytes = child_keymat(
            gen.suite.prf,
            &gen.keys.sk_d,
            keymat.pfs,
            keymat.ni,
            keymat.nr,
            len,
        );
        let keys = ChildSaKeys::from_keymat(choice.encr, choice.integ, &bytes)
            .ok_or(PeerIncompatible::NoProposalChosen)?;
        let (inbound, outbound) = if keymat.we_initiated {
            (
                keys.responder_to_initiator.clone(),
                keys.initiator_to_responder.clone(),
            )
        } else {
            (
                keys.initiator_to_responder.clone(),
                keys.responder_to_initiator.clone(),
            )
        };
        Ok(ChildSa {
            ike_sa: self.id,
            inbound_spi,
            outbound_spi,
            inbound,
            outbound,
            encr: choice.encr,
            integ: choice.integ,
            esn: choice.esn,
            local_ts,
            remote_ts,
            local: self.path.local,
            remote: self.path.remote,
            udp_encapsulation: self.esp_in_udp(shared),
        })
    }

    /// The initiator's half: the responder's IKE_AUTH answer.
    pub(super) fn handle_auth_response(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        payloads: &[Payload],
    ) {
        let found = Found::new(payloads);
        let (Some(idr), Some(auth)) = (found.idr, found.auth) else {
            let ty = found.error().unwrap_or(NotifyType::INVALID_SYNTAX);
            self.close(shared, now, DownReason::RefusedByPeer(ty));
            return;
        };
        let Some(Phase::AuthSent {
            request,
            exchange,
            child_spi,
        }) = self.keyed().map(|k| &k.phase)
        else {
            return;
        };
        let (request, child_spi) = (request.clone(), *child_spi);
        let (ni, nr) = (exchange.ni.clone(), exchange.nr.clone());
        let verdict = match &request.remote_identity {
            Some(want) if CanonicalIdentity::from_wire(idr).as_ref() != Ok(want) => {
                Err(Error::LocalPolicy(LocalPolicy::WrongIdentity(format!(
                    "the responder is {}, not {want}",
                    CanonicalIdentity::from_wire(idr)
                        .map_or_else(|e| e.to_string(), |i| i.to_string()),
                ))))
            }
            _ => self.authenticate_peer(shared, now, idr, &found.certs, auth, false),
        };
        let proved = match verdict {
            Ok(p) => p,
            Err(e) => {
                // RFC 7296 2.21.2: tell the responder, then give up. No
                // retransmission: the SA is over whether it arrives or not.
                let reason =
                    DownReason::RefusedPeer(NotifyType::AUTHENTICATION_FAILED, e.to_string());
                let refusal = notify(NotifyType::AUTHENTICATION_FAILED, Vec::new());
                self.tell_and_close(shared, now, &[refusal], reason);
                return;
            }
        };
        self.mobike = shared.config.mobike && found.notify(NotifyType::MOBIKE_SUPPORTED).is_some();
        self.establish(shared, now, proved, None);
        match self.initiator_child(shared, &found, child_spi, &request, (&ni, &nr)) {
            Ok(child) => self.child_up(shared, now, child, None),
            Err(e) => {
                shared.push_event(Event::ChildSaRefused {
                    sa: self.id,
                    notify: e.notify().unwrap_or(NotifyType::INVALID_SYNTAX),
                });
                // Without its Child SA the connection is of no use.
                self.queue(Task::DeleteIke);
            }
        }
    }

    /// The initiator's first Child SA, from the responder's answer: its
    /// choice must be one we offered, its selectors within what we asked.
    fn initiator_child(
        &mut self,
        shared: &mut Shared,
        found: &Found<'_>,
        child_spi: u32,
        request: &ConnectRequest,
        (ni, nr): (&[u8], &[u8]),
    ) -> Result<ChildSa, Error> {
        if let Some(ty) = found.error() {
            return Err(refused_by_peer(ty));
        }
        let sa = found.sa.ok_or_else(|| missing("SA"))?;
        let tsi = found.tsi.ok_or_else(|| missing("TSi"))?;
        let tsr = found.tsr.ok_or_else(|| missing("TSr"))?;
        let config = shared.config.clone();
        let offered = config.esp_policy.proposals(child_spi.to_be_bytes(), false);
        let [reply] = sa.proposals.as_slice() else {
            return Err(PeerIncompatible::NoProposalChosen.into());
        };
        let ours = offered
            .iter()
            .find(|p| p.number == reply.number)
            .ok_or(PeerIncompatible::NoProposalChosen)?;
        if !reply.transforms.iter().all(|t| ours.transforms.contains(t)) {
            return Err(PeerIncompatible::NoProposalChosen.into());
        }
        let choice = config
            .esp_policy
            .select(std::slice::from_ref(reply), None)?;
        // Narrowing may only shrink what we proposed.
        let within = |got: &[TrafficSelector], proposed: &[TrafficSelector]| {
            !got.is_empty() && got.iter().all(|g| proposed.iter().any(|p| contains(p, g)))
        };
        if !within(&tsi.selectors, &request.local_ts) || !within(&tsr.selectors, &request.remote_ts)
        {
            return Err(LocalPolicy::TsUnacceptable.into());
        }
        check_selector_count(&config, &tsi.selectors)?;
        check_selector_count(&config, &tsr.selectors)?;
        if request.request_address {
            let cp = found
                .cp
                .filter(|c| c.cfg_type == CfgType::REPLY)
                .ok_or(LocalPolicy::FailedCpRequired)?;
            let address = cp
                .attributes
                .iter()
                .filter(|a| a.ty == CfgAttributeType::INTERNAL_IP6_ADDRESS)
                .find_map(CfgAttribute::as_ip6_prefix)
                .ok_or(LocalPolicy::FailedCpRequired)?;
            let dns = cp
                .attributes
                .iter()
                .filter(|a| {
                    matches!(
                        a.ty,
                        CfgAttributeType::INTERNAL_IP6_DNS | CfgAttributeType::INTERNAL_IP4_DNS
                    )
                })
                .filter_map(CfgAttribute::as_address)
                .collect();
            shared.push_event(Event::AddressAssigned {
                sa: self.id,
                address,
                dns,
            });
        }
        let keymat = KeymatInput {
            pfs: None,
            ni,
            nr,
            we_initiated: true,
        };
        self.make_child(
            shared,
            &choice,
            child_spi,
            keymat,
            tsi.selectors.clone(),
            tsr.selectors.clone(),
        )
    }
}

/// The error a peer's refusal notify stands for, so that the event
/// raised carries the same notify back.
pub(super) fn refused_by_peer(ty: NotifyType) -> Error {
    match ty {
        NotifyType::NO_PROPOSAL_CHOSEN => PeerIncompatible::NoProposalChosen.into(),
        NotifyType::TS_UNACCEPTABLE => LocalPolicy::TsUnacceptable.into(),
        NotifyType::INTERNAL_ADDRESS_FAILURE => LocalPolicy::InternalAddressFailure.into(),
        NotifyType::FAILED_CP_REQUIRED => LocalPolicy::FailedCpRequired.into(),
        NotifyType::NO_ADDITIONAL_SAS => LocalPolicy::NoAdditionalSas.into(),
        NotifyType::TEMPORARY_FAILURE => LocalPolicy::TemporaryFailure.into(),
        NotifyType::AUTHENTICATION_FAILED => PeerMisbehaved::AuthenticationFailed.into(),
        _ => InvalidMessage::InvalidValue("the peer's refusal").into(),
    }
}

/// What a road warrior's IKE_AUTH asks of its first Child SA, checked and
/// kept (owned) while its address is being written: everything but the
/// address is decided before the address is asked for, so a request that
/// cannot succeed costs no lease.
pub(super) struct ChildRequest {
    choice: EspChoice,
    tsi: Vec<TrafficSelector>,
    local_ts: Vec<TrafficSelector>,
    /// The configuration attributes the peer asked for.
    wanted: Vec<CfgAttributeType>,
}

impl ChildRequest {
    fn from_found(shared: &Shared, found: &Found<'_>) -> Result<ChildRequest, Error> {
        let config = &shared.config;
        let sa = found.sa.ok_or_else(|| missing("SA"))?;
        let tsi = found.tsi.ok_or_else(|| missing("TSi"))?;
        let tsr = found.tsr.ok_or_else(|| missing("TSr"))?;
        let cp = found
            .cp
            .filter(|cp| cp.cfg_type == CfgType::REQUEST)
            .ok_or(LocalPolicy::FailedCpRequired)?;
        let wanted: Vec<CfgAttributeType> = cp.attributes.iter().map(|a| a.ty).collect();
        if !wanted.contains(&CfgAttributeType::INTERNAL_IP6_ADDRESS) {
            return Err(LocalPolicy::FailedCpRequired.into());
        }
        let choice = config.esp_policy.select(&sa.proposals, None)?;
        // TSi is narrowed to the client's own address, whatever it asked;
        // TSr must be few enough to install.
        let local_ts = narrow(&tsr.selectors, &config.responder_local_ts);
        check_selector_count(config, &local_ts)?;
        if local_ts.is_empty()
            || !tsi
                .selectors
                .iter()
                .any(|t| matches!(t, TrafficSelector::Ipv6(_)))
        {
            return Err(LocalPolicy::TsUnacceptable.into());
        }
        Ok(ChildRequest {
            choice,
            tsi: tsi.selectors.clone(),
            local_ts,
            wanted,
        })
    }
}

/// Refuses more traffic selectors than `[limits]` allows on one side of a
/// Child SA: each becomes kernel policies.
pub(super) fn check_selector_count(
    config: &crate::endpoint::Config,
    ts: &[TrafficSelector],
) -> Result<(), Error> {
    let limit = config.traffic_selectors_per_child_sa;
    if ts.len() > limit {
        return Err(LocalPolicy::TooManyTrafficSelectors(ts.len(), limit).into());
    }
    Ok(())
}

/// A Child SA to make: the request, the address, the nonces of IKE_AUTH.
struct ChildInput {
    request: ChildRequest,
    address: Ipv6Addr,
    ni: Vec<u8>,
    nr: Vec<u8>,
}

/// An IKE_AUTH request waiting for its address.
pub(super) struct PendingAuth {
    message_id: u32,
    /// What the peer proved.
    pub(super) peer: Credentials,
    /// IDr, CERT and AUTH: the start of the response.
    head: Vec<Payload>,
    request: ChildRequest,
    /// The IKE_SA_INIT nonces, for the Child SA's keys.
    ni: Vec<u8>,
    nr: Vec<u8>,
    /// When to give up waiting and answer INTERNAL_ADDRESS_FAILURE.
    pub(super) deadline: Instant,
}
