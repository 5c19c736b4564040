//! Secrets at rest: a secret value is sealed (ChaCha20-Poly1305, a fresh
//! random nonce for each new value; a run's inputs, state and checkpoints
//! write an unchanged one as they sealed it before, see [`Memo`]) before it goes into
//! a store, and unsealed when a run resumes. The key is never in the store: it comes from
//! `HANDOFF_STORE_KEY` (32 random bytes, base64, as `openssl rand -base64 32`
//! prints them), or from a key file beside the database, created on first
//! use with mode 0600.
//!
//! A sealed value is `{"$sealed": "BASE64(nonce ‖ ciphertext)"}`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use indexmap::IndexMap;
use serde_json::{Value, json};

use crate::run::state::{Each, RunState};

const SEALED: &str = "$sealed";
const NONCE_LEN: usize = 12;

/// Where the key came from, for messages and docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Env,
    File(PathBuf),
    /// Created just now, at this path.
    NewFile(PathBuf),
}

pub struct Sealer {
    cipher: ChaCha20Poly1305,
    /// A second key, derived from the store's, that signs resume URLs: one
    /// key to keep, and never the sealing key itself on the wire.
    resume: [u8; 32],
}

impl Sealer {
    pub fn from_key(key: &[u8; 32]) -> Sealer {
        use hmac::Mac;
        let mut mac =
            <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("any key length");
        mac.update(b"handoff resume URLs v1");
        Sealer {
            cipher: ChaCha20Poly1305::new(Key::from_slice(key)),
            resume: mac.finalize().into_bytes().into(),
        }
    }

    /// The key resume URLs are signed with.
    pub fn resume_key(&self) -> [u8; 32] {
        self.resume
    }

    /// The key from `$HANDOFF_STORE_KEY`, else from `key_file`, created when
    /// it does not exist yet.
    pub fn load(
        env: &dyn Fn(&str) -> Option<String>,
        key_file: &Path,
    ) -> Result<(Sealer, KeySource), String> {
        if let Some(text) = env("HANDOFF_STORE_KEY").filter(|t| !t.trim().is_empty()) {
            return Ok((Sealer::from_key(&decode_key(&text)?), KeySource::Env));
        }
        match std::fs::read_to_string(key_file) {
            Ok(text) => Ok((
                Sealer::from_key(
                    &decode_key(&text)
                        .map_err(|e| format!("the key file `{}`: {e}", key_file.display()))?,
                ),
                KeySource::File(key_file.to_path_buf()),
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = ChaCha20Poly1305::generate_key(&mut OsRng);
                write_key_file(key_file, &key)?;
                let mut bytes = [0u8; 32];
                bytes.copy_from_slice(&key);
                Ok((
                    Sealer::from_key(&bytes),
                    KeySource::NewFile(key_file.to_path_buf()),
                ))
            }
            Err(e) => Err(format!(
                "cannot read the key file `{}`: {}",
                key_file.display(),
                crate::language::source::io_reason(&e)
            )),
        }
    }

    pub fn seal(&self, value: &Value) -> Value {
        let plain = serde_json::to_vec(value).unwrap_or_default();
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        // Encryption fails only on inputs over 256 GB.
        let sealed = self
            .cipher
            .encrypt(&nonce, plain.as_slice())
            .unwrap_or_default();
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        json!({ SEALED: base64::engine::general_purpose::STANDARD.encode(bytes) })
    }

    /// Whether a stored value is a sealed secret.
    pub fn is_sealed(value: &Value) -> bool {
        value.get(SEALED).is_some_and(Value::is_string)
    }

    /// A sealed value's content; anything else as it is.
    pub fn unseal(&self, value: &Value) -> Result<Value, String> {
        let Some(text) = value.get(SEALED).and_then(Value::as_str) else {
            return Ok(value.clone());
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| "a sealed value is damaged".to_string())?;
        if bytes.len() < NONCE_LEN {
            return Err("a sealed value is damaged".to_string());
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), sealed)
            .map_err(|_| {
                "a secret in the store cannot be opened with this key: is HANDOFF_STORE_KEY (or the key file) the one the run started with?".to_string()
            })?;
        serde_json::from_slice(&plain).map_err(|_| "a sealed value is damaged".to_string())
    }

