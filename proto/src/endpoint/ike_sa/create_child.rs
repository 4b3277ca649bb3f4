//! CREATE_CHILD_SA (RFC 7296 1.3): Child SA rekeys with optional PFS and
//! their collisions (2.8.1), and IKE SA rekeys with the retirement of the
//! old generation.

use super::*;

impl IkeSa {
    pub(super) fn handle_create_child_request(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        id: u32,
        payloads: &[Payload],
    ) -> Effects {
        let found = Found::new(payloads);
        let config = shared.config.clone();
        let refuse = |sa: &mut IkeSa, shared: &mut Shared, ty: NotifyType| {
            sa.send_response(
                shared,
                ExchangeType::CREATE_CHILD_SA,
                id,
                &[notify(ty, Vec::new())],
            );
            Effects::default()
        };
        let (Some(sa), Some(ni)) = (found.sa, found.nonce_ok()) else {
            return refuse(self, shared, NotifyType::INVALID_SYNTAX);
        };
        if self.state != State::Established {
            return refuse(self, shared, NotifyType::TEMPORARY_FAILURE);
        }
        let nr = random_bytes(shared, NONCE_LEN);

        // IKE SA rekey: an SA payload proposing protocol IKE.
        if sa.proposals.iter().any(|p| p.protocol == ProtocolId::IKE) {
            if matches!(
                &self.outstanding,
                Some(Outstanding {
                    kind: Request::RekeyIke(_),
                    ..
                })
            ) {
                // Simultaneous IKE rekey: RFC 7296 2.8.2 lets both finish;
                // refusing ours-too-late keeps one winner without the
                // nonce comparison dance.
                return refuse(self, shared, NotifyType::TEMPORARY_FAILURE);
            }
            let Some(ke) = found.ke else {
                return refuse(self, shared, NotifyType::INVALID_SYNTAX);
            };
            let Ok(choice) = config.ike_policy.select(&sa.proposals, Some(ke.group)) else {
                return refuse(self, shared, NotifyType::NO_PROPOSAL_CHOSEN);
            };
            if choice.suite.ke.id() != ke.group {
                let data = choice.suite.ke.id().0.to_be_bytes().to_vec();
                self.send_response(
                    shared,
                    ExchangeType::CREATE_CHILD_SA,
                    id,
                    &[notify(NotifyType::INVALID_KE_PAYLOAD, data)],
                );
                return Effects::default();
            }
            let Some(peer_spi) = sa
                .proposals
                .iter()
                .find(|p| p.number == choice.reply.number)
                .and_then(|p| <[u8; 8]>::try_from(p.spi.as_slice()).ok())
                .map(u64::from_be_bytes)
            else {
                return refuse(self, shared, NotifyType::INVALID_SYNTAX);
            };
            let secret = KeyExchangeSecret::generate(choice.suite.ke, &mut *shared.rng);
            let Ok(g_ir) = secret.agree(&ke.data) else {
                return refuse(self, shared, NotifyType::INVALID_SYNTAX);
            };
            let our_spi = shared.random_u64();
            let mut reply = choice.reply.clone();
            reply.spi = our_spi.to_be_bytes().to_vec();
            let inner = vec![
                PayloadBody::Sa(SecurityAssociation {
                    proposals: vec![reply],
                })
                .into(),
                PayloadBody::Nonce(nr.clone()).into(),
                PayloadBody::Ke(KeyExchange {
                    group: choice.suite.ke.id(),
                    data: secret.public_value(),
                })
                .into(),
            ];
            self.send_response(shared, ExchangeType::CREATE_CHILD_SA, id, &inner);
            // The peer initiated the rekey, so it is the original initiator
            // of the new generation: SPIi is its SPI.
            return self.switch_generation(
                shared,
                now,
                choice.suite,
                &g_ir,
                ni,
                &nr,
                peer_spi,
                our_spi,
                false,
            );
        }

        // Child SA rekey (we only create Child SAs in IKE_AUTH).
        let Some(old_outbound) = found
            .notify(NotifyType::REKEY_SA)
            .filter(|n| n.protocol == ProtocolId::ESP)
            .and_then(|n| <[u8; 4]>::try_from(n.spi.as_slice()).ok())
            .map(u32::from_be_bytes)
        else {
            return refuse(self, shared, NotifyType::NO_ADDITIONAL_SAS);
        };
        let Some(old) = self
            .children
            .iter()
            .find(|c| c.sa.outbound_spi == old_outbound && !c.superseded)
        else {
            let data = Vec::new();
            let mut n = Notify::new(NotifyType::CHILD_SA_NOT_FOUND, data);
            n.protocol = ProtocolId::ESP;
            n.spi = old_outbound.to_be_bytes().to_vec();
            self.send_response(
                shared,
                ExchangeType::CREATE_CHILD_SA,
                id,
                &[PayloadBody::Notify(n).into()],
            );
            return Effects::default();
        };
        let old_sa = old.sa.clone();
        let Ok(choice) = config
            .esp_policy
            .select(&sa.proposals, found.ke.map(|k| k.group))
        else {
            return refuse(self, shared, NotifyType::NO_PROPOSAL_CHOSEN);
        };
        let mut pfs_secret = None;
        let mut ke_payload = None;
        if let Some(group) = choice.pfs {
            match found.ke {
                Some(ke) if ke.group == group.id() => {
                    let secret = KeyExchangeSecret::generate(group, &mut *shared.rng);
                    let Ok(g_ir) = secret.agree(&ke.data) else {
                        return refuse(self, shared, NotifyType::INVALID_SYNTAX);
                    };
                    ke_payload = Some(KeyExchange {
                        group: group.id(),
                        data: secret.public_value(),
                    });
                    pfs_secret = Some(g_ir);
                }
                _ => {
                    let data = group.id().0.to_be_bytes().to_vec();
                    self.send_response(
                        shared,
                        ExchangeType::CREATE_CHILD_SA,
                        id,
                        &[notify(NotifyType::INVALID_KE_PAYLOAD, data)],
                    );
                    return Effects::default();
                }
            }
        }
        let inbound_spi = random_spi32(shared);
        let keymat = KeymatInput {
            pfs: pfs_secret.as_ref().map(|s| s.as_slice()),
            ni,
            nr: &nr,
            we_initiated: false,
        };
        let child = match self.make_child(
            &choice,
            inbound_spi,
            keymat,
            old_sa.local_ts.clone(),
            old_sa.remote_ts.clone(),
        ) {
            Ok(c) => c,
            Err(ty) => return refuse(self, shared, ty),
        };
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
        inner.push(
            PayloadBody::TsI(TrafficSelectors {
                selectors: old_sa.remote_ts.clone(),
            })
            .into(),
        );
        inner.push(
            PayloadBody::TsR(TrafficSelectors {
                selectors: old_sa.local_ts.clone(),
            })
            .into(),
        );
        self.send_response(shared, ExchangeType::CREATE_CHILD_SA, id, &inner);

        // A collision (RFC 7296 2.8.1): we are rekeying the same SA. Both
        // exchanges complete; the one whose nonces include the smallest is
        // redundant, and its initiator deletes what it created.
        let collision = match &self.outstanding {
            Some(Outstanding {
                kind: Request::RekeyChild(r),
                ..
            }) if r.old_inbound_spi == old_sa.inbound_spi => Some(r.ni.clone()),
            _ => None,
        };
        if let Some(our_ni) = collision {
            self.collisions
                .push((old_sa.inbound_spi, [ni.to_vec(), nr.clone()], our_ni));
        }
        self.child_up(shared, now, child, Some(old_sa.inbound_spi));
        Effects::default()
    }

