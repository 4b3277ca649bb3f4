//! The stock IKEv2 clients people carry, emulated with strongSwan from
//! their published behaviour, against the sixgate broker: their default
//! proposals, classic AUTH methods where they send no
//! SIGNATURE_HASH_ALGORITHMS (`signature_authentication = no`), no CERTREQ
//! where they send none, and address requests for both families. Each gets
//! an address from the pool and pings the IPv6 host. Root, namespaces,
//! strongSwan with kernel-libipsec.
//!
//! Sources: docs.strongswan.org interop pages for iOS/macOS and Windows
//! clients; AOSP's VpnIkev2Utils.java and the IPsec module for Android; the
//! strongSwan Android app's android_service.c.

use std::time::Duration;

use sixgate_tests::{certs_dir, wait_for, StrongSwan, SwanConnection, SwanMode, TunnelLab};

/// One emulated client.
struct Client {
    name: &'static str,
    /// Certificate kind in certs-example ("rsa" or "ecdsa").
    kind: &'static str,
    ike: &'static str,
    esp: &'static str,
    /// Classic AUTH (no RFC 7427 notify) as Apple and Windows do.
    classic_auth: bool,
    send_certreq: bool,
}

const IOS_IKE: &str = "aes256-sha256-modp2048, aes256-sha256-ecp256, aes256-sha256-modp1536, \
                       aes128-sha1-modp1024, 3des-sha1-modp1024";
const IOS_ESP: &str = "aes256-sha256, aes128-sha1, 3des-sha1";
const MACOS_IKE: &str =
    "aes256-sha256-modp2048, aes256-sha256-modp1536, aes128-sha1-modp1024, 3des-sha1-modp1024";
const WINDOWS_IKE: &str = "3des-sha1-modp1024, aes256-sha1-modp1024, 3des-sha256-modp1024, \
                           aes256-sha256-modp1024, 3des-sha384-modp1024, aes256-sha384-modp1024";
/// NegotiateDH2048_AES256 = 2.
const WINDOWS_DH2048_IKE: &str =
    "aes256-sha1-modp2048, aes256-sha256-modp2048, aes256-sha384-modp2048";
const WINDOWS_ESP: &str = "aes256-aes128-3des-sha1";
const ANDROID_IKE: &str = "aes256-aes128-sha512-sha384-sha256-prfsha512-prfsha384-prfsha256-prfsha1-modp4096-curve25519-modp3072-modp2048, \
                           chacha20poly1305-aes256gcm16-aes128gcm16-prfsha512-prfsha384-prfsha256-prfsha1-modp4096-curve25519-modp3072-modp2048";
const ANDROID_ESP: &str =
    "aes256-aes128-sha512-sha384-sha256, chacha20poly1305-aes256gcm16-aes128gcm16";
const STRONGSWAN_APP_ESP: &str = "aes256gcm16-aes128gcm16-chacha20poly1305, \
                                  aes256-aes192-aes128-sha384-sha256-sha512-sha1";

fn apple(name: &'static str, kind: &'static str, ike: &'static str) -> Client {
    Client {
        name,
        kind,
        ike,
        esp: IOS_ESP,
        classic_auth: true,
        send_certreq: false,
    }
}

fn windows(name: &'static str, kind: &'static str, ike: &'static str) -> Client {
    Client {
        name,
        kind,
        ike,
        esp: WINDOWS_ESP,
        classic_auth: true,
        send_certreq: true,
    }
}

/// Starts a broker trusting both example CAs, with `legacy` as given.
fn broker(lab: &TunnelLab, legacy: bool) -> (std::path::PathBuf, sixgate_tests::Daemon) {
    let config = lab.broker_config("2001:db8:100::100/120", &[], &format!("legacy = {legacy}"));
    let text = std::fs::read_to_string(&config).unwrap();
    let ecdsa_ca = format!("ca = [\"{}/ecdsa/ca.pem\"]", certs_dir().display());
    let both = format!(
        "ca = [\"{c}/ecdsa/ca.pem\", \"{c}/rsa/ca.pem\"]",
        c = certs_dir().display()
    );
    assert!(text.contains(&ecdsa_ca), "{text}");
    std::fs::write(&config, text.replace(&ecdsa_ca, &both)).unwrap();
    let daemon = lab.start_broker(&config);
    (config, daemon)
}

/// The client's charon, connecting.
fn start(lab: &TunnelLab, c: &Client) -> StrongSwan {
    let certreq = format!(
        "send_certreq = {}",
        if c.send_certreq { "yes" } else { "no" }
    );
    let conf = SwanConnection {
        ike: c.ike,
        esp: c.esp,
        vips: "0.0.0.0, ::",
        extra: &certreq,
        ..SwanConnection::default()
    }
    .client();
    let charon = if c.classic_auth {
        "signature_authentication = no"
    } else {
        ""
    };
    StrongSwan::start(
        &lab.clients[0],
        c.kind,
        "client",
        charon,
        &conf,
        SwanMode::Routes,
    )
}

