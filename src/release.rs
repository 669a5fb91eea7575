//! TODO: release
