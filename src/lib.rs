pub mod api;
pub mod checksum;
pub mod config;
pub mod errors;
pub mod xml;