    /// A copy of `fields` with the named ones sealed.
    pub fn seal_fields<'a>(
        &self,
        fields: &IndexMap<String, Value>,
        secret: impl Fn(&str) -> bool + 'a,
    ) -> IndexMap<String, Value> {
        fields
            .iter()
            .map(|(k, v)| {
                let v = if secret(k) { self.seal(v) } else { v.clone() };
                (k.clone(), v)
            })
            .collect()
    }

    /// `value` of field `name` sealed, or as `memo` sealed it last time when
    /// it has not changed since.
    fn seal_remembered(&self, memo: Option<&Memo>, name: &str, value: &Value) -> Value {
        let Some(memo) = memo else {
            return self.seal(value);
        };
        let mut kept = memo.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, plain, sealed)) = kept.iter().find(|(n, _, _)| n == name)
            && plain == value
        {
            return sealed.clone();
        }
        let sealed = self.seal(value);
        kept.retain(|(n, _, _)| n != name);
        kept.push((name.to_string(), value.clone(), sealed.clone()));
        sealed
    }

    /// A run's state as JSON, its secret fields sealed, with `each` (the
    /// `for_each` under way, sealed by the caller) in place of its own.
    pub fn state_json(
        &self,
        state: &RunState,
        each: Option<Box<Each>>,
        memo: Option<&Memo>,
    ) -> String {
        let secret = |name: &str| state.secret.contains(name);
        // Everything but the fields, then the fields, sealed as they are
        // written, in their place: `fields` is the state's first member.
        let mut others = RunState {
            fields: Arc::default(),
            each,
            ..state.clone()
        };
        let json = serde_json::to_string(&others).unwrap_or_default();
        let Some(rest) = json.strip_prefix(r#"{"fields":{}"#) else {
            others.fields = Arc::new(self.seal_fields(&state.fields, secret));
            return serde_json::to_string(&others).unwrap_or_default();
        };
        let mut out = Vec::with_capacity(rest.len() + 64 * state.fields.len());
        out.extend_from_slice(br#"{"fields":"#);
        let fields = state.fields.iter().map(|(k, v)| (k.as_str(), v));
        self.write_fields(&mut out, fields, secret, memo);
        out.extend_from_slice(rest.as_bytes());
        String::from_utf8(out).unwrap_or_default()
    }

    /// `fields` as a JSON object, the secret ones sealed (as `memo` sealed
    /// them last, when unchanged).
    pub fn fields_json<'a>(
        &self,
        fields: impl Iterator<Item = (&'a str, &'a Value)>,
        secret: impl Fn(&str) -> bool,
        memo: Option<&Memo>,
    ) -> String {
        let mut out = Vec::with_capacity(256);
        self.write_fields(&mut out, fields, secret, memo);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Sealed as they are written, not copied first (a poll's list of tasks,
    /// say), and by the trace's writer: serde_json escapes a string a byte
    /// at a time.
    fn write_fields<'a>(
        &self,
        out: &mut Vec<u8>,
        fields: impl Iterator<Item = (&'a str, &'a Value)>,
        secret: impl Fn(&str) -> bool,
        memo: Option<&Memo>,
    ) {
        out.push(b'{');
        for (i, (name, value)) in fields.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            crate::run::jsonl::write_str(out, name);
            out.push(b':');
            if secret(name) {
                let sealed = self.seal_remembered(memo, name, value);
                crate::run::jsonl::write_value(out, &sealed);
            } else {
                crate::run::jsonl::write_value(out, value);
            }
        }
        out.push(b'}');
    }

    /// Every sealed value in `fields` opened.
    pub fn unseal_fields(
        &self,
        fields: &IndexMap<String, Value>,
    ) -> Result<IndexMap<String, Value>, String> {
        fields
            .iter()
            .map(|(k, v)| Ok((k.clone(), self.unseal(v)?)))
            .collect()
    }
}

pub fn decode_key(text: &str) -> Result<[u8; 32], String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| "HANDOFF_STORE_KEY must be base64, as `openssl rand -base64 32` prints it")?;
    bytes.try_into().map_err(|_| {
        "HANDOFF_STORE_KEY must be 32 bytes, as `openssl rand -base64 32` prints them".to_string()
    })
}

fn write_key_file(path: &Path, key: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| {
        format!(
            "cannot create the key file `{}`: {}",
            path.display(),
            crate::language::source::io_reason(&e)
        )
    })?;
    let text = base64::engine::general_purpose::STANDARD.encode(key);
    writeln!(file, "{text}").map_err(|e| format!("cannot write the key file: {e}"))
}

