use std::path::Path;

use rcgen::{CertificateParams, KeyPair};

use super::*;

/// A self-signed certificate for `localhost` and its key, written into `dir`
/// as `<name>.pem` / `<name>.key`.
fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let (c, k) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&c, cert.pem()).expect("write cert");
    std::fs::write(&k, key.serialize_pem()).expect("write key");
    (c, k)
}

fn section(cert: &Path, key: &Path, client_ca: Option<&Path>) -> TlsSection {
    TlsSection {
        cert: Some(cert.to_owned()),
        key: Some(key.to_owned()),
        client_ca: client_ca.map(Path::to_owned),
        reload_secs: 0,
    }
}

#[test]
fn off_without_a_certificate() {
    assert!(
        ServerTls::load(&TlsSection::default())
            .expect("off")
            .is_none()
    );
}

#[test]
fn loads_a_pair_and_offers_h2() {
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key) = write_pair(dir.path(), "a");
    let tls = ServerTls::load(&section(&cert, &key, Some(&cert)))
        .expect("load")
        .expect("on");
    assert!(tls.requires_client_cert());
    assert_eq!(tls.current().alpn_protocols, vec![b"h2".to_vec()]);
}

#[test]
fn bad_files_name_their_variable() {
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key) = write_pair(dir.path(), "a");
    let (_, other_key) = write_pair(dir.path(), "b");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not pem").expect("write");
    let missing = dir.path().join("missing.pem");

    let err = ServerTls::load(&section(&missing, &key, None)).expect_err("missing cert");
    assert!(err.to_string().starts_with(CERT_VAR), "{err}");
    let err = ServerTls::load(&section(&junk, &key, None)).expect_err("junk cert");
    assert!(err.to_string().starts_with(CERT_VAR), "{err}");
    let err = ServerTls::load(&section(&cert, &junk, None)).expect_err("junk key");
    assert!(err.to_string().starts_with(KEY_VAR), "{err}");
    let err = ServerTls::load(&section(&cert, &key, Some(&junk))).expect_err("junk CA");
    assert!(err.to_string().starts_with(CLIENT_CA_VAR), "{err}");
    let err = ServerTls::load(&section(&cert, &other_key, None)).expect_err("mismatch");
    assert!(
        err.to_string().contains(CERT_VAR) && err.to_string().contains(KEY_VAR),
        "{err}"
    );
}

#[test]
fn a_bad_reload_keeps_the_configuration_in_use() {
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key) = write_pair(dir.path(), "a");
    let tls = ServerTls::load(&section(&cert, &key, None))
        .expect("load")
        .expect("on");
    let before = tls.current();
    std::fs::write(&cert, "garbage").expect("break the cert");
    assert!(!tls.reload(), "a broken file must not be swapped in");
    assert!(Arc::ptr_eq(&before, &tls.current()));
    let (new_cert, new_key) = write_pair(dir.path(), "b");
    std::fs::copy(&new_cert, &cert).expect("copy cert");
    std::fs::copy(&new_key, &key).expect("copy key");
    assert!(tls.reload());
    assert!(!Arc::ptr_eq(&before, &tls.current()));
}
