//! IKE_AUTH (RFC 7296 1.2, 2.15): both AUTH payloads, the peer's
//! certificate chain and identity, and the first Child SA with its
//! configuration payload and narrowed traffic selectors.

use super::*;

impl IkeSa {
    /// Our AUTH payload (RFC 7296 2.15): our IKE_SA_INIT message, the
    /// peer's nonce and prf(SK_p, our ID'), signed; with RFC 7427 when the
    /// peer announced SIGNATURE_HASH_ALGORITHMS.
    pub(super) fn our_auth(&self, shared: &Shared) -> Result<Authentication, String> {
        let (Some(gen), Some(ex)) = (&self.gen, &self.exchange) else {
            return Err("no keys".into());
        };
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
        shared
            .config
            .private_key
            .sign(&octets, ex.sign_mode(shared.config.ike_policy.legacy))
            .map_err(|e| e.to_string())
    }

    pub(super) fn cert_payloads(shared: &Shared) -> Vec<Payload> {
        shared
            .config
            .certificates
            .iter()
            .map(|c| PayloadBody::Cert(Certificate::x509(c.clone())).into())
            .collect()
    }

    pub(super) fn send_auth(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        request: &ConnectRequest,
    ) {
        let config = shared.config.clone();
        let auth = match self.our_auth(shared) {
            Ok(a) => a,
            Err(why) => {
                self.close(
                    shared,
                    now,
                    DownReason::RefusedPeer(NotifyType::AUTHENTICATION_FAILED, why),
                );
                return;
            }
        };
        let child_spi = random_spi32(shared);
        let mut inner: Vec<Payload> = vec![PayloadBody::IdI(config.identity.clone()).into()];
        inner.extend(Self::cert_payloads(shared));
        if request.initial_contact {
            inner.push(notify(NotifyType::INITIAL_CONTACT, Vec::new()));
        }
        inner.extend(certreq(shared));
        if let Some(idr) = request.remote_identity.as_ref().and_then(|i| i.to_wire()) {
            inner.push(PayloadBody::IdR(idr).into());
        }
        inner.push(PayloadBody::Auth(auth).into());
        if request.request_address {
            inner.push(
                PayloadBody::Cp(Configuration {
                    cfg_type: CfgType::REQUEST,
                    attributes: vec![
                        CfgAttribute::request(CfgAttributeType::INTERNAL_IP6_ADDRESS),
                        CfgAttribute::request(CfgAttributeType::INTERNAL_IP6_DNS),
                    ],
                })
                .into(),
            );
        }
        inner.push(
            PayloadBody::Sa(SecurityAssociation {
                proposals: config.esp_policy.proposals(child_spi.to_be_bytes(), false),
            })
            .into(),
        );
        inner.push(
            PayloadBody::TsI(TrafficSelectors {
                selectors: request.local_ts.clone(),
            })
            .into(),
        );
        inner.push(
            PayloadBody::TsR(TrafficSelectors {
                selectors: request.remote_ts.clone(),
            })
            .into(),
        );
        self.state = State::AuthSent;
        self.send_request(
            shared,
            now,
            ExchangeType::IKE_AUTH,
            &inner,
            Request::Auth { child_spi },
        );
    }

    /// Checks the peer's certificate chain, identity and AUTH payload;
    /// returns the identity proven, in canonical form.
    pub(super) fn authenticate_peer(
        &self,
        shared: &Shared,
        now: Instant,
        id: &Identification,
        certs: &[Vec<u8>],
        auth: &Authentication,
        peer_is_initiator: bool,
    ) -> Result<CanonicalIdentity, String> {
        let (Some(gen), Some(ex)) = (&self.gen, &self.exchange) else {
            return Err("no keys".into());
        };
        let config = &shared.config;
        let leaf = config
            .trust_anchors
            .validate(certs, shared.unix_time(now))
            .map_err(|e: CertError| e.to_string())?;
        let proved = match_identity(leaf, id).map_err(|e| e.to_string())?;
        let (message, nonce, sk_p) = if peer_is_initiator {
            (&ex.request, &ex.nr, &gen.keys.sk_pi)
        } else {
            (&ex.response, &ex.ni, &gen.keys.sk_pr)
        };
        let octets = signed_octets(message, nonce, gen.suite.prf, sk_p, &id.body());
        auth::verify(auth, &octets, leaf, config.ike_policy.legacy).map_err(|e| e.to_string())?;
        Ok(proved)
    }

