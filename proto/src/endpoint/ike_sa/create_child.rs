//! CREATE_CHILD_SA (RFC 7296 1.3): Child SA rekeys with optional PFS and
//! their collisions (2.8.1), and IKE SA rekeys with the retirement of the
//! old generation.

use super::*;

impl IkeSa {
    /// A CREATE_CHILD_SA request: an IKE SA rekey (an SA payload for
    /// protocol IKE) or a Child SA rekey (REKEY_SA); we create Child SAs
    /// in IKE_AUTH only.
    pub(super) fn handle_create_child_request(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        id: u32,
        payloads: &[Payload],
    ) -> Result<Effects, Error> {
        let found = Found::new(payloads);
        let sa = found.sa.ok_or_else(|| missing("SA"))?;
        let ni = found.nonce()?;
        if self
            .keyed()
            .and_then(Keyed::session)
            .is_none_or(|s| s.deleting)
        {
            return Err(LocalPolicy::TemporaryFailure.into());
        }
        let request = RekeyRequest {
            id,
            found: &found,
            sa,
            ni,
        };
        if sa.proposals.iter().any(|p| p.protocol == ProtocolId::IKE) {
            return self.handle_ike_rekey_request(shared, now, request);
        }
        self.handle_child_rekey_request(shared, now, request)?;
        Ok(Effects::default())
    }

    fn handle_ike_rekey_request(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        request: RekeyRequest<'_>,
    ) -> Result<Effects, Error> {
        let RekeyRequest { id, found, sa, ni } = request;
        let ours_in_flight = self.keyed().is_some_and(|k| {
            matches!(
                &k.outstanding,
                Some(Outstanding {
                    kind: Request::RekeyIke(_),
                    ..
                })
            )
        });
        if ours_in_flight {
            // Simultaneous IKE rekey: RFC 7296 2.8.2 lets both finish;
            // refusing ours-too-late keeps one winner without the nonce
            // comparison dance.
            return Err(LocalPolicy::TemporaryFailure.into());
        }
        let config = shared.config.clone();
        let ke = found.ke.ok_or_else(|| missing("KE"))?;
        let choice = config.ike_policy.select(&sa.proposals, Some(ke.group))?;
        if choice.suite.ke.id() != ke.group {
            return Err(PeerIncompatible::InvalidKePayload(choice.suite.ke.id()).into());
        }
        let peer_spi = sa
            .proposals
            .iter()
            .find(|p| p.number == choice.reply.number)
            .and_then(|p| <[u8; 8]>::try_from(p.spi.as_slice()).ok())
            .map(u64::from_be_bytes)
            .ok_or(InvalidMessage::InvalidValue("IKE SPI"))?;
        let secret = KeyExchangeSecret::generate(choice.suite.ke, &mut *shared.rng);
        let g_ir = secret.agree(&ke.data)?;
        let nr = random_bytes(shared, NONCE_LEN);
        let our_spi = shared.random_u64();
        let mut reply = choice.reply.clone();
        reply.spi = our_spi.to_be_bytes().to_vec();
        let inner = vec![
            PayloadBody::Sa(SecurityAssociation {
                proposals: vec![reply],
            })
            .into(),
            PayloadBody::Nonce(nr.clone()).into(),
            PayloadBody::Ke(KeyExchange::new(
                choice.suite.ke.id(),
                secret.public_value(),
            ))
            .into(),
        ];
        self.send_response(shared, ExchangeType::CREATE_CHILD_SA, id, &inner);
        // The peer initiated the rekey, so it is the original initiator of
        // the new generation: SPIi is its SPI.
        let keys = NewGeneration {
            suite: choice.suite,
            g_ir: &g_ir,
            ni,
            nr: &nr,
            spi_i: peer_spi,
            spi_r: our_spi,
            we_initiated: false,
        };
        Ok(self.switch_generation(shared, now, keys))
    }

