//! Domain types shared by ARF's processes, with no network code in them.
//!
//! The agent, governor and executor each load the same reviewed files (the pathway
//! catalog, the target inventory) through this crate, so that none of them has to
//! trust another's copy.

pub mod canonical;
pub mod catalog;
pub mod crash;
pub mod decision;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod deployment;
pub mod diagnosis;
pub mod identity;
pub mod keys;
pub mod net;
pub mod process;
pub mod records;
pub mod signal;
pub mod target;
pub mod template;
pub mod text;
pub mod time;
pub mod tls;
