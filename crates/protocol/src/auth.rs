//! Bearer tokens, compatible with Gazette's: HS256 (or HS384) JWTs whose claims grant
//! capabilities (`cap`, a bitmask) over the journals a label selector (`sel`) matches,
//! until `exp`.
//!
//! Keys are pre-shared secrets, given base64-encoded and separated by commas or spaces
//! ([`Keys::parse`]): the first signs, every one verifies, so a key is rotated by
//! prepending the new one, restarting, and dropping the old one once no token signed by
//! it is still in use. The special key `AA==` (a single zero byte) lets requests without
//! a token through, for rolling authorization out over a running cluster.
//!
//! A token is sent as gRPC metadata (or an HTTP header) `authorization: Bearer <token>`.
//! Verification ([`Keys::verify`]) answers either the token's [`Claims`] or a
//! [`Denied`] that says what failed: `UNAUTHENTICATED` when the token itself is missing,
//! malformed, expired or signed by no known key, `PERMISSION_DENIED` when a valid token
//! lacks a capability or its selector does not cover the journal.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::proto::{Label, LabelSelector, LabelSet};

/// The metadata key (and HTTP header) a bearer token travels in.
pub const AUTHORIZATION: &str = "authorization";
/// Clock skew tolerated on `exp` and `iat`, as Gazette tolerates it.
const LEEWAY_SECS: u64 = 5;
/// The key that admits requests without a token.
const ALLOW_MISSING: &str = "AA==";

/// A set of capabilities: what a token lets its holder do.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Capability(pub u32);

impl Capability {
    /// List journals (and shards).
    pub const LIST: Self = Self(1 << 1);
    /// Create, change and delete journals (and shards).
    pub const APPLY: Self = Self(1 << 2);
    /// Read journals and list their fragments.
    pub const READ: Self = Self(1 << 3);
    /// Append to journals.
    pub const APPEND: Self = Self(1 << 4);
    /// Replicate journals between brokers.
    pub const REPLICATE: Self = Self(1 << 5);
    /// Every capability Folio checks.
    pub const ALL: Self =
        Self(Self::LIST.0 | Self::APPLY.0 | Self::READ.0 | Self::APPEND.0 | Self::REPLICATE.0);

    const NAMED: [(&'static str, Self); 5] = [
        ("LIST", Self::LIST),
        ("APPLY", Self::APPLY),
        ("READ", Self::READ),
        ("APPEND", Self::APPEND),
        ("REPLICATE", Self::REPLICATE),
    ];

    /// Whether every capability of `other` is in `self`.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Parses a comma-separated list of names (`read,append`, any case; `all` for
    /// every one). The error names the unknown entry and the known names.
    pub fn parse_list(text: &str) -> Result<Self, String> {
        let mut bits = 0;
        for word in text.split(',').map(str::trim) {
            if word.eq_ignore_ascii_case("all") {
                bits |= Self::ALL.0;
                continue;
            }
            let Some((_, cap)) = Self::NAMED
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(word))
            else {
                return Err(format!(
                    "{word:?} is not a capability (expected a comma-separated list of \
                     list, apply, read, append, replicate, or all)"
                ));
            };
            bits |= cap.0;
        }
        Ok(Self(bits))
    }
}

/// Names, joined by `|` (`READ|APPEND`); bits without a name are shown in binary.
impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<String> = Self::NAMED
            .iter()
            .filter(|(_, cap)| self.contains(*cap))
            .map(|(name, _)| (*name).to_owned())
            .collect();
        let unnamed = self.0 & !Self::ALL.0;
        if unnamed != 0 {
            names.push(format!("{unnamed:#b}"));
        }
        if names.is_empty() {
            return f.write_str("none");
        }
        f.write_str(&names.join("|"))
    }
}

impl fmt::Debug for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Capability({self})")
    }
}

