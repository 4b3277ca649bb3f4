//! Enrollment as an operator does it, on files alone: `ca init`, `ca
//! issue-broker`, `client add` (ECDSA and RSA), and what each bundle holds,
//! read the way the client would read it: the Apple profile as a plist
//! whose PKCS#12 opens with `openssl pkcs12 -legacy`, the Windows script's
//! suite and routes checked against what the broker accepts, strongSwan's
//! proposals read back as the broker's policy, the Android profile's
//! embedded files. (The namespace suite connects with the bundles.)

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use sixgate_broker::config::Config;
use sixgate_proto::crypto::{Encryption, Integrity, KeGroup, Prf};
use sixgate_proto::proposal::{EspPolicy, IkePolicy};

fn certs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../certs-example/ecdsa")
}

fn broker(args: &[&str], config: &Path) -> (bool, String) {
    sixgate_tests::outcome(
        Command::new(env!("CARGO_BIN_EXE_sixgate-broker"))
            .args(args)
            .arg("--config")
            .arg(config),
    )
}

fn ok(args: &[&str], config: &Path) -> String {
    let (ok, text) = broker(args, config);
    assert!(ok, "{args:?}: {text}");
    text
}

fn write_config(dir: &Path, ike: &str) -> PathBuf {
    let text = format!(
        r#"[ike]
listen = ["192.0.2.1"]
identity = "broker.example.net"
{ike}
[pool]
prefix = "2001:db8:100::/64"
[storage]
path = "state"
"#
    );
    let path = dir.join("broker.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The broker set up with its own CA and certificate, as the README says.
fn enrolled_broker(dir: &Path, proposals: &str) -> PathBuf {
    let c = certs();
    let config = write_config(
        dir,
        &format!(
            "certificate = \"{c}/broker.pem\"\nprivate_key = \"{c}/broker.key\"\nca = [\"{c}/ca.pem\"]\n{proposals}",
            c = c.display()
        ),
    );
    let made = ok(&["ca", "init"], &config);
    assert!(made.contains("does not trust it yet"), "{made}");
    let (again, text) = broker(&["ca", "init"], &config);
    assert!(!again && text.contains("already holds a CA"), "{text}");
    assert_eq!(mode(&dir.join("state/ca/ca.key")), 0o600);
    let out = dir.join("brokercert");
    let issued = ok(
        &[
            "ca",
            "issue-broker",
            "broker.example.net",
            "--out",
            out.to_str().unwrap(),
        ],
        &config,
    );
    assert!(issued.contains("certificate = "), "{issued}");
    write_config(
        dir,
        &format!(
            "certificate = \"{o}/broker.pem\"\nprivate_key = \"{o}/broker.key\"\n\
             ca = [\"{s}/ca/ca.pem\"]\n{proposals}",
            o = out.display(),
            s = dir.join("state").display()
        ),
    )
}

fn plist_dict<'a>(v: &'a plist::Value, key: &str) -> &'a plist::Dictionary {
    v.as_dictionary()
        .and_then(|d| d.get(key))
        .and_then(|v| v.as_dictionary())
        .unwrap_or_else(|| panic!("no dictionary {key}"))
}

fn plist_str<'a>(d: &'a plist::Dictionary, key: &str) -> &'a str {
    d.get(key)
        .and_then(|v| v.as_string())
        .unwrap_or_else(|| panic!("no string {key}"))
}

fn encryption_of_apple(name: &str) -> Encryption {
    match name {
        "AES-128" => Encryption::AesCbc { key_bits: 128 },
        "AES-256" => Encryption::AesCbc { key_bits: 256 },
        "AES-128-GCM" => Encryption::AesGcm16 { key_bits: 128 },
        "AES-256-GCM" => Encryption::AesGcm16 { key_bits: 256 },
        "ChaCha20Poly1305" => Encryption::ChaCha20Poly1305,
        other => panic!("Apple has no encryption {other}"),
    }
}