    pub(super) fn handle_child_rekey_response(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        rekey: ChildRekey,
        payloads: &[Payload],
    ) {
        let found = Found::new(payloads);
        let config = shared.config.clone();
        if let Some(ty) = found.error() {
            if ty == NotifyType::INVALID_KE_PAYLOAD || ty == NotifyType::TEMPORARY_FAILURE {
                // Try again later, at the next lifetime check.
                if let Some(c) = self
                    .children
                    .iter_mut()
                    .find(|c| c.sa.inbound_spi == rekey.old_inbound_spi)
                {
                    c.rekey_at = now + retry_delay(shared);
                }
            }
            return;
        }
        let Some(old) = self
            .children
            .iter()
            .find(|c| c.sa.inbound_spi == rekey.old_inbound_spi)
            .map(|c| c.sa.clone())
        else {
            return;
        };
        let (Some(sa), Some(nr)) = (found.sa, found.nonce_ok()) else {
            return;
        };
        let Ok(choice) = config
            .esp_policy
            .select(&sa.proposals, found.ke.map(|k| k.group))
        else {
            return;
        };
        let g_ir = match (&rekey.ke, found.ke) {
            (Some(secret), Some(ke)) if ke.group == secret.group().id() => {
                match secret.agree(&ke.data) {
                    Ok(g) => Some(g),
                    Err(_) => return,
                }
            }
            (None, None) => None,
            _ => return,
        };
        let keymat = KeymatInput {
            pfs: g_ir.as_ref().map(|s| s.as_slice()),
            ni: &rekey.ni,
            nr,
            we_initiated: true,
        };
        let Ok(child) = self.make_child(
            &choice,
            rekey.new_inbound_spi,
            keymat,
            old.local_ts.clone(),
            old.remote_ts.clone(),
        ) else {
            return;
        };
        let new_inbound = child.inbound_spi;
        // Collision resolution: was the peer's rekey of this SA completed
        // meanwhile, and which exchange had the smallest nonce?
        let peer_exchange = self
            .collisions
            .iter()
            .position(|(old_spi, _, _)| *old_spi == rekey.old_inbound_spi)
            .map(|i| self.collisions.remove(i));
        self.child_up(shared, now, child, Some(rekey.old_inbound_spi));
        if let Some((_, peer_nonces, _)) = peer_exchange {
            let ours_min = rekey.ni.as_slice().min(nr);
            let theirs_min = peer_nonces[0].as_slice().min(peer_nonces[1].as_slice());
            if ours_min < theirs_min {
                // Our exchange is redundant: delete what it created; the
                // peer deletes the old SA.
                self.queue_child_delete(new_inbound);
                return;
            }
        }
        self.queue_child_delete(rekey.old_inbound_spi);
    }