/// What a token grants, as Gazette encodes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// The capabilities granted.
    #[serde(rename = "cap", default, with = "cap_bits")]
    pub capability: Capability,
    /// The journals they are granted over (empty: every journal).
    #[serde(rename = "sel", default, with = "selector_json")]
    pub selector: LabelSelector,
    /// Who the token was minted for, if anyone said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// When it was issued (seconds since the Unix epoch).
    #[serde(default)]
    pub iat: u64,
    /// When it expires (seconds since the Unix epoch).
    pub exp: u64,
}

impl Claims {
    /// Claims granting `capability` over what `selector` matches, for `ttl` from now.
    pub fn new(capability: Capability, selector: LabelSelector, ttl: Duration) -> Self {
        let now = unix_now();
        Self {
            capability,
            selector,
            sub: None,
            iat: now,
            exp: now.saturating_add(ttl.as_secs().max(1)),
        }
    }

    /// What a broker without keys grants every request: everything.
    pub fn unrestricted() -> Self {
        Self::new(
            Capability::ALL,
            LabelSelector::default(),
            Duration::from_secs(100 * 365 * 24 * 3600),
        )
    }

    /// Checks that the token grants every capability of `required`.
    pub fn require(&self, required: Capability) -> Result<(), Denied> {
        if self.capability.contains(required) {
            return Ok(());
        }
        Err(Denied::Capability {
            missing: Capability(required.0 & !self.capability.0),
            have: self.capability,
        })
    }

    /// Whether the token's selector covers the journal `name` with `labels` (its
    /// meta-labels `name` and `prefix` take part). A journal that does not exist is
    /// judged by its meta-labels alone, so the answer for a name the token cannot see is
    /// the same whether or not the journal exists.
    pub fn covers(&self, name: &str, labels: Option<&LabelSet>) -> bool {
        self.selector.is_empty() || self.selector.matches_journal(name, labels)
    }

    /// [`Claims::covers`], as a [`Denied`] naming the journal and the selector.
    pub fn check_covers(&self, name: &str, labels: Option<&LabelSet>) -> Result<(), Denied> {
        if self.covers(name, labels) {
            return Ok(());
        }
        Err(Denied::Selector {
            journal: name.to_owned(),
            selector: self.selector.to_string(),
        })
    }

    /// How long until the token expires (zero once it has).
    pub fn remaining(&self) -> Duration {
        Duration::from_secs(self.exp.saturating_sub(unix_now()))
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No `authorization` metadata, and the keys do not admit requests without one.
    #[error(
        "missing authorization: this broker requires a bearer token (metadata \
         'authorization: Bearer <token>'; mint one with 'folio token create')"
    )]
    Missing,
    /// The metadata is not `Bearer <token>`.
    #[error("the authorization is not a bearer token (expected 'Bearer <token>')")]
    NotBearer,
    /// The token is not a well-formed JWT of Folio's claims.
    #[error("the bearer token is malformed: {0}")]
    Malformed(String),
    /// No configured key verifies the token's signature.
    #[error("the bearer token's signature is not valid under any of this broker's keys")]
    Signature,
    /// The token's `alg` is not HS256 or HS384.
    #[error("the bearer token is signed with an unsupported algorithm (expected HS256 or HS384)")]
    Algorithm,
    /// The token expired.
    #[error("the bearer token expired at {exp} (seconds since the Unix epoch; now {now})")]
    Expired {
        /// Its `exp` claim.
        exp: u64,
        /// The broker's clock.
        now: u64,
    },
    /// The token claims to have been issued in the future.
    #[error("the bearer token was issued in the future (iat {iat}, now {now})")]
    NotYetIssued {
        /// Its `iat` claim.
        iat: u64,
        /// The broker's clock.
        now: u64,
    },
    /// A valid token without a capability the request needs.
    #[error("the bearer token lacks the {missing} capability (it grants {have})")]
    Capability {
        /// The capabilities missing.
        missing: Capability,
        /// The capabilities granted.
        have: Capability,
    },
    /// A valid token whose selector does not cover the journal.
    #[error("the bearer token's selector {selector:?} does not cover journal {journal:?}")]
    Selector {
        /// The journal asked for.
        journal: String,
        /// The token's selector, in text form.
        selector: String,
    },
    /// A valid token whose selector does not cover the shard.
    #[error("the bearer token's selector {selector:?} does not cover shard {shard:?}")]
    ShardSelector {
        /// The shard asked for.
        shard: String,
        /// The token's selector, in text form.
        selector: String,
    },
}

