//! TODO: commit_signature