fn hash_of_apple(name: &str) -> (Integrity, Prf) {
    match name {
        "SHA1-96" => (Integrity::HmacSha1_96, Prf::HmacSha1),
        "SHA2-256" => (Integrity::HmacSha256_128, Prf::HmacSha256),
        "SHA2-384" => (Integrity::HmacSha384_192, Prf::HmacSha384),
        "SHA2-512" => (Integrity::HmacSha512_256, Prf::HmacSha512),
        other => panic!("Apple has no integrity {other}"),
    }
}

fn group_of_number(n: u64) -> KeGroup {
    match n {
        2 => KeGroup::Modp1024,
        14 => KeGroup::Modp2048,
        15 => KeGroup::Modp3072,
        19 => KeGroup::Ecp256,
        20 => KeGroup::Ecp384,
        31 => KeGroup::Curve25519,
        other => panic!("group {other}"),
    }
}

/// The Apple profile: a plist with the documented IKEv2 keys, a suite the
/// broker accepts, and a PKCS#12 that holds the bundle's certificate and
/// key and opens with the legacy algorithms Apple's importer needs.
fn check_apple_profile(bundle: &Path, config: &Config, certificate_type: &str) {
    let profile = plist::Value::from_file(bundle.join("apple.mobileconfig")).unwrap();
    let top = profile.as_dictionary().unwrap();
    assert_eq!(plist_str(top, "PayloadType"), "Configuration");
    let payloads = top["PayloadContent"].as_array().unwrap();
    let by_type: BTreeMap<&str, &plist::Dictionary> = payloads
        .iter()
        .map(|p| {
            let d = p.as_dictionary().unwrap();
            (plist_str(d, "PayloadType"), d)
        })
        .collect();
    let vpn = by_type["com.apple.vpn.managed"];
    assert_eq!(plist_str(vpn, "VPNType"), "IKEv2");
    let ikev2 = vpn["IKEv2"].as_dictionary().unwrap();
    assert_eq!(plist_str(ikev2, "RemoteAddress"), "192.0.2.1");
    assert_eq!(plist_str(ikev2, "RemoteIdentifier"), "broker.example.net");
    assert_eq!(plist_str(ikev2, "AuthenticationMethod"), "Certificate");
    assert_eq!(plist_str(ikev2, "CertificateType"), certificate_type);
    let pkcs12 = by_type["com.apple.security.pkcs12"];
    assert_eq!(
        plist_str(ikev2, "PayloadCertificateUUID"),
        plist_str(pkcs12, "PayloadUUID")
    );
    let ike = &plist::Value::Dictionary(ikev2.clone());
    let ike_sa = plist_dict(ike, "IKESecurityAssociationParameters");
    let encr = encryption_of_apple(plist_str(ike_sa, "EncryptionAlgorithm"));
    let (integ, prf) = hash_of_apple(plist_str(ike_sa, "IntegrityAlgorithm"));
    let group = group_of_number(ike_sa["DiffieHellmanGroup"].as_unsigned_integer().unwrap());
    let p = &config.ike_policy;
    assert!(
        p.encr.contains(&encr) && p.ke.contains(&group),
        "{ike_sa:?}"
    );
    assert!(p.prf.contains(&prf), "{ike_sa:?}");
    if !encr.is_aead() {
        assert!(p.integ.contains(&integ), "{ike_sa:?}");
    }
    let child = plist_dict(ike, "ChildSecurityAssociationParameters");
    let esp_encr = encryption_of_apple(plist_str(child, "EncryptionAlgorithm"));
    assert!(config.esp_policy.encr.contains(&esp_encr), "{child:?}");
    let lifetime = child["LifeTimeInMinutes"].as_unsigned_integer().unwrap();
    assert_eq!(lifetime, config.file.ike.child_lifetime / 60);

    let p12 = pkcs12["PayloadContent"].as_data().unwrap();
    assert_eq!(p12, std::fs::read(bundle.join("client.p12")).unwrap());
    let password = plist_str(pkcs12, "Password");
    let extracted = bundle.join("extracted.pem");
    openssl(&[
        "pkcs12",
        "-legacy",
        "-in",
        bundle.join("client.p12").to_str().unwrap(),
        "-passin",
        &format!("pass:{password}"),
        "-nodes",
        "-out",
        extracted.to_str().unwrap(),
    ]);
    let key_of = |path: &Path| openssl(&["pkey", "-in", path.to_str().unwrap(), "-pubout"]);
    assert_eq!(key_of(&extracted), key_of(&bundle.join("client.key")));
    let fingerprint = |path: &Path| {
        openssl(&[
            "x509",
            "-in",
            path.to_str().unwrap(),
            "-noout",
            "-fingerprint",
        ])
    };
    assert_eq!(
        fingerprint(&extracted),
        fingerprint(&bundle.join("client.pem"))
    );
    // Apple's importer wants the old PKCS#12 algorithms: 3DES for the key.
    let info = Command::new("openssl")
        .args(["pkcs12", "-legacy", "-info", "-noout", "-in"])
        .arg(bundle.join("client.p12"))
        .args(["-passin", &format!("pass:{password}")])
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&info.stderr);
    assert!(
        info.contains("pbeWithSHA1And3-KeyTripleDES-CBC") && info.contains("MAC: sha1"),
        "{info}"
    );
    let root = by_type["com.apple.security.root"];
    assert_eq!(
        root["PayloadContent"].as_data().unwrap(),
        std::fs::read(bundle.join("ca.cer")).unwrap()
    );
}