impl Denied {
    /// The gRPC status: `UNAUTHENTICATED` for a missing or invalid token,
    /// `PERMISSION_DENIED` for a valid one that does not grant the request.
    pub fn status(&self) -> tonic::Status {
        match self {
            Denied::Capability { .. } | Denied::Selector { .. } | Denied::ShardSelector { .. } => {
                tonic::Status::permission_denied(self.to_string())
            }
            _ => tonic::Status::unauthenticated(self.to_string()),
        }
    }
}

impl From<Denied> for tonic::Status {
    fn from(denied: Denied) -> Self {
        denied.status()
    }
}

/// Why `--auth-keys` could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeysError {
    /// An entry is not base64.
    #[error("key {index} is not standard base64: {reason}")]
    NotBase64 {
        /// Its position in the list, from 0.
        index: usize,
        /// The decoder's complaint.
        reason: String,
    },
    /// Only `AA==` or nothing was given.
    #[error("at least one signing key is needed (AA== alone only admits missing tokens)")]
    NoKey,
}

/// The pre-shared keys a broker signs and verifies tokens with.
#[derive(Clone)]
pub struct Keys {
    signing: EncodingKey,
    verifying: Vec<DecodingKey>,
    allow_missing: bool,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("keys", &self.verifying.len())
            .field("allow_missing", &self.allow_missing)
            .finish_non_exhaustive()
    }
}

impl Keys {
    /// Parses base64 keys separated by commas and/or whitespace. The first signs; all
    /// verify; `AA==` admits requests without a token.
    pub fn parse(text: &str) -> Result<Self, KeysError> {
        let mut secrets = Vec::new();
        let mut allow_missing = false;
        for (index, word) in text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|w| !w.is_empty())
            .enumerate()
        {
            if word == ALLOW_MISSING {
                allow_missing = true;
                continue;
            }
            let secret = base64::engine::general_purpose::STANDARD
                .decode(word)
                .map_err(|e| KeysError::NotBase64 {
                    index,
                    reason: e.to_string(),
                })?;
            secrets.push(secret);
        }
        let first = secrets.first().ok_or(KeysError::NoKey)?;
        let signing = EncodingKey::from_secret(first).map_err(|_| KeysError::NoKey)?;
        let verifying = secrets
            .iter()
            .map(|s| DecodingKey::from_secret(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| KeysError::NoKey)?;
        Ok(Self {
            signing,
            verifying,
            allow_missing,
        })
    }

    /// How many keys verify tokens.
    pub fn count(&self) -> usize {
        self.verifying.len()
    }

    /// Whether requests without a token are let through (`AA==`).
    pub fn allows_missing(&self) -> bool {
        self.allow_missing
    }

