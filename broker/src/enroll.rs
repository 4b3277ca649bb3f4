//! Enrollment without openssl: the broker's own CA in `<storage>/ca`
//! (made here, or an existing one imported), the broker's certificate, and
//! for each client a certificate and a bundle of ready profiles (see
//! [`crate::profiles`]). These verbs work on files alone, so they run
//! whether or not the daemon does; each certificate issued is recorded in
//! `<storage>/ca/issued/` for `client list`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rand_core::{OsRng, RngCore};
use sixgate_dataplane::secrets;
use sixgate_proto::cert::{self, certificates_from_pem, Purpose, TrustAnchors};
use sixgate_proto::crypto::Legacy;
use sixgate_proto::identity::{CanonicalIdentity, IdentityKind};
use sixgate_runtime::ca::{CertificateAuthority, Issued, KeyKind, Usage};
use sixgate_runtime::{clock, pki};

use crate::config::Config;
use crate::profiles::{self, Profile};

const CA_CERTIFICATE: &str = "ca.pem";
const CA_KEY: &str = "ca.key";
const ISSUED: &str = "issued";

/// The CA's directory in the broker's state.
pub struct CaStore<'a> {
    config: &'a Config,
    dir: PathBuf,
}

/// A certificate the CA issued to a client, as `client list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// The client's identity.
    pub identity: String,
    /// The certificate's serial number, hex.
    pub serial: String,
    /// Its expiry, Unix seconds.
    pub not_after: i64,
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{}: {e}", path.display())
}

fn read_text(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(io_error(path))
}

fn der_of(pem: &str) -> Result<Vec<u8>, String> {
    certificates_from_pem(pem.as_bytes())
        .map_err(|e| e.to_string())?
        .into_iter()
        .next()
        .ok_or_else(|| "no certificate".to_string())
}

fn kind_name(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::EcdsaP256 => "ECDSA P-256",
        KeyKind::Rsa => "RSA",
    }
}