    pub(super) fn handle_ike_rekey_response(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        rekey: IkeRekey,
        payloads: &[Payload],
    ) -> Effects {
        let found = Found::new(payloads);
        let config = shared.config.clone();
        if found.error().is_some() {
            self.ike_rekey_at = Some(now + retry_delay(shared));
            return Effects::default();
        }
        let (Some(sa), Some(nr), Some(ke)) = (found.sa, found.nonce_ok(), found.ke) else {
            return Effects::default();
        };
        let Ok(choice) = config.ike_policy.select(&sa.proposals, Some(ke.group)) else {
            return Effects::default();
        };
        let Some(peer_spi) = sa
            .proposals
            .first()
            .and_then(|p| <[u8; 8]>::try_from(p.spi.as_slice()).ok())
            .map(u64::from_be_bytes)
        else {
            return Effects::default();
        };
        if ke.group != rekey.ke.group().id() {
            return Effects::default();
        }
        let Ok(g_ir) = rekey.ke.agree(&ke.data) else {
            return Effects::default();
        };
        let effects = self.switch_generation(
            shared,
            now,
            choice.suite,
            &g_ir,
            &rekey.ni,
            nr,
            rekey.new_spi,
            peer_spi,
            true,
        );
        // Delete the old IKE SA on its own keys (fire and forget: the
        // peer also drops it when its retirement times out).
        if let Some((old, _)) = &mut self.retired {
            let id = old.next_request_id;
            let header = old.header(ExchangeType::INFORMATIONAL, false, id);
            let delete: Payload = PayloadBody::Delete(Delete {
                protocol: ProtocolId::IKE,
                spi_size: 0,
                spis: Vec::new(),
            })
            .into();
            if let Ok(bytes) = old.sk_out.seal(&header, &[], &[delete], &mut *shared.rng) {
                push_datagram(shared, self.remote, self.local, &bytes);
            }
        }
        effects
    }

    /// Moves to a new generation of keys after an IKE SA rekey; the old one
    /// is retired until its delete. `spi_i` belongs to the rekey's initiator.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn switch_generation(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        suite: Suite,
        g_ir: &[u8],
        ni: &[u8],
        nr: &[u8],
        spi_i: u64,
        spi_r: u64,
        we_initiated: bool,
    ) -> Effects {
        let Some(old) = self.gen.take() else {
            return Effects::default();
        };
        let seed = skeyseed_rekey(old.suite.prf, &old.keys.sk_d, g_ir, ni, nr);
        let keys = IkeSaKeys::derive(&suite, &seed, ni, nr, spi_i, spi_r);
        let Some(gen) = Generation::new(
            shared,
            self.id,
            suite,
            seed,
            keys,
            spi_i,
            spi_r,
            we_initiated,
        ) else {
            self.gen = Some(old);
            return Effects::default();
        };
        let effects = Effects {
            new_local_spi: Some(gen.local_spi()),
            ..Effects::default()
        };
        self.retired = Some((old, now + LINGER));
        self.gen = Some(gen);
        self.ike_rekey_at = Some(now + self.rekey_delay(shared, shared.config.ike_lifetime));
        shared.push_event(Event::IkeSaRekeyed { sa: self.id });
        effects
    }

    /// Messages on the retired generation: only its delete is expected.
    pub(super) fn handle_retired(
        &mut self,
        shared: &mut Shared,
        datagram: &[u8],
        header: &Header,
    ) -> Effects {
        let Some((old, _)) = &mut self.retired else {
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
        let id = header.message_id;
        let header = old.header(header.exchange, true, id);
        if let Ok(bytes) = old.sk_out.seal(&header, &[], &[], &mut *shared.rng) {
            push_datagram(shared, self.remote, self.local, &bytes);
        }
        if deletes_ike {
            self.drop_retired();
        }
        Effects::default()
    }

    pub(super) fn drop_retired(&mut self) {
        if let Some((old, _)) = self.retired.take() {
            self.forgotten_spis.push(old.local_spi());
        }
    }

    /// SPIs that no longer lead to this SA.
    pub(crate) fn take_forgotten_spis(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.forgotten_spis)
    }
}
