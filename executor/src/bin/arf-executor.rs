//! `arf-executor --config FILE`: the executor on its own (no model client, no
//! policy engine; see `arf_proto::service`).

use arf_proto::service::{self, Failure};

#[global_allocator]
static ALLOCATOR: service::Allocator = service::ALLOCATOR;

fn main() -> std::process::ExitCode {
    service::main("executor", |config: arf_executor::Config| async move {
        config.validate().map_err(|e| Failure::Config(e.to_string()))?;
        let listener = service::bind(config.listen).await?;
        arf_executor::serve(config, listener, service::shutdown_signal()).await?;
        Ok(())
    })
}