/// The value after `-NAME ` in the script.
fn ps_arg<'a>(script: &'a str, name: &str) -> &'a str {
    let at = script
        .find(&format!("-{name} "))
        .unwrap_or_else(|| panic!("-{name} not in\n{script}"));
    script[at + name.len() + 2..]
        .split_whitespace()
        .next()
        .unwrap()
}

/// The Windows script: each parameter of Set-VpnConnectionIPsecConfiguration
/// maps to an algorithm the broker accepts, and the two routes are there.
fn check_windows_script(bundle: &Path, config: &Config) {
    let script = std::fs::read_to_string(bundle.join("windows.ps1")).unwrap();
    let cipher = |name: &str| match name {
        "AES128" => Encryption::AesCbc { key_bits: 128 },
        "AES256" => Encryption::AesCbc { key_bits: 256 },
        "GCMAES128" => Encryption::AesGcm16 { key_bits: 128 },
        "GCMAES256" => Encryption::AesGcm16 { key_bits: 256 },
        other => panic!("cipher {other}"),
    };
    let ike = &config.ike_policy;
    let encr = cipher(ps_arg(&script, "EncryptionMethod"));
    assert!(ike.encr.contains(&encr), "{script}");
    let (integ, prf) = match ps_arg(&script, "IntegrityCheckMethod") {
        "SHA1" => (Integrity::HmacSha1_96, Prf::HmacSha1),
        "SHA256" => (Integrity::HmacSha256_128, Prf::HmacSha256),
        "SHA384" => (Integrity::HmacSha384_192, Prf::HmacSha384),
        other => panic!("integrity {other}"),
    };
    assert!(
        ike.integ.contains(&integ) && ike.prf.contains(&prf),
        "{script}"
    );
    let group = |name: &str| match name {
        "Group2" | "PFS2" => KeGroup::Modp1024,
        "Group14" | "PFS2048" => KeGroup::Modp2048,
        "ECP256" => KeGroup::Ecp256,
        "ECP384" => KeGroup::Ecp384,
        other => panic!("group {other}"),
    };
    assert!(
        ike.ke.contains(&group(ps_arg(&script, "DHGroup"))),
        "{script}"
    );
    let esp = &config.esp_policy;
    let esp_encr = cipher(ps_arg(&script, "CipherTransformConstants"));
    assert!(esp.encr.contains(&esp_encr), "{script}");
    let auth = ps_arg(&script, "AuthenticationTransformConstants");
    if esp_encr.is_aead() {
        assert_eq!(auth, ps_arg(&script, "CipherTransformConstants"));
    } else {
        let i = match auth {
            "SHA196" => Integrity::HmacSha1_96,
            "SHA256128" => Integrity::HmacSha256_128,
            other => panic!("ESP integrity {other}"),
        };
        assert!(esp.integ.contains(&i), "{script}");
    }
    match ps_arg(&script, "PfsGroup") {
        "None" => assert!(esp.pfs.is_empty(), "{script}"),
        g => assert!(esp.pfs.contains(&group(g)), "{script}"),
    }
    for route in ["'::/1'", "'8000::/1'"] {
        assert!(
            script.contains(&format!(
                "Add-VpnConnectionRoute -ConnectionName 'sixgate' -DestinationPrefix {route}"
            )),
            "{script}"
        );
    }
    assert!(script.contains("-ServerAddress '192.0.2.1'"), "{script}");
}

