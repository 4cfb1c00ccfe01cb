//! TLS material shared by every side of a connection: brokers serving clients and peers,
//! brokers dialing peers, the client and the CLI dialing brokers (rustls, through tonic).

use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// Why TLS material could not be used; the message names the file and the setting.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {}{reason}", file_prefix(.path))]
pub struct TlsError {
    /// The setting (flag) the file came from, e.g. `--tls-cert`.
    pub setting: &'static str,
    /// The file.
    pub path: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Installs rustls' aws-lc-rs provider as the process's default, once: with more than one
/// provider in the build, rustls cannot pick one itself.
fn install_provider() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        // Fails only if another provider was installed first, which serves as well.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

fn file_prefix(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("{path}: ")
    }
}

/// PEM-encoded TLS material: this side's certificate chain and key, and the CA the other
/// side's certificate must chain to.
#[derive(Clone, Default)]
pub struct Tls {
    /// Certificate chain and private key (PEM) this side presents.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// CA certificates (PEM) the other side's certificate must chain to; without it, a
    /// client trusts the system's roots.
    pub ca: Option<Vec<u8>>,
    /// A server refuses clients without a certificate signed by `ca`.
    pub require_client_certs: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field(
                "identity",
                &self.identity.as_ref().map(|_| "<certificate and key>"),
            )
            .field("ca", &self.ca.as_ref().map(|_| "<CA certificates>"))
            .field("require_client_certs", &self.require_client_certs)
            .finish()
    }
}

/// Reads `path` and checks that it holds at least one PEM block whose label contains
/// `what` (`CERTIFICATE`, `PRIVATE KEY`).
fn read_pem(setting: &'static str, path: &Path, what: &str) -> Result<Vec<u8>, TlsError> {
    let fail = |reason: String| TlsError {
        setting,
        path: path.display().to_string(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let text = String::from_utf8_lossy(&bytes);
    let found = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("-----BEGIN "))
        .any(|label| label.contains(what));
    if !found {
        return Err(fail(format!("holds no PEM {what} block")));
    }
    Ok(bytes)
}

impl Tls {
    /// Loads the files of `--tls-cert`, `--tls-key` and `--tls-ca`: the certificate and
    /// key go together, and client certificates can be required only with a CA to check
    /// them against.
    pub fn load(
        cert: Option<&Path>,
        key: Option<&Path>,
        ca: Option<&Path>,
        require_client_certs: bool,
    ) -> Result<Self, TlsError> {
        let identity = match (cert, key) {
            (Some(cert), Some(key)) => Some((
                read_pem("--tls-cert", cert, "CERTIFICATE")?,
                read_pem("--tls-key", key, "PRIVATE KEY")?,
            )),
            (None, None) => None,
            (Some(cert), None) => {
                return Err(TlsError {
                    setting: "--tls-key",
                    path: cert.display().to_string(),
                    reason: "--tls-cert needs its key (--tls-key)".into(),
                });
            }
            (None, Some(key)) => {
                return Err(TlsError {
                    setting: "--tls-cert",
                    path: key.display().to_string(),
                    reason: "--tls-key needs its certificate (--tls-cert)".into(),
                });
            }
        };
        let ca = ca
            .map(|ca| read_pem("--tls-ca", ca, "CERTIFICATE"))
            .transpose()?;
        if require_client_certs && ca.is_none() {
            return Err(TlsError {
                setting: "--tls-client-auth",
                path: String::new(),
                reason: "requiring client certificates needs the CA that signs them (--tls-ca)"
                    .into(),
            });
        }
        Ok(Self {
            identity,
            ca,
            require_client_certs,
        })
    }

    /// The server side, when this side has an identity to serve with.
    pub fn server_config(&self) -> Option<ServerTlsConfig> {
        install_provider();
        let (cert, key) = self.identity.as_ref()?;
        let mut config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
        if let Some(ca) = &self.ca {
            config = config
                .client_ca_root(Certificate::from_pem(ca))
                .client_auth_optional(!self.require_client_certs);
        }
        Some(config)
    }

    /// A rustls server configuration of this identity for ports other than gRPC (the
    /// HTTP port), speaking `alpn` (such as `http/1.1`), with the same client-certificate
    /// policy; `None` without an identity. Errors name the flag whose file is unusable.
    pub fn rustls_server_config(
        &self,
        alpn: &[&[u8]],
    ) -> Option<Result<std::sync::Arc<rustls::ServerConfig>, TlsError>> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        install_provider();
        let (cert, key) = self.identity.as_ref()?;
        let fail = |setting: &'static str, reason: String| TlsError {
            setting,
            path: String::new(),
            reason,
        };
        let build = || {
            let chain = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| fail("--tls-cert", e.to_string()))?;
            let key =
                PrivateKeyDer::from_pem_slice(key).map_err(|e| fail("--tls-key", e.to_string()))?;
            let builder = rustls::ServerConfig::builder();
            let builder = match (&self.ca, self.require_client_certs) {
                (Some(ca), true) => {
                    let mut roots = rustls::RootCertStore::empty();
                    for ca in CertificateDer::pem_slice_iter(ca) {
                        let ca = ca.map_err(|e| fail("--tls-ca", e.to_string()))?;
                        roots.add(ca).map_err(|e| fail("--tls-ca", e.to_string()))?;
                    }
                    let verifier =
                        rustls::server::WebPkiClientVerifier::builder(std::sync::Arc::new(roots))
                            .build()
                            .map_err(|e| fail("--tls-ca", e.to_string()))?;
                    builder.with_client_cert_verifier(verifier)
                }
                _ => builder.with_no_client_auth(),
            };
            let mut config = builder
                .with_single_cert(chain, key)
                .map_err(|e| fail("--tls-key", e.to_string()))?;
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(std::sync::Arc::new(config))
        };
        Some(build())
    }

    /// The client side: trusts `ca` (else the system's roots) and presents this side's
    /// identity, if any. `domain` overrides the name the server's certificate must carry
    /// (by default, the endpoint's host).
    pub fn client_config(&self, domain: Option<&str>) -> ClientTlsConfig {
        install_provider();
        let mut config = ClientTlsConfig::new();
        config = match &self.ca {
            Some(ca) => config.ca_certificate(Certificate::from_pem(ca)),
            None => config.with_native_roots(),
        };
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        if let Some(domain) = domain {
            config = config.domain_name(domain);
        }
        config
    }
}

