//! An HTTP port open to other hosts: a client that sends its headers too slowly is
//! cut off at the deadline, and ordinary requests are served meanwhile.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_cut_off_and_others_are_served() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
    let limits = arf_proto::http::Limits { header_timeout: Duration::from_millis(500), max_connections: 8 };
    tokio::spawn(arf_proto::http::serve(arf_proto::http::Incoming::Plain(listener), router, limits, std::future::pending()));

    // Half a request line, then silence.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"POST /v1/webhooks/generic HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    // The server closes the connection (with or without a 408 first): the read ends.
    let _ = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut answer)).await.expect("the slow connection was not cut off");
    assert!(started.elapsed() < Duration::from_secs(3), "cut off near the 500 ms deadline, after {:?}", started.elapsed());

    let body = reqwest::get(format!("http://{addr}/")).await.unwrap().text().await.unwrap();
    assert_eq!(body, "ok");
}
