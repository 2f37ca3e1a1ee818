//! The arf command.