impl<'a> CaStore<'a> {
    /// The CA of the broker configured by `config`.
    pub fn new(config: &'a Config) -> CaStore<'a> {
        CaStore {
            config,
            dir: config.file.storage.path.join("ca"),
        }
    }

    /// The CA's directory.
    pub fn dir(&self) -> PathBuf {
        self.dir.clone()
    }

    /// The CA's certificate file.
    pub fn certificate_path(&self) -> PathBuf {
        self.dir.join(CA_CERTIFICATE)
    }

    /// `ca init`: a new CA, unless there is one.
    pub fn init(&self, name: &str, kind: KeyKind, days: u32) -> Result<String, String> {
        self.ensure_none()?;
        let ca = CertificateAuthority::generate(name, kind, days)?;
        self.store(&ca)?;
        Ok(format!(
            "made a CA \"{name}\" ({}, {days} days)\n{}",
            kind_name(kind),
            self.written(&ca)
        ))
    }

    /// `ca import`: an existing CA's certificate and key.
    pub fn import(&self, certificate: &Path, key: &Path) -> Result<String, String> {
        self.ensure_none()?;
        let ca = CertificateAuthority::from_pem(&read_text(certificate)?, &read_text(key)?)
            .map_err(|e| format!("{} and {}: {e}", certificate.display(), key.display()))?;
        self.store(&ca)?;
        Ok(format!(
            "imported the CA of {}\n{}",
            certificate.display(),
            self.written(&ca)
        ))
    }

    /// A CA is never replaced by accident: every certificate it issued
    /// would stop being trusted with it.
    fn ensure_none(&self) -> Result<(), String> {
        if self.dir.join(CA_KEY).exists() {
            return Err(format!(
                "{} already holds a CA; move it away first to replace it (the clients it \
                 issued certificates to would need new ones)",
                self.dir.display()
            ));
        }
        Ok(())
    }

    fn store(&self, ca: &CertificateAuthority) -> Result<(), String> {
        self.ensure_none()?;
        secrets::private_dir(&self.dir).map_err(io_error(&self.dir))?;
        secrets::write_private_file(&self.dir, CA_KEY, ca.private_key().as_bytes())
            .map_err(io_error(&self.dir.join(CA_KEY)))?;
        secrets::write_private_file(&self.dir, CA_CERTIFICATE, ca.certificate().as_bytes())
            .map_err(io_error(&self.certificate_path()))
    }

    /// Where the files went, and what the configuration still needs.
    fn written(&self, ca: &CertificateAuthority) -> String {
        let mut text = format!(
            "certificate: {}\nkey:         {} (0600)\n",
            self.certificate_path().display(),
            self.dir.join(CA_KEY).display()
        );
        if !self.trusted_by_broker(ca.certificate()) {
            text.push_str(&format!(
                "The broker does not trust it yet: add it to {} as\n  [ike]\n  ca = [\"{}\"]\n",
                self.config.path.display(),
                self.certificate_path().display()
            ));
        }
        text
    }

    /// Whether `[ike] ca` holds this CA certificate.
    fn trusted_by_broker(&self, ca_pem: &str) -> bool {
        let Ok(der) = der_of(ca_pem) else {
            return false;
        };
        self.config
            .file
            .ike
            .ca
            .iter()
            .filter_map(|p| pki::load_chain(p).ok())
            .any(|certs| certs.contains(&der))
    }

    /// The CA, read back.
    pub fn load(&self) -> Result<CertificateAuthority, String> {
        let key = self.dir.join(CA_KEY);
        if !key.exists() {
            return Err(format!(
                "no CA in {}: make one with `sixgate-broker ca init` or bring one with \
                 `sixgate-broker ca import CERT KEY`",
                self.dir.display()
            ));
        }
        CertificateAuthority::from_pem(&read_text(&self.certificate_path())?, &read_text(&key)?)
            .map_err(|e| format!("{}: {e}", self.dir.display()))
    }

    /// `ca issue-broker NAME`: the broker's certificate and key in `out`.
    pub fn issue_broker(
        &self,
        name: &str,
        out: &Path,
        kind: KeyKind,
        days: u32,
    ) -> Result<String, String> {
        let identity = CanonicalIdentity::parse(name).map_err(|e| format!("{name}: {e}"))?;
        if !matches!(identity.kind(), IdentityKind::Fqdn | IdentityKind::Address) {
            return Err(format!(
                "{name}: the broker's certificate names a host name or an address"
            ));
        }
        let ca = self.load()?;
        let issued = ca.issue(&identity, Usage::Broker, kind, days)?;
        secrets::private_dir(out).map_err(io_error(out))?;
        for (file, text) in [
            ("broker.pem", issued.certificate.as_str()),
            ("broker.key", issued.private_key.as_str()),
        ] {
            secrets::write_private_file(out, file, text.as_bytes())
                .map_err(io_error(&out.join(file)))?;
        }
        Ok(format!(
            "issued the broker's certificate for {identity} ({}, {days} days)\n\
             In {}:\n  [ike]\n  identity = \"{identity}\"\n  certificate = \"{}\"\n  \
             private_key = \"{}\"\n",
            kind_name(kind),
            self.config.path.display(),
            out.join("broker.pem").display(),
            out.join("broker.key").display()
        ))
    }

    /// Records a client's certificate for `client list` (the newest per
    /// identity; an older one stays valid until it expires or is revoked).
    fn record(&self, identity: &CanonicalIdentity, certificate: &str) -> Result<(), String> {
        let dir = self.dir.join(ISSUED);
        secrets::private_dir(&dir).map_err(io_error(&dir))?;
        secrets::write_private_file(&dir, &record_name(identity)?, certificate.as_bytes())
            .map_err(io_error(&dir))
    }

    /// The client certificates issued here, by identity.
    pub fn issued(&self) -> Result<Vec<IssuedCertificate>, String> {
        let dir = self.dir.join(ISSUED);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("{}: {e}", dir.display())),
        };
        let mut issued = Vec::new();
        for entry in entries {
            let path = entry.map_err(io_error(&dir))?.path();
            let Some(identity) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".pem"))
            else {
                continue;
            };
            let der = der_of(&read_text(&path)?).map_err(|e| format!("{}: {e}", path.display()))?;
            let (_, not_after) =
                cert::validity_period(&der).map_err(|e| format!("{}: {e}", path.display()))?;
            issued.push(IssuedCertificate {
                identity: identity.to_string(),
                serial: cert::CertId::of_der(&der)
                    .map_err(|e| format!("{}: {e}", path.display()))?
                    .serial_hex(),
                not_after,
            });
        }
        issued.sort_by(|a, b| a.identity.cmp(&b.identity));
        Ok(issued)
    }
}

