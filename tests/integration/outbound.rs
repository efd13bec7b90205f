//! Outbound HTTP by resolved address: a name the allow-list admits is
//! resolved once (here by a scripted resolver, through the test seam), and
//! the guest connects only to the answers the policy lets through; a real
//! upstream on 127.0.0.1 shows which connections were made.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use wasmgate::runtime::outbound::{Resolve, Resolver};

use crate::common::*;
use crate::ecosystem::{PROBE3, WSTD_FETCH};

/// Answers every name with `script[n]` on its `n`th lookup (the last
/// answer once the script runs out), and counts the lookups.
#[derive(Clone)]
struct Scripted {
    script: Arc<Vec<Vec<IpAddr>>>,
    lookups: Arc<Mutex<Vec<String>>>,
}

impl Scripted {
    fn new(script: &[&[&str]]) -> Self {
        Scripted {
            script: Arc::new(
                script
                    .iter()
                    .map(|answer| answer.iter().map(|ip| ip.parse().unwrap()).collect())
                    .collect(),
            ),
            lookups: Arc::default(),
        }
    }

    fn resolver(&self) -> Resolver {
        Resolver::new(self.clone())
    }

    /// The names looked up so far.
    fn lookups(&self) -> Vec<String> {
        self.lookups.lock().unwrap().clone()
    }
}

impl Resolve for Scripted {
    fn lookup(
        &self,
        host: &str,
        _port: u16,
    ) -> std::pin::Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> {
        let mut lookups = self.lookups.lock().unwrap();
        let answer = self.script[lookups.len().min(self.script.len() - 1)].clone();
        lookups.push(host.to_string());
        Box::pin(async move { Ok(answer) })
    }
}

fn hosts(entries: &[String]) -> String {
    serde_json::json!({ "allowed_outbound_hosts": entries }).to_string()
}

/// What the probe guest answers for GET http://{authority}/hello.
async fn probe_fetch(server: &TestServer, route: &str, authority: &str) -> String {
    server
        .get(&format!("/{route}/fetch?authority={authority}&path=/hello"))
        .await
        .text()
}

