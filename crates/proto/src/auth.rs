//! The cluster token: a shared secret that every RPC of every service must
//! carry in its `authorization` metadata.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, Identity};
use tonic::{Request, Status};
use tracing::warn;

/// Environment variable that contains the cluster token.
pub const TOKEN_ENV: &str = "DOWNPOUR_TOKEN";

/// Shortest token accepted, in bytes.
const MIN_TOKEN_LEN: usize = 16;

/// The shared secret of a cluster, and the TLS material when the cluster
/// uses TLS. `Debug` never prints the secret or the key.
#[derive(Clone)]
pub struct ClusterToken {
    secret: Arc<str>,
    tls: Option<Arc<Tls>>,
}

impl PartialEq for ClusterToken {
    fn eq(&self, other: &Self) -> bool {
        self.secret == other.secret
    }
}

impl Eq for ClusterToken {}

impl fmt::Debug for ClusterToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterToken")
            .field("secret", &"<redacted>")
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// PEM files of one role: its certificate and key, and the certificate
/// authority that signed every role's certificate. A server with them
/// accepts only TLS clients that present a certificate from that
/// authority, and a client checks the server's certificate against it.
#[derive(Clone)]
pub struct Tls {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tls(<certificates>)")
    }
}

impl Tls {
    /// Wraps PEM-encoded certificate authority, certificate and key.
    pub fn from_pem(ca: Vec<u8>, cert: Vec<u8>, key: Vec<u8>) -> Self {
        Self { ca, cert, key }
    }

    /// Reads the three PEM files.
    ///
    /// # Errors
    ///
    /// Names the file that cannot be read.
    pub fn read(ca: &Path, cert: &Path, key: &Path) -> Result<Self, TokenError> {
        let read = |path: &Path, flag: &'static str| {
            std::fs::read(path).map_err(|error| TokenError::TlsFile {
                flag,
                path: path.to_owned(),
                error,
            })
        };
        Ok(Self {
            ca: read(ca, "--tls-ca")?,
            cert: read(cert, "--tls-cert")?,
            key: read(key, "--tls-key")?,
        })
    }

    /// Returns the server side: this role's identity, and client
    /// certificates required from the authority.
    pub fn server_config(&self) -> tonic::transport::ServerTlsConfig {
        tonic::transport::ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert, &self.key))
            .client_ca_root(Certificate::from_pem(&self.ca))
    }

    /// Returns the client side: the authority to check servers against,
    /// and this role's identity to present.
    pub fn client_config(&self) -> tonic::transport::ClientTlsConfig {
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca))
            .identity(Identity::from_pem(&self.cert, &self.key))
    }
}

/// A token that cannot be used, or that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(
        "no cluster token: set {TOKEN_ENV} or pass --token-file PATH, with the same secret for every role"
    )]
    Missing,
    #[error(
        "{source_name}: the cluster token is shorter than {MIN_TOKEN_LEN} characters; use a longer random secret"
    )]
    TooShort { source_name: String },
    #[error(
        "{source_name}: the cluster token holds a character other than printable ASCII without spaces; use letters, digits and punctuation only"
    )]
    InvalidCharacter { source_name: String },
    #[error("--token-file {}: cannot read it: {error}", path.display())]
    Unreadable {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{flag} {}: cannot read it: {error}", path.display())]
    TlsFile {
        flag: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
}

impl ClusterToken {
    /// Checks and wraps a token read from `source_name`.
    ///
    /// # Errors
    ///
    /// Rejects tokens under 16 characters and any character that is not
    /// printable ASCII, such as a space.
    pub fn new(token: &str, source_name: &str) -> Result<Self, TokenError> {
        if token.len() < MIN_TOKEN_LEN {
            return Err(TokenError::TooShort {
                source_name: source_name.to_owned(),
            });
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::InvalidCharacter {
                source_name: source_name.to_owned(),
            });
        }
        Ok(Self {
            secret: token.into(),
            tls: None,
        })
    }

    /// Adds TLS: every server of the cluster then serves TLS only, and every
    /// client dials with it.
    pub fn with_tls(mut self, tls: Tls) -> Self {
        self.tls = Some(Arc::new(tls));
        self
    }

    /// Returns the TLS material, when the cluster uses TLS.
    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_deref()
    }

    /// Reads the token from `file` when given, else from `DOWNPOUR_TOKEN`.
    /// A trailing newline in the file is ignored.
    ///
    /// # Errors
    ///
    /// Returns [`TokenError::Missing`] when neither is set, and an error
    /// naming the source when it cannot be read or is not a valid token.
    pub fn from_file_or_env(file: Option<&Path>) -> Result<Self, TokenError> {
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|error| TokenError::Unreadable {
                path: path.to_owned(),
                error,
            })?;
            let source_name = format!("--token-file {}", path.display());
            return Self::new(text.trim_end_matches(['\n', '\r']), &source_name);
        }
        match std::env::var(TOKEN_ENV) {
            Ok(token) => Self::new(&token, TOKEN_ENV),
            Err(_) => Err(TokenError::Missing),
        }
    }

    /// Creates a random token, for a cluster that runs in one process.
    pub fn random() -> Self {
        use rand::Rng;
        let bytes: [u8; 24] = rand::rng().random();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Self {
            secret: hex.into(),
            tls: None,
        }
    }

    fn header(&self) -> String {
        format!("Bearer {}", self.secret)
    }
}

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Client side: adds the token to every request.
#[derive(Debug, Clone)]
pub struct AttachToken {
    header: MetadataValue<tonic::metadata::Ascii>,
}