/// Connects `c` to a fresh broker; an error says what went wrong.
fn connects(c: &Client, legacy: bool) -> Result<(), String> {
    let lab = TunnelLab::new(1);
    let (_config, broker) = broker(&lab, legacy);
    let swan = start(&lab, c);
    let out = swan.swanctl(&["--initiate", "--child", "net", "--timeout", "20"]);
    let sas = swan.swanctl(&["--list-sas"]);
    if !sas.contains("2001:db8:100::100") {
        return Err(format!(
            "{}: no address\n{out}\n{sas}\nbroker:\n{}",
            c.name,
            broker.log_text()
        ));
    }
    let auth: Vec<String> = swan
        .log()
        .lines()
        .filter(|l| l.contains("(myself) with"))
        .map(String::from)
        .collect();
    println!("{}:\n{sas}\n{auth:?}", c.name);
    // Classic AUTH is methods 1 and 9 ("RSA signature", "ECDSA-256
    // signature" in charon's words); RFC 7427 names the scheme.
    let classic = auth.iter().any(|l| l.contains(" signature successful"));
    if auth.is_empty() || classic != c.classic_auth {
        return Err(format!("{}: authenticated as {auth:?}", c.name));
    }
    if wait_for(Duration::from_secs(20), || lab.ping(0, 2).then_some(())).is_none() {
        return Err(format!("{}: no ping\n{sas}", c.name));
    }
    Ok(())
}

#[test]
fn stock_clients_connect_with_their_defaults() {
    // legacy = true only where the client needs SHA-1 or MODP-1024: RSA
    // certificates with classic AUTH (method 1 is SHA-1), Windows' default
    // groups.
    let cases = [
        (apple("iOS, ECDSA", "ecdsa", IOS_IKE), false),
        (apple("iOS, RSA", "rsa", IOS_IKE), true),
        (apple("macOS, ECDSA", "ecdsa", MACOS_IKE), false),
        (apple("macOS, RSA", "rsa", MACOS_IKE), true),
        (windows("Windows, default, RSA", "rsa", WINDOWS_IKE), true),
        (
            windows("Windows, DH2048, ECDSA", "ecdsa", WINDOWS_DH2048_IKE),
            false,
        ),
        (
            windows("Windows, DH2048, RSA", "rsa", WINDOWS_DH2048_IKE),
            true,
        ),
        (
            Client {
                name: "Android 12+ native, RSA",
                kind: "rsa",
                ike: ANDROID_IKE,
                esp: ANDROID_ESP,
                classic_auth: false,
                send_certreq: false,
            },
            false,
        ),
        (
            Client {
                name: "strongSwan Android app, ECDSA",
                kind: "ecdsa",
                ike: "default",
                esp: STRONGSWAN_APP_ESP,
                classic_auth: false,
                send_certreq: true,
            },
            false,
        ),
    ];
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(c, legacy)| connects(c, *legacy).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn without_legacy_windows_defaults_and_sha1_auth_are_refused_and_the_log_says_why() {
    let lab = TunnelLab::new(1);
    let (_config, broker) = broker(&lab, false);
    let swan = start(&lab, &windows("Windows, default, RSA", "rsa", WINDOWS_IKE));
    let out = swan.swanctl(&["--initiate", "--child", "net", "--timeout", "10"]);
    assert!(!out.contains("successfully"), "{out}");
    let log = wait_for(Duration::from_secs(10), || {
        let log = broker.log_text();
        log.contains("`legacy = true` would accept").then_some(log)
    });
    assert!(log.is_some(), "{}", broker.log_text());
    assert!(swan.log().contains("NO_PROPOSAL_CHOSEN"), "{}", swan.log());
    drop(swan);

    // iOS with an RSA certificate signs with SHA-1 (AUTH method 1).
    let swan = start(&lab, &apple("iOS, RSA", "rsa", IOS_IKE));
    let out = swan.swanctl(&["--initiate", "--child", "net", "--timeout", "10"]);
    assert!(!out.contains("successfully"), "{out}");
    let log = wait_for(Duration::from_secs(10), || {
        let log = broker.log_text();
        log.contains("method 1 uses SHA-1").then_some(log)
    });
    assert!(log.is_some(), "{}", broker.log_text());
}

#[test]
fn ecdsa_with_each_sha2_hash_authenticates() {
    // RFC 7427 lets an ECDSA key sign with any SHA-2 hash; libreswan picks
    // SHA-512 for P-256, which the broker advertises and verifies.
    for (scheme, logged) in [
        ("ecdsa-sha512", "ECDSA_WITH_SHA512_DER"),
        ("ecdsa-sha384", "ECDSA_WITH_SHA384_DER"),
        ("ecdsa-sha256", "ECDSA_WITH_SHA256_DER"),
    ] {
        let lab = TunnelLab::new(1);
        let (_config, broker) = broker(&lab, false);
        let conf = SwanConnection {
            local_auth: scheme,
            ..SwanConnection::default()
        }
        .client();
        let swan = StrongSwan::start_client(&lab.clients[0], &conf, SwanMode::Routes);
        swan.initiate(20, &broker.log_text());
        let log = swan.log();
        assert!(
            log.lines()
                .any(|l| l.contains("(myself) with") && l.contains(logged)),
            "{scheme}: {log}"
        );
        assert!(
            wait_for(Duration::from_secs(20), || lab.ping(0, 2).then_some(())).is_some(),
            "{scheme}: no ping"
        );
    }
}
