//! `arf-governor --config FILE`: the governor on its own (no model client, no
//! runner; see `arf_proto::service`).

use arf_proto::service::{self, Failure};

#[global_allocator]
static ALLOCATOR: service::Allocator = service::ALLOCATOR;

fn main() -> std::process::ExitCode {
    service::main("governor", |config: arf_governor::Config| async move {
        config.validate().map_err(|e| Failure::Config(e.to_string()))?;
        let listener = service::bind(config.listen).await?;
        arf_governor::serve(config, listener, service::shutdown_signal()).await?;
        Ok(())
    })
}