/// A tonic endpoint for `url`, with TLS from `tls` when the URL is `https://` (an
/// `https://` URL without `tls` trusts the system's roots).
pub fn endpoint(
    url: &str,
    tls: Option<&Tls>,
) -> Result<tonic::transport::Endpoint, tonic::transport::Error> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())?;
    if url.starts_with("https://") {
        let default = Tls::default();
        endpoint.tls_config(tls.unwrap_or(&default).client_config(None))
    } else {
        Ok(endpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_checked_and_named() {
        let dir = std::env::temp_dir().join(format!("folio-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        let junk = dir.join("junk.pem");
        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n",
        )
        .expect("write");
        std::fs::write(&junk, "not pem").expect("write");
        let loaded = Tls::load(Some(&cert), Some(&key), Some(&cert), true).expect("loads");
        assert!(loaded.server_config().is_some());
        assert!(
            !format!("{loaded:?}").contains("BEGIN"),
            "no key material in logs"
        );

        let err = Tls::load(Some(&junk), Some(&key), None, false).expect_err("junk");
        assert_eq!(err.setting, "--tls-cert");
        assert!(
            err.to_string().contains("holds no PEM CERTIFICATE block"),
            "{err}"
        );
        let err = Tls::load(Some(&cert), Some(&cert), None, false).expect_err("a cert as key");
        assert_eq!(err.setting, "--tls-key");
        let err = Tls::load(Some(&cert), None, None, false).expect_err("no key");
        assert!(err.to_string().contains("needs its key"), "{err}");
        let err = Tls::load(None, None, None, true).expect_err("client auth without CA");
        assert_eq!(err.setting, "--tls-client-auth");
        let err =
            Tls::load(None, None, Some(&dir.join("missing.pem")), false).expect_err("missing");
        assert_eq!(err.setting, "--tls-ca");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
