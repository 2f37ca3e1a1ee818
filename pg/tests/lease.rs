//! A lease given back at a clean stop is free at once: a peer (or the next
//! process under the name) joins without waiting for it to lapse.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

use std::time::Duration;

use arf_pg::lease::Lease;
use arf_pg::testing::TestServer;

#[tokio::test]
async fn a_released_lease_is_taken_at_once() {
    let server = TestServer::start().await.unwrap();
    let settings = server.database().await.unwrap();
    arf_pg::migrate(&mut settings.connect().await.unwrap()).await.unwrap();
    let lease = Duration::from_secs(30);
    let (_db, first) = Lease::open(&settings, "executor_members", "executor-a", "incarnation-1", lease).await.unwrap();
    first.release().await;
    let client = settings.connect().await.unwrap();
    let lapsed: bool = client.query_one("SELECT lease_until < now() FROM executor_members WHERE name = 'executor-a'", &[]).await.unwrap().get(0);
    assert!(lapsed, "the lease was not given back");
    // Without the release the next incarnation would wait out the lease (30 s) and its grace.
    let joined = tokio::time::timeout(Duration::from_secs(5), Lease::open(&settings, "executor_members", "executor-a", "incarnation-2", lease)).await;
    assert!(matches!(joined, Ok(Ok(_))), "the next incarnation did not join at once");
}
