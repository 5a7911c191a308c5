//! `receive` listens on a socket anyone may reach: a client cannot hold a
//! connection open without sending, take every connection, or make it hold
//! an unbounded body.

use std::sync::Arc;
use std::time::Duration;

use pattoo_agentd::delivery::receiver::{Limits, Receiver, MAX_BODY_BYTES};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Far longer than any limit the tests set: only a hang reaches it.
const PATIENCE: Duration = Duration::from_secs(20);

async fn serve(
    limits: Limits,
    body_timeout: Duration,
) -> (std::net::SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Arc::new(
        Receiver::new(dir.path())
            .unwrap()
            .with_body_timeout(body_timeout),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _stop = stop;
        receiver.serve_within(listener, stopped, limits).await
    });
    (addr, dir)
}

/// Reads until the server closes the connection; what it sent.
async fn until_closed(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .expect("the server closed the connection")
        .ok();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_half_sent_request_head_and_an_idle_connection_are_closed() {
    let limits = Limits {
        header_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let (addr, _dir) = serve(limits, Duration::from_secs(60)).await;
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(b"POST /pattoo/api/v1/agent/receive/abc HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut idle = TcpStream::connect(addr).await.unwrap();
    until_closed(&mut half).await;
    until_closed(&mut idle).await;
}

#[tokio::test]
async fn a_body_that_never_finishes_is_answered_408() {
    let (addr, _dir) = serve(Limits::default(), Duration::from_millis(300)).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST /pattoo/api/v1/agent/receive/abc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        .await
        .unwrap();
    let answer = until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

#[tokio::test]
async fn connections_past_the_cap_are_closed_at_once() {
    let limits = Limits {
        header_timeout: Duration::from_secs(60),
        max_connections: 3,
    };
    let (addr, _dir) = serve(limits, Duration::from_secs(60)).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"POST / HTTP/1.1\r\n").await.unwrap();
        held.push(stream);
    }
    let mut extra = TcpStream::connect(addr).await.unwrap();
    assert_eq!(until_closed(&mut extra).await, "");
    // The held ones are still served once they finish.
    drop(held.pop());
    let mut next = TcpStream::connect(addr).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let stream = next.as_mut().unwrap();
        stream
            .write_all(b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .ok();
        let answer = until_closed(stream).await;
        if answer.starts_with("HTTP/1.1 404") {
            break;
        }
        // The freed slot may not be back yet.
        assert!(tokio::time::Instant::now() < deadline, "{answer:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
        next = TcpStream::connect(addr).await;
    }
}

#[tokio::test]
async fn a_body_over_the_cap_is_answered_413_and_not_stored() {
    // A short header timeout so the kept-alive connection closes soon after.
    let limits = Limits {
        header_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let (addr, dir) = serve(limits, Duration::from_secs(60)).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let length = MAX_BODY_BYTES + 1;
    stream
        .write_all(
            format!("POST /pattoo/api/v1/agent/receive/abc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let body = vec![b' '; length];
    // The server may stop reading once it has refused the body.
    let _ = tokio::time::timeout(PATIENCE, stream.write_all(&body)).await;
    let answer = until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
