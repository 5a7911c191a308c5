//! HTTPS to the pattoo server: verification is on unless switched off by
//! name, a configured CA is trusted, and a client certificate is offered.

use crate::common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use common::receiver::*;
use pattoo_agentd::config::ApiSettings;
use pattoo_agentd::delivery::config::{CacheSettings, DeliverySettings, Scheme};
use pattoo_agentd::delivery::receiver::Receiver;
use pattoo_agentd::delivery::{Committed, Delivery};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;

struct Pki {
    ca_pem: String,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: PrivateKeyDer<'static>,
    client_cert_pem: String,
    client_key_pem: String,
    ca_der: CertificateDer<'static>,
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client = CertificateParams::new(vec!["agent.example".to_owned()])
        .unwrap()
        .signed_by(&client_key, &ca)
        .unwrap();
    Pki {
        ca_pem: ca.pem(),
        ca_der: ca.der().clone(),
        server_chain: vec![server.der().clone()],
        server_key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        client_cert_pem: client.pem(),
        client_key_pem: client_key.serialize_pem(),
    }
}

/// A receiver behind TLS; with `require_client_cert`, only clients with a
/// certificate from the test CA get through.
async fn tls_receiver(pki: &Pki, dir: &Path, require_client_cert: bool) -> SocketAddr {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let builder = rustls::ServerConfig::builder();
    let builder = if require_client_cert {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.ca_der.clone()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
            .build()
            .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder
        .with_single_cert(pki.server_chain.clone(), pki.server_key.clone_key())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let receiver = Arc::new(Receiver::new(dir).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let receiver = receiver.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |request| {
                    let receiver = receiver.clone();
                    async move { Ok::<_, std::convert::Infallible>(receiver.respond(request).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn https_delivery(addr: SocketAddr, cache: &Path, settings: DeliverySettings) -> Delivery {
    let api = ApiSettings {
        ip_address: addr.ip().to_string(),
        ip_bind_port: addr.port(),
    };
    Delivery::from_parts(
        &api,
        cache,
        &DeliverySettings {
            scheme: Scheme::Https,
            ..settings
        },
        &CacheSettings::default(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_over_https_to_a_server_signed_by_the_configured_ca() {
    let pki = pki();
    let files = tempfile::tempdir().unwrap();
    let ca_file = files.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let addr = tls_receiver(&pki, &files.path().join("received"), false).await;
    let delivery = https_delivery(
        addr,
        &files.path().join("cache"),
        DeliverySettings {
            ca_file: Some(ca_file),
            ..quick_settings()
        },
    );
    let committed = delivery.submit(body(now_ms(), 1)).await;
    assert_eq!(
        committed,
        Committed::Posted,
        "{:?}",
        delivery.stats().last_post
    );
    assert_eq!(received(&files.path().join("received")).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_server_certificate_is_refused_and_the_body_cached() {
    let pki = pki();
    let files = tempfile::tempdir().unwrap();
    let addr = tls_receiver(&pki, &files.path().join("received"), false).await;
    let delivery = https_delivery(addr, &files.path().join("cache"), quick_settings());
    let committed = delivery.submit(body(now_ms(), 1)).await;
    assert!(matches!(committed, Committed::Cached(_)), "{committed:?}");
    assert!(received(&files.path().join("received")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_insecure_skip_verify_accepts_an_untrusted_certificate() {
    let pki = pki();
    let files = tempfile::tempdir().unwrap();
    let addr = tls_receiver(&pki, &files.path().join("received"), false).await;
    let delivery = https_delivery(
        addr,
        &files.path().join("cache"),
        DeliverySettings {
            tls_insecure_skip_verify: true,
            ..quick_settings()
        },
    );
    assert_eq!(delivery.submit(body(now_ms(), 1)).await, Committed::Posted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_gets_through_a_server_that_requires_one() {
    let pki = pki();
    let files = tempfile::tempdir().unwrap();
    let ca_file = files.path().join("ca.pem");
    let certificate = files.path().join("agent.pem");
    let key = files.path().join("agent.key");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    std::fs::write(&certificate, &pki.client_cert_pem).unwrap();
    std::fs::write(&key, &pki.client_key_pem).unwrap();
    let addr = tls_receiver(&pki, &files.path().join("received"), true).await;

    let without = https_delivery(
        addr,
        &files.path().join("cache-a"),
        DeliverySettings {
            ca_file: Some(ca_file.clone()),
            ..quick_settings()
        },
    );
    let refused = without.submit(body(now_ms(), 1)).await;
    assert!(matches!(refused, Committed::Cached(_)), "{refused:?}");

    let with = https_delivery(
        addr,
        &files.path().join("cache-b"),
        DeliverySettings {
            ca_file: Some(ca_file),
            client_certificate: Some((certificate, key)),
            ..quick_settings()
        },
    );
    let committed = with.submit(body(now_ms(), 2)).await;
    assert_eq!(committed, Committed::Posted, "{:?}", with.stats().last_post);
}