    /// Signs `claims` with the first key (HS256).
    pub fn sign(&self, claims: &Claims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.signing)
            .expect("HS256 signing of serializable claims cannot fail")
    }

    /// Verifies the value of an `authorization` header (or its absence).
    pub fn verify(&self, authorization: Option<&str>) -> Result<Claims, Denied> {
        let Some(value) = authorization.filter(|v| !v.is_empty()) else {
            if self.allow_missing {
                return Ok(Claims::unrestricted());
            }
            return Err(Denied::Missing);
        };
        let token = value.strip_prefix("Bearer ").ok_or(Denied::NotBearer)?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256, Algorithm::HS384];
        validation.leeway = LEEWAY_SECS;
        validation.validate_aud = false;
        // Checked below, once a key verified the signature, to name the expiry.
        validation.validate_exp = false;
        for key in &self.verifying {
            match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) => {
                    let now = unix_now();
                    if data.claims.exp.saturating_add(LEEWAY_SECS) < now {
                        return Err(Denied::Expired {
                            exp: data.claims.exp,
                            now,
                        });
                    }
                    if data.claims.iat > now + LEEWAY_SECS {
                        return Err(Denied::NotYetIssued {
                            iat: data.claims.iat,
                            now,
                        });
                    }
                    return Ok(data.claims);
                }
                Err(err) => match err.kind() {
                    ErrorKind::InvalidSignature => continue,
                    ErrorKind::InvalidAlgorithm | ErrorKind::UnsupportedAlgorithm => {
                        return Err(Denied::Algorithm);
                    }
                    _ => return Err(Denied::Malformed(err.to_string())),
                },
            }
        }
        Err(Denied::Signature)
    }
}

/// The `authorization` metadata of a call, if any (a value that is not text is passed on
/// as one no key verifies).
pub fn authorization_of(metadata: &tonic::metadata::MetadataMap) -> Option<&str> {
    metadata
        .get(AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("\u{0}"))
}

