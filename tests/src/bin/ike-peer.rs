//! A sixgate IKE endpoint on real UDP sockets, for interoperability tests:
//! it prints what happens as lines on stdout and takes commands on stdin.
//!
//! ```text
//! ike-peer --role responder|initiator --local IP [--remote IP] --kind ecdsa|rsa
//!          [--proposal default|aes256-sha256-modp2048] [--fragment-size N]
//!          [--force-encap] [--pool-size N] [--who client|client2|client3]
//! stdin:  rekey-child | rekey-ike | delete | stats | quit
//!         send-esp NEXT_HEADER HEX (seal HEX as the inner packet of the
//!         newest Child SA and send it: a peer that lies about its traffic)
//! stdout: IKE_UP, CHILD_UP, CHILD_REKEYED, CHILD_DOWN, IKE_REKEYED, IKE_DOWN,
//!         ADDRESS, KEYS (name=hex ...), STATS lines
//! ```
//! The responder serves addresses from 2001:db8:100::100 on.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use sixgate_dataplane::esp::EspSa;
use sixgate_dataplane::udp::IkeSockets;
use sixgate_proto::auth::PrivateKey;
use sixgate_proto::cert::{certificates_from_pem, TrustAnchors};
use sixgate_proto::crypto::{Encryption, IkeSaKeys, Integrity, KeGroup, Prf};
use sixgate_proto::endpoint::{ts, Config, ConnectRequest, Event, KeyLog, SaId};
use sixgate_proto::identity::CanonicalIdentity;
use sixgate_proto::wire::Identification;
use sixgate_runtime::admission::LeaseStore;
use sixgate_runtime::engine::{self, Command, Parts, Role};
use sixgate_runtime::plane::IkeOnly;
use tokio::io::AsyncBufReadExt;

struct SequentialPool {
    size: u32,
    leases: HashMap<CanonicalIdentity, Ipv6Addr>,
}

