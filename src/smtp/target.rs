//! Where SMTP goes: `MAILCTL_SMTP_URL` (and `MAILCTL_SMTP_CA_FILE`) parsed and checked once,
//! so the sender, system letters and `doctor` all connect the same way.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

use crate::config::{Config, redact_url};
use crate::error::{Error, Result};

/// How TLS is used, from the URL's scheme and its `tls=` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// `smtp://`: STARTTLS when the server offers it. With a password in the URL, a server
    /// that offers none is refused (the password would travel in clear).
    Opportunistic,
    /// `smtp://...?tls=required`: STARTTLS or no letter.
    Required,
    /// `smtps://`: TLS from the first byte.
    Implicit,
    /// `smtp://...?tls=none`: never TLS, even with a password: for a relay on the same host.
    None,
}

/// A parsed `MAILCTL_SMTP_URL`.
pub struct Target {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub credentials: Option<Credentials>,
    /// The URL with its password hidden, for messages.
    pub shown: String,
    /// Built once per process: the Mozilla roots plus `MAILCTL_SMTP_CA_FILE`.
    pub(super) tls_config: Arc<rustls::ClientConfig>,
    pub(super) server_name: ServerName<'static>,
    /// The name this client gives in EHLO.
    pub(super) hello: String,
    /// Bound on each whole exchange (`MAILCTL_SMTP_TIMEOUT`).
    pub timeout: Duration,
}

pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ***)", self.user)
    }
}

impl Target {
    /// The SMTP target of this configuration, or None when letters go to the outbox.
    pub fn from_config(config: &Config) -> Result<Option<Target>> {
        let Some(raw) = &config.smtp_url else {
            return Ok(None);
        };
        let shown = redact_url(raw);
        let bad = |why: &str| Error::invalid("MAILCTL_SMTP_URL", format!("{shown} ({why})"));
        let url = url::Url::parse(raw).map_err(|e| bad(&e.to_string()))?;
        let tls_param = url
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.to_string());
        let (tls, default_port) = match (url.scheme(), tls_param.as_deref()) {
            ("smtps", None | Some("implicit")) => (TlsMode::Implicit, 465),
            ("smtp", Some("required")) => (TlsMode::Required, 587),
            ("smtp", None | Some("opportunistic")) => (TlsMode::Opportunistic, 25),
            ("smtp", Some("none")) => (TlsMode::None, 25),
            _ => {
                return Err(bad(
                    "use smtp://, smtp://...?tls=required, smtp://...?tls=none or smtps://",
                ));
            }
        };
        let host = url
            .host_str()
            .ok_or_else(|| bad("no host"))?
            .trim_matches(['[', ']'])
            .to_string();
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let credentials = (!url.username().is_empty()).then(|| Credentials {
            user: decode(url.username()),
            password: decode(url.password().unwrap_or_default()),
        });
        let server_name = ServerName::try_from(host.clone()).map_err(|e| bad(&e.to_string()))?;
        Ok(Some(Target {
            port: url.port().unwrap_or(default_port),
            tls_config: tls_config(config.smtp_ca_file.as_deref())?,
            server_name,
            host,
            tls,
            credentials,
            shown,
            hello: lettre::transport::smtp::extension::ClientId::default().to_string(),
            timeout: config.smtp_timeout,
        }))
    }

    /// `host:port`, for messages.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// TLS settings: the Mozilla roots built into mailctl plus the CA certificates in
/// `MAILCTL_SMTP_CA_FILE` (a private relay's own CA). Read and checked once, before any letter
/// is claimed, so a bad file stops the run as a configuration error instead of failing every
/// connection.
pub fn tls_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        let bad = |why: &dyn std::fmt::Display| {
            Error::invalid("MAILCTL_SMTP_CA_FILE", format!("{}: {why}", path.display()))
        };
        let pem = std::fs::read(path).map_err(|e| bad(&e))?;
        let certificates = CertificateDer::pem_slice_iter(&pem)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| bad(&e))?;
        if certificates.is_empty() {
            return Err(bad(&"not a PEM file with CA certificates"));
        }
        for certificate in certificates {
            // Parsing each certificate here: a corrupt one is reported now, not per connection.
            roots.add(certificate).map_err(|e| bad(&e))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::runtime(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
