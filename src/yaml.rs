//! TODO: yaml
