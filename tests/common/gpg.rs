//! GnuPG 2.2 (`gpg`) with a temporary home, doing what the pattoo server's
//! python-gnupg does: make a key, import the agent's, encrypt to it,
//! decrypt with its own key, and the symmetric encryption of the exchange.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// A `gpg` with its own GNUPGHOME, removed when dropped.
pub struct Gpg {
    home: tempfile::TempDir,
}

/// `gpg` if it runs here; otherwise says on stderr that `test` was skipped
/// and returns `None`. Under `CI=true` a missing gpg fails the test.
pub fn gpg(test: &str) -> Option<Gpg> {
    let version = Command::new("gpg").arg("--version").output();
    let why = match version {
        Ok(out) if out.status.success() => {
            let home = tempfile::Builder::new()
                .prefix("gnupg")
                .tempdir()
                .expect("a temporary GNUPGHOME");
            return Some(Gpg { home });
        }
        Ok(out) => format!("`gpg --version` failed: {}", out.status),
        Err(error) => format!("gpg cannot be run ({error}); install Debian's gnupg"),
    };
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI must run {test}, but {why}"
    );
    // Straight to stderr: the test harness would hide a println!.
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
    None
}

impl Gpg {
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// Runs gpg in batch mode with `args`, `input` on stdin; its stdout.
    pub fn run(&self, args: &[&str], input: &[u8]) -> Vec<u8> {
        let mut child = Command::new("gpg")
            .arg("--homedir")
            .arg(self.home.path())
            .args([
                "--batch",
                "--no-tty",
                "--quiet",
                "--pinentry-mode",
                "loopback",
            ])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("gpg runs");
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        assert!(
            out.status.success(),
            "gpg {args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Makes a key as the pattoo server's `Encryption` does (an RSA
    /// primary key that also encrypts, no subkey; 2048 bits here, which is
    /// the same shape as its 4096 and quicker to make), with `email` as
    /// the user id's address. Returns the fingerprint.
    pub fn make_key(&self, program: &str, email: &str) -> String {
        let parameters = format!(
            "Key-Type: RSA\nKey-Length: 2048\nName-Real: {program}\n\
             Name-Comment: Key pair generated for {program}\nName-Email: {email}\n\
             %no-protection\n%commit\n"
        );
        self.run(&["--gen-key"], parameters.as_bytes());
        self.fingerprint(email)
    }

    /// The fingerprint of the key with `<email>` in its user id.
    pub fn fingerprint(&self, email: &str) -> String {
        let listing = self.run(
            &["--with-colons", "--list-keys", &format!("<{email}>")],
            b"",
        );
        String::from_utf8(listing)
            .unwrap()
            .lines()
            .find_map(|line| line.strip_prefix("fpr:"))
            .map(|rest| rest.trim_matches(':').to_owned())
            .expect("a fingerprint")
    }

    /// The public key with `<email>` in its user id, armored.
    pub fn export(&self, email: &str) -> String {
        String::from_utf8(self.run(&["--armor", "--export", &format!("<{email}>")], b"")).unwrap()
    }

    pub fn import(&self, armored: &str) {
        self.run(&["--import"], armored.as_bytes());
    }

    /// `data` encrypted to the key with `<email>` in its user id, trusted
    /// as the server trusts the agent's key.
    pub fn encrypt_to(&self, email: &str, data: &[u8]) -> String {
        String::from_utf8(self.run(
            &[
                "--armor",
                "--trust-model",
                "always",
                "--encrypt",
                "--recipient",
                &format!("<{email}>"),
            ],
            data,
        ))
        .unwrap()
    }

    /// Decrypts a message to one of this home's keys.
    pub fn decrypt(&self, armored: &str) -> Vec<u8> {
        self.run(&["--decrypt"], armored.as_bytes())
    }

    /// `gpg --symmetric --armor` with `passphrase`.
    pub fn encrypt_symmetric(&self, data: &[u8], passphrase: &str) -> String {
        String::from_utf8(self.run(
            &["--armor", "--passphrase", passphrase, "--symmetric"],
            data,
        ))
        .unwrap()
    }

    /// Decrypts a passphrase-encrypted message.
    pub fn decrypt_symmetric(&self, armored: &str, passphrase: &str) -> Vec<u8> {
        self.run(
            &["--passphrase", passphrase, "--decrypt"],
            armored.as_bytes(),
        )
    }

    /// `gpg --list-packets` of a message, to see its packet versions.
    pub fn list_packets(&self, armored: &str) -> String {
        let mut child = Command::new("gpg")
            .arg("--homedir")
            .arg(self.home.path())
            .args(["--batch", "--list-packets", "--pinentry-mode", "loopback"])
            .args(["--passphrase", ""])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("gpg runs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(armored.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}
