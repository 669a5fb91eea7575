//! TODO: sshsig
