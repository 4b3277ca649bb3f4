//! Parsing and emitting IKE messages: generated messages survive a round
//! trip exactly, every datagram that parses (generated, captured from
//! strongSwan, or either with a byte changed) emits to the same bytes,
//! reserved bits included, arbitrary bytes never panic the parser, and the
//! critical bit is honoured.

use proptest::collection::vec;
use proptest::prelude::*;
use sixgate_proto::error::InvalidMessage;
use sixgate_proto::wire::*;

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..max)
}

fn transform() -> impl Strategy<Value = Transform> {
    (
        (any::<u8>(), any::<u8>(), any::<u8>()),
        any::<u16>(),
        vec(
            (
                0u16..0x8000,
                prop_oneof![
                    any::<u16>().prop_map(AttributeValue::Short),
                    bytes(8).prop_map(AttributeValue::Long)
                ],
            ),
            0..3,
        ),
    )
        .prop_map(|((ty, header_reserved, reserved), id, attrs)| Transform {
            ty: TransformType(ty),
            id: TransformId(id),
            attributes: attrs
                .into_iter()
                .map(|(ty, value)| Attribute {
                    ty: AttributeType(ty),
                    value,
                })
                .collect(),
            header_reserved,
            reserved,
        })
}

fn proposal() -> impl Strategy<Value = Proposal> {
    (any::<(u8, u8, u8)>(), bytes(9), vec(transform(), 0..6)).prop_map(
        |((number, protocol, reserved), spi, transforms)| Proposal {
            number,
            protocol: ProtocolId(protocol),
            spi,
            transforms,
            reserved,
        },
    )
}

fn identification() -> impl Strategy<Value = Identification> {
    (any::<u8>(), any::<[u8; 3]>(), bytes(40)).prop_map(|(t, reserved, data)| Identification {
        id_type: IdType(t),
        reserved,
        data,
    })
}

fn selector() -> impl Strategy<Value = TrafficSelector> {
    prop_oneof![
        (
            any::<u8>(),
            any::<u16>(),
            any::<u16>(),
            any::<[u8; 4]>(),
            any::<[u8; 4]>()
        )
            .prop_map(|(p, s, e, a, b)| {
                TrafficSelector::Ipv4(TsRange {
                    ip_protocol: p,
                    start_port: s,
                    end_port: e,
                    start: a.into(),
                    end: b.into(),
                })
            }),
        (
            any::<u8>(),
            any::<u16>(),
            any::<u16>(),
            any::<[u8; 16]>(),
            any::<[u8; 16]>()
        )
            .prop_map(|(p, s, e, a, b)| {
                TrafficSelector::Ipv6(TsRange {
                    ip_protocol: p,
                    start_port: s,
                    end_port: e,
                    start: a.into(),
                    end: b.into(),
                })
            }),
        (
            any::<u8>().prop_filter("unknown type", |t| *t != 7 && *t != 8),
            any::<u8>(),
            bytes(20)
        )
            .prop_map(|(t, second, data)| TrafficSelector::Other {
                ts_type: TsType(t),
                second,
                data
            }),
    ]
}

