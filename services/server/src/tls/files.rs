//! The certificates directory: which file holds what, and how files are
//! written (keys readable by their owner only, nothing overwritten unless
//! asked).
//!
//! ```text
//!  certs/
//!    ca.crt              the cluster CA's certificate(s), PEM; every node and client
//!    ca.key              the CA's private key; only where certificates are made
//!    node.<id>.crt       node <id>'s certificate, PEM (then any intermediates)
//!    node.<id>.key       its private key (PKCS#8), mode 0600
//!    client.<user>.crt   a client certificate for <user>, PEM
//!    client.<user>.key   its private key, mode 0600
//! ```
//!
//! One directory can hold the certificates of several nodes (a node reads
//! only its own pair), so `geodb cert` can issue a whole cluster's in one
//! place; a node's own directory needs `ca.crt` and its pair only.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Mode of private keys: readable and writable by their owner only.
const KEY_MODE: u32 = 0o600;
/// Mode of certificates, which are public.
const CERT_MODE: u32 = 0o644;
/// Longest user name a client certificate is made for (PostgreSQL's
/// identifiers are at most 63 bytes).
const USER_BYTES_MAX: usize = 63;

/// A certificates directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertsDir(PathBuf);

impl CertsDir {
    pub fn new(path: impl Into<PathBuf>) -> CertsDir {
        CertsDir(path.into())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.0.join("ca.crt")
    }

    pub fn ca_key(&self) -> PathBuf {
        self.0.join("ca.key")
    }

    pub fn node_cert(&self, node: u64) -> PathBuf {
        self.0.join(format!("node.{node}.crt"))
    }

    pub fn node_key(&self, node: u64) -> PathBuf {
        self.0.join(format!("node.{node}.key"))
    }

    pub fn client_cert(&self, user: &str) -> PathBuf {
        self.0.join(format!("client.{user}.crt"))
    }

    pub fn client_key(&self, user: &str) -> PathBuf {
        self.0.join(format!("client.{user}.key"))
    }

    /// Refuses to go on if any of `paths` exists, unless `overwrite`: a
    /// certificate or key written over by mistake can cut a node off its
    /// cluster, and a CA key written over cannot be had back.
    pub fn check_absent(&self, paths: &[PathBuf], overwrite: bool) -> Result<(), String> {
        if overwrite {
            return Ok(());
        }
        match paths.iter().find(|path| path.exists()) {
            Some(path) => Err(format!("{} exists (pass --overwrite to replace it)", path.display())),
            None => Ok(()),
        }
    }

    /// What is unsafe in the directory node `node` serves from: the CA's key
    /// in it (whoever reads the node's files can make nodes), or the node's
    /// key readable by its group or others. Said at every start, not
    /// refused: an operator may have reasons we cannot see.
    pub fn hazards(&self, node: u64) -> Vec<String> {
        use std::os::unix::fs::PermissionsExt;
        let mut hazards = Vec::new();
        if self.ca_key().exists() {
            hazards.push(format!(
                "{} is in the directory a node serves from: keep the CA key where certificates are made, not on the nodes",
                self.ca_key().display()
            ));
        }
        if let Ok(metadata) = std::fs::metadata(self.node_key(node))
            && metadata.permissions().mode() & 0o077 != 0
        {
            hazards.push(format!(
                "{} can be read by others than its owner (mode {:o}): chmod 600 it",
                self.node_key(node).display(),
                metadata.permissions().mode() & 0o777
            ));
        }
        hazards
    }

    /// Writes a certificate (public), replacing any file there.
    pub fn write_cert(&self, path: &Path, pem: &str) -> Result<(), String> {
        write(path, pem, CERT_MODE)
    }

    /// Writes a private key, readable by its owner only.
    pub fn write_key(&self, path: &Path, pem: &str) -> Result<(), String> {
        write(path, pem, KEY_MODE)
    }
}

/// Writes `text` to `path` with `mode`, through a new file renamed into
/// place: a reader (a node reloading its certificates) sees the old file
/// or the new one, never half of one, and a key is never readable by
/// others even for a moment.
fn write(path: &Path, text: &str, mode: u32) -> Result<(), String> {
    let dir = path.parent().ok_or_else(|| format!("{}: no directory", path.display()))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let name = path.file_name().and_then(|name| name.to_str()).unwrap_or("file");
    let temporary = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)
        .map_err(|e| format!("cannot create {}: {e}", temporary.display()))?;
    let written = file.write_all(text.as_bytes()).and_then(|()| file.sync_all());
    if let Err(error) = written.and_then(|()| std::fs::rename(&temporary, path)) {
        let _ = std::fs::remove_file(&temporary);
        return Err(format!("cannot write {}: {error}", path.display()));
    }
    Ok(())
}

/// Checks a user name a client certificate is made for: it becomes part
/// of a file name and a certificate's subject.
pub fn check_user(user: &str) -> Result<(), String> {
    let valid = !user.is_empty()
        && user.len() <= USER_BYTES_MAX
        && !user.starts_with('.')
        && user.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if valid {
        Ok(())
    } else {
        Err(format!("user {user:?}: at most {USER_BYTES_MAX} letters, digits, '_', '-' or '.', not starting with '.'"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keys_are_written_for_their_owner_only_and_nothing_is_overwritten_unasked() {
        let dir = tempfile::tempdir().unwrap();
        let certs = CertsDir::new(dir.path().join("certs"));
        certs.write_key(&certs.node_key(1), "key").unwrap();
        certs.write_cert(&certs.node_cert(1), "cert").unwrap();
        let mode = |path: PathBuf| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(certs.node_key(1)), 0o600);
        assert_eq!(mode(certs.node_cert(1)), 0o644);
        let error = certs.check_absent(&[certs.node_cert(2), certs.node_key(1)], false).unwrap_err();
        assert!(error.contains("node.1.key exists"), "{error}");
        assert!(certs.check_absent(&[certs.node_key(1)], true).is_ok());
        assert!(certs.check_absent(&[certs.node_cert(2)], false).is_ok());
    }

    #[test]
    fn a_ca_key_beside_a_node_and_a_readable_node_key_are_said() {
        let dir = tempfile::tempdir().unwrap();
        let certs = CertsDir::new(dir.path());
        certs.write_key(&certs.node_key(1), "key").unwrap();
        assert!(certs.hazards(1).is_empty());
        certs.write_key(&certs.ca_key(), "key").unwrap();
        std::fs::set_permissions(certs.node_key(1), std::fs::Permissions::from_mode(0o640)).unwrap();
        let hazards = certs.hazards(1);
        assert_eq!(hazards.len(), 2, "{hazards:?}");
        assert!(hazards[0].contains("ca.key") && hazards[1].contains("mode 640"), "{hazards:?}");
    }

    #[test]
    fn user_names_become_file_names_safely() {
        assert!(check_user("alice").is_ok());
        assert!(check_user("bench_user-2.x").is_ok());
        for bad in ["", "../root", ".hidden", "a b", "a/b", &"x".repeat(64)] {
            assert!(check_user(bad).is_err(), "{bad:?}");
        }
    }
}
