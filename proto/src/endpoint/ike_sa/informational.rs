//! INFORMATIONAL (RFC 7296 1.4): deletes of Child SAs and of the IKE SA,
//! error notifies, empty liveness checks, and MOBIKE's address updates
//! (in [`super::mobility`]).

use super::*;

impl IkeSa {
    pub(super) fn handle_informational(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        id: u32,
        payloads: &[Payload],
        arrived: Arrived,
    ) {
        let found = Found::new(payloads);
        if found.notify(NotifyType::UPDATE_SA_ADDRESSES).is_some() {
            self.handle_update_addresses(shared, id, &found, arrived);
            return;
        }
        if found.deletes.iter().any(|d| d.protocol == ProtocolId::IKE) {
            self.send_response(shared, ExchangeType::INFORMATIONAL, id, &[]);
            let reason = if found.notify(NotifyType::SIXGATE_REPLACED).is_some() {
                DownReason::Replaced
            } else {
                DownReason::DeletedByPeer
            };
            self.close(shared, now, reason);
            return;
        }
        let in_kind = self.answer_in_kind(shared, &found, arrived);
        if let Some(ty) = found.error() {
            self.send_response(shared, ExchangeType::INFORMATIONAL, id, &in_kind);
            if ty == NotifyType::AUTHENTICATION_FAILED {
                self.close(shared, now, DownReason::RefusedByPeer(ty));
            }
            return;
        }
        // Our own delete of an SA in flight says so in its request; the
        // answer lists only the SAs we delete because the peer asked.
        let ours_in_flight = self.keyed().and_then(|k| match &k.outstanding {
            Some(Outstanding {
                kind: Request::DeleteChild { inbound_spi },
                ..
            }) => Some(*inbound_spi),
            _ => None,
        });
        let mut answer = Vec::new();
        let mut gone = Vec::new();
        let session = self.keyed().and_then(Keyed::session);
        for d in found
            .deletes
            .iter()
            .filter(|d| d.protocol == ProtocolId::ESP && d.spi_size == 4)
        {
            for spi in &d.spis {
                let Ok(spi) = <[u8; 4]>::try_from(spi.as_slice()).map(u32::from_be_bytes) else {
                    continue;
                };
                let child =
                    session.and_then(|s| s.children.iter().find(|c| c.sa.outbound_spi == spi));
                if let Some(child) = child {
                    let inbound = child.sa.inbound_spi;
                    if ours_in_flight != Some(inbound) {
                        answer.push(inbound.to_be_bytes().to_vec());
                    }
                    gone.push(inbound);
                }
            }
        }
        for inbound in gone {
            self.remove_child(shared, inbound);
        }
        let mut reply: Vec<Payload> = if answer.is_empty() {
            Vec::new()
        } else {
            vec![PayloadBody::Delete(Delete {
                protocol: ProtocolId::ESP,
                spi_size: 4,
                spis: answer,
            })
            .into()]
        };
        reply.extend(in_kind);
        self.send_response(shared, ExchangeType::INFORMATIONAL, id, &reply);
    }
}