const DENIED: &str = "error: ErrorCode::HttpRequestDenied\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_resolves_to_loopback_is_denied_unless_the_address_is_named() {
    let (local, accepted) = upstream("127.0.0.1:0".parse().unwrap(), "local").await;
    let port = local.port();
    let dns = Scripted::new(&[&["127.0.0.1"]]);
    let server = TestServer::start_with_resolver(dns.resolver(), |_| {}).await;
    let wildcard = hosts(&[format!("http://*.example.test:{port}")]);
    for (route, guest) in [("probe", PROBE), ("wstd", WSTD_FETCH), ("p3", PROBE3)] {
        server
            .deploy_with(&format!("/{route}"), guest, &wildcard, &[])
            .await
            .unwrap();
    }

    // The name passes the allow-list, its address does not: denied, in
    // every guest, and nothing connected to the upstream.
    let authority = format!("svc.example.test:{port}");
    assert_eq!(probe_fetch(&server, "probe", &authority).await, DENIED);
    for path in [
        format!("/wstd/fetch?url=http://{authority}/x"),
        format!("/wstd/post?url=http://{authority}/x"),
        format!("/p3/fetch?url=http://{authority}/x"),
        format!("/p3/post-fetch?url=http://{authority}/x"),
    ] {
        let text = server.get(&path).await.text();
        assert!(
            text.contains("HTTP-request-denied") || text.contains("HttpRequestDenied"),
            "{path}: {text}"
        );
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "no connection was made");
    assert_eq!(dns.lookups().len(), 5, "one lookup per request");
    assert!(dns.lookups().iter().all(|name| name == "svc.example.test"));

    // The address named literally reaches the upstream, with no lookup.
    server
        .deploy_with(
            "/literal",
            PROBE,
            &hosts(&[format!("http://127.0.0.1:{port}")]),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        probe_fetch(&server, "literal", &format!("127.0.0.1:{port}")).await,
        "status: 200\nupstream local saw /hello"
    );
    assert_eq!(dns.lookups().len(), 5, "an address is not looked up");

    // Named beside the wildcard, the address is granted to the name too:
    // the connection goes to what the name resolved to (the test name
    // exists nowhere else).
    server
        .deploy_with(
            "/both",
            PROBE,
            &hosts(&[
                format!("http://*.example.test:{port}"),
                format!("http://127.0.0.1:{port}"),
            ]),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        probe_fetch(&server, "both", &authority).await,
        "status: 200\nupstream local saw /hello"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    // On another port the grant does not hold.
    assert_eq!(
        probe_fetch(&server, "both", &format!("127.0.0.1:{}", port ^ 1)).await,
        DENIED
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_changes_its_answer_is_resolved_once_per_request() {
    // Two upstreams on one port: 127.0.0.1 (granted by name) and 127.0.0.2
    // (loopback too, not granted). The name answers 127.0.0.1 first, then
    // 127.0.0.2: a check and a connect that each looked the name up would
    // land on the second.
    let (good, good_accepted) = upstream("127.0.0.1:0".parse().unwrap(), "good").await;
    let port = good.port();
    let evil_addr: SocketAddr = format!("127.0.0.2:{port}").parse().unwrap();
    if std::net::TcpListener::bind(evil_addr).is_err() {
        eprintln!("skipped: 127.0.0.2 cannot be bound here");
        return;
    }
    let (_, evil_accepted) = upstream(evil_addr, "evil").await;
    let dns = Scripted::new(&[&["127.0.0.1"], &["127.0.0.2"]]);
    let server = TestServer::start_with_resolver(dns.resolver(), |_| {}).await;
    server
        .deploy_with(
            "/probe",
            PROBE,
            &hosts(&[
                format!("http://*.example.test:{port}"),
                format!("http://127.0.0.1:{port}"),
            ]),
            &[],
        )
        .await
        .unwrap();
    let authority = format!("rebind.example.test:{port}");
    assert_eq!(
        probe_fetch(&server, "probe", &authority).await,
        "status: 200\nupstream good saw /hello"
    );
    assert_eq!(dns.lookups().len(), 1, "looked up once");
    // The next request sees the new answer, checks it, and refuses it.
    assert_eq!(probe_fetch(&server, "probe", &authority).await, DENIED);
    assert_eq!(dns.lookups().len(), 2);
    assert_eq!(good_accepted.load(Ordering::SeqCst), 1);
    assert_eq!(evil_accepted.load(Ordering::SeqCst), 0, "never connected");
    server.stop().await;
}

/// The source address of this machine's default route, if it is a private
/// one a test upstream can listen on (sends nothing: a UDP connect).
fn local_private_address() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (wasmgate::runtime::outbound::classify(ip)
        == wasmgate::runtime::outbound::AddressClass::Private)
        .then_some(ip)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_address_needs_a_cidr_entry_or_allow_private_networks() {
    // A real upstream on this machine's private address when it has one;
    // else an address nothing answers, where "not denied" is what shows.
    let local = local_private_address();
    let (target, accepted) = match local {
        Some(ip) => {
            let (addr, accepted) = upstream(SocketAddr::new(ip, 0), "private").await;
            (addr, Some(accepted))
        }
        None => ("10.255.255.1:8080".parse().unwrap(), None),
    };
    let port = target.port();
    let dns = Scripted::new(&[&[&target.ip().to_string()]]);
    let server = TestServer::start_with_resolver(dns.resolver(), |s| {
        if local.is_none() {
            // The connect to nowhere ends at the deadline.
            s.timeout_ms = 3_000;
        }
    })
    .await;
    let cidr = match target.ip() {
        IpAddr::V4(v4) => format!("http://{}.0.0.0/8:{port}", v4.octets()[0]),
        IpAddr::V6(_) => format!("http://[fc00::/7]:{port}"),
    };
    let wildcard = format!("http://*.example.test:{port}");
    for (route, metadata) in [
        ("name-only", hosts(std::slice::from_ref(&wildcard))),
        ("cidr", hosts(&[wildcard.clone(), cidr.clone()])),
        (
            "private",
            serde_json::json!({
                "allowed_outbound_hosts": [wildcard],
                "allow_private_networks": true,
            })
            .to_string(),
        ),
    ] {
        server
            .deploy_with(&format!("/{route}"), PROBE, &metadata, &[])
            .await
            .unwrap();
    }
    let authority = format!("db.example.test:{port}");
    assert_eq!(probe_fetch(&server, "name-only", &authority).await, DENIED);
    // A CIDR entry admits the address itself, too.
    let literal = target.to_string();
    assert_eq!(probe_fetch(&server, "name-only", &literal).await, DENIED);
    for (route, authority) in [
        ("cidr", &authority),
        ("cidr", &literal),
        ("private", &authority),
    ] {
        let text = probe_fetch(&server, route, authority).await;
        match &accepted {
            Some(_) => assert_eq!(
                text, "status: 200\nupstream private saw /hello",
                "/{route} to {authority}"
            ),
            None => assert_ne!(text, DENIED, "/{route} to {authority}"),
        }
    }
    if let Some(accepted) = accepted {
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }
    server.stop().await;
}

#[test]
fn the_log_line_says_why_and_names_the_refused_address() {
    // The real binary, with the system resolver: a CIDR entry admits
    // 127.0.0.1 by name but cannot grant a loopback address.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    cli_deploy_with_metadata(
        dir.path(),
        &data,
        PROBE,
        "/probe",
        r#"{"allowed_outbound_hosts": ["http://0.0.0.0/0:9"]}"#,
    );
    let serve = ServeProcess::start(&data, 100, &[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for authority in ["127.0.0.1:9", "127.0.0.1:10"] {
        let reply = runtime.block_on(send(
            serve.addr,
            "GET",
            &format!("/probe/fetch?authority={authority}&path=/"),
            &[],
            Bytes::new(),
        ));
        assert_eq!(reply.text(), DENIED, "{authority}");
    }
    let refused = serve.wait_for_log(&[
        "guest outbound HTTP request denied",
        r#""reason":"address refused: loopback""#,
        r#""address":"127.0.0.1""#,
    ]);
    assert_eq!(refused.len(), 1, "{:?}", serve.log.lock().unwrap());
    let by_name = serve.wait_for_log(&[
        "guest outbound HTTP request denied",
        r#""reason":"name not allowed""#,
        "127.0.0.1:10",
    ]);
    assert_eq!(by_name.len(), 1, "{:?}", serve.log.lock().unwrap());
}

#[test]
fn bad_cidrs_and_a_mistyped_allow_private_networks_refuse_the_deploy() {
    let dir = tempfile::tempdir().unwrap();
    let probe = write_file(dir.path(), "probe.wasm", PROBE);
    for (metadata, expected) in [
        (
            r#"{"allowed_outbound_hosts": ["http://10.0.0.1/8:443"]}"#,
            "\"http://10.0.0.1/8:443\"",
        ),
        (
            r#"{"allowed_outbound_hosts": ["http://127.0.0.0/8"]}"#,
            "\"http://127.0.0.0/8\"",
        ),
        (
            r#"{"allow_private_networks": "yes"}"#,
            "allow_private_networks",
        ),
    ] {
        let file = write_file(dir.path(), "metadata.json", metadata.as_bytes());
        let error = cli_err(
            &dir.path().join("data"),
            &[
                "deploy",
                probe.to_str().unwrap(),
                "--route",
                "/p",
                "--metadata",
                file.to_str().unwrap(),
            ],
        );
        assert!(error.contains(expected), "{metadata}: {error}");
    }
}
