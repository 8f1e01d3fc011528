//! OpenID Connect relying party for the sign-in pages: discovery from the
//! issuer, PKCE, the authorization URL, the code exchange and the checks on
//! the ID token. Blocking (ureq): call it from the blocking pool.
//!
//! Error messages name what to fix (a setting, the provider's client
//! registration) and never carry the authorization code, a token or the
//! client secret.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::settings::OidcSettings;

/// One call to the provider, connection included.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Discovery documents, JWKS, token and userinfo answers are small.
const MAX_ANSWER_BYTES: u64 = 1024 * 1024;
/// Clock difference tolerated between the provider and this machine.
const CLOCK_LEEWAY_SECS: u64 = 60;
/// How much of a provider's error text is repeated.
const MAX_MESSAGE_CHARS: usize = 300;
/// Signature algorithms an ID token may use: asymmetric only. `none` and
/// the HMAC family (keyed with the client secret) are refused.
const ACCEPTED_ALGORITHMS: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// No answer from the provider (refused, DNS, TLS, timeout).
    #[error("cannot reach the identity provider at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The provider answered, but not as the protocol says.
    #[error("the identity provider answered {url} with {status}: {message}")]
    Provider {
        url: String,
        status: u16,
        message: String,
    },
    /// The ID token failed a check (signature, issuer, audience, expiry, nonce).
    #[error("the identity provider's ID token was refused: {0}")]
    InvalidToken(String),
}

/// The provider's endpoints, from its discovery document.
#[derive(Debug, Clone)]
pub struct Provider {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    pub userinfo_endpoint: Option<String>,
}

/// One authorization request's secrets, kept on the server until the
/// callback: `state` ties the callback to the login, `nonce` the ID token to
/// the request, `code_verifier` the code to this server (PKCE, S256).
#[derive(Debug, Clone)]
pub struct Pending {
    pub state: String,
    pub nonce: String,
    pub code_verifier: String,
}

/// Who signed in, from a checked ID token (and the userinfo endpoint when
/// the token carries no email).
#[derive(Debug, Clone)]
pub struct Identity {
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
}

/// Reads `<issuer>/.well-known/openid-configuration` and checks that it
/// speaks for `OIDC_ISSUER`.
pub fn discover(settings: &OidcSettings) -> Result<Provider, OidcError> {
    let url = format!("{}/.well-known/openid-configuration", settings.issuer);
    let doc =
        answer_json(&url, agent(settings).get(&url).call(), &[]).map_err(|error| match error {
            OidcError::Provider {
                url,
                status,
                message,
            } => OidcError::Provider {
                url,
                status,
                message: format!("{message}: is OIDC_ISSUER the provider's issuer URL?"),
            },
            other => other,
        })?;
    let invalid = |message: String| OidcError::Provider {
        url: url.clone(),
        status: 200,
        message,
    };
    let field = |name: &str| doc.get(name).and_then(Value::as_str).map(str::to_string);
    let required = |name: &str| {
        field(name).ok_or_else(|| invalid(format!("the discovery document has no `{name}`")))
    };
    let issuer = required("issuer")?;
    // OIDC_ISSUER is stored without a trailing slash; some providers write one.
    if issuer.trim_end_matches('/') != settings.issuer {
        return Err(invalid(format!(
            "the discovery document names the issuer {issuer}, not {}: set OIDC_ISSUER to {issuer}",
            settings.issuer
        )));
    }
    if let Some(methods) = doc
        .get("code_challenge_methods_supported")
        .and_then(Value::as_array)
        && !methods.iter().any(|m| m == "S256")
    {
        return Err(invalid(
            "the provider does not offer PKCE with S256 (code_challenge_methods_supported), which the proxy requires".into(),
        ));
    }
    Ok(Provider {
        issuer,
        authorization_endpoint: required("authorization_endpoint")?,
        token_endpoint: required("token_endpoint")?,
        jwks_uri: required("jwks_uri")?,
        userinfo_endpoint: field("userinfo_endpoint"),
    })
}

impl Pending {
    /// Fresh random `state`, `nonce` and `code_verifier`: 32 bytes each,
    /// base64url without padding (a 43-character verifier, RFC 7636).
    pub fn new() -> Result<Pending, crate::store::StoreError> {
        Ok(Pending {
            state: random_token()?,
            nonce: random_token()?,
            code_verifier: random_token()?,
        })
    }
}