fn cleartext_body() -> impl Strategy<Value = PayloadBody> {
    prop_oneof![
        vec(proposal(), 0..4)
            .prop_map(|proposals| PayloadBody::Sa(SecurityAssociation { proposals })),
        (any::<(u16, u16)>(), bytes(64)).prop_map(|((g, reserved), data)| PayloadBody::Ke(
            KeyExchange {
                group: TransformId(g),
                reserved,
                data
            }
        )),
        identification().prop_map(PayloadBody::IdI),
        identification().prop_map(PayloadBody::IdR),
        (any::<u8>(), bytes(64)).prop_map(|(e, data)| PayloadBody::Cert(Certificate {
            encoding: CertEncoding(e),
            data
        })),
        (any::<u8>(), bytes(40)).prop_map(|(e, data)| PayloadBody::CertReq(Certificate {
            encoding: CertEncoding(e),
            data
        })),
        (any::<(u8, [u8; 3])>(), bytes(64)).prop_map(|((m, reserved), data)| PayloadBody::Auth(
            Authentication {
                method: AuthMethod(m),
                reserved,
                data
            }
        )),
        bytes(64).prop_map(PayloadBody::Nonce),
        (any::<u8>(), bytes(9), any::<u16>(), bytes(20)).prop_map(|(p, spi, ty, data)| {
            PayloadBody::Notify(Notify {
                protocol: ProtocolId(p),
                spi,
                ty: NotifyType(ty),
                data,
            })
        }),
        (any::<u8>(), 1u8..9, 0usize..4).prop_flat_map(|(p, size, n)| vec(
            vec(any::<u8>(), size as usize),
            n
        )
        .prop_map(move |spis| PayloadBody::Delete(Delete {
            protocol: ProtocolId(p),
            spi_size: size,
            spis
        }))),
        any::<u8>().prop_map(|p| PayloadBody::Delete(Delete {
            protocol: ProtocolId(p),
            spi_size: 0,
            spis: vec![]
        })),
        bytes(32).prop_map(PayloadBody::VendorId),
        (any::<[u8; 3]>(), vec(selector(), 0..4)).prop_map(|(reserved, selectors)| {
            PayloadBody::TsI(TrafficSelectors {
                reserved,
                selectors,
            })
        }),
        (any::<[u8; 3]>(), vec(selector(), 0..4)).prop_map(|(reserved, selectors)| {
            PayloadBody::TsR(TrafficSelectors {
                reserved,
                selectors,
            })
        }),
        (
            any::<(u8, [u8; 3])>(),
            vec((any::<bool>(), 0u16..0x8000, bytes(20)), 0..5)
        )
            .prop_map(|((t, reserved), attrs)| PayloadBody::Cp(Configuration {
                cfg_type: CfgType(t),
                reserved,
                attributes: attrs
                    .into_iter()
                    .map(|(r, ty, value)| CfgAttribute {
                        reserved: r,
                        ty: CfgAttributeType(ty),
                        value
                    })
                    .collect(),
            })),
        bytes(40).prop_map(PayloadBody::Eap),
        (49u8..=255)
            .prop_filter("unknown", |t| *t != 53)
            .prop_flat_map(|t| bytes(20).prop_map(move |data| PayloadBody::Unknown {
                ty: PayloadType(t),
                data
            })),
    ]
}