/// Authorizes a call carrying `authorization` that needs `required`: with `keys`, the
/// token's claims if it verifies and grants `required`; without keys (authorization
/// off), [`Claims::unrestricted`].
pub fn authorize(
    keys: Option<&Keys>,
    authorization: Option<&str>,
    required: Capability,
) -> Result<Claims, Denied> {
    let Some(keys) = keys else {
        return Ok(Claims::unrestricted());
    };
    let claims = keys.verify(authorization)?;
    claims.require(required)?;
    Ok(claims)
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

mod cap_bits {
    use super::Capability;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(cap: &Capability, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(cap.0)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Capability, D::Error> {
        Ok(Capability(u32::deserialize(d)?))
    }
}

/// The selector as Gazette's Go code writes it into a token:
/// `{"include":{"labels":[{"name":"app","value":"clicks"}]},"exclude":{}}`.
mod selector_json {
    use super::{Label, LabelSelector, LabelSet};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize, Default)]
    struct Selector {
        #[serde(default)]
        include: Set,
        #[serde(default)]
        exclude: Set,
    }

    #[derive(Serialize, Deserialize, Default)]
    struct Set {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        labels: Option<Vec<Entry>>,
    }

    #[derive(Serialize, Deserialize)]
    struct Entry {
        #[serde(default, skip_serializing_if = "String::is_empty")]
        name: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        value: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        prefix: bool,
    }

    fn to_set(set: Option<&LabelSet>) -> Set {
        let labels: Vec<Entry> = set
            .map_or(&[][..], |s| &s.labels[..])
            .iter()
            .map(|l| Entry {
                name: l.name.clone(),
                value: l.value.clone(),
                prefix: l.prefix,
            })
            .collect();
        Set {
            labels: (!labels.is_empty()).then_some(labels),
        }
    }

    fn from_set(set: Set) -> Option<LabelSet> {
        let labels: Vec<Label> = set
            .labels
            .unwrap_or_default()
            .into_iter()
            .map(|e| Label {
                name: e.name,
                value: e.value,
                prefix: e.prefix,
            })
            .collect();
        (!labels.is_empty()).then_some(LabelSet { labels })
    }

    pub(super) fn serialize<S: Serializer>(sel: &LabelSelector, s: S) -> Result<S::Ok, S::Error> {
        Selector {
            include: to_set(sel.include.as_ref()),
            exclude: to_set(sel.exclude.as_ref()),
        }
        .serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<LabelSelector, D::Error> {
        let sel = Option::<Selector>::deserialize(d)?.unwrap_or_default();
        let selector = LabelSelector {
            include: from_set(sel.include),
            exclude: from_set(sel.exclude),
        };
        // Matching relies on sorted, well-formed sets: refuse a token that is not.
        selector.validate().map_err(serde::de::Error::custom)?;
        Ok(selector)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "c2VjcmV0LWE="; // "secret-a"
    const KEY_B: &str = "c2VjcmV0LWI="; // "secret-b"

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    fn claims(cap: Capability, sel: &str) -> Claims {
        Claims::new(
            cap,
            LabelSelector::parse(sel).expect("ok"),
            Duration::from_secs(60),
        )
    }

    #[test]
    fn capabilities_parse_and_print_by_name() {
        let cap = Capability::parse_list("read, APPEND").expect("ok");
        assert_eq!(cap, Capability(Capability::READ.0 | Capability::APPEND.0));
        assert_eq!(cap.to_string(), "READ|APPEND");
        assert_eq!(Capability::parse_list("all").expect("ok"), Capability::ALL);
        assert_eq!(Capability::ALL.0, 0b111110);
        let err = Capability::parse_list("read,wrte").expect_err("refused");
        assert!(err.contains("\"wrte\" is not a capability"), "{err}");
        assert_eq!(Capability(1 << 9 | 1 << 3).to_string(), "READ|0b1000000000");
        assert_eq!(Capability(0).to_string(), "none");
    }

    #[test]
    fn keys_parse_with_index_named_errors() {
        let keys = Keys::parse(&format!("{KEY_A}, {KEY_B} AA==")).expect("ok");
        assert_eq!(keys.verifying.len(), 2);
        assert!(keys.allows_missing());
        let err = Keys::parse(&format!("{KEY_A},not*base64")).expect_err("refused");
        assert!(
            matches!(err, KeysError::NotBase64 { index: 1, .. }),
            "{err}"
        );
        assert!(
            err.to_string().starts_with("key 1 is not standard base64"),
            "{err}"
        );
        assert_eq!(Keys::parse("AA==").expect_err("refused"), KeysError::NoKey);
        assert_eq!(Keys::parse("  ").expect_err("refused"), KeysError::NoKey);
    }

    #[test]
    fn the_first_key_signs_and_every_key_verifies() {
        let old = Keys::parse(KEY_B).expect("ok");
        let rotated = Keys::parse(&format!("{KEY_A},{KEY_B}")).expect("ok");
        let by_old = old.sign(&claims(Capability::READ, "app=clicks"));
        let verified = rotated.verify(Some(&bearer(&by_old))).expect("ok");
        assert_eq!(verified.capability, Capability::READ);
        assert_eq!(verified.selector.to_string(), "app=clicks");
        let by_new = rotated.sign(&claims(Capability::READ, ""));
        assert_eq!(old.verify(Some(&bearer(&by_new))), Err(Denied::Signature));
        assert!(
            Keys::parse(KEY_A)
                .expect("ok")
                .verify(Some(&bearer(&by_new)))
                .is_ok()
        );
    }

    #[test]
    fn each_bad_token_is_denied_for_its_own_reason() {
        let keys = Keys::parse(KEY_A).expect("ok");
        assert_eq!(keys.verify(None), Err(Denied::Missing));
        assert_eq!(keys.verify(Some("")), Err(Denied::Missing));
        assert_eq!(
            keys.verify(Some("Basic Zm9vOmJhcg==")),
            Err(Denied::NotBearer)
        );
        assert!(matches!(
            keys.verify(Some("Bearer not-a-jwt")),
            Err(Denied::Malformed(_))
        ));
        let mut expired = claims(Capability::READ, "");
        expired.iat -= 600;
        expired.exp = unix_now() - 60;
        let denied = keys
            .verify(Some(&bearer(&keys.sign(&expired))))
            .expect_err("refused");
        assert!(
            matches!(denied, Denied::Expired { exp, .. } if exp == expired.exp),
            "{denied}"
        );
        assert_eq!(denied.status().code(), tonic::Code::Unauthenticated);
        let mut future = claims(Capability::READ, "");
        future.iat = unix_now() + 600;
        future.exp = future.iat + 60;
        assert!(matches!(
            keys.verify(Some(&bearer(&keys.sign(&future)))),
            Err(Denied::NotYetIssued { .. })
        ));
        // HS512 is not accepted, whatever the key.
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims(Capability::READ, ""),
            &EncodingKey::from_secret(b"secret-a").expect("ok"),
        )
        .expect("ok");
        assert_eq!(keys.verify(Some(&bearer(&hs512))), Err(Denied::Algorithm));
    }

    #[test]
    fn allow_missing_admits_only_requests_without_a_token() {
        let keys = Keys::parse(&format!("AA== {KEY_A}")).expect("ok");
        assert_eq!(keys.verify(None).expect("ok").capability, Capability::ALL);
        let foreign = Keys::parse(KEY_B)
            .expect("ok")
            .sign(&claims(Capability::ALL, ""));
        assert_eq!(keys.verify(Some(&bearer(&foreign))), Err(Denied::Signature));
    }

    #[test]
    fn capability_and_selector_denials_name_what_failed() {
        let granted = claims(Capability::READ, "app=clicks");
        let denied = granted.require(Capability::APPEND).expect_err("refused");
        assert_eq!(
            denied.to_string(),
            "the bearer token lacks the APPEND capability (it grants READ)"
        );
        assert_eq!(denied.status().code(), tonic::Code::PermissionDenied);
        granted.require(Capability::READ).expect("ok");
        let clicks = LabelSet::from_pairs([("app", "clicks")]);
        let other = LabelSet::from_pairs([("app", "other")]);
        granted.check_covers("a/b", Some(&clicks)).expect("ok");
        let denied = granted
            .check_covers("a/b", Some(&other))
            .expect_err("refused");
        assert_eq!(
            denied.to_string(),
            "the bearer token's selector \"app=clicks\" does not cover journal \"a/b\""
        );
        // A journal that does not exist is answered as one the token cannot see.
        assert_eq!(
            granted.check_covers("a/b", None).expect_err("refused"),
            denied
        );
        // Meta-labels take part.
        let by_prefix = claims(Capability::READ, "prefix=a/");
        assert!(by_prefix.covers("a/b", None));
        assert!(!by_prefix.covers("c/b", Some(&clicks)));
    }

    #[test]
    fn claims_use_gazettes_json_shape() {
        let token_claims = claims(Capability::READ, "app=clicks, !tier");
        let json = serde_json::to_value(&token_claims).expect("ok");
        assert_eq!(json["cap"], 8);
        assert_eq!(
            json["sel"],
            serde_json::json!({
                "include": {"labels": [{"name": "app", "value": "clicks"}]},
                "exclude": {"labels": [{"name": "tier"}]},
            })
        );
        // As Go writes an empty selector and a nil slice.
        let gazette = serde_json::json!({
            "cap": 18, "sel": {"include": {"labels": null}, "exclude": {}},
            "iat": 1, "exp": 2, "sub": "svc",
        });
        let parsed: Claims = serde_json::from_value(gazette).expect("ok");
        assert_eq!(
            parsed.capability,
            Capability(Capability::LIST.0 | Capability::APPEND.0)
        );
        assert!(parsed.selector.is_empty());
        assert_eq!(parsed.sub.as_deref(), Some("svc"));
        // Labels out of order cannot be matched correctly: such a token is refused.
        let unsorted = serde_json::json!({
            "cap": 8, "exp": 2,
            "sel": {"include": {"labels": [{"name": "b"}, {"name": "a"}]}},
        });
        assert!(serde_json::from_value::<Claims>(unsorted).is_err());
    }
}