fn random_token() -> Result<String, crate::store::StoreError> {
    let mut bytes = [0u8; 32];
    crate::store::crypto::fill_random(&mut bytes)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// PKCE `code_challenge` for the S256 method: BASE64URL(SHA256(verifier)).
fn code_challenge(code_verifier: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, code_verifier.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// Where to send the browser: the provider's authorization endpoint (with
/// any query it already has) and the code-flow parameters of this login.
pub fn authorization_url(
    provider: &Provider,
    settings: &OidcSettings,
    redirect_uri: &str,
    pending: &Pending,
) -> String {
    // Without `openid` there is no ID token, and nothing to check.
    let scope = if settings.scopes.split_whitespace().any(|s| s == "openid") {
        settings.scopes.clone()
    } else {
        format!("openid {}", settings.scopes)
    };
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", &settings.client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", scope.trim())
        .append_pair("state", &pending.state)
        .append_pair("nonce", &pending.nonce)
        .append_pair("code_challenge", &code_challenge(&pending.code_verifier))
        .append_pair("code_challenge_method", "S256")
        .finish();
    let endpoint = &provider.authorization_endpoint;
    let separator = match endpoint.find('?') {
        None => "?",
        Some(at) if at + 1 == endpoint.len() || endpoint.ends_with('&') => "",
        Some(_) => "&",
    };
    format!("{endpoint}{separator}{query}")
}

/// Trades the authorization `code` for tokens, checks the ID token, and
/// finds the email (in the token, else at the userinfo endpoint).
pub fn exchange_code(
    provider: &Provider,
    settings: &OidcSettings,
    redirect_uri: &str,
    code: &str,
    pending: &Pending,
) -> Result<Identity, OidcError> {
    let agent = agent(settings);
    let secret = settings.client_secret.as_deref();
    // Nothing secret may appear in an error message.
    let hide: Vec<&str> = [Some(code), secret, Some(pending.code_verifier.as_str())]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .collect();
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("code_verifier", pending.code_verifier.as_str()),
    ];
    let mut request = agent
        .post(&provider.token_endpoint)
        .header("Accept", "application/json");
    match secret {
        Some(secret) => {
            request = request.header("Authorization", basic_auth(&settings.client_id, secret))
        }
        None => form.push(("client_id", settings.client_id.as_str())),
    }
    let url = &provider.token_endpoint;
    let tokens = answer_json(url, request.send_form(form), &hide).map_err(token_hint)?;
    let Some(id_token) = tokens.get("id_token").and_then(Value::as_str) else {
        return Err(OidcError::Provider {
            url: url.clone(),
            status: 200,
            message: "no id_token in the token answer: is `openid` among OIDC_SCOPES, and the client allowed OpenID Connect?".into(),
        });
    };
    let jwks = answer_json(
        &provider.jwks_uri,
        agent.get(&provider.jwks_uri).call(),
        &hide,
    )?;
    let claims = verify_id_token(
        id_token,
        &jwks,
        &provider.issuer,
        &settings.client_id,
        &pending.nonce,
    )?;
    let mut identity = identity_from(&claims);
    if identity.email.is_none()
        && let (Some(userinfo), Some(access_token)) = (
            &provider.userinfo_endpoint,
            tokens.get("access_token").and_then(Value::as_str),
        )
    {
        let mut hide = hide.clone();
        hide.push(access_token);
        let request = agent
            .get(userinfo)
            .header("Accept", "application/json")
            .header("Authorization", format!("Bearer {access_token}"));
        let info = answer_json(userinfo, request.call(), &hide)?;
        // OpenID Connect Core 5.3.2: the answer is only about this user if
        // its `sub` is the token's.
        if info.get("sub").and_then(Value::as_str) != Some(identity.subject.as_str()) {
            return Err(OidcError::Provider {
                url: userinfo.clone(),
                status: 200,
                message: "the userinfo answer is about another subject than the ID token".into(),
            });
        }
        let from_userinfo = identity_from(&info);
        identity.email = from_userinfo.email;
        identity.email_verified = from_userinfo.email_verified;
        identity.name = identity.name.or(from_userinfo.name);
    }
    Ok(identity)
}