/// strongSwan's proposals are the broker's policy; the Android profile
/// carries the same and the bundle's PKCS#12 and CA.
fn check_strongswan_and_android(bundle: &Path, config: &Config) {
    let conf = std::fs::read_to_string(bundle.join("strongswan/swanctl.conf")).unwrap();
    let value = |key: &str| {
        conf.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("{key} not in\n{conf}"))
            .split(", ")
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let legacy = config.ike_policy.legacy;
    let mut ike = IkePolicy::from_strongswan(&value("proposals"), legacy).unwrap();
    ike.encr
        .sort_by_key(|e| config.ike_policy.encr.iter().position(|x| x == e));
    assert_eq!(ike, config.ike_policy);
    let mut esp = EspPolicy::from_strongswan(&value("esp_proposals"), legacy).unwrap();
    esp.encr
        .sort_by_key(|e| config.esp_policy.encr.iter().position(|x| x == e));
    assert_eq!(esp, config.esp_policy);
    for file in ["x509/client.pem", "private/client.key", "x509ca/ca.pem"] {
        assert!(bundle.join("strongswan").join(file).exists(), "{file}");
    }
    let sswan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("android.sswan")).unwrap()).unwrap();
    assert_eq!(sswan["type"], "ikev2-cert");
    assert_eq!(sswan["remote"]["addr"], "192.0.2.1");
    assert_eq!(sswan["remote"]["id"], "broker.example.net");
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    };
    assert_eq!(
        b64(&sswan["local"]["p12"]),
        std::fs::read(bundle.join("client.p12")).unwrap()
    );
    assert_eq!(
        b64(&sswan["remote"]["cert"]),
        std::fs::read(bundle.join("ca.cer")).unwrap()
    );
    assert_eq!(
        sswan["ike-proposal"].as_str().unwrap().replace(',', ", "),
        value("proposals").join(", ")
    );
}