    fn handle_child_rekey_request(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        request: RekeyRequest<'_>,
    ) -> Result<(), Error> {
        let RekeyRequest { id, found, sa, ni } = request;
        let config = shared.config.clone();
        let old_outbound = found
            .notify(NotifyType::REKEY_SA)
            .filter(|n| n.protocol == ProtocolId::ESP)
            .and_then(|n| <[u8; 4]>::try_from(n.spi.as_slice()).ok())
            .map(u32::from_be_bytes)
            .ok_or(LocalPolicy::NoAdditionalSas)?;
        let old = self
            .child(|c| c.sa.outbound_spi == old_outbound && c.superseded.is_none())
            .ok_or(PeerMisbehaved::ChildSaNotFound(old_outbound))?;
        let held = self
            .keyed()
            .and_then(Keyed::session)
            .map_or(0, |s| s.children.len());
        if held >= config.child_sas_per_ike_sa {
            return Err(LocalPolicy::NoAdditionalSas.into());
        }
        let choice = config
            .esp_policy
            .select(&sa.proposals, found.ke.map(|k| k.group))?;
        let mut pfs_secret = None;
        let mut ke_payload = None;
        if let Some(group) = choice.pfs {
            match found.ke {
                Some(ke) if ke.group == group.id() => {
                    let secret = KeyExchangeSecret::generate(group, &mut *shared.rng);
                    pfs_secret = Some(secret.agree(&ke.data)?);
                    ke_payload = Some(KeyExchange::new(group.id(), secret.public_value()));
                }
                _ => return Err(PeerIncompatible::InvalidKePayload(group.id()).into()),
            }
        }
        let nr = random_bytes(shared, NONCE_LEN);
        let inbound_spi = random_spi32(shared);
        let keymat = KeymatInput {
            pfs: pfs_secret.as_ref().map(|s| s.as_slice()),
            ni,
            nr: &nr,
            we_initiated: false,
        };
        let child = self.make_child(
            shared,
            &choice,
            inbound_spi,
            keymat,
            old.local_ts.clone(),
            old.remote_ts.clone(),
        )?;
        let mut reply = choice.reply.clone();
        reply.spi = inbound_spi.to_be_bytes().to_vec();
        let mut inner: Vec<Payload> = vec![
            PayloadBody::Sa(SecurityAssociation {
                proposals: vec![reply],
            })
            .into(),
            PayloadBody::Nonce(nr.clone()).into(),
        ];
        if let Some(ke) = ke_payload {
            inner.push(PayloadBody::Ke(ke).into());
        }
        // TSi is the exchange initiator's side: the peer's, our remote.
        inner.push(PayloadBody::TsI(TrafficSelectors::new(old.remote_ts.clone())).into());
        inner.push(PayloadBody::TsR(TrafficSelectors::new(old.local_ts.clone())).into());
        self.send_response(shared, ExchangeType::CREATE_CHILD_SA, id, &inner);

        // A collision (RFC 7296 2.8.1): we are rekeying the same SA. Both
        // exchanges complete; the one whose nonces include the smallest is
        // redundant, and its initiator deletes what it created.
        let collided = self.keyed().is_some_and(|k| {
            matches!(
                &k.outstanding,
                Some(Outstanding { kind: Request::RekeyChild(r), .. })
                    if r.old_inbound_spi == old.inbound_spi
            )
        });
        if collided {
            if let Some(s) = self.session_mut() {
                s.collisions.push(Collision {
                    old_inbound_spi: old.inbound_spi,
                    nonces: [ni.to_vec(), nr.clone()],
                });
            }
        }
        self.child_up(shared, now, child, Some(old.inbound_spi));
        Ok(())
    }

