//! The operator's master key, and webhook signing secrets sealed with it (AES-256-GCM).
//!
//! `BRIDGE_MASTER_KEY` is 32 bytes, as 64 hex digits or base64. Without one, a development key is
//! generated into the data directory (`master.key`, mode 0600) with a warning: fine for a laptop,
//! not for production, where losing the file makes every webhook secret unreadable.

use crate::config::{Config, Secret};
use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use anyhow::{anyhow, bail, Context};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use domain::webhook::SealedSecret;
use rand::Rng;
use std::io::Write;

pub const WEBHOOK_SECRET_PREFIX: &str = "wzb_whsec_";

/// AES-GCM's nonce and tag lengths: a sealed value is the nonce, then the ciphertext and tag.
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

pub struct MasterKey {
    cipher: Aes256Gcm,
    /// HMAC of a fixed label: compared with the value in the database (see [`MasterKey::check`]).
    check_value: [u8; 32],
    /// Signs the audit digests of the event log (derived, so the master key itself signs nothing).
    audit_key: [u8; 32],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

fn decode_key(raw: &str) -> anyhow::Result<[u8; 32]> {
    let raw = raw.trim();
    let bytes = if raw.len() == 64 && raw.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(raw)?
    } else {
        B64.decode(raw).map_err(|_| anyhow!("master_key must be 32 bytes as 64 hex digits or base64"))?
    };
    bytes.try_into().map_err(|_| anyhow!("master_key must be exactly 32 bytes"))
}

impl MasterKey {
    pub fn from_secret(secret: &Secret) -> anyhow::Result<Self> {
        let key = decode_key(secret.expose())?;
        Ok(Self {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key)),
            check_value: derive(&key, b"wazion-bridge/key-check/v1"),
            audit_key: derive(&key, b"wazion-bridge/audit-digest/v1"),
        })
    }

    /// Refuse a configured key that is not one (checked at start, with the rest of the
    /// configuration; the configuration itself knows nothing of keys).
    pub fn validate_configured(config: &Config) -> anyhow::Result<()> {
        match &config.master_key {
            Some(secret) => Self::from_secret(secret).map(drop).context("BRIDGE_MASTER_KEY"),
            None => Ok(()),
        }
    }

    /// The key that signs audit digests.
    pub fn audit_key(&self) -> &[u8; 32] {
        &self.audit_key
    }

    /// The configured key, or the development key of the data directory (made on first use).
    pub fn load(config: &Config) -> anyhow::Result<Self> {
        if let Some(secret) = &config.master_key {
            return Self::from_secret(secret);
        }
        let path = config.data_dir.join("master.key");
        if !path.exists() {
            std::fs::create_dir_all(&config.data_dir)?;
            create_key_file(&path)?;
        }
        let raw = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_secret(&Secret::new(raw))
    }

    /// Load the key and make sure it is the key of this database: the first node to start records
    /// a key-check value; a node whose key gives another value refuses to start, since it could
    /// neither open the webhook secrets the others sealed nor sign digests they can check.
    pub async fn load_checked(config: &Config, pool: &sqlx::PgPool) -> anyhow::Result<Self> {
        let key = Self::load(config)?;
        key.check(pool).await?;
        Ok(key)
    }

    async fn check(&self, pool: &sqlx::PgPool) -> anyhow::Result<()> {
        sqlx::query("INSERT INTO master_key_check (check_hmac) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(&self.check_value[..])
            .execute(pool)
            .await
            .context("recording the master key's check value")?;
        let recorded: Vec<u8> = sqlx::query_scalar("SELECT check_hmac FROM master_key_check").fetch_one(pool).await?;
        if recorded != self.check_value {
            bail!(
                "the master key is not the one this database was set up with (its key-check value differs): every node \
                 and command must use the same BRIDGE_MASTER_KEY (without one, each data directory makes its own \
                 master.key)"
            );
        }
        Ok(())
    }

    pub fn seal(&self, plaintext: &str) -> SealedSecret {
        SealedSecret(B64.encode(self.seal_bytes(b"", plaintext.as_bytes())))
    }

    pub fn open(&self, sealed: &SealedSecret) -> anyhow::Result<Secret> {
        let bytes = B64.decode(&sealed.0).map_err(|_| anyhow!("a sealed secret is not base64"))?;
        let plain = self.open_bytes(b"", &bytes).map_err(|_| anyhow!("a sealed secret does not open with this master key"))?;
        Ok(Secret::new(String::from_utf8(plain)?))
    }

    /// Seal `plaintext` bound to `aad` (associated data: authenticated, not stored): the nonce
    /// (random per seal, 12 bytes) followed by the ciphertext and its tag. A sealed value opens
    /// only with this key and the same `aad`, so callers bind it to where the value lives (a
    /// table and key) and a value copied to another place does not open there.
    pub fn seal_bytes(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ciphertext = self.cipher.encrypt(&nonce, Payload { msg: plaintext, aad }).expect("AES-GCM encryption does not fail");
        let mut out = Vec::with_capacity(nonce.len() + ciphertext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    /// Open what [`MasterKey::seal_bytes`] sealed with the same `aad`. An error (never the
    /// plaintext, never a panic) for another key, another `aad`, or altered bytes.
    pub fn open_bytes(&self, aad: &[u8], sealed: &[u8]) -> anyhow::Result<Vec<u8>> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            bail!("a sealed value is too short");
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad })
            .map_err(|_| anyhow!("a sealed value does not open with this master key and context"))
    }
}

