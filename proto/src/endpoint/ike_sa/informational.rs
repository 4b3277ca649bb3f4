//! INFORMATIONAL (RFC 7296 1.4): deletes of Child SAs and of the IKE SA,
//! error notifies, and empty liveness checks.

use super::*;

impl IkeSa {
    pub(super) fn handle_informational(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        id: u32,
        payloads: &[Payload],
    ) {
        let found = Found::new(payloads);
        if found.deletes.iter().any(|d| d.protocol == ProtocolId::IKE) {
            self.send_response(shared, ExchangeType::INFORMATIONAL, id, &[]);
            self.close(shared, now, DownReason::DeletedByPeer);
            return;
        }
        if let Some(ty) = found.error() {
            self.send_response(shared, ExchangeType::INFORMATIONAL, id, &[]);
            if ty == NotifyType::AUTHENTICATION_FAILED {
                self.close(shared, now, DownReason::RefusedByPeer(ty));
            }
            return;
        }
        let mut ours = Vec::new();
        for d in found
            .deletes
            .iter()
            .filter(|d| d.protocol == ProtocolId::ESP && d.spi_size == 4)
        {
            for spi in &d.spis {
                let Ok(spi) = <[u8; 4]>::try_from(spi.as_slice()).map(u32::from_be_bytes) else {
                    continue;
                };
                if let Some(child) = self.children.iter().find(|c| c.sa.outbound_spi == spi) {
                    let inbound = child.sa.inbound_spi;
                    // If we are deleting it ourselves, our request says so.
                    let ours_in_flight = matches!(&self.outstanding, Some(Outstanding { kind: Request::DeleteChild { inbound_spi }, .. }) if *inbound_spi == inbound);
                    if !ours_in_flight {
                        ours.push(inbound.to_be_bytes().to_vec());
                    }
                    self.remove_child(shared, inbound);
                }
            }
        }
        let reply: Vec<Payload> = if ours.is_empty() {
            Vec::new()
        } else {
            vec![PayloadBody::Delete(Delete {
                protocol: ProtocolId::ESP,
                spi_size: 4,
                spis: ours,
            })
            .into()]
        };
        self.send_response(shared, ExchangeType::INFORMATIONAL, id, &reply);
    }
}
