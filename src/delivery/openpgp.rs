//! The OpenPGP side of pattoo's encrypted exchange: the agent's key pair on
//! disk, and the few operations the exchange needs, in the forms GnuPG 2.2
//! (the pattoo server's `gpg`) reads: v4 keys, SEIPD v1 with MDC, never v6
//! or AEAD.
//!
//! The key pair lives in `{daemon_directory}/keys/{agent_program}/` (0700),
//! beside any keyring a Python agent keeps there (its `.keyring/` and
//! `{fingerprint}-{agent_id}` file are neither read nor touched):
//!
//! - `pattoo-agentd.key.asc`: the secret key, armored, locked with the
//!   passphrase (0600). An Ed25519 primary key (certify, sign) with a
//!   Curve25519 ECDH subkey (encrypt); the user id is
//!   `{agent_program} (Key pair generated for {agent_program}) <{agent_id}>`,
//!   the agent id in its own `<...>` token, which is how the server finds it.
//! - `pattoo-agentd.passphrase`: the passphrase, 64 hex digits from the
//!   operating system's CSPRNG (0600).
//! - `pattoo-agentd.lock`: held while the pair is read or made.
//!
//! The key file is written last, so it is the commit point: a pair that is
//! missing, unreadable or whose passphrase does not open it (a crash while
//! it was being made, an edit) is replaced by a new one. Nothing is lost by
//! that: the server forgets the agent's key after every exchange and takes
//! a new one as readily as the old.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pgp::composed::{
    ArmorOptions, Deserializable, EncryptionCaps, KeyType, Message, MessageBuilder,
    SecretKeyParamsBuilder, SignedPublicKey, SignedSecretKey, SubkeyParamsBuilder,
};
use pgp::crypto::ecc_curve::ECCCurve;
use pgp::crypto::hash::HashAlgorithm;
use pgp::crypto::sym::SymmetricKeyAlgorithm;
use pgp::types::{KeyDetails, Password, S2kParams, StringToKey};
use rand08::rngs::OsRng;
use rand08::RngCore;

use crate::durable;

pub const KEY_FILE: &str = "pattoo-agentd.key.asc";
pub const PASSPHRASE_FILE: &str = "pattoo-agentd.passphrase";
const LOCK_FILE: &str = "pattoo-agentd.lock";

/// How long to wait for another process making the same key pair.
const LOCK_PATIENCE: Duration = Duration::from_secs(30);

/// The S2K iteration count byte: the smallest (1024 bytes hashed). The
/// passphrases here are 256 random bits, which stretching cannot make any
/// harder to guess, and every exchange derives keys from them several times.
const S2K_COUNT: u8 = 0;

/// Why the key pair could not be had, or an OpenPGP operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{what}: {reason}")]
    Pgp { what: String, reason: String },
}

fn pgp_error(what: impl Into<String>) -> impl FnOnce(pgp::errors::Error) -> KeyError {
    let what = what.into();
    move |error| KeyError::Pgp {
        what,
        reason: error.to_string(),
    }
}

/// Where the key pair of `agent_program` lives.
pub fn key_directory(daemon_directory: &Path, agent_program: &str) -> PathBuf {
    daemon_directory.join("keys").join(agent_program)
}

/// The fingerprint of the key pair in `directory`, read without its
/// passphrase; `None` if none has been made. For `check`.
pub fn existing_fingerprint(directory: &Path) -> Result<Option<String>, KeyError> {
    let key_path = directory.join(KEY_FILE);
    let armored = match fs::read_to_string(&key_path) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(KeyError::Io {
                path: key_path,
                source,
            })
        }
    };
    let (secret, _) = SignedSecretKey::from_string(&armored)
        .map_err(pgp_error(format!("reading {}", key_path.display())))?;
    Ok(Some(hex::encode_upper(secret.fingerprint().as_bytes())))
}

