//! Which certificate authorities an HTTP client trusts, shared by the
//! delivery's poster and the HTTP poller.
//!
//! reqwest verifies https against the system's roots (`ca-certificates` on
//! Debian) and refuses to build a client at all when the system has none,
//! even one that will only ever speak plain http. So the roots are loaded
//! only where https can happen, and a client that needs them and cannot
//! have them fails with an error that says what to install.

use reqwest::{Certificate, ClientBuilder};

/// Where a client may use TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Only plain http, with no redirects that could lead to https: the
    /// client trusts no authority at all (an https URL fails to verify).
    PlainOnly,
    /// Plain http URLs whose redirects may lead to https: the system's
    /// roots when there are any, none otherwise.
    PlainFirst,
    /// https URLs: the system's roots plus `extra`; without either, an
    /// error.
    Https,
}

/// Builds the client `make` describes, trusting `extra` plus, where
/// `reach` asks for it, the system's roots. `make` is called again for a
/// second attempt without the system's roots (a builder cannot be cloned).
pub fn build(
    make: impl Fn() -> ClientBuilder,
    reach: Reach,
    extra: &[Certificate],
) -> Result<reqwest::Client, String> {
    // reqwest is built without a default crypto provider so that only ring
    // is linked; installing it twice is refused, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let only_extra = || make().tls_certs_only(extra.iter().cloned()).build();
    match reach {
        Reach::PlainOnly => only_extra().map_err(|e| crate::error_chain(&e)),
        Reach::PlainFirst => match make().tls_certs_merge(extra.iter().cloned()).build() {
            Ok(client) => Ok(client),
            Err(with_system) => {
                tracing::debug!(
                    "no system CA certificates ({}); https redirects will not verify",
                    crate::error_chain(&with_system)
                );
                only_extra().map_err(|e| crate::error_chain(&e))
            }
        },
        Reach::Https => make()
            .tls_certs_merge(extra.iter().cloned())
            .build()
            .map_err(|e| {
                let chain = crate::error_chain(&e);
                if chain.contains("No CA certificates") {
                    format!(
                        "https needs certificate authorities to verify the server, and this \
                         system has none: install the ca-certificates package, or name the \
                         server's CA in a CA file ({chain})"
                    )
                } else {
                    chain
                }
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process whose certificate search finds nothing, as on a system
    /// without ca-certificates. rustls-native-certs honours these
    /// variables before the system's paths.
    fn without_system_roots<T>(run: impl FnOnce() -> T) -> T {
        let empty = tempfile::tempdir().unwrap();
        let _lock = ENV_LOCK.lock().unwrap();
        std::env::set_var("SSL_CERT_FILE", empty.path().join("none.pem"));
        std::env::set_var("SSL_CERT_DIR", empty.path());
        let result = run();
        std::env::remove_var("SSL_CERT_FILE");
        std::env::remove_var("SSL_CERT_DIR");
        result
    }

    static ENV_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn plain_http_client_builds_without_system_roots() {
        without_system_roots(|| {
            build(reqwest::Client::builder, Reach::PlainOnly, &[]).unwrap();
            build(reqwest::Client::builder, Reach::PlainFirst, &[]).unwrap();
        });
    }

    #[test]
    fn https_without_any_roots_says_to_install_ca_certificates() {
        let error = without_system_roots(|| {
            build(reqwest::Client::builder, Reach::Https, &[]).unwrap_err()
        });
        assert!(
            error.contains("install the ca-certificates package"),
            "{error}"
        );
    }
}