    pub(super) fn handle_auth_request(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        id: u32,
        payloads: &[Payload],
    ) -> Effects {
        let mut effects = Effects {
            left_half_open: true,
            ..Effects::default()
        };
        self.half_open_deadline = None;
        let found = Found::new(payloads);
        let config = shared.config.clone();
        let (Some(idi), Some(auth)) = (found.idi, found.auth) else {
            self.refuse_auth(
                shared,
                now,
                id,
                NotifyType::INVALID_SYNTAX,
                "IKE_AUTH lacks IDi or AUTH".into(),
            );
            return effects;
        };
        let ours = CanonicalIdentity::from_wire(&config.identity);
        if found
            .idr
            .is_some_and(|idr| CanonicalIdentity::from_wire(idr) != ours)
        {
            let why = format!(
                "peer asked for identity {:?}",
                found.idr.map(|i| i.identity())
            );
            self.refuse_auth(shared, now, id, NotifyType::AUTHENTICATION_FAILED, why);
            return effects;
        }
        let proved = match self.authenticate_peer(shared, now, idi, &found.certs, auth, true) {
            Ok(p) => p,
            Err(why) => {
                self.refuse_auth(shared, now, id, NotifyType::AUTHENTICATION_FAILED, why);
                return effects;
            }
        };
        let our_auth = match self.our_auth(shared) {
            Ok(a) => a,
            Err(why) => {
                self.refuse_auth(shared, now, id, NotifyType::AUTHENTICATION_FAILED, why);
                return effects;
            }
        };
        if found.notify(NotifyType::INITIAL_CONTACT).is_some() {
            effects.replace_identity = Some(proved.clone());
        }
        let mut head: Vec<Payload> = vec![PayloadBody::IdR(config.identity.clone()).into()];
        head.extend(Self::cert_payloads(shared));
        head.push(PayloadBody::Auth(our_auth).into());
        self.peer_identity = Some(proved.clone());
        self.state = State::Established;
        self.established(shared, now);
        match ChildRequest::from_found(shared, &found) {
            Err(ty) => self.finish_auth(shared, now, id, head, Err(ty)),
            Ok(request) => match self.assigned_address {
                Some(address) => self.finish_auth(shared, now, id, head, Ok((request, address))),
                None => {
                    // The lease is written elsewhere (a disk, a cluster);
                    // the answer waits for it, nobody else does.
                    self.state = State::Admitting;
                    self.pending_auth = Some(PendingAuth {
                        message_id: id,
                        head,
                        request,
                        deadline: now + config.half_open_timeout,
                    });
                    shared.push_event(Event::AddressRequested {
                        sa: self.id,
                        identity: proved,
                    });
                }
            },
        }
        effects
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
        if self.state != State::Admitting {
            return false;
        }
        let Some(pending) = self.pending_auth.take() else {
            return false;
        };
        self.state = State::Established;
        let outcome = match address {
            Some(a) => Ok((pending.request, a)),
            None => Err(NotifyType::INTERNAL_ADDRESS_FAILURE),
        };
        // From here the SA holds the address, until it closes.
        self.finish_auth(shared, now, pending.message_id, pending.head, outcome);
        true
    }

    /// Sends the IKE_AUTH response: `head` (IDr, CERT, AUTH), then the
    /// Child SA made from `child` with its address, or the notify that
    /// refuses it.
    fn finish_auth(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        id: u32,
        mut head: Vec<Payload>,
        child: Result<(ChildRequest, Ipv6Addr), NotifyType>,
    ) {
        let made = child.and_then(|(request, address)| {
            self.assigned_address = Some(address);
            self.responder_child(shared, &request, address)
        });
        match made {
            Ok((child, reply)) => {
                head.extend(reply);
                self.send_response(shared, ExchangeType::IKE_AUTH, id, &head);
                self.child_up(shared, now, child, None);
            }
            Err(ty) => {
                head.push(notify(ty, Vec::new()));
                self.send_response(shared, ExchangeType::IKE_AUTH, id, &head);
                shared.push_event(Event::ChildSaRefused {
                    sa: self.id,
                    notify: ty,
                });
            }
        }
    }

