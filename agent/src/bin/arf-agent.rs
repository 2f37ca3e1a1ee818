//! `arf-agent --config FILE`: the agent on its own, linking only what it needs
//! (no executor, no runner; see `arf_proto::service`).

use arf_proto::service::{self, Failure};

#[global_allocator]
static ALLOCATOR: service::Allocator = service::ALLOCATOR;

fn main() -> std::process::ExitCode {
    service::main("agent", |config: arf_agent::Config| async move {
        config.validate().map_err(Failure::Config)?;
        let listener = service::bind(config.listen).await?;
        let webhook = service::bind(config.webhook_listen).await?;
        arf_agent::serve(config, listener, webhook, service::shutdown_signal()).await?;
        Ok(())
    })
}
