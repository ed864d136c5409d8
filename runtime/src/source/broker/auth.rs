//! Who may connect to the embedded broker: users from a password file
//! (`broker.password_file`, one `username:hash` a line, the hash bcrypt as `htpasswd -B`
//! writes it or argon2 in its PHC form), anonymous clients if `broker.allow_anonymous`,
//! and, on a TLS listener that requires client certificates, whoever presented one (the
//! certificate's common name is then the username; `mod.rs`).
//!
//! [`Passwords`] reads and checks the file; [`AuthHook`] answers rmqtt's
//! `client.authenticate` hook with it. A hash is checked on a blocking thread: bcrypt
//! and argon2 take tens of milliseconds by design, which must not hold a runtime
//! thread. Not here: what a client may do once in (`acl.rs`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::bail;
use async_trait::async_trait;
use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType};
use rmqtt::types::AuthResult;

/// The users of a password file and their hashes.
#[derive(Clone, Default)]
pub struct Passwords {
    users: HashMap<String, Hash>,
}

/// A stored password hash.
#[derive(Clone)]
enum Hash {
    /// `$2a$`, `$2b$`, `$2y$` (htpasswd -B).
    Bcrypt(String),
    /// `$argon2id$`, `$argon2i$`, `$argon2d$` (PHC string).
    Argon2(String),
}

impl Passwords {
    /// Reads `file`: `username:hash` lines; empty lines and lines starting with `#` are
    /// skipped.
    ///
    /// # Errors
    ///
    /// When the file cannot be read, or a line (named by number) has no `:`, an empty
    /// or repeated username, or a hash that is neither bcrypt nor argon2. The hashes
    /// themselves are never shown.
    pub fn from_file(file: &Path) -> anyhow::Result<Passwords> {
        let text = std::fs::read_to_string(file).map_err(|e| {
            anyhow::anyhow!("broker.password_file: cannot read {}: {e}", file.display())
        })?;
        Self::parse(&text)
            .map_err(|e| anyhow::anyhow!("broker.password_file: {}: {e}", file.display()))
    }

    fn parse(text: &str) -> anyhow::Result<Passwords> {
        let mut users = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                bail!("line {}: expected username:hash", n + 1);
            };
            if user.is_empty() {
                bail!("line {}: empty username", n + 1);
            }
            let hash = if ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) {
                hash.parse::<bcrypt::HashParts>()
                    .map_err(|e| anyhow::anyhow!("line {}: user {user:?}: {e}", n + 1))?;
                Hash::Bcrypt(hash.to_owned())
            } else if hash.starts_with("$argon2") {
                argon2::PasswordHash::new(hash)
                    .map_err(|e| anyhow::anyhow!("line {}: user {user:?}: {e}", n + 1))?;
                Hash::Argon2(hash.to_owned())
            } else {
                bail!(
                    "line {}: user {user:?}: the hash is neither bcrypt ($2y$...) nor argon2 \
                     ($argon2id$...)",
                    n + 1
                );
            };
            if users.insert(user.to_owned(), hash).is_some() {
                bail!("line {}: user {user:?} appears twice", n + 1);
            }
        }
        Ok(Passwords { users })
    }

    /// Whether `password` is `user`'s. Slow on purpose (the hash's cost): call it on a
    /// blocking thread.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        match self.users.get(user) {
            None => false,
            Some(Hash::Bcrypt(h)) => bcrypt::verify(password, h).unwrap_or(false),
            Some(Hash::Argon2(h)) => {
                use argon2::PasswordVerifier;
                argon2::PasswordHash::new(h).is_ok_and(|parsed| {
                    argon2::Argon2::default()
                        .verify_password(password, &parsed)
                        .is_ok()
                })
            }
        }
    }
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut users: Vec<&String> = self.users.keys().collect();
        users.sort();
        f.debug_struct("Passwords").field("users", &users).finish()
    }
}

/// Answers `client.authenticate` (rmqtt asks only for clients with a username, and for
/// anonymous ones when they are not allowed).
pub(super) struct AuthHook {
    /// `None`: no password file; a username is not checked.
    pub passwords: Option<Arc<Passwords>>,
    /// The listener (by id, its port) whose clients a certificate authenticated.
    pub certificate_listener: Option<u16>,
}

#[async_trait]
impl Handler for AuthHook {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        let Parameter::ClientAuthenticate(info) = param else {
            return (true, acc);
        };
        let allow = || HookResult::AuthResult(AuthResult::Allow(false, None));
        if self.certificate_listener == Some(info.id().lid) {
            // The TLS handshake checked the certificate, whose name is the username.
            return (false, Some(allow()));
        }
        let Some(passwords) = &self.passwords else {
            // No password file: the listener's allow_anonymous decides.
            return (true, acc);
        };
        let Some(user) = info.username() else {
            return (
                false,
                Some(HookResult::AuthResult(AuthResult::NotAuthorized)),
            );
        };
        let (user, password) = (user.to_string(), info.password().cloned());
        let passwords = passwords.clone();
        let ok = tokio::task::spawn_blocking(move || {
            password.is_some_and(|p| passwords.verify(&user, &p))
        })
        .await
        .unwrap_or(false);
        if ok {
            (false, Some(allow()))
        } else {
            (
                false,
                Some(HookResult::AuthResult(AuthResult::BadUsernameOrPassword)),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcrypt_and_argon2_lines_and_named_mistakes() {
        let bcrypt = bcrypt::hash("pw-b", 4).unwrap();
        let argon2 = {
            use argon2::PasswordHasher;
            let salt = argon2::password_hash::SaltString::from_b64("c2FsdHNhbHRzYWx0").unwrap();
            argon2::Argon2::default()
                .hash_password(b"pw-a", &salt)
                .unwrap()
                .to_string()
        };
        let p = Passwords::parse(&format!("# users\nbob:{bcrypt}\n\nann:{argon2}\n")).unwrap();
        assert!(p.verify("bob", b"pw-b"));
        assert!(!p.verify("bob", b"pw-a"));
        assert!(p.verify("ann", b"pw-a"));
        assert!(!p.verify("ann", b"pw-b"));
        assert!(!p.verify("eve", b"pw-a"));
        assert!(!format!("{p:?}").contains('$'), "{p:?}");

        let err = |t: &str| Passwords::parse(t).unwrap_err().to_string();
        assert_eq!(err("bob"), "line 1: expected username:hash");
        assert!(
            err("bob:plain").contains("neither bcrypt"),
            "{}",
            err("bob:plain")
        );
        assert!(
            err(&format!("bob:{bcrypt}\nbob:{bcrypt}"))
                .contains("line 2: user \"bob\" appears twice")
        );
        assert!(err("bob:$2y$10$short").starts_with("line 1: user \"bob\""));
    }
}