/// The file a client's record is kept in: its canonical identity, which
/// must make a plain file name.
fn record_name(identity: &CanonicalIdentity) -> Result<String, String> {
    let name = identity.as_str();
    if name.contains('/') || name.starts_with('.') || name.contains('\0') {
        return Err(format!("{name}: not usable as a file name for its record"));
    }
    Ok(format!("{name}.pem"))
}

/// The CA certificate a client is to trust the broker by: the sixgate CA
/// if it issued the broker's certificate, else the `[ike] ca` that did.
fn broker_anchor(config: &Config, own_ca: &[u8]) -> Result<Vec<u8>, String> {
    let f = &config.file;
    let chain = pki::load_chain(&f.ike.certificate)?;
    let legacy = if f.ike.legacy {
        Legacy::Allow
    } else {
        Legacy::Refuse
    };
    let now = clock::unix_now();
    let candidates = std::iter::once(own_ca.to_vec()).chain(
        f.ike
            .ca
            .iter()
            .filter_map(|p| pki::load_chain(p).ok())
            .flatten(),
    );
    for ca in candidates {
        let Ok(anchors) = TrustAnchors::new(vec![ca.clone()]) else {
            continue;
        };
        if anchors
            .validate(&chain, now, Purpose::Server, legacy)
            .is_ok()
        {
            return Ok(ca);
        }
    }
    Err(format!(
        "{}: the broker's certificate does not chain to the sixgate CA nor to any [ike] ca, \
         so no client could trust it; issue one with `sixgate-broker ca issue-broker NAME`",
        f.ike.certificate.display()
    ))
}

