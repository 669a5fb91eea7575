//! TODO: signers
