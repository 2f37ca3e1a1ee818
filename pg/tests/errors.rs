//! A database error names what the server said, not only the driver's "db error":
//! the operator reads it in a refusal ("the agents' database: PostgreSQL: ...").

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

use arf_pg::PgError;
use arf_pg::testing::TestServer;

#[tokio::test]
async fn a_database_error_says_what_the_server_said() {
    let server = TestServer::start().await.unwrap();
    let settings = server.database().await.unwrap();
    let client = settings.connect().await.unwrap();
    let error = PgError::from(client.query("SELECT * FROM no_such_table", &[]).await.unwrap_err()).to_string();
    assert!(error.contains("relation \"no_such_table\" does not exist") && error.contains("SQLSTATE 42P01"), "{error}");
}