/// Checks an ID token against the provider's JWKS: an asymmetric
/// signature by the key its header names, `iss`, `aud` (and `azp`), `exp`
/// and `nonce`. Returns its claims.
fn verify_id_token(
    id_token: &str,
    jwks: &Value,
    issuer: &str,
    client_id: &str,
    nonce: &str,
) -> Result<Value, OidcError> {
    let refuse = |message: String| OidcError::InvalidToken(message);
    let header = token_header(id_token)?;
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
    if !ACCEPTED_ALGORITHMS.contains(&alg) {
        return Err(refuse(format!(
            "it is signed with {alg:?}; only asymmetric algorithms ({}) are accepted: configure the client at the provider to sign ID tokens with RS256 or ES256",
            ACCEPTED_ALGORITHMS.join(", ")
        )));
    }
    let algorithm: Algorithm = alg
        .parse()
        .map_err(|_| refuse(format!("unknown algorithm {alg}")))?;
    let kid = header.get("kid").and_then(Value::as_str);
    let jwk = signing_key(jwks, kid, alg)?;
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| {
        refuse(format!(
            "the provider's key {} is unusable: {e}",
            kid.unwrap_or("without kid")
        ))
    })?;
    let mut validation = Validation::new(algorithm);
    validation.leeway = CLOCK_LEEWAY_SECS;
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[client_id]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let claims = jsonwebtoken::decode::<Value>(id_token, &key, &validation)
        .map_err(|e| refuse(validation_failure(&e, issuer, client_id)))?
        .claims;
    if let Some(azp) = claims.get("azp").and_then(Value::as_str)
        && azp != client_id
    {
        return Err(refuse(format!(
            "it was issued to the client {azp:?} (azp), not OIDC_CLIENT_ID {client_id:?}"
        )));
    }
    match claims.get("nonce").and_then(Value::as_str) {
        // The token is signed: a plain comparison leaks nothing useful.
        Some(found) if found == nonce => {}
        Some(_) => {
            return Err(refuse(
                "its nonce is not this login's: start the login again".into(),
            ));
        }
        None => {
            return Err(refuse(
                "it has no nonce: the provider ignored the nonce of the request".into(),
            ));
        }
    }
    if claims
        .get("sub")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(refuse("it has no subject (sub)".into()));
    }
    Ok(claims)
}

/// The JOSE header of a compact JWT, read without trusting it.
fn token_header(token: &str) -> Result<Value, OidcError> {
    let malformed =
        || OidcError::InvalidToken("it is not a signed JWT (header.payload.signature)".into());
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .map_err(|_| malformed())?;
    serde_json::from_slice(&bytes).map_err(|_| malformed())
}

/// The JWK that signed the token: the one with the header's `kid`, or the
/// only signing key that fits `alg` when the header names none. Keys this
/// library cannot read (other types, encryption keys) are skipped.
fn signing_key(jwks: &Value, kid: Option<&str>, alg: &str) -> Result<Jwk, OidcError> {
    let mut keys = jwks
        .get("keys")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|key| serde_json::from_value::<Jwk>(key.clone()).ok())
        .filter(|key| !matches!(key.common.public_key_use, Some(PublicKeyUse::Encryption)));
    let Some(kid) = kid else {
        let mut fitting = keys.filter(|key| fits(key, alg));
        return match (fitting.next(), fitting.next()) {
            (Some(key), None) => Ok(key),
            (None, _) => Err(OidcError::InvalidToken(format!(
                "the provider's JWKS has no {alg} signing key"
            ))),
            (Some(_), Some(_)) => Err(OidcError::InvalidToken(
                "the token names no key (kid) and the provider's JWKS has several".into(),
            )),
        };
    };
    let Some(key) = keys.find(|key| key.common.key_id.as_deref() == Some(kid)) else {
        return Err(OidcError::InvalidToken(format!(
            "no key {kid:?} in the provider's JWKS"
        )));
    };
    if !fits(&key, alg) {
        return Err(OidcError::InvalidToken(format!(
            "it is signed with {alg}, but the provider's key {kid:?} is for another algorithm"
        )));
    }
    Ok(key)
}

/// Whether `key` can check a signature made with `alg`: its type, and its
/// own `alg` when it names one.
fn fits(key: &Jwk, alg: &str) -> bool {
    let family_fits = match &key.algorithm {
        AlgorithmParameters::RSA(_) => alg.starts_with("RS") || alg.starts_with("PS"),
        AlgorithmParameters::EllipticCurve(_) => alg.starts_with("ES"),
        AlgorithmParameters::OctetKeyPair(_) => alg == "EdDSA",
        AlgorithmParameters::OctetKey(_) => false,
    };
    let alg_fits = key
        .common
        .key_algorithm
        .is_none_or(|key_alg| format!("{key_alg:?}") == alg);
    family_fits && alg_fits
}