    pub(super) fn start_child_rekey(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        old_inbound_spi: u32,
    ) {
        let Some(old) =
            self.child(|c| c.sa.inbound_spi == old_inbound_spi && c.superseded.is_none())
        else {
            return;
        };
        let config = shared.config.clone();
        let new_inbound_spi = random_spi32(shared);
        let ni = random_bytes(shared, NONCE_LEN);
        let pfs_group = if config.rekey_pfs {
            config.esp_policy.pfs.first().copied()
        } else {
            None
        };
        let ke = pfs_group.map(|g| KeyExchangeSecret::generate(g, &mut *shared.rng));
        let mut rekey_sa = Notify::new(NotifyType::REKEY_SA, Vec::new());
        rekey_sa.protocol = ProtocolId::ESP;
        rekey_sa.spi = old_inbound_spi.to_be_bytes().to_vec();
        let mut inner: Vec<Payload> = vec![
            PayloadBody::Notify(rekey_sa).into(),
            PayloadBody::Sa(SecurityAssociation {
                proposals: config
                    .esp_policy
                    .proposals(new_inbound_spi.to_be_bytes(), ke.is_some()),
            })
            .into(),
            PayloadBody::Nonce(ni.clone()).into(),
        ];
        if let Some(secret) = &ke {
            inner.push(
                PayloadBody::Ke(KeyExchange::new(secret.group().id(), secret.public_value()))
                    .into(),
            );
        }
        inner.push(PayloadBody::TsI(TrafficSelectors::new(old.local_ts.clone())).into());
        inner.push(PayloadBody::TsR(TrafficSelectors::new(old.remote_ts.clone())).into());
        let rekey = ChildRekey {
            old_inbound_spi,
            new_inbound_spi,
            ni,
            ke,
        };
        self.send_request(
            shared,
            now,
            ExchangeType::CREATE_CHILD_SA,
            &inner,
            Request::RekeyChild(Box::new(rekey)),
        );
    }

    pub(super) fn start_ike_rekey(&mut self, shared: &mut Shared, now: Instant) {
        let Some(group) = self.keyed().map(|k| k.gen.suite.ke) else {
            return;
        };
        let config = shared.config.clone();
        let new_spi = shared.random_u64();
        let ni = random_bytes(shared, NONCE_LEN);
        let ke = KeyExchangeSecret::generate(group, &mut *shared.rng);
        // Offer the current suite first, so the rekey keeps it.
        let mut proposals = config.ike_policy.proposals();
        for p in &mut proposals {
            p.spi = new_spi.to_be_bytes().to_vec();
            p.transforms
                .retain(|t| t.ty != TransformType::KE || t.id == group.id());
        }
        let inner: Vec<Payload> = vec![
            PayloadBody::Sa(SecurityAssociation { proposals }).into(),
            PayloadBody::Nonce(ni.clone()).into(),
            PayloadBody::Ke(KeyExchange::new(group.id(), ke.public_value())).into(),
        ];
        let rekey = IkeRekey { new_spi, ni, ke };
        self.send_request(
            shared,
            now,
            ExchangeType::CREATE_CHILD_SA,
            &inner,
            Request::RekeyIke(Box::new(rekey)),
        );
    }

    pub(super) fn handle_child_rekey_response(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        rekey: ChildRekey,
        payloads: &[Payload],
    ) {
        let found = Found::new(payloads);
        if let Some(ty) = found.error() {
            if ty == NotifyType::INVALID_KE_PAYLOAD || ty == NotifyType::TEMPORARY_FAILURE {
                // Try again later, at the next lifetime check.
                let at = now + retry_delay(shared);
                if let Some(c) = self.session_mut().and_then(|s| {
                    s.children
                        .iter_mut()
                        .find(|c| c.sa.inbound_spi == rekey.old_inbound_spi)
                }) {
                    c.rekey_at = at;
                }
            }
            return;
        }
        let Ok(child) = self.rekeyed_child(shared, &rekey, &found) else {
            return;
        };
        let new_inbound = child.inbound_spi;
        // Collision resolution: was the peer's rekey of this SA completed
        // meanwhile, and which exchange had the smallest nonce?
        let peer_exchange = self.session_mut().and_then(|s| {
            s.collisions
                .iter()
                .position(|c| c.old_inbound_spi == rekey.old_inbound_spi)
                .map(|i| s.collisions.remove(i))
        });
        let nr = found.nonce.unwrap_or_default();
        self.child_up(shared, now, child, Some(rekey.old_inbound_spi));
        if let Some(peer) = peer_exchange {
            let ours_min = rekey.ni.as_slice().min(nr);
            let theirs_min = peer.nonces[0].as_slice().min(peer.nonces[1].as_slice());
            if ours_min < theirs_min {
                // Our exchange is redundant: delete what it created; the
                // peer deletes the old SA.
                self.queue_child_delete(new_inbound);
                return;
            }
        }
        self.queue_child_delete(rekey.old_inbound_spi);
    }

