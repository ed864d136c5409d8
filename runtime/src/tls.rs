//! TLS settings shared by the connections wasmrule makes (`mqtts://` to a broker,
//! `rediss://` to Redis): which files hold the trusted CAs and the client's own
//! certificate and key ([`TlsFiles`]), read and checked once when the config is built
//! ([`ClientTls::load`]), so that a missing file, a file without a certificate or a key
//! that does not match its certificate is named at startup, not found on the first
//! connection. rustls (ring) throughout; no OpenSSL.
//!
//! Not here: the handshake itself (rumqttc's and redis-rs' rustls support make it) and
//! the embedded broker's listener (`source/broker/`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The files a TLS client reads, as configured (`<section>.tls_ca_file`,
/// `tls_cert_file`, `tls_key_file`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM file of the CA certificates to trust; `None` trusts the system's.
    pub ca_file: Option<PathBuf>,
    /// PEM file of the client's certificate (chain), for servers that ask for one.
    pub cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
}

impl TlsFiles {
    /// Whether any file is set.
    pub fn any(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()
    }
}

/// A checked TLS client setup: the files' contents and the rustls configuration built
/// from them. Compared by its files; its `Debug` shows only the file names.
#[derive(Clone)]
pub struct ClientTls {
    files: TlsFiles,
    /// The CA file's PEM, if one is set (for clients that take PEM, redis-rs).
    pub ca_pem: Option<Vec<u8>>,
    /// The client certificate's and key's PEM, if set.
    pub client_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// The configuration built from them.
    pub config: Arc<rustls::ClientConfig>,
}

impl ClientTls {
    /// Reads and checks `files`; `section` (`mqtt`, `redis`) names the keys in errors.
    ///
    /// # Errors
    ///
    /// When a file cannot be read, holds no certificate (or key), a certificate is not
    /// one rustls can use as a trust anchor, only one of the certificate and key is
    /// set, or the key does not belong to the certificate. The message names the key
    /// and the file.
    pub fn load(files: &TlsFiles, section: &str) -> anyhow::Result<ClientTls> {
        match (&files.cert_file, &files.key_file) {
            (Some(_), None) => bail!("{section}.tls_cert_file is set without tls_key_file"),
            (None, Some(_)) => bail!("{section}.tls_key_file is set without tls_cert_file"),
            _ => {}
        }
        let provider = provider();
        let mut roots = rustls::RootCertStore::empty();
        let ca_pem = match &files.ca_file {
            Some(file) => {
                let key = format!("{section}.tls_ca_file");
                let pem = read(file, &key)?;
                for cert in certificates(&pem, file, &key)? {
                    roots.add(cert).with_context(|| {
                        format!("{key}: {}: a certificate cannot be trusted", file.display())
                    })?;
                }
                Some(pem)
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    bail!(
                        "{section}.tls_ca_file is not set and the system has no CA \
                         certificates; set it to the PEM file of the server's CA"
                    );
                }
                None
            }
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("rustls has no TLS version in common with its provider")?
            .with_root_certificates(roots);
        let (config, client_pem) = match (&files.cert_file, &files.key_file) {
            (Some(cert_file), Some(key_file)) => {
                let cert_key = format!("{section}.tls_cert_file");
                let key_key = format!("{section}.tls_key_file");
                let cert_pem = read(cert_file, &cert_key)?;
                let key_pem = read(key_file, &key_key)?;
                let chain = certificates(&cert_pem, cert_file, &cert_key)?;
                let key = private_key(&key_pem, key_file, &key_key)?;
                let config = builder.with_client_auth_cert(chain, key).with_context(|| {
                    format!(
                        "{key_key}: {} does not go with the certificate in {}",
                        key_file.display(),
                        cert_file.display()
                    )
                })?;
                (config, Some((cert_pem, key_pem)))
            }
            _ => (builder.with_no_client_auth(), None),
        };
        Ok(ClientTls {
            files: files.clone(),
            ca_pem,
            client_pem,
            config: Arc::new(config),
        })
    }
}

impl PartialEq for ClientTls {
    fn eq(&self, other: &Self) -> bool {
        self.files == other.files
    }
}

impl Eq for ClientTls {}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

/// The crypto provider (ring), also installed as the process default: redis-rs builds
/// its rustls configuration from the default.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    // Installing fails only when a provider is installed already, which is then used.
    let _ = rustls::crypto::ring::default_provider().install_default();
    rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// Checks a TLS server's files (the embedded broker's): a certificate chain, its private
/// key, and the CAs of client certificates if given. Each is `(file, key)`.
///
/// # Errors
///
/// As [`ClientTls::load`]: naming the key and the file.
pub fn check_server_files(
    (cert_file, cert_key): (&Path, &str),
    (key_file, key_key): (&Path, &str),
    client_ca: Option<(&Path, &str)>,
) -> anyhow::Result<()> {
    let chain = certificates(&read(cert_file, cert_key)?, cert_file, cert_key)?;
    let key = private_key(&read(key_file, key_key)?, key_file, key_key)?;
    rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("rustls has no TLS version in common with its provider")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .with_context(|| {
            format!(
                "{key_key}: {} does not go with the certificate in {}",
                key_file.display(),
                cert_file.display()
            )
        })?;
    if let Some((file, key)) = client_ca {
        let mut roots = rustls::RootCertStore::empty();
        for cert in certificates(&read(file, key)?, file, key)? {
            roots.add(cert).with_context(|| {
                format!("{key}: {}: a certificate cannot be trusted", file.display())
            })?;
        }
    }
    Ok(())
}

/// The file's bytes; the error names the key and the file.
pub(crate) fn read(file: &Path, key: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(file).with_context(|| format!("{key}: cannot read {}", file.display()))
}

/// Every certificate in a PEM file, at least one.
pub(crate) fn certificates(
    pem: &[u8],
    file: &Path,
    key: &str,
) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{key}: {}: not PEM: {e}", file.display()))?;
    if certs.is_empty() {
        bail!(
            "{key}: {} holds no certificate (expected PEM, -----BEGIN CERTIFICATE-----)",
            file.display()
        );
    }
    Ok(certs)
}

/// The private key in a PEM file.
pub(crate) fn private_key(
    pem: &[u8],
    file: &Path,
    key: &str,
) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => anyhow::anyhow!(
            "{key}: {} holds no private key (expected PEM, -----BEGIN PRIVATE KEY-----)",
            file.display()
        ),
        e => anyhow::anyhow!("{key}: {}: not a PEM private key: {e}", file.display()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_problems_name_the_key_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing here\n").unwrap();
        let err = |files: TlsFiles| format!("{:#}", ClientTls::load(&files, "mqtt").unwrap_err());

        let e = err(TlsFiles {
            ca_file: Some(missing.clone()),
            ..TlsFiles::default()
        });
        assert!(
            e.contains("mqtt.tls_ca_file") && e.contains("missing.pem"),
            "{e}"
        );
        let e = err(TlsFiles {
            ca_file: Some(empty.clone()),
            ..TlsFiles::default()
        });
        assert!(e.contains("empty.pem holds no certificate"), "{e}");
        let e = err(TlsFiles {
            cert_file: Some(empty.clone()),
            ..TlsFiles::default()
        });
        assert!(
            e.contains("tls_cert_file is set without tls_key_file"),
            "{e}"
        );
    }
}