/// A person-readable reason for a failed signature or claim check.
fn validation_failure(
    error: &jsonwebtoken::errors::Error,
    issuer: &str,
    client_id: &str,
) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::InvalidSignature => {
            "its signature does not verify with the provider's key".into()
        }
        ErrorKind::ExpiredSignature => {
            "it has expired: check this machine's clock (and the provider's)".into()
        }
        ErrorKind::InvalidIssuer => format!("it was not issued by {issuer} (iss)"),
        ErrorKind::InvalidAudience => {
            format!("it is not meant for OIDC_CLIENT_ID {client_id:?} (aud)")
        }
        ErrorKind::MissingRequiredClaim(claim) => format!("it has no `{claim}` claim"),
        ErrorKind::InvalidAlgorithm => "its algorithm does not match the provider's key".into(),
        other => format!("it cannot be read ({other:?})"),
    }
}

/// Subject, email and name from ID token claims or a userinfo answer.
/// `email_verified` is sometimes sent as the string "true".
fn identity_from(claims: &Value) -> Identity {
    let text = |name: &str| {
        claims
            .get(name)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let email_verified = match claims.get("email_verified") {
        Some(Value::Bool(verified)) => *verified,
        Some(Value::String(verified)) => verified.eq_ignore_ascii_case("true"),
        _ => false,
    };
    Identity {
        subject: text("sub").unwrap_or_default(),
        email: text("email"),
        email_verified,
        name: text("name"),
    }
}

/// `client_secret_basic` (RFC 6749 2.3.1): both parts form-encoded first.
fn basic_auth(client_id: &str, secret: &str) -> String {
    let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = format!("{}:{}", encode(client_id), encode(secret));
    format!("Basic {}", STANDARD.encode(pair))
}

/// Adds what to check to the token endpoint's usual refusals.
fn token_hint(error: OidcError) -> OidcError {
    let OidcError::Provider {
        url,
        status,
        message,
    } = error
    else {
        return error;
    };
    let hint = if message.starts_with("invalid_client") {
        ": check OIDC_CLIENT_ID and OIDC_CLIENT_SECRET against the client registered at the provider"
    } else if message.starts_with("invalid_grant") {
        ": the code expired, was used already, or the redirect URI differs from the one registered (PROXY_BASE_URL/sso/callback); start the login again"
    } else if message.starts_with("unauthorized_client") {
        ": allow the authorization code grant for this client at the provider"
    } else {
        ""
    };
    OidcError::Provider {
        url,
        status,
        message: format!("{message}{hint}"),
    }
}

/// The JSON object of a 2xx answer from `url`; anything else becomes an
/// error with the provider's own explanation, `hide` removed from it.
fn answer_json(
    url: &str,
    sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    hide: &[&str],
) -> Result<Value, OidcError> {
    let unreachable = |reason: String| OidcError::Unreachable {
        url: url.to_string(),
        reason: redact(&reason, hide),
    };
    let mut response = sent.map_err(|e| unreachable(e.to_string()))?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER_BYTES)
        .read_to_vec()
        .map_err(|e| unreachable(e.to_string()))?;
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let failed = |message: String| OidcError::Provider {
        url: url.to_string(),
        status,
        message: redact(&message, hide),
    };
    if !(200..300).contains(&status) {
        return Err(failed(provider_message(parsed.as_ref(), &body, status)));
    }
    match parsed {
        Some(value @ Value::Object(_)) => Ok(value),
        _ => Err(failed("the answer is not a JSON object".into())),
    }
}

/// `error: error_description` of an OAuth error answer, else the start of
/// the body, else the status text.
fn provider_message(parsed: Option<&Value>, body: &[u8], status: u16) -> String {
    if let Some(error) = parsed.and_then(|v| v.get("error")).and_then(Value::as_str) {
        let description = parsed
            .and_then(|v| v.get("error_description"))
            .and_then(Value::as_str);
        return match description {
            Some(description) => format!("{error}: {description}"),
            None => error.to_string(),
        };
    }
    let text = String::from_utf8_lossy(body);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() {
        return ureq::http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("no explanation")
            .to_string();
    }
    text
}

/// `text` on one line, shortened, with every `hide` replaced.
fn redact(text: &str, hide: &[&str]) -> String {
    let mut text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    for secret in hide.iter().filter(|s| !s.is_empty()) {
        text = text.replace(secret, "[redacted]");
    }
    match text.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text,
    }
}

/// The HTTP agent for the provider: the client's, with `OIDC_CA_FILE`'s roots.
fn agent(settings: &OidcSettings) -> ureq::Agent {
    let mut config = crate::http_client::agent_config(HTTP_TIMEOUT);
    if let Some(roots) = &settings.roots {
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(roots.clone())
            .build();
        config = config.tls_config(tls);
    }
    config.build().new_agent()
}

#[cfg(test)]
mod tests;