fn encrypted_body() -> impl Strategy<Value = PayloadBody> {
    prop_oneof![
        (any::<u8>(), bytes(80)).prop_map(|(f, data)| PayloadBody::Encrypted(Encrypted {
            first_payload: PayloadType(f),
            data
        })),
        (any::<u8>(), 1u16..20, bytes(80)).prop_flat_map(|(f, total, data)| (1..=total).prop_map(
            move |number| {
                PayloadBody::EncryptedFragment(EncryptedFragment {
                    first_payload: PayloadType(f),
                    number,
                    total,
                    data: data.clone(),
                })
            }
        )),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    (
        any::<(u64, u64, u8, u8, u8, u32)>(),
        vec((any::<bool>(), 0u8..0x80, cleartext_body()), 0..6),
        proptest::option::of((any::<bool>(), 0u8..0x80, encrypted_body())),
    )
        .prop_map(
            |((spi_i, spi_r, minor, exchange, flags, message_id), clear, enc)| {
                let mut payloads: Vec<Payload> = clear
                    .into_iter()
                    .map(|(critical, reserved, body)| {
                        // An unknown payload marked critical makes the message unsupported.
                        let critical = critical && !matches!(body, PayloadBody::Unknown { .. });
                        Payload {
                            critical,
                            reserved,
                            body,
                        }
                    })
                    .collect();
                payloads.extend(enc.map(|(critical, reserved, body)| Payload {
                    critical,
                    reserved,
                    body,
                }));
                Message {
                    header: Header {
                        spi_i,
                        spi_r,
                        minor_version: minor & 0x0f,
                        exchange: ExchangeType(exchange),
                        flags: Flags(flags),
                        message_id,
                    },
                    payloads,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn emit_then_parse_gives_the_message_back(msg in message()) {
        let bytes = msg.emit().unwrap();
        let parsed = Message::parse(&bytes).unwrap();
        prop_assert_eq!(&parsed, &msg);
        prop_assert_eq!(&parsed.emit().unwrap(), &bytes);
        prop_assert_eq!(Header::peek(&bytes).unwrap(), msg.header);
    }

    #[test]
    fn parsing_arbitrary_bytes_never_panics(data in bytes(600)) {
        if let Ok(m) = Message::parse(&data) {
            prop_assert_eq!(&m.emit().unwrap(), &data, "what parses emits to the same bytes");
        }
        let _ = parse_chain(PayloadType(data.first().copied().unwrap_or(0)), &data);
        let _ = classify_udp4500(&data);
        let _ = EspTrailer::split(&data);
    }

    #[test]
    fn corrupted_messages_never_panic(msg in message(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = msg.emit().unwrap();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        if let Ok(m) = Message::parse(&bytes) {
            prop_assert_eq!(&m.emit().unwrap(), &bytes, "a changed byte that still parses survives");
        }
        bytes.truncate(i);
        let _ = Message::parse(&bytes);
    }

    #[test]
    fn captured_datagrams_with_a_byte_changed_round_trip_or_are_refused(
        which in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let captured = captured_cleartext();
        let mut bytes = captured[which.index(captured.len())].clone();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        if let Ok(m) = Message::parse(&bytes) {
            prop_assert_eq!(&m.emit().unwrap(), &bytes);
        }
    }
}

/// Every IKE message strongSwan sent or received in the captures, without
/// the non-ESP marker.
fn captured_cleartext() -> Vec<Vec<u8>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/strongswan");
    let mut out = Vec::new();
    for case in std::fs::read_dir(&root).unwrap() {
        for f in std::fs::read_dir(case.unwrap().path()).unwrap() {
            let path = f.unwrap().path();
            if path.extension().is_some_and(|e| e == "bin") {
                let d = std::fs::read(&path).unwrap();
                let ike = match classify_udp4500(&d) {
                    Ok(Udp4500::Ike(ike)) if path.to_string_lossy().contains("4500") => {
                        ike.to_vec()
                    }
                    _ => d,
                };
                out.push(ike);
            }
        }
    }
    assert!(out.len() >= 10, "the captures are there");
    out
}

#[test]
fn every_captured_datagram_emits_to_its_own_bytes() {
    for d in captured_cleartext() {
        assert_eq!(Message::parse(&d).unwrap().emit().unwrap(), d);
    }
}

#[test]
fn reserved_bits_survive_and_are_zero_in_what_we_build() {
    let mut msg = Message {
        header: header(),
        payloads: vec![
            PayloadBody::Ke(KeyExchange::new(ke_id::CURVE25519, vec![1; 32])).into(),
            PayloadBody::TsI(TrafficSelectors::new(vec![TrafficSelector::ipv6(
                "::".parse().unwrap(),
                "::".parse().unwrap(),
            )]))
            .into(),
        ],
    };
    let clean = msg.emit().unwrap();
    // The KE payload's reserved field and the payload header's reserved
    // bits, set by a sender that ignores the RFC, come back as they were.
    let mut dirty = clean.clone();
    dirty[28 + 1] |= 0x15; // generic header flags
    dirty[28 + 6] = 0xab; // KE reserved
    let parsed = Message::parse(&dirty).unwrap();
    assert_eq!(parsed.emit().unwrap(), dirty);
    assert_eq!(parsed.payloads[0].reserved, 0x15);
    assert!(!parsed.payloads[0].critical);
    // What we build has them clear.
    msg.payloads[0].reserved = 0;
    assert_eq!(msg.emit().unwrap(), clean);
    assert_eq!(clean[28 + 1] & 0x7f, 0);
}

#[test]
fn a_wrong_last_substructure_octet_is_refused() {
    let sa = SecurityAssociation {
        proposals: vec![
            Proposal::new(
                1,
                ProtocolId::IKE,
                vec![],
                vec![Transform::new(TransformType::PRF, prf_id::HMAC_SHA2_256)],
            ),
            Proposal::new(
                2,
                ProtocolId::IKE,
                vec![],
                vec![Transform::new(TransformType::PRF, prf_id::HMAC_SHA2_384)],
            ),
        ],
    };
    let msg = Message {
        header: header(),
        payloads: vec![PayloadBody::Sa(sa).into()],
    };
    let good = msg.emit().unwrap();
    // The first proposal says "last" although another follows.
    let mut bad = good.clone();
    assert_eq!(bad[28 + 4], 2);
    bad[28 + 4] = 0;
    assert_eq!(
        Message::parse(&bad),
        Err(InvalidMessage::InvalidValue("last proposal substructure"))
    );
    assert!(Message::parse(&good).is_ok());
}

fn header() -> Header {
    Header {
        spi_i: 1,
        spi_r: 2,
        minor_version: 0,
        exchange: ExchangeType::INFORMATIONAL,
        flags: Flags::new(true, false),
        message_id: 7,
    }
}

#[test]
fn unknown_critical_payload_is_unsupported_and_names_its_type() {
    let mut msg = Message {
        header: header(),
        payloads: vec![
            PayloadBody::Nonce(vec![1; 16]).into(),
            PayloadBody::Unknown {
                ty: PayloadType(200),
                data: vec![1, 2, 3],
            }
            .into(),
        ],
    };
    // Not critical: skipped over and kept.
    let bytes = msg.emit().unwrap();
    assert_eq!(Message::parse(&bytes).unwrap(), msg);
    // Critical: the whole message is refused.
    msg.payloads[1].critical = true;
    let bytes = msg.emit().unwrap();
    let err = Message::parse(&bytes).unwrap_err();
    assert_eq!(
        err,
        InvalidMessage::UnsupportedCriticalPayload(PayloadType(200))
    );
    assert_eq!(
        sixgate_proto::Error::from(err).notify(),
        Some(NotifyType::UNSUPPORTED_CRITICAL_PAYLOAD)
    );
    // A known payload with the critical bit is just a known payload.
    msg.payloads[1] = Payload {
        critical: true,
        reserved: 0,
        body: PayloadBody::VendorId(vec![9]),
    };
    assert_eq!(Message::parse(&msg.emit().unwrap()).unwrap(), msg);
}

#[test]
fn framing_errors_are_reported_not_skipped() {
    let msg = Message {
        header: header(),
        payloads: vec![PayloadBody::Nonce(vec![1; 16]).into()],
    };
    let good = msg.emit().unwrap();
    // Length field disagreeing with the datagram.
    let mut longer = good.clone();
    longer.push(0);
    assert_eq!(
        Message::parse(&longer),
        Err(InvalidMessage::BadLength("IKE message"))
    );
    // A payload length below its own header.
    let mut bad = good.clone();
    bad[28 + 2..28 + 4].copy_from_slice(&3u16.to_be_bytes());
    assert_eq!(
        Message::parse(&bad),
        Err(InvalidMessage::BadLength("payload"))
    );
    // A payload length beyond the message.
    let mut bad = good.clone();
    bad[28 + 2..28 + 4].copy_from_slice(&100u16.to_be_bytes());
    assert_eq!(
        Message::parse(&bad),
        Err(InvalidMessage::Truncated("payload chain"))
    );
    // Major version 1.
    let mut v1 = good.clone();
    v1[17] = 0x10;
    assert_eq!(
        Message::parse(&v1),
        Err(InvalidMessage::UnsupportedMajorVersion(1))
    );
    // SK must be last.
    let sk_first = Message {
        header: header(),
        payloads: vec![PayloadBody::Encrypted(Encrypted {
            first_payload: PayloadType::NONE,
            data: vec![0; 32],
        })
        .into()],
    };
    let mut bytes = sk_first.emit().unwrap();
    bytes.extend_from_slice(&[0, 0, 0, 4]);
    let len = bytes.len() as u32;
    bytes[24..28].copy_from_slice(&len.to_be_bytes());
    assert_eq!(
        Message::parse(&bytes),
        Err(InvalidMessage::EncryptedNotLast(PayloadType::SK))
    );
}

#[test]
fn typed_views_of_identities_and_attributes() {
    assert_eq!(
        Identification::fqdn("broker.example.net").identity(),
        Identity::Fqdn("broker.example.net")
    );
    assert_eq!(
        Identification::rfc822("a@b").identity(),
        Identity::Rfc822("a@b")
    );
    let v6: std::net::IpAddr = "2001:db8::1".parse().unwrap();
    assert_eq!(
        Identification::address(v6).identity(),
        Identity::Address(v6)
    );
    let odd = Identification {
        id_type: IdType::IPV4_ADDR,
        reserved: [0; 3],
        data: vec![1, 2, 3],
    };
    assert_eq!(
        odd.identity(),
        Identity::Other(IdType::IPV4_ADDR, &[1, 2, 3])
    );
    let body = Identification::fqdn("x").body();
    assert_eq!(body, vec![2, 0, 0, 0, b'x']);

    let a = CfgAttribute::ip6_prefix(
        CfgAttributeType::INTERNAL_IP6_ADDRESS,
        "2001:db8:100::100".parse().unwrap(),
        120,
    );
    assert_eq!(
        a.as_ip6_prefix(),
        Some(("2001:db8:100::100".parse().unwrap(), 120))
    );
    assert_eq!(
        CfgAttribute::request(CfgAttributeType::INTERNAL_IP6_DNS).as_address(),
        None
    );
    let dns = CfgAttribute::address(CfgAttributeType::INTERNAL_IP6_DNS, v6);
    assert_eq!(dns.as_address(), Some(v6));
    assert_eq!(
        format!("{:?}", NotifyType(16430)),
        "FRAGMENTATION_SUPPORTED"
    );
    assert_eq!(format!("{:?}", NotifyType(40000)), "NotifyType(40000)");
}
