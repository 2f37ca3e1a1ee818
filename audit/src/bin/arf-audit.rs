//! `arf-audit --config FILE`: the audit log on its own (see `arf_proto::service`).

use arf_proto::service::{self, Failure};

#[global_allocator]
static ALLOCATOR: service::Allocator = service::ALLOCATOR;

fn main() -> std::process::ExitCode {
    service::main("audit", |config: arf_audit::Config| async move {
        config.validate().map_err(Failure::Config)?;
        let listener = service::bind(config.listen).await?;
        arf_audit::serve(config, listener, service::shutdown_signal()).await?;
        Ok(())
    })
}
