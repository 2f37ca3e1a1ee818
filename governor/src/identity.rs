//! Who is calling: roles, and what each role may do (defined in `arf_core::identity`,
//! shared by every service).

pub use arf_core::identity::{Caller, Role};