/// A run's secret values as last sealed, by field: a value unchanged since
/// the run was made, or since its last checkpoint, is written as it was
/// sealed then, rather than sealed again (a cipher and a random nonce, from
/// the system, at every checkpoint for the token). The same text for the same value tells only that it did
/// not change, which the run's own trace says.
#[derive(Default)]
pub struct Memo(std::sync::Mutex<Vec<(String, Value, Value)>>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealing_round_trips_and_hides_the_value() {
        let sealer = Sealer::from_key(&[7; 32]);
        let value = json!("canary-7f3a+9c/1d=ee");
        let sealed = sealer.seal(&value);
        let text = sealed.to_string();
        assert!(!text.contains("canary"));
        assert_ne!(sealer.seal(&value), sealed, "a fresh nonce each time");
        assert_eq!(sealer.unseal(&sealed).unwrap(), value);
        let other = Sealer::from_key(&[8; 32]);
        assert!(
            other
                .unseal(&sealed)
                .unwrap_err()
                .contains("cannot be opened")
        );
        assert_eq!(sealer.unseal(&json!(3)).unwrap(), json!(3));
    }

    /// The state written with its fields sealed as they go reads back as
    /// the state whole, every member in its place, the secret one sealed.
    #[test]
    fn a_state_is_written_with_its_secret_fields_sealed() {
        let sealer = Sealer::from_key(&[7; 32]);
        let mut fields = IndexMap::new();
        fields.insert("token".to_string(), json!("canary-7f3a+9c/1d=ee"));
        fields.insert("tasks".to_string(), json!([{"id": "t-1", "n": [1, 2]}]));
        fields.insert("tries".to_string(), json!(3));
        let state = RunState {
            fields: Arc::new(fields),
            secret: ["token".to_string()].into(),
            pc: 4,
            steps_taken: 9,
            last_seq: 17,
            traceparent: Some("00-ab-cd-01".into()),
            ..RunState::default()
        };
        let text = sealer.state_json(&state, None, None);
        assert!(!text.contains("canary"), "{text}");
        let mut written: Value = serde_json::from_str(&text).unwrap();
        let token = &written["fields"]["token"];
        assert!(Sealer::is_sealed(token), "{text}");
        let opened = sealer.unseal(token).unwrap();
        written["fields"]["token"] = opened;
        assert_eq!(written, serde_json::to_value(&state).unwrap());
        let back: RunState = serde_json::from_str(&text).unwrap();
        assert_eq!((back.pc, back.last_seq), (4, 17));
    }

    /// A value unchanged since the last checkpoint is written as it was
    /// sealed then; a changed one is sealed anew, and opens to the new value.
    #[test]
    fn a_memo_seals_a_value_again_only_when_it_changed() {
        let sealer = Sealer::from_key(&[7; 32]);
        let memo = Memo::default();
        let mut fields = IndexMap::new();
        fields.insert("token".to_string(), json!("canary-7f3a+9c/1d=ee"));
        let mut state = RunState {
            fields: Arc::new(fields),
            secret: ["token".to_string()].into(),
            ..RunState::default()
        };
        let token =
            |text: &str| serde_json::from_str::<Value>(text).unwrap()["fields"]["token"].clone();
        let first = token(&sealer.state_json(&state, None, Some(&memo)));
        let again = token(&sealer.state_json(&state, None, Some(&memo)));
        assert_eq!(first, again, "unchanged: the same sealed text");
        assert_ne!(
            token(&sealer.state_json(&state, None, None)),
            first,
            "no memo: sealed anew"
        );
        Arc::make_mut(&mut state.fields).insert("token".to_string(), json!("canary-2"));
        let changed = token(&sealer.state_json(&state, None, Some(&memo)));
        assert_ne!(changed, first);
        assert_eq!(sealer.unseal(&changed).unwrap(), json!("canary-2"));
        assert_eq!(
            sealer.unseal(&first).unwrap(),
            json!("canary-7f3a+9c/1d=ee")
        );
    }

    /// A run's inputs are written as serde_json writes the sealed map, and
    /// share their sealed token with the state written after them.
    #[test]
    fn inputs_and_state_seal_a_secret_once_between_them() {
        let sealer = Sealer::from_key(&[7; 32]);
        let memo = Memo::default();
        let mut fields = IndexMap::new();
        fields.insert("token".to_string(), json!("canary-7f3a+9c/1d=ee"));
        fields.insert("note".to_string(), json!("tab\there \"quoted\" é"));
        fields.insert("tries".to_string(), json!(3));
        let state = RunState {
            fields: Arc::new(fields.clone()),
            secret: ["token".to_string()].into(),
            ..RunState::default()
        };
        let secret = |name: &str| name == "token";
        let inputs = sealer.fields_json(
            fields.iter().map(|(k, v)| (k.as_str(), v)),
            secret,
            Some(&memo),
        );
        let read: IndexMap<String, Value> = serde_json::from_str(&inputs).unwrap();
        let mut expected = sealer.seal_fields(&fields, secret);
        expected.insert("token".to_string(), read["token"].clone());
        assert_eq!(inputs, serde_json::to_string(&expected).unwrap());
        assert!(!inputs.contains("canary"));
        let stored: Value =
            serde_json::from_str(&sealer.state_json(&state, None, Some(&memo))).unwrap();
        assert_eq!(stored["fields"]["token"], read["token"], "sealed once");
        assert_eq!(
            sealer.unseal(&read["token"]).unwrap(),
            json!("canary-7f3a+9c/1d=ee")
        );
    }

    #[test]
    fn the_key_comes_from_the_environment_or_a_private_file() {
        let dir = std::env::temp_dir().join(format!("handoff-seal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("handoff.db.key");
        let _ = std::fs::remove_file(&file);
        let none = |_: &str| None;
        let (first, source) = Sealer::load(&none, &file).unwrap();
        assert_eq!(source, KeySource::NewFile(file.clone()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let sealed = first.seal(&json!("x"));
        let (again, source) = Sealer::load(&none, &file).unwrap();
        assert_eq!(source, KeySource::File(file.clone()));
        assert_eq!(again.unseal(&sealed).unwrap(), json!("x"));
        let key = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
        let env = move |v: &str| (v == "HANDOFF_STORE_KEY").then(|| key.clone());
        assert_eq!(Sealer::load(&env, &file).unwrap().1, KeySource::Env);
        let bad = |v: &str| (v == "HANDOFF_STORE_KEY").then(|| "YWJj".to_string());
        assert!(
            Sealer::load(&bad, &file)
                .err()
                .unwrap()
                .contains("32 bytes")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