/// What `client add` wrote.
fn bundle_files(
    profile: &Profile<'_>,
    issued: &Issued,
    ca_pem: &str,
) -> (Vec<(&'static str, String)>, Vec<String>) {
    let mut files = vec![
        ("client.toml", profiles::client_toml(profile)),
        ("client.pem", issued.certificate.clone()),
        ("client.key", issued.private_key.clone()),
        ("ca.pem", ca_pem.to_string()),
        ("strongswan/swanctl.conf", profiles::swanctl_conf(profile)),
        ("strongswan/x509/client.pem", issued.certificate.clone()),
        ("strongswan/private/client.key", issued.private_key.clone()),
        ("strongswan/x509ca/ca.pem", ca_pem.to_string()),
        ("android.sswan", profiles::sswan(profile)),
    ];
    let mut notes = Vec::new();
    match profiles::mobileconfig(profile) {
        Some(text) => files.push(("apple.mobileconfig", text)),
        None => {
            notes.push("no Apple profile: the broker's proposals hold no suite Apple offers".into())
        }
    }
    match profiles::windows_ps1(profile) {
        Some(text) => files.push(("windows.ps1", text)),
        None => notes.push(
            "no Windows script: the broker's proposals hold no suite Windows offers \
             (Windows lacks Curve25519 and ChaCha20)"
                .into(),
        ),
    }
    (files, notes)
}

/// `client add ID`: issues a client certificate from the sixgate CA and
/// writes the bundle to `out` (default `./ID`). Returns what to tell the
/// operator.
pub fn client_add(
    config: &Config,
    identity: &str,
    out: Option<&Path>,
    kind: KeyKind,
    broker: Option<&str>,
    days: u32,
) -> Result<String, String> {
    let f = &config.file;
    let identity = CanonicalIdentity::parse(identity).map_err(|e| format!("{identity}: {e}"))?;
    record_name(&identity)?;
    let broker_identity = &f.ike.identity.0;
    let broker_host = match broker {
        Some(host) => host.to_string(),
        None if broker_identity.kind() == IdentityKind::Fqdn => broker_identity.to_string(),
        None => f.ike.listen[0].to_string(),
    };
    let store = CaStore::new(config);
    let ca = store.load()?;
    if !store.trusted_by_broker(ca.certificate()) {
        return Err(format!(
            "the broker does not trust its own CA yet, so it would refuse this client: add \
             \"{}\" to [ike] ca in {}",
            store.certificate_path().display(),
            config.path.display()
        ));
    }
    let out = out.map_or_else(|| PathBuf::from(identity.as_str()), Path::to_path_buf);
    if out.join("client.toml").exists() {
        return Err(format!(
            "{} already holds a bundle; choose another --out",
            out.display()
        ));
    }
    let ca_der = der_of(ca.certificate())?;
    let anchor = broker_anchor(config, &ca_der)?;
    let issued = ca.issue(&identity, Usage::Client, kind, days)?;
    let certificate_der = der_of(&issued.certificate)?;
    let key_der = pkcs8_der(&issued.private_key)?;
    let mut secret = [0u8; 12];
    OsRng.fill_bytes(&mut secret);
    let password: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let pkcs12 = p12::PFX::new(
        &certificate_der,
        &key_der,
        Some(&ca_der),
        &password,
        identity.as_str(),
    )
    .ok_or("making the PKCS#12 failed")?
    .to_der();
    let mut uuid_seed = [0u8; 16];
    OsRng.fill_bytes(&mut uuid_seed);
    let profile = Profile {
        broker_host: &broker_host,
        broker_identity,
        identity: &identity,
        ike: &config.ike_policy,
        esp: &config.esp_policy,
        ike_lifetime: Duration::from_secs(f.ike.ike_lifetime),
        child_lifetime: Duration::from_secs(f.ike.child_lifetime),
        ca_der: &anchor,
        certificate_der: &certificate_der,
        rsa: kind == KeyKind::Rsa,
        pkcs12: &pkcs12,
        pkcs12_password: &password,
        uuid_seed,
    };
    let anchor_pem = sixgate_runtime::ca::certificate_pem(&anchor);
    let (files, notes) = bundle_files(&profile, &issued, &anchor_pem);
    for dir in [
        "",
        "strongswan",
        "strongswan/x509",
        "strongswan/private",
        "strongswan/x509ca",
    ] {
        let d = out.join(dir);
        secrets::private_dir(&d).map_err(io_error(&d))?;
    }
    for (name, text) in &files {
        let path = out.join(name);
        let (dir, file) = (path.parent().unwrap_or(&out), path.file_name());
        let file = file.and_then(|f| f.to_str()).unwrap_or(name);
        secrets::write_private_file(dir, file, text.as_bytes()).map_err(io_error(&path))?;
    }
    for (name, bytes) in [("client.p12", &pkcs12), ("ca.cer", &anchor)] {
        secrets::write_private_file(&out, name, bytes).map_err(io_error(&out.join(name)))?;
    }
    store.record(&identity, &issued.certificate)?;
    let (_, not_after) = cert::validity_period(&certificate_der).map_err(|e| e.to_string())?;
    let mut text = format!(
        "issued {identity} ({}, until {}) and wrote {}:\n\
         \x20 client.toml             sixgate-client up --config {}/client.toml\n\
         \x20 strongswan/             copy to /etc/swanctl, then swanctl --load-all\n\
         \x20 apple.mobileconfig      open on iOS, iPadOS or macOS\n\
         \x20 windows.ps1             run elevated beside client.p12 and ca.cer\n\
         \x20 android.sswan           import in the strongSwan app\n\
         The PKCS#12 (client.p12, also inside the profiles) has the password {password}\n",
        kind_name(kind),
        clock::utc_text(not_after),
        out.display(),
        out.display(),
    );
    for note in notes {
        text.push_str(&format!("note: {note}\n"));
    }
    Ok(text)
}

/// A PKCS#8 PEM key as DER.
fn pkcs8_der(pem: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|e| format!("the new key: {e}"))
}
