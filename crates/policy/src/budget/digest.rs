//! The 16-byte digest budget tables keep instead of the text a caller
//! chose: bucket keys, callers, in-flight keys.

use sha2::{Digest, Sha256};

/// The first 16 bytes of the SHA-256 of `parts`, each length-prefixed so
/// `("ab","c")` and `("a","bc")` differ.
pub(crate) fn digest<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> [u8; 16] {
    let mut h = Sha256::new();
    for part in parts {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    let full = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}