/// The agent's key pair, unlocked for use.
pub struct Keyring {
    secret: SignedSecretKey,
    passphrase: Password,
    public_armored: String,
    fingerprint: String,
    agent_id: String,
    directory: PathBuf,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("fingerprint", &self.fingerprint)
            .field("agent_id", &self.agent_id)
            .field("directory", &self.directory)
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// Reads the key pair in `directory`, or makes one (and the directory,
    /// 0700) if there is none or it is unusable. Blocking file I/O.
    pub fn open_or_create(
        directory: &Path,
        agent_program: &str,
        agent_id: &str,
    ) -> Result<Keyring, KeyError> {
        let io_error = |path: &Path| {
            let path = path.to_owned();
            move |source| KeyError::Io { path, source }
        };
        durable::create_private_dir(directory).map_err(io_error(directory))?;
        let lock_path = directory.join(LOCK_FILE);
        let started = Instant::now();
        let _lock = loop {
            match durable::try_lock(&lock_path).map_err(io_error(&lock_path))? {
                Some(lock) => break lock,
                None if started.elapsed() < LOCK_PATIENCE => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                None => {
                    return Err(KeyError::Io {
                        path: lock_path,
                        source: io::Error::new(
                            io::ErrorKind::WouldBlock,
                            "another process holds the key pair's lock",
                        ),
                    })
                }
            }
        };
        let key_path = directory.join(KEY_FILE);
        match Keyring::read(directory, agent_id) {
            Ok(Some(keyring)) => return Ok(keyring),
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(file = %key_path.display(), %error, "the OpenPGP key pair cannot be used; making a new one (the pattoo server accepts a new key at the next exchange)");
            }
        }
        let (secret, passphrase) = generate(agent_program, agent_id)?;
        let armored = secret
            .to_armored_string(ArmorOptions::default())
            .map_err(pgp_error("writing the new secret key"))?;
        let passphrase_path = directory.join(PASSPHRASE_FILE);
        let suffix = format!(".{}.tmp", std::process::id());
        let passphrase_temporary = directory.join(format!("{PASSPHRASE_FILE}{suffix}"));
        let key_temporary = directory.join(format!("{KEY_FILE}{suffix}"));
        let write = || -> io::Result<()> {
            for temporary in [&passphrase_temporary, &key_temporary] {
                match fs::remove_file(temporary) {
                    Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
                    _ => {}
                }
            }
            durable::write_synced(&passphrase_temporary, passphrase.as_bytes())?;
            durable::write_synced(&key_temporary, armored.as_bytes())?;
            // The passphrase first: a key file is only ever beside the
            // passphrase that opens it, or beside none (then it is remade).
            fs::rename(&passphrase_temporary, &passphrase_path)?;
            durable::sync_dir(directory)?;
            fs::rename(&key_temporary, &key_path)?;
            durable::sync_dir(directory)?;
            // The directory's own entry, made with the pair.
            match directory.parent() {
                Some(parent) => durable::sync_dir(parent),
                None => Ok(()),
            }
        };
        let written = write();
        let _ = fs::remove_file(&passphrase_temporary);
        let _ = fs::remove_file(&key_temporary);
        written.map_err(io_error(&key_path))?;
        let keyring = Keyring::unlocked(secret, passphrase.into(), agent_id, directory)?;
        tracing::info!(fingerprint = %keyring.fingerprint, directory = %directory.display(), "made a new OpenPGP key pair for the encrypted exchange with the pattoo server");
        Ok(keyring)
    }

    /// The pair in `directory`; `None` if there is no key file.
    fn read(directory: &Path, agent_id: &str) -> Result<Option<Keyring>, KeyError> {
        let key_path = directory.join(KEY_FILE);
        let armored = match fs::read_to_string(&key_path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(KeyError::Io {
                    path: key_path,
                    source,
                })
            }
        };
        let passphrase_path = directory.join(PASSPHRASE_FILE);
        let passphrase = fs::read_to_string(&passphrase_path).map_err(|source| KeyError::Io {
            path: passphrase_path,
            source,
        })?;
        let (secret, _) = SignedSecretKey::from_string(&armored)
            .map_err(pgp_error(format!("reading {}", key_path.display())))?;
        let keyring = Keyring::unlocked(
            secret,
            passphrase.trim().to_owned().into(),
            agent_id,
            directory,
        )?;
        if !user_ids(&keyring.secret.details.users).contains(&format!("<{agent_id}>")) {
            return Err(KeyError::Pgp {
                what: key_path.display().to_string(),
                reason: format!("its user id does not name this agent id ({agent_id})"),
            });
        }
        Ok(Some(keyring))
    }

    /// Checks that the passphrase opens the key by a round trip through it.
    fn unlocked(
        secret: SignedSecretKey,
        passphrase: Password,
        agent_id: &str,
        directory: &Path,
    ) -> Result<Keyring, KeyError> {
        secret
            .verify_bindings()
            .map_err(pgp_error("checking the key's self-signatures"))?;
        let public = secret.to_public_key();
        let public_armored = public
            .to_armored_string(ArmorOptions::default())
            .map_err(pgp_error("writing the public key"))?;
        let keyring = Keyring {
            fingerprint: hex::encode_upper(secret.fingerprint().as_bytes()),
            secret,
            passphrase,
            public_armored,
            agent_id: agent_id.to_owned(),
            directory: directory.to_owned(),
        };
        let probe = encrypt_to(&public, b"probe")?;
        if keyring.decrypt(&probe)? != b"probe" {
            return Err(KeyError::Pgp {
                what: "checking the key pair".into(),
                reason: "it does not decrypt what is encrypted to it".into(),
            });
        }
        Ok(keyring)
    }

    /// The public key, armored, as `POST /key` sends it.
    pub fn public_armored(&self) -> &str {
        &self.public_armored
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The agent id in the key's user id: `pattoo_agent_email` in the exchange.
    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }

    pub fn directory(&self) -> &Path {
        &self.directory
    }

    /// Decrypts an armored message encrypted to this key.
    pub fn decrypt(&self, armored: &str) -> Result<Vec<u8>, KeyError> {
        let (message, _) =
            Message::from_string(armored).map_err(pgp_error("reading an encrypted message"))?;
        let decrypted = message
            .decrypt(&self.passphrase, &self.secret)
            .map_err(pgp_error("decrypting a message to this agent's key"))?;
        plaintext(decrypted)
    }
}

