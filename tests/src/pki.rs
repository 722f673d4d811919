//! Test certificates made by the tests (rcgen), never committed: a CA, server
//! certificates for `127.0.0.1` and `localhost`, client certificates, written as
//! PEM files into a directory of the caller's.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// The private key (PEM, PKCS#8).
    pub key: PathBuf,
}

/// A certificate authority whose certificate is written to `<dir>/<name>-ca.pem`.
pub struct Ca {
    name: String,
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate (PEM file).
    pub cert: PathBuf,
}

impl Ca {
    /// A new CA named `name` (its common name `Scoria test CA <name>`), written
    /// into `dir`.
    pub fn new(dir: &Path, name: &str) -> anyhow::Result<Self> {
        let mut params = CertificateParams::new(Vec::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("Scoria test CA {name}"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let path = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&path, cert.pem())?;
        Ok(Self {
            name: name.to_owned(),
            dir: dir.to_owned(),
            issuer: Issuer::new(params, key),
            cert: path,
        })
    }

    /// A server certificate for `127.0.0.1`, `::1` and `localhost` (plus
    /// `extra_names`), written as `<dir>/<ca>-<file>.pem` / `.key`.
    pub fn server(&self, file: &str, extra_names: &[&str]) -> anyhow::Result<Pair> {
        let mut names = vec!["localhost".to_owned()];
        names.extend(extra_names.iter().map(|n| (*n).to_owned()));
        let mut params = CertificateParams::new(names)?;
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()));
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(file, params)
    }

    /// A server certificate for `names` only (no loopback address), to prove a
    /// client checks the host name.
    pub fn server_for(&self, file: &str, names: &[&str]) -> anyhow::Result<Pair> {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("nobody"),
        );
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(file, params)
    }

    /// A client certificate with common name `common_name`.
    pub fn client(&self, file: &str, common_name: &str) -> anyhow::Result<Pair> {
        let mut params = CertificateParams::new(Vec::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(file, params)
    }

    fn sign(&self, file: &str, mut params: CertificateParams) -> anyhow::Result<Pair> {
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let pair = Pair {
            cert: self.dir.join(format!("{}-{file}.pem", self.name)),
            key: self.dir.join(format!("{}-{file}.key", self.name)),
        };
        std::fs::write(&pair.cert, cert.pem())?;
        write_private(&pair.key, &key.serialize_pem())?;
        Ok(pair)
    }
}

/// Writes a key file readable by its owner only (PostgreSQL refuses others).
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}