impl LeaseStore for SequentialPool {
    fn assign(&mut self, identity: &CanonicalIdentity) -> io::Result<Option<Ipv6Addr>> {
        if let Some(a) = self.leases.get(identity) {
            return Ok(Some(*a));
        }
        let n = self.leases.len() as u32;
        Ok((n < self.size).then(|| {
            let base: Ipv6Addr = "2001:db8:100::100".parse().expect("literal");
            let a = Ipv6Addr::from(u128::from(base) + u128::from(n));
            self.leases.insert(identity.clone(), a);
            a
        }))
    }
    fn release(&mut self, _: &CanonicalIdentity, _: Ipv6Addr) -> io::Result<()> {
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Prints each generation's keys as a KEYS line, for comparison with
/// charon's `ike=4` log.
struct PrintKeys;

impl KeyLog for PrintKeys {
    fn log(&self, sa: SaId, _spi_i: u64, _spi_r: u64, seed: &[u8], k: &IkeSaKeys) {
        println!(
            "KEYS sa={} skeyseed={} sk_d={} sk_ai={} sk_ar={} sk_ei={} sk_er={} sk_pi={} sk_pr={}",
            sa.0,
            hex::encode(seed),
            hex::encode(&k.sk_d),
            hex::encode(&k.sk_ai),
            hex::encode(&k.sk_ar),
            hex::encode(&k.sk_ei),
            hex::encode(&k.sk_er),
            hex::encode(&k.sk_pi),
            hex::encode(&k.sk_pr)
        );
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn die(msg: &str) -> ! {
    eprintln!("ike-peer: {msg}");
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let role = arg(&args, "--role").unwrap_or_else(|| die("--role"));
    let local: IpAddr = arg(&args, "--local")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| die("--local"));
    let kind = arg(&args, "--kind").unwrap_or_else(|| "ecdsa".into());
    let certs = sixgate_tests::certs_dir().join(&kind);
    let who = match role.as_str() {
        "responder" => "broker".to_string(),
        _ => arg(&args, "--who").unwrap_or_else(|| "client".into()),
    };
    let identity = if role == "responder" {
        Identification::fqdn("broker.example.net")
    } else {
        Identification::rfc822(&format!("{who}@example.net"))
    };
    let read = |f: &str| std::fs::read(certs.join(f)).unwrap_or_else(|e| die(&format!("{f}: {e}")));
    let chain =
        certificates_from_pem(&read(&format!("{who}.pem"))).unwrap_or_else(|e| die(&e.to_string()));
    let key =
        PrivateKey::from_pem(&read(&format!("{who}.key"))).unwrap_or_else(|e| die(&e.to_string()));
    let anchors = TrustAnchors::new(
        certificates_from_pem(&read("ca.pem")).unwrap_or_else(|e| die(&e.to_string())),
    )
    .unwrap_or_else(|e| die(&e.to_string()));
    let mut config = Config::new(identity, chain, Arc::new(key), anchors);
    config.key_log = Some(Arc::new(PrintKeys));
    config.dns = vec!["2001:db8:ffff::53".parse().expect("literal")];
    if arg(&args, "--proposal").as_deref() == Some("aes256-sha256-modp2048") {
        config.ike_policy.encr = vec![Encryption::AesCbc { key_bits: 256 }];
        config.ike_policy.integ = vec![Integrity::HmacSha256_128];
        config.ike_policy.prf = vec![Prf::HmacSha256];
        config.ike_policy.ke = vec![KeGroup::Modp2048];
        config.esp_policy.encr = vec![Encryption::AesCbc { key_bits: 256 }];
        config.esp_policy.integ = vec![Integrity::HmacSha256_128];
    }
    if let Some(n) = arg(&args, "--fragment-size").and_then(|n| n.parse().ok()) {
        config.fragment_size = n;
    }
    config.force_udp_encapsulation = args.iter().any(|a| a == "--force-encap");
    let pool_size = arg(&args, "--pool-size")
        .and_then(|n| n.parse().ok())
        .unwrap_or(16);
    let remote: Option<IpAddr> = arg(&args, "--remote").and_then(|a| a.parse().ok());

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let sockets = IkeSockets::bind(&[local], 500, 4500).await.unwrap_or_else(|e| die(&format!("bind: {e}")));
        let nat_t = sockets.socket(SocketAddr::new(local, 4500)).unwrap_or_else(|| die("no NAT-T socket"));
        let mut outbound: Option<(EspSa, SocketAddr)> = None;
        let role = if role == "responder" { Role::Responder } else { Role::Initiator { dns: None } };
        let leases: Option<Box<dyn LeaseStore>> = matches!(role, Role::Responder).then(|| {
            Box::new(SequentialPool { size: pool_size, leases: HashMap::new() }) as Box<dyn LeaseStore>
        });
        let initiating = matches!(role, Role::Initiator { .. });
        let mut handle = engine::spawn(Parts {
            ike: Arc::new(config),
            role,
            sockets,
            plane: Arc::new(IkeOnly),
            esp: None,
            kernel_events: None,
            peer_moves: None,
            leases,
            revocations: Default::default(),
        })
        .unwrap_or_else(|e| die(&format!("runtime: {e}")));
        let mut current: Option<SaId> = None;
        let mut child: Option<u32> = None;
        if initiating {
            let remote = remote.unwrap_or_else(|| die("--remote"));
            let (tx, rx) = tokio::sync::oneshot::channel();
            let req = ConnectRequest {
                remote: SocketAddr::new(remote, 500),
                local: SocketAddr::new(local, 500),
                remote_identity: Some(CanonicalIdentity::parse("broker.example.net").expect("literal")),
                request_address: true,
                initial_contact: true,
                local_ts: vec![ts::ipv6_any()],
                remote_ts: vec![ts::ipv6_any()],
            };
            let _ = handle.commands.send(Command::Connect(req, tx));
            current = rx.await.ok();
        }
        println!("READY");
        let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        loop {
            tokio::select! {
                line = stdin.next_line() => {
                    let Ok(Some(line)) = line else { break };
                    match (line.trim(), current) {
                        ("rekey-child", Some(sa)) => if let Some(spi) = child {
                            let _ = handle.commands.send(Command::RekeyChildSa(sa, spi));
                        },
                        ("rekey-ike", Some(sa)) => { let _ = handle.commands.send(Command::RekeyIkeSa(sa)); }
                        ("delete", Some(sa)) => { let _ = handle.commands.send(Command::DeleteIkeSa(sa)); }
                        ("stats", _) => {
                            let (tx, rx) = tokio::sync::oneshot::channel();
                            let _ = handle.commands.send(Command::Stats(tx));
                            if let Ok(s) = rx.await { println!("STATS {:?}", s.ike); }
                        }
                        ("quit", _) => break,
                        (cmd, _) if cmd.starts_with("send-esp ") => {
                            let mut f = cmd.split_whitespace().skip(1);
                            let next_header = f.next().and_then(|n| n.parse::<u8>().ok());
                            let inner = f.next().and_then(|h| hex::decode(h).ok());
                            match (next_header, inner, outbound.as_mut()) {
                                (Some(nh), Some(inner), Some((sa, remote))) => {
                                    let mut sealed = Vec::new();
                                    if sa.seal(&inner, nh, &mut sealed).is_ok() {
                                        let _ = nat_t.send_to(&sealed, *remote).await;
                                        println!("SENT_ESP {}", sealed.len());
                                    }
                                }
                                _ => eprintln!("ike-peer: send-esp needs NEXT_HEADER HEX and a Child SA"),
                            }
                        }
                        (other, _) => eprintln!("ike-peer: ignored command {other:?}"),
                    }
                }
                ev = handle.events.recv() => {
                    let Some(ev) = ev else { break };
                    match &ev {
                        Event::IkeSaUp { sa, peer_identity, suite, remote, .. } => {
                            current = Some(*sa);
                            println!("IKE_UP sa={} peer={peer_identity} suite={:?} remote={remote}", sa.0, suite);
                        }
                        Event::IkeSaRekeyed { sa } => println!("IKE_REKEYED sa={}", sa.0),
                        Event::IkeSaDown { sa, reason, .. } => println!("IKE_DOWN sa={} reason={reason:?}", sa.0),
                        Event::ChildSaUp(c) => {
                            child = Some(c.inbound_spi);
                            outbound = EspSa::new(c.outbound_spi, &c.outbound, c.esn).map(|sa| (sa, c.remote));
                            println!("CHILD_UP in={:08x} out={:08x} encr={:?} encap={} local_ts={:?} remote_ts={:?}", c.inbound_spi, c.outbound_spi, c.encr, c.udp_encapsulation, c.local_ts, c.remote_ts);
                        }
                        Event::ChildSaRekeyed { old_inbound_spi, new } => {
                            child = Some(new.inbound_spi);
                            println!("CHILD_REKEYED old={old_inbound_spi:08x} in={:08x} out={:08x}", new.inbound_spi, new.outbound_spi);
                        }
                        Event::ChildSaDown { inbound_spi, .. } => println!("CHILD_DOWN in={inbound_spi:08x}"),
                        Event::ChildSaRefused { notify, .. } => println!("CHILD_REFUSED notify={notify:?}"),
                        Event::AddressAssigned { address, dns, .. } => println!("ADDRESS {}/{} dns={dns:?}", address.0, address.1),
                        _ => {}
                    }
                }
            }
        }
        handle.shutdown(std::time::Duration::from_secs(1)).await;
    });
}
