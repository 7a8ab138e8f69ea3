//! BBB servers over https (real ones are HTTPS-only): trusted through
//! SSL_CERT_FILE, refused when the certificate is not trusted.

mod support;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use std::sync::Arc;
use support::*;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, pki_types::PrivateKeyDer};

/// A TLS front on 127.0.0.1 for a simulated server, with a certificate for
/// 127.0.0.1 signed by a fresh test CA. Returns its https URL and the CA PEM.
async fn tls_front(sim: &SimHandle) -> (String, String) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
    )
    .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let backend = sim.addr();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (format!("https://127.0.0.1:{port}"), ca.pem())
}

fn start(host: &str, secret: &str, ca_file: Option<&str>) -> Balancer {
    let file = scratch_dir().join("servers.json");
    std::fs::write(
        &file,
        serde_json::json!([{ "host": host, "secret": secret }]).to_string(),
    )
    .unwrap();
    let mut env = vec![
        ("TINYSCALE_SECRET", SECRET),
        ("TINYSCALE_SERVERS", file.to_str().unwrap()),
    ];
    if let Some(ca) = ca_file {
        env.push(("SSL_CERT_FILE", ca));
    }
    Balancer::start(&env)
}

fn url(lb: &Balancer, call: &str, query: &str) -> String {
    format!(
        "{}{call}?{}",
        lb.api(),
        signed(call, query, SECRET, tinyscale::checksum::Algorithm::Sha256)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn https_servers_trusted_through_ssl_cert_file() {
    let sim = SimHandle::start("tls-secret").await.unwrap();
    let (host, ca_pem) = tls_front(&sim).await;
    let ca_file = scratch_dir().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let lb = start(&host, "tls-secret", Some(ca_file.to_str().unwrap()));
    assert!(lb.wait_for_log("server ok").await, "{}", lb.logs());

    let reply = get(&url(&lb, "create", "name=Secure&meetingID=over-tls")).await;
    assert_eq!(reply.returncode(), Some("SUCCESS"), "{}", reply.body);
    assert!(sim.has_meeting("over-tls"));
    let reply = get(&url(
        &lb,
        "join",
        "meetingID=over-tls&fullName=A&role=VIEWER",
    ))
    .await;
    assert!(
        reply
            .location()
            .unwrap()
            .starts_with(&format!("{host}/bigbluebutton/api/join?"))
    );
    // Several calls share pooled connections.
    for _ in 0..5 {
        let reply = get(&url(&lb, "getMeetingInfo", "meetingID=over-tls")).await;
        assert_eq!(reply.returncode(), Some("SUCCESS"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn untrusted_certificates_are_refused() {
    let sim = SimHandle::start("tls-secret").await.unwrap();
    let (host, _) = tls_front(&sim).await;
    let lb = start(&host, "tls-secret", None);
    assert!(lb.wait_for_log("server unreachable").await, "{}", lb.logs());
    let reply = get(&url(&lb, "create", "name=x&meetingID=not-trusted")).await;
    assert_eq!(reply.message_key(), Some("internalError"));
    assert!(!sim.has_meeting("not-trusted"));
}