fn user_ids(users: &[pgp::types::SignedUser]) -> String {
    users
        .iter()
        .map(|user| String::from_utf8_lossy(user.id.id()).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A new key pair for `agent_id` and its passphrase.
fn generate(agent_program: &str, agent_id: &str) -> Result<(SignedSecretKey, String), KeyError> {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    let passphrase = hex::encode(bytes);
    let s2k = || {
        let mut iv = [0u8; 16];
        OsRng.fill_bytes(&mut iv);
        S2kParams::Cfb {
            sym_alg: SymmetricKeyAlgorithm::AES256,
            s2k: StringToKey::new_iterated(OsRng, HashAlgorithm::Sha256, S2K_COUNT),
            iv: iv.to_vec().into(),
        }
    };
    let invalid = |error: &dyn std::fmt::Display| KeyError::Pgp {
        what: "making a key pair".into(),
        reason: error.to_string(),
    };
    let subkey = SubkeyParamsBuilder::default()
        .key_type(KeyType::ECDH(ECCCurve::Curve25519Legacy))
        .can_encrypt(EncryptionCaps::All)
        .passphrase(Some(passphrase.clone()))
        .s2k(Some(s2k()))
        .build()
        .map_err(|e| invalid(&e))?;
    let params = SecretKeyParamsBuilder::default()
        .key_type(KeyType::Ed25519Legacy)
        .can_certify(true)
        .can_sign(true)
        .primary_user_id(format!(
            "{agent_program} (Key pair generated for {agent_program}) <{agent_id}>"
        ))
        .passphrase(Some(passphrase.clone()))
        .s2k(Some(s2k()))
        .preferred_symmetric_algorithms([SymmetricKeyAlgorithm::AES256].into_iter().collect())
        .preferred_hash_algorithms([HashAlgorithm::Sha256].into_iter().collect())
        .subkey(subkey)
        .build()
        .map_err(|e| invalid(&e))?;
    let mut secret = params.generate(OsRng).map_err(|e| invalid(&e))?;
    // Locking keeps the packet headers' lengths of the unlocked key; made
    // again, the packets have the right ones, and writing them does not
    // warn of a mismatch.
    secret.primary_key = pgp::packet::SecretKey::new(
        secret.primary_key.public_key().clone(),
        secret.primary_key.secret_params().clone(),
    )
    .map_err(|e| invalid(&e))?;
    for subkey in &mut secret.secret_subkeys {
        subkey.key = pgp::packet::SecretSubkey::new(
            subkey.key.public_key().clone(),
            subkey.key.secret_params().clone(),
        )
        .map_err(|e| invalid(&e))?;
    }
    Ok((secret, passphrase))
}

/// Reads an armored public key, as the server sends its own.
pub fn read_public_key(armored: &str) -> Result<SignedPublicKey, KeyError> {
    let (key, _) =
        SignedPublicKey::from_string(armored).map_err(pgp_error("reading the server's key"))?;
    key.verify_bindings()
        .map_err(pgp_error("checking the server key's self-signatures"))?;
    Ok(key)
}

/// Whether `key` has a user id with `<email>` in it.
pub fn names(key: &SignedPublicKey, email: &str) -> bool {
    user_ids(&key.details.users).contains(&format!("<{email}>"))
}

/// `data` encrypted to `key` (SEIPD v1, AES-256), armored: to an
/// encryption subkey if there is one, else to the primary key if its
/// algorithm can encrypt (gpg's RSA keys with usage `ESCA`).
pub fn encrypt_to(key: &SignedPublicKey, data: &[u8]) -> Result<String, KeyError> {
    let mut builder = MessageBuilder::from_bytes("", data.to_vec())
        .seipd_v1(OsRng, SymmetricKeyAlgorithm::AES256);
    let subkey = key.public_subkeys.iter().find(|subkey| {
        subkey.key.algorithm().can_encrypt()
            && subkey.signatures.iter().any(|signature| {
                let flags = signature.key_flags();
                flags.encrypt_comms() || flags.encrypt_storage()
            })
    });
    match subkey {
        Some(subkey) => builder.encrypt_to_key(OsRng, subkey),
        None if key.primary_key.algorithm().can_encrypt() => {
            builder.encrypt_to_key(OsRng, &key.primary_key)
        }
        None => {
            return Err(KeyError::Pgp {
                what: "encrypting to the server's key".into(),
                reason: "it has no key that can encrypt".into(),
            })
        }
    }
    .map_err(pgp_error("encrypting to the server's key"))?;
    builder
        .to_armored_string(OsRng, ArmorOptions::default())
        .map_err(pgp_error("encrypting to the server's key"))
}

/// `data` encrypted with `passphrase` as `gpg --symmetric --armor` does it
/// (SKESK v4, iterated and salted S2K, SEIPD v1 with AES-256).
pub fn encrypt_symmetric(data: &[u8], passphrase: &str) -> Result<String, KeyError> {
    let mut builder = MessageBuilder::from_bytes("", data.to_vec())
        .seipd_v1(OsRng, SymmetricKeyAlgorithm::AES256);
    builder
        .encrypt_with_password(
            StringToKey::new_iterated(OsRng, HashAlgorithm::Sha256, S2K_COUNT),
            &passphrase.into(),
        )
        .map_err(pgp_error("encrypting with the session's symmetric key"))?;
    builder
        .to_armored_string(OsRng, ArmorOptions::default())
        .map_err(pgp_error("encrypting with the session's symmetric key"))
}

/// Decrypts an armored message made with [`encrypt_symmetric`] or
/// `gpg --symmetric`.
pub fn decrypt_symmetric(armored: &str, passphrase: &str) -> Result<Vec<u8>, KeyError> {
    let (message, _) =
        Message::from_string(armored).map_err(pgp_error("reading an encrypted message"))?;
    let decrypted = message
        .decrypt_with_password(&passphrase.into())
        .map_err(pgp_error("decrypting with a passphrase"))?;
    plaintext(decrypted)
}

fn plaintext(mut message: Message<'_>) -> Result<Vec<u8>, KeyError> {
    if message.is_compressed() {
        message = message
            .decompress()
            .map_err(pgp_error("decompressing a decrypted message"))?;
    }
    message.as_data_vec().map_err(|error| KeyError::Pgp {
        what: "reading a decrypted message".into(),
        reason: error.to_string(),
    })
}

/// A new symmetric key for one session: 64 hex digits (256 bits) from the
/// operating system's CSPRNG. Any printable passphrase does for gpg.
pub fn session_key() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const ID: &str = "1f0a9b7e8d1c2b3a4f5e6d7c8b9a0f1e2d3c4b5a69788796a5b4c3d2e1f00112";

    #[test]
    fn a_key_pair_is_made_once_kept_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let keys = key_directory(dir.path(), "pattoo_agentd_self");
        let made = Keyring::open_or_create(&keys, "pattoo_agentd_self", ID).unwrap();
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&keys), 0o700);
        assert_eq!(mode(&keys.join(KEY_FILE)), 0o600);
        assert_eq!(mode(&keys.join(PASSPHRASE_FILE)), 0o600);
        let read = Keyring::open_or_create(&keys, "pattoo_agentd_self", ID).unwrap();
        assert_eq!(made.fingerprint(), read.fingerprint());
        assert_eq!(
            existing_fingerprint(&keys).unwrap().as_deref(),
            Some(made.fingerprint())
        );
        assert_eq!(
            existing_fingerprint(&dir.path().join("none")).unwrap(),
            None
        );
        assert!(made.public_armored().contains("BEGIN PGP PUBLIC KEY BLOCK"));
        let public = read_public_key(made.public_armored()).unwrap();
        assert!(names(&public, ID));
        assert_eq!(public.primary_key.version(), pgp::types::KeyVersion::V4);
        let secret_text = fs::read_to_string(keys.join(KEY_FILE)).unwrap();
        assert!(secret_text.contains("BEGIN PGP PRIVATE KEY BLOCK"));
        let leftovers: Vec<_> = fs::read_dir(&keys)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn a_key_pair_the_passphrase_does_not_open_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let made = Keyring::open_or_create(dir.path(), "p", ID).unwrap();
        fs::write(dir.path().join(PASSPHRASE_FILE), "not it").unwrap();
        let remade = Keyring::open_or_create(dir.path(), "p", ID).unwrap();
        assert_ne!(made.fingerprint(), remade.fingerprint());
        let again = Keyring::open_or_create(dir.path(), "p", ID).unwrap();
        assert_eq!(again.fingerprint(), remade.fingerprint());
    }

    #[test]
    fn a_key_pair_for_another_agent_id_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let made = Keyring::open_or_create(dir.path(), "p", ID).unwrap();
        let other = Keyring::open_or_create(dir.path(), "p", "abc").unwrap();
        assert_ne!(made.fingerprint(), other.fingerprint());
        assert!(names(
            &read_public_key(other.public_armored()).unwrap(),
            "abc"
        ));
    }

    #[test]
    fn what_is_encrypted_to_a_key_or_a_passphrase_decrypts_again() {
        let dir = tempfile::tempdir().unwrap();
        let keyring = Keyring::open_or_create(dir.path(), "p", ID).unwrap();
        let public = read_public_key(keyring.public_armored()).unwrap();
        let message = encrypt_to(&public, b"nonce").unwrap();
        assert_eq!(keyring.decrypt(&message).unwrap(), b"nonce");
        let key = session_key();
        assert_eq!(key.len(), 64);
        assert_ne!(key, session_key());
        let message = encrypt_symmetric(b"{\"data\": {}}", &key).unwrap();
        assert!(message.contains("BEGIN PGP MESSAGE"));
        assert_eq!(
            decrypt_symmetric(&message, &key).unwrap(),
            b"{\"data\": {}}"
        );
        assert!(decrypt_symmetric(&message, "wrong").is_err());
    }
}