#[test]
fn client_bundles_hold_what_each_client_kind_reads() {
    for (proposals, rsa) in [
        ("", false),
        (
            "legacy = true\nproposals = [\"aes256-sha1-modp1024\", \"default\"]\n\
             esp_proposals = [\"aes256-sha1-modp1024\"]",
            true,
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config_path = enrolled_broker(dir.path(), proposals);
        let config = Config::load(&config_path).unwrap();
        let bundle = dir.path().join("alice");
        let mut args = vec![
            "client",
            "add",
            "Alice@Example.NET",
            "--out",
            bundle.to_str().unwrap(),
            "--broker",
            "192.0.2.1",
        ];
        if rsa {
            args.push("--rsa");
        }
        let told = ok(&args, &config_path);
        assert!(told.contains("issued Alice@example.net"), "{told}");
        let (again, text) = broker(&args, &config_path);
        assert!(!again && text.contains("already holds a bundle"), "{text}");
        for file in ["client.key", "client.p12", "strongswan/private/client.key"] {
            assert_eq!(mode(&bundle.join(file)), 0o600, "{file}");
        }
        let toml = std::fs::read_to_string(bundle.join("client.toml")).unwrap();
        assert!(
            toml.contains("identity = \"Alice@example.net\"")
                && toml.contains("broker = \"192.0.2.1\""),
            "{toml}"
        );
        let text = openssl(&[
            "x509",
            "-in",
            bundle.join("client.pem").to_str().unwrap(),
            "-noout",
            "-text",
        ]);
        assert!(
            text.contains(if rsa {
                "rsaEncryption"
            } else {
                "id-ecPublicKey"
            }) && text.contains("email:Alice@example.net")
                && text.contains("TLS Web Client Authentication"),
            "{text}"
        );
        check_apple_profile(&bundle, &config, if rsa { "RSA" } else { "ECDSA256" });
        check_windows_script(&bundle, &config);
        check_strongswan_and_android(&bundle, &config);
    }
}

#[test]
fn client_add_refuses_what_would_not_work() {
    let dir = tempfile::tempdir().unwrap();
    let c = certs();
    let config = write_config(
        dir.path(),
        &format!(
            "certificate = \"{c}/broker.pem\"\nprivate_key = \"{c}/broker.key\"\nca = [\"{c}/ca.pem\"]",
            c = c.display()
        ),
    );
    let (added, text) = broker(&["client", "add", "bob@example.net"], &config);
    assert!(
        !added && text.contains("no CA in") && text.contains("ca init"),
        "{text}"
    );
    ok(&["ca", "init"], &config);
    // The broker would refuse the client: its CA is not among [ike] ca.
    let (added, text) = broker(&["client", "add", "bob@example.net"], &config);
    assert!(
        !added && text.contains("does not trust its own CA"),
        "{text}"
    );
    let (imported, text) = broker(
        &[
            "ca",
            "import",
            c.join("ca.pem").to_str().unwrap(),
            c.join("broker.key").to_str().unwrap(),
        ],
        &config,
    );
    assert!(!imported && text.contains("already holds a CA"), "{text}");
}

#[test]
fn an_imported_ca_issues_clients_the_broker_already_trusts() {
    let dir = tempfile::tempdir().unwrap();
    let c = certs();
    let config = write_config(
        dir.path(),
        &format!(
            "certificate = \"{c}/broker.pem\"\nprivate_key = \"{c}/broker.key\"\nca = [\"{c}/ca.pem\"]",
            c = c.display()
        ),
    );
    // A key that is not the CA's is refused.
    let (imported, text) = broker(
        &[
            "ca",
            "import",
            c.join("ca.pem").to_str().unwrap(),
            c.join("client.key").to_str().unwrap(),
        ],
        &config,
    );
    assert!(!imported && text.contains("does not belong"), "{text}");
    let told = ok(
        &[
            "ca",
            "import",
            c.join("ca.pem").to_str().unwrap(),
            c.join("ca.key").to_str().unwrap(),
        ],
        &config,
    );
    assert!(!told.contains("does not trust"), "{told}");
    let bundle = dir.path().join("carol");
    ok(
        &[
            "client",
            "add",
            "carol@example.net",
            "--out",
            bundle.to_str().unwrap(),
        ],
        &config,
    );
    // Chained to the example CA, which the broker trusts already.
    openssl(&[
        "verify",
        "-CAfile",
        c.join("ca.pem").to_str().unwrap(),
        bundle.join("client.pem").to_str().unwrap(),
    ]);
    let toml = std::fs::read_to_string(bundle.join("client.toml")).unwrap();
    assert!(toml.contains("broker = \"broker.example.net\""), "{toml}");
}