    /// The initial Child SA of a road warrior, once its address is known:
    /// narrowed selectors, keys, and the reply payloads.
    fn responder_child(
        &mut self,
        shared: &mut Shared,
        request: &ChildRequest,
        address: Ipv6Addr,
    ) -> Result<(ChildSa, Vec<Payload>), NotifyType> {
        let config = shared.config.clone();
        let host = ipv6_host(address);
        if !request.tsi.iter().any(|t| contains(t, &host)) {
            return Err(NotifyType::TS_UNACCEPTABLE);
        }
        let (ni, nr) = match &self.exchange {
            Some(ex) => (ex.ni.clone(), ex.nr.clone()),
            None => return Err(NotifyType::INVALID_SYNTAX),
        };
        let inbound_spi = random_spi32(shared);
        let keymat = KeymatInput {
            pfs: None,
            ni: &ni,
            nr: &nr,
            we_initiated: false,
        };
        let child = self.make_child(
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
            PayloadBody::Cp(Configuration {
                cfg_type: CfgType::REPLY,
                attributes,
            })
            .into(),
            PayloadBody::Sa(SecurityAssociation {
                proposals: vec![reply_proposal],
            })
            .into(),
            PayloadBody::TsI(TrafficSelectors {
                selectors: vec![host],
            })
            .into(),
            PayloadBody::TsR(TrafficSelectors {
                selectors: request.local_ts.clone(),
            })
            .into(),
        ];
        Ok((child, reply))
    }

    /// Derives a Child SA's keys from the exchange that creates it:
    /// `ni`/`nr` are that exchange's nonces (its initiator's first), `pfs`
    /// its fresh shared secret, and `we_initiated` our role in it, which
    /// decides which direction is inbound.
    pub(super) fn make_child(
        &self,
        choice: &EspChoice,
        inbound_spi: u32,
        keymat: KeymatInput<'_>,
        local_ts: Vec<TrafficSelector>,
        remote_ts: Vec<TrafficSelector>,
    ) -> Result<ChildSa, NotifyType> {
        let outbound_spi = <[u8; 4]>::try_from(choice.peer_spi.as_slice())
            .map(u32::from_be_bytes)
            .map_err(|_| NotifyType::INVALID_SYNTAX)?;
        let gen = self.gen.as_ref().ok_or(NotifyType::INVALID_SYNTAX)?;
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
            .ok_or(NotifyType::NO_PROPOSAL_CHOSEN)?;
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
            local: self.local,
            remote: self.remote,
            udp_encapsulation: self.nat,
        })
    }

    pub(super) fn refuse_auth(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        id: u32,
        ty: NotifyType,
        why: String,
    ) {
        self.send_response(
            shared,
            ExchangeType::IKE_AUTH,
            id,
            &[notify(ty, Vec::new())],
        );
        self.close(shared, now, DownReason::RefusedPeer(ty, why));
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
    fn from_found(shared: &Shared, found: &Found<'_>) -> Result<ChildRequest, NotifyType> {
        let config = &shared.config;
        let (Some(sa), Some(tsi), Some(tsr)) = (found.sa, found.tsi, found.tsr) else {
            return Err(NotifyType::INVALID_SYNTAX);
        };
        let Some(cp) = found.cp.filter(|cp| cp.cfg_type == CfgType::REQUEST) else {
            return Err(NotifyType::FAILED_CP_REQUIRED);
        };
        let wanted: Vec<CfgAttributeType> = cp.attributes.iter().map(|a| a.ty).collect();
        if !wanted.contains(&CfgAttributeType::INTERNAL_IP6_ADDRESS) {
            return Err(NotifyType::FAILED_CP_REQUIRED);
        }
        let choice = config
            .esp_policy
            .select(&sa.proposals, None)
            .map_err(|_| NotifyType::NO_PROPOSAL_CHOSEN)?;
        let local_ts = narrow(&tsr.selectors, &config.responder_local_ts);
        if local_ts.is_empty()
            || !tsi
                .selectors
                .iter()
                .any(|t| matches!(t, TrafficSelector::Ipv6(_)))
        {
            return Err(NotifyType::TS_UNACCEPTABLE);
        }
        Ok(ChildRequest {
            choice,
            tsi: tsi.selectors.clone(),
            local_ts,
            wanted,
        })
    }
}

/// An IKE_AUTH request waiting for its address.
pub(super) struct PendingAuth {
    message_id: u32,
    /// IDr, CERT and AUTH: the start of the response.
    head: Vec<Payload>,
    request: ChildRequest,
    /// When to give up waiting and answer INTERNAL_ADDRESS_FAILURE.
    pub(super) deadline: Instant,
}
