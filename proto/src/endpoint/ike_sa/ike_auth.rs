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
            .sign(&octets, ex.peer_signature_hashes)
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
        if found.idr.is_some_and(|idr| *idr != config.identity) {
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
        let Some(ex) = &self.exchange else {
            return effects;
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
        self.peer_identity = Some(proved);
        let mut inner: Vec<Payload> = vec![PayloadBody::IdR(config.identity.clone()).into()];
        inner.extend(Self::cert_payloads(shared));
        inner.push(PayloadBody::Auth(our_auth).into());

        let ni = ex.ni.clone();
        let nr = ex.nr.clone();
        self.state = State::Established;
        self.established(shared, now);
        match self.responder_child(shared, &found, &ni, &nr) {
            Ok((child, reply)) => {
                inner.extend(reply);
                self.send_response(shared, ExchangeType::IKE_AUTH, id, &inner);
                self.child_up(shared, now, child, None);
            }
            Err(ty) => {
                inner.push(notify(ty, Vec::new()));
                self.send_response(shared, ExchangeType::IKE_AUTH, id, &inner);
                shared.push_event(Event::ChildSaRefused {
                    sa: self.id,
                    notify: ty,
                });
            }
        }
        effects
    }

    /// The initial Child SA of a road warrior: an address from the pool,
    /// narrowed selectors, an ESP proposal.
    pub(super) fn responder_child(
        &mut self,
        shared: &mut Shared,
        found: &Found<'_>,
        ni: &[u8],
        nr: &[u8],
    ) -> Result<(ChildSa, Vec<Payload>), NotifyType> {
        let config = shared.config.clone();
        let (Some(sa), Some(tsi), Some(tsr)) = (found.sa, found.tsi, found.tsr) else {
            return Err(NotifyType::INVALID_SYNTAX);
        };
        let Some(cp) = found.cp.filter(|cp| cp.cfg_type == CfgType::REQUEST) else {
            return Err(NotifyType::FAILED_CP_REQUIRED);
        };
        if !cp
            .attributes
            .iter()
            .any(|a| a.ty == CfgAttributeType::INTERNAL_IP6_ADDRESS)
        {
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
        let identity = self
            .peer_identity
            .clone()
            .ok_or(NotifyType::AUTHENTICATION_FAILED)?;
        let address = match self.assigned_address {
            Some(a) => a,
            None => shared
                .pool
                .as_mut()
                .and_then(|p| p.assign(&identity))
                .ok_or(NotifyType::INTERNAL_ADDRESS_FAILURE)?,
        };
        self.assigned_address = Some(address);
        let host = ipv6_host(address);
        if !tsi.selectors.iter().any(|t| contains(t, &host)) {
            return Err(NotifyType::TS_UNACCEPTABLE);
        }
        let inbound_spi = random_spi32(shared);
        let keymat = KeymatInput {
            pfs: None,
            ni,
            nr,
            we_initiated: false,
        };
        let child = self.make_child(
            &choice,
            inbound_spi,
            keymat,
            local_ts.clone(),
            vec![host.clone()],
        )?;
        let mut reply_proposal = choice.reply;
        reply_proposal.spi = inbound_spi.to_be_bytes().to_vec();
        let mut attributes = vec![CfgAttribute::ip6_prefix(
            CfgAttributeType::INTERNAL_IP6_ADDRESS,
            address,
            128,
        )];
        for dns in &config.dns {
            let (ty, wanted) = match dns {
                IpAddr::V6(_) => (
                    CfgAttributeType::INTERNAL_IP6_DNS,
                    CfgAttributeType::INTERNAL_IP6_DNS,
                ),
                IpAddr::V4(_) => (
                    CfgAttributeType::INTERNAL_IP4_DNS,
                    CfgAttributeType::INTERNAL_IP4_DNS,
                ),
            };
            if cp.attributes.iter().any(|a| a.ty == wanted) {
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
                selectors: local_ts,
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