    /// The Child SA our rekey request made, from the peer's answer.
    fn rekeyed_child(
        &self,
        shared: &Shared,
        rekey: &ChildRekey,
        found: &Found<'_>,
    ) -> Result<ChildSa, Error> {
        let old = self
            .child(|c| c.sa.inbound_spi == rekey.old_inbound_spi)
            .ok_or(PeerMisbehaved::ChildSaNotFound(rekey.old_inbound_spi))?;
        let sa = found.sa.ok_or_else(|| missing("SA"))?;
        let nr = found.nonce()?;
        let choice = shared
            .config
            .esp_policy
            .select(&sa.proposals, found.ke.map(|k| k.group))?;
        let g_ir = match (&rekey.ke, found.ke) {
            (Some(secret), Some(ke)) if ke.group == secret.group().id() => {
                Some(secret.agree(&ke.data)?)
            }
            (None, None) => None,
            _ => return Err(PeerMisbehaved::BadResponse("PFS key exchange").into()),
        };
        let keymat = KeymatInput {
            pfs: g_ir.as_ref().map(|s| s.as_slice()),
            ni: &rekey.ni,
            nr,
            we_initiated: true,
        };
        self.make_child(
            shared,
            &choice,
            rekey.new_inbound_spi,
            keymat,
            old.local_ts.clone(),
            old.remote_ts.clone(),
        )
    }

    pub(super) fn handle_ike_rekey_response(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        rekey: IkeRekey,
        payloads: &[Payload],
    ) -> Effects {
        let found = Found::new(payloads);
        let keys = match self.rekeyed_ike(shared, &rekey, &found) {
            Ok(k) => k,
            Err(_) => {
                let at = now + retry_delay(shared);
                if let Some(s) = self.session_mut() {
                    s.ike_rekey_at = Some(at);
                }
                return Effects::default();
            }
        };
        let (suite, g_ir, peer_spi) = keys;
        let nr = found.nonce.unwrap_or_default();
        let effects = self.switch_generation(
            shared,
            now,
            NewGeneration {
                suite,
                g_ir: &g_ir,
                ni: &rekey.ni,
                nr,
                spi_i: rekey.new_spi,
                spi_r: peer_spi,
                we_initiated: true,
            },
        );
        // Delete the old IKE SA on its own keys (fire and forget: the
        // peer also drops it when its retirement times out).
        let path = self.path;
        if let Some((old, _)) = self.keyed_mut().and_then(|k| k.retired.as_mut()) {
            let id = old.next_request_id;
            let header = old.header(ExchangeType::INFORMATIONAL, false, id);
            let delete: Payload = PayloadBody::Delete(Delete {
                protocol: ProtocolId::IKE,
                spi_size: 0,
                spis: Vec::new(),
            })
            .into();
            if let Ok(bytes) = old.sk_out.seal(&header, &[], &[delete], &mut *shared.rng) {
                push_datagram(shared, path.remote, path.local, &bytes);
            }
        }
        effects
    }

    /// The suite, shared secret and the peer's new SPI of our IKE rekey,
    /// from the peer's answer.
    fn rekeyed_ike(
        &self,
        shared: &Shared,
        rekey: &IkeRekey,
        found: &Found<'_>,
    ) -> Result<(Suite, zeroize::Zeroizing<Vec<u8>>, u64), Error> {
        if let Some(ty) = found.error() {
            return Err(super::ike_auth::refused_by_peer(ty));
        }
        let sa = found.sa.ok_or_else(|| missing("SA"))?;
        found.nonce()?;
        let ke = found.ke.ok_or_else(|| missing("KE"))?;
        let choice = shared
            .config
            .ike_policy
            .select(&sa.proposals, Some(ke.group))?;
        let peer_spi = sa
            .proposals
            .first()
            .and_then(|p| <[u8; 8]>::try_from(p.spi.as_slice()).ok())
            .map(u64::from_be_bytes)
            .ok_or(InvalidMessage::InvalidValue("IKE SPI"))?;
        if ke.group != rekey.ke.group().id() {
            return Err(PeerMisbehaved::BadResponse("key exchange group").into());
        }
        let g_ir = rekey.ke.agree(&ke.data)?;
        Ok((choice.suite, g_ir, peer_spi))
    }