impl AttachToken {
    /// Creates the interceptor for `token`.
    pub fn new(token: &ClusterToken) -> Self {
        let header = token
            .header()
            .parse()
            .expect("a checked token is printable ASCII");
        Self { header }
    }
}

impl Interceptor for AttachToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.header.clone());
        Ok(request)
    }
}

/// A channel whose requests carry the cluster token.
pub type AuthChannel = InterceptedService<Channel, AttachToken>;

/// Wraps `channel` so that every request carries `token`.
pub fn authenticated(channel: Channel, token: &ClusterToken) -> AuthChannel {
    InterceptedService::new(channel, AttachToken::new(token))
}

/// Server side: refuses every request without the cluster token.
#[derive(Debug, Clone)]
pub struct RequireToken {
    expected: Arc<str>,
    service: &'static str,
}

impl RequireToken {
    /// Creates the check for `token` on `service`, which names the service
    /// in logs.
    pub fn new(token: &ClusterToken, service: &'static str) -> Self {
        Self {
            expected: token.header().into(),
            service,
        }
    }
}

impl Interceptor for RequireToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let presented = request
            .metadata()
            .get("authorization")
            .map(|value| value.as_bytes());
        match presented {
            Some(value) if constant_time_eq(value, self.expected.as_bytes()) => Ok(request),
            _ => {
                let remote = request
                    .remote_addr()
                    .map_or_else(|| "unknown".to_owned(), |a| a.to_string());
                warn!(
                    service = self.service,
                    %remote,
                    token_present = presented.is_some(),
                    "request refused: missing or wrong cluster token"
                );
                Err(Status::unauthenticated(
                    "missing or wrong cluster token; give every role the same --token-file or DOWNPOUR_TOKEN",
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_or_spaced_tokens_are_rejected() {
        assert!(matches!(
            ClusterToken::new("short", "test"),
            Err(TokenError::TooShort { .. })
        ));
        assert!(matches!(
            ClusterToken::new("sixteen chars ok", "test"),
            Err(TokenError::InvalidCharacter { .. })
        ));
        assert!(ClusterToken::new("0123456789abcdef", "test").is_ok());
    }

    #[test]
    fn debug_output_hides_the_token() {
        let token = ClusterToken::new("hunter2-hunter2-hunter2", "test").unwrap();
        assert!(!format!("{token:?}").contains("hunter2"));
    }

    #[test]
    fn check_accepts_only_the_same_token() {
        let token = ClusterToken::random();
        let mut check = RequireToken::new(&token, "test");

        let good = AttachToken::new(&token).call(Request::new(())).unwrap();
        assert!(check.call(good).is_ok());

        let other = AttachToken::new(&ClusterToken::random())
            .call(Request::new(()))
            .unwrap();
        let refused = check.call(other).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        assert!(!refused.message().contains(&*token.secret));

        let missing = check.call(Request::new(())).unwrap_err();
        assert_eq!(missing.code(), tonic::Code::Unauthenticated);
    }
}