/// Write a new random key to `path`, which must not exist: into a private temporary file first,
/// then linked into place, so a process starting at the same moment reads either no file or the
/// whole key, never half of one. If another process linked its key first, its key is kept.
fn create_key_file(path: &std::path::Path) -> anyhow::Result<()> {
    let key: [u8; 32] = rand::rngs::OsRng.gen();
    let temporary = path.with_extension(format!("tmp-{}-{:08x}", std::process::id(), rand::random::<u32>()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&temporary).and_then(|mut file| {
        file.write_all(hex::encode(key).as_bytes())?;
        file.sync_all()
    });
    // A hard link, unlike a rename, never replaces a file that is already there.
    let linked = written.and_then(|()| std::fs::hard_link(&temporary, path));
    let _ = std::fs::remove_file(&temporary);
    match linked {
        Ok(()) => {
            tracing::warn!(path = %path.display(), "no BRIDGE_MASTER_KEY set: generated a development master key; set one in production");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).context(format!("creating {}", path.display())),
    }
}

/// A key for one purpose, derived from the master key (HMAC-SHA256 of the purpose's label).
fn derive(master: &[u8; 32], label: &[u8]) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(master).expect("HMAC takes any key length");
    mac.update(label);
    mac.finalize().into_bytes().into()
}

/// A new webhook signing secret: `wzb_whsec_` and 40 base62 characters.
pub fn new_webhook_secret() -> Secret {
    const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rngs::OsRng;
    let body: String = (0..40).map(|_| BASE62[rng.gen_range(0..62)] as char).collect();
    Secret::new(format!("{WEBHOOK_SECRET_PREFIX}{body}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_their_key_and_never_show_the_secret() {
        let key = MasterKey::from_secret(&Secret::new("11".repeat(32))).unwrap();
        let secret = new_webhook_secret();
        assert!(secret.expose().starts_with("wzb_whsec_"));
        let sealed = key.seal(secret.expose());
        assert!(!sealed.0.contains(secret.expose()));
        assert_ne!(key.seal(secret.expose()), sealed, "a fresh nonce every time");
        assert_eq!(key.open(&sealed).unwrap().expose(), secret.expose());
        let other = MasterKey::from_secret(&Secret::new("22".repeat(32))).unwrap();
        assert!(other.open(&sealed).is_err());
        assert!(MasterKey::from_secret(&Secret::new("short")).is_err());
    }

    #[test]
    fn sealed_bytes_open_only_with_their_key_and_their_context() {
        let key = MasterKey::from_secret(&Secret::new("11".repeat(32))).unwrap();
        let plaintext = b"an identity key, 32 bytes long..";
        let sealed = key.seal_bytes(b"line_a/identities/addr", plaintext);
        assert!(!sealed.windows(plaintext.len()).any(|w| w == plaintext), "the plaintext is not in the sealed bytes");
        assert_ne!(key.seal_bytes(b"line_a/identities/addr", plaintext), sealed, "a fresh nonce every time");
        assert_eq!(key.open_bytes(b"line_a/identities/addr", &sealed).unwrap(), plaintext);
        assert_eq!(key.open_bytes(b"x", &key.seal_bytes(b"x", b"")).unwrap(), b"", "an empty value round-trips");

        assert!(key.open_bytes(b"line_b/identities/addr", &sealed).is_err(), "another context does not open it");
        assert!(key.open_bytes(b"", &sealed).is_err());
        let other = MasterKey::from_secret(&Secret::new("22".repeat(32))).unwrap();
        assert!(other.open_bytes(b"line_a/identities/addr", &sealed).is_err(), "another key does not open it");
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(key.open_bytes(b"line_a/identities/addr", &altered).is_err(), "altered bytes do not open");
        assert!(key.open_bytes(b"line_a/identities/addr", &sealed[..20]).is_err(), "a truncated value is an error, not a panic");
    }

    #[test]
    fn processes_starting_at_once_without_a_key_all_read_the_one_key_file_whole() {
        for round in 0..20 {
            let dir = std::env::temp_dir().join(format!("bridge-key-{}-{round}-{}", std::process::id(), rand::random::<u32>()));
            let mut config = Config::defaults();
            config.data_dir = dir.clone();
            let start = std::sync::Arc::new(std::sync::Barrier::new(8));
            let loaders: Vec<_> = (0..8)
                .map(|_| {
                    let (config, start) = (config.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        MasterKey::load(&config).map(|key| key.check_value)
                    })
                })
                .collect();
            let values: Vec<[u8; 32]> =
                loaders.into_iter().map(|l| l.join().unwrap().expect("every loader reads a whole key")).collect();
            assert!(values.windows(2).all(|w| w[0] == w[1]), "every loader has the same key");
            let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert_eq!(leftovers, ["master.key"], "no temporary file is left behind");
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}