    /// Moves to a new generation of keys after an IKE SA rekey; the old one
    /// is retired until its delete.
    fn switch_generation(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        new: NewGeneration<'_>,
    ) -> Effects {
        let id = self.id;
        let lifetime = self.rekey_delay(shared, shared.config.ike_lifetime);
        let Some(k) = self.keyed_mut() else {
            return Effects::default();
        };
        let seed = skeyseed_rekey(k.gen.suite.prf, &k.gen.keys.sk_d, new.g_ir, new.ni, new.nr);
        let keys = IkeSaKeys::derive(&new.suite, &seed, new.ni, new.nr, new.spi_i, new.spi_r);
        let Ok(gen) = Generation::new(
            shared,
            id,
            new.suite,
            seed,
            keys,
            new.spi_i,
            new.spi_r,
            new.we_initiated,
        ) else {
            return Effects::default();
        };
        let effects = Effects {
            new_local_spi: Some(gen.local_spi()),
            ..Effects::default()
        };
        let old = std::mem::replace(&mut k.gen, gen);
        // A generation retired before (a rekey within its linger) is gone.
        if let Some((older, _)) = k.retired.replace((old, now + LINGER)) {
            self.forgotten_spis.push(older.local_spi());
        }
        if let Some(s) = self.session_mut() {
            s.ike_rekey_at = Some(now + lifetime);
        }
        shared.push_event(Event::IkeSaRekeyed { sa: id });
        effects
    }

    /// Messages on the retired generation: only its delete is expected.
    pub(super) fn handle_retired(
        &mut self,
        shared: &mut Shared,
        datagram: &[u8],
        header: &Header,
    ) -> Effects {
        let path = self.path;
        let Some(k) = self.keyed_mut() else {
            return Effects::default();
        };
        let Some((old, _)) = &mut k.retired else {
            return Effects::default();
        };
        if header.flags.response() {
            // The answer to our delete of it.
            self.drop_retired();
            return Effects::default();
        }
        let Ok(opened) = old.sk_in.open(datagram) else {
            shared.stats.integrity_failed += 1;
            return Effects::default();
        };
        let Ok(payloads) = parse_chain(opened.first_payload, &opened.plaintext) else {
            return Effects::default();
        };
        let deletes_ike = Found::new(&payloads)
            .deletes
            .iter()
            .any(|d| d.protocol == ProtocolId::IKE);
        let header = old.header(header.exchange, true, header.message_id);
        if let Ok(bytes) = old.sk_out.seal(&header, &[], &[], &mut *shared.rng) {
            push_datagram(shared, path.remote, path.local, &bytes);
        }
        if deletes_ike {
            self.drop_retired();
        }
        Effects::default()
    }

    fn drop_retired(&mut self) {
        if let Some((old, _)) = self.keyed_mut().and_then(|k| k.retired.take()) {
            self.forgotten_spis.push(old.local_spi());
        }
    }

    /// SPIs that no longer lead to this SA.
    pub(crate) fn take_forgotten_spis(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.forgotten_spis)
    }
}

/// A CREATE_CHILD_SA request, sorted out.
#[derive(Clone, Copy)]
struct RekeyRequest<'a> {
    id: u32,
    found: &'a Found<'a>,
    sa: &'a SecurityAssociation,
    ni: &'a [u8],
}

/// What a new IKE SA generation is made from.
struct NewGeneration<'a> {
    suite: Suite,
    g_ir: &'a [u8],
    ni: &'a [u8],
    nr: &'a [u8],
    /// The rekey initiator's SPI.
    spi_i: u64,
    spi_r: u64,
    we_initiated: bool,
}
