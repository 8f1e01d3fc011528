//! PKCE, the authorization URL, the ID token checks with keys made here,
//! and the code exchange against a scripted provider on 127.0.0.1.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use serde_json::json;

use super::*;

const ISSUER: &str = "https://idp.example";
const CLIENT_ID: &str = "llm-proxy";
const NONCE: &str = "n-0S6_WzA2Mj";

/// A signing key made for the test, with its public half as a JWK.
struct TestKey {
    alg: Algorithm,
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

impl TestKey {
    fn es256(kid: &str) -> TestKey {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        // Uncompressed point: 0x04, X (32 bytes), Y (32 bytes).
        let point = pair.public_key().as_ref();
        TestKey {
            alg: Algorithm::ES256,
            kid: kid.into(),
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk: json!({
                "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
            }),
        }
    }

    fn ed25519(kid: &str) -> TestKey {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        TestKey {
            alg: Algorithm::EdDSA,
            kid: kid.into(),
            encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
            jwk: json!({
                "kty": "OKP", "crv": "Ed25519", "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
            }),
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims() -> Value {
    json!({
        "iss": ISSUER, "aud": CLIENT_ID, "sub": "alice-sub", "nonce": NONCE,
        "iat": now(), "exp": now() + 300,
        "email": "Alice@Example.com", "email_verified": true, "name": "Alice",
    })
}

fn jwks(keys: &[&TestKey]) -> Value {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()})
}

fn verify(token: &str, keys: &[&TestKey]) -> Result<Value, OidcError> {
    verify_id_token(token, &jwks(keys), ISSUER, CLIENT_ID, NONCE)
}

#[track_caller]
fn refused(result: Result<Value, OidcError>, needle: &str) {
    match result {
        Err(OidcError::InvalidToken(message)) => {
            assert!(message.contains(needle), "{needle:?} not in {message:?}")
        }
        other => panic!("expected a refusal mentioning {needle:?}, got {other:?}"),
    }
}

fn with(mut base: Value, changes: Value) -> Value {
    for (name, value) in changes.as_object().unwrap() {
        if value.is_null() {
            base.as_object_mut().unwrap().remove(name);
        } else {
            base[name] = value.clone();
        }
    }
    base
}

#[test]
fn pkce_challenge_is_the_rfc_7636_example() {
    // RFC 7636, appendix B.
    assert_eq!(
        code_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    );
}

#[test]
fn pending_secrets_are_fresh_url_safe_32_bytes() {
    let a = Pending::new().unwrap();
    let b = Pending::new().unwrap();
    for secret in [&a.state, &a.nonce, &a.code_verifier] {
        assert_eq!(secret.len(), 43, "{secret}");
        assert_eq!(URL_SAFE_NO_PAD.decode(secret).unwrap().len(), 32);
        assert!(
            secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }
    assert_ne!(a.state, a.nonce);
    assert_ne!(a.state, b.state);
    assert_ne!(a.code_verifier, b.code_verifier);
}

fn provider(authorization_endpoint: &str) -> Provider {
    Provider {
        issuer: ISSUER.into(),
        authorization_endpoint: authorization_endpoint.into(),
        token_endpoint: format!("{ISSUER}/token"),
        jwks_uri: format!("{ISSUER}/jwks"),
        userinfo_endpoint: None,
    }
}

fn settings(scopes: &str, secret: Option<&str>) -> OidcSettings {
    OidcSettings {
        issuer: ISSUER.into(),
        client_id: CLIENT_ID.into(),
        client_secret: secret.map(Into::into),
        scopes: scopes.into(),
        roots: None,
    }
}

fn query_of(url: &str) -> Vec<(String, String)> {
    let (_, query) = url.split_once('?').unwrap();
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

#[test]
fn authorization_url_carries_the_code_flow_with_pkce() {
    let pending = Pending::new().unwrap();
    let redirect = "http://127.0.0.1:8080/sso/callback";
    let url = authorization_url(
        &provider("https://idp.example/authorize"),
        &settings("openid email profile", None),
        redirect,
        &pending,
    );
    assert!(url.starts_with("https://idp.example/authorize?"), "{url}");
    let challenge = code_challenge(&pending.code_verifier);
    let want: Vec<(String, String)> = [
        ("response_type", "code"),
        ("client_id", CLIENT_ID),
        ("redirect_uri", redirect),
        ("scope", "openid email profile"),
        ("state", pending.state.as_str()),
        ("nonce", pending.nonce.as_str()),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(query_of(&url), want);
    assert!(
        !url.contains(&pending.code_verifier),
        "the verifier stays on the server"
    );
}

#[test]
fn authorization_url_keeps_the_endpoints_query_and_asks_for_openid() {
    let pending = Pending::new().unwrap();
    let url = authorization_url(
        &provider("https://idp.example/oauth2/authorize?tenant=acme"),
        &settings("email", None),
        "https://proxy.example/sso/callback",
        &pending,
    );
    assert!(
        url.starts_with("https://idp.example/oauth2/authorize?tenant=acme&response_type=code&"),
        "{url}"
    );
    let query = query_of(&url);
    assert_eq!(query[0], ("tenant".into(), "acme".into()));
    assert!(
        query.contains(&("scope".into(), "openid email".into())),
        "{url}"
    );
}

#[test]
fn a_good_id_token_gives_the_identity() {
    let key = TestKey::es256("k1");
    let other = TestKey::ed25519("k2");
    let claims = verify(&key.sign(&claims()), &[&other, &key]).unwrap();
    let identity = identity_from(&claims);
    assert_eq!(identity.subject, "alice-sub");
    assert_eq!(identity.email.as_deref(), Some("Alice@Example.com"));
    assert!(identity.email_verified);
    assert_eq!(identity.name.as_deref(), Some("Alice"));

    // EdDSA too, an audience list that holds the client, a string "true".
    let token = other.sign(&with(
        claims.clone(),
        json!({"aud": ["other-api", CLIENT_ID], "azp": CLIENT_ID, "email_verified": "true"}),
    ));
    let identity = identity_from(&verify(&token, &[&key, &other]).unwrap());
    assert!(identity.email_verified);
    // No email_verified claim: not verified.
    let token = key.sign(&with(claims, json!({"email_verified": null})));
    assert!(!identity_from(&verify(&token, &[&key]).unwrap()).email_verified);
}

#[test]
fn id_token_claims_are_checked() {
    let key = TestKey::es256("k1");
    let check = |changes: Value| verify(&key.sign(&with(claims(), changes)), &[&key]);
    refused(
        check(json!({"iss": "https://evil.example"})),
        "not issued by https://idp.example",
    );
    refused(
        check(json!({"aud": "another-client"})),
        "OIDC_CLIENT_ID \"llm-proxy\"",
    );
    refused(check(json!({"aud": ["a", "b"]})), "(aud)");
    refused(check(json!({"azp": "another-client"})), "(azp)");
    refused(check(json!({"exp": now() - 3600})), "expired");
    refused(check(json!({"exp": null})), "`exp`");
    refused(
        check(json!({"nonce": "another-login"})),
        "nonce is not this login's",
    );
    refused(check(json!({"nonce": null})), "no nonce");
    refused(check(json!({"sub": null})), "`sub`");
    // Within the leeway, an expiry just past is tolerated.
    assert!(check(json!({"exp": now() - 5})).is_ok());
}

#[test]
fn id_token_signatures_and_keys_are_checked() {
    let key = TestKey::es256("k1");
    let token = key.sign(&claims());
    // Signed by another key that claims the same kid.
    let impostor = TestKey::es256("k1");
    refused(
        verify(&impostor.sign(&claims()), &[&key]),
        "signature does not verify",
    );
    // A kid the provider does not publish.
    refused(verify(&token, &[&TestKey::es256("k9")]), "no key \"k1\"");
    // The payload changed after signing.
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged = URL_SAFE_NO_PAD.encode(with(claims(), json!({"sub": "mallory"})).to_string());
    parts[1] = &forged;
    refused(
        verify(&parts.join("."), &[&key]),
        "signature does not verify",
    );
    // The header names an algorithm the key is not for.
    let mut header = json!({"alg": "ES384", "kid": "k1"});
    let relabelled = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        token.split_once('.').unwrap().1
    );
    refused(verify(&relabelled, &[&key]), "another algorithm");
    // No kid: the one fitting key is used; with two, the token is refused.
    let mut no_kid = Header::new(Algorithm::ES256);
    no_kid.kid = None;
    let token = jsonwebtoken::encode(&no_kid, &claims(), &key.encoding).unwrap();
    assert!(verify(&token, &[&key, &TestKey::ed25519("e")]).is_ok());
    refused(verify(&token, &[&key, &TestKey::es256("k2")]), "several");
    // `alg: none` and HMAC (keyed with something the provider shares) are refused.
    header = json!({"alg": "none", "kid": "k1"});
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims().to_string())
    );
    refused(verify(&unsigned, &[&key]), "\"none\"");
    let mut hmac = Header::new(Algorithm::HS256);
    hmac.kid = Some("h".into());
    let token =
        jsonwebtoken::encode(&hmac, &claims(), &EncodingKey::from_secret(b"shared")).unwrap();
    let oct = json!({"keys": [{"kty": "oct", "kid": "h", "k": URL_SAFE_NO_PAD.encode(b"shared")}]});
    refused(
        verify_id_token(&token, &oct, ISSUER, CLIENT_ID, NONCE),
        "only asymmetric",
    );
    refused(verify("not-a-jwt", &[&key]), "not a signed JWT");
}

#[test]
fn provider_errors_never_repeat_secrets() {
    let text = redact(
        "invalid_grant: code  abc123\nwas used by s3cret",
        &["abc123", "s3cret"],
    );
    assert_eq!(
        text,
        "invalid_grant: code [redacted] was used by [redacted]"
    );
    assert_eq!(
        redact(&"x".repeat(1000), &[]).chars().count(),
        MAX_MESSAGE_CHARS + 1
    );
    // RFC 6749 2.3.1: form-encoded, then base64.
    assert_eq!(
        basic_auth("my client", "p@ss:word"),
        format!("Basic {}", STANDARD.encode("my+client:p%40ss%3Aword"))
    );
}

// ---------------------------------------------------------------------------
// The code exchange against a scripted provider
// ---------------------------------------------------------------------------

/// One request as the scripted provider saw it.
#[derive(Debug)]
struct Seen {
    line: String,
    authorization: Option<String>,
    body: String,
}

/// Answers each request with the next `(status, body)`, one connection
/// each, and reports what it was sent; then stops listening. `answers`
/// is given the base URL it returns.
fn scripted_provider(
    answers: impl FnOnce(&str) -> Vec<(u16, Value)>,
) -> (String, mpsc::Receiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let answers = answers(&base);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for (status, body) in answers {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let (mut length, mut authorization) = (0, None);
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).unwrap();
                let header = header.trim_end();
                if header.is_empty() {
                    break;
                }
                let (name, value) = header.split_once(':').unwrap();
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap(),
                    "authorization" => authorization = Some(value.trim().to_string()),
                    _ => {}
                }
            }
            let mut body_in = vec![0; length];
            reader.read_exact(&mut body_in).unwrap();
            let _ = tx.send(Seen {
                line: line.trim_end().to_string(),
                authorization,
                body: String::from_utf8(body_in).unwrap(),
            });
            let text = body.to_string();
            let mut stream = reader.into_inner();
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
    (base, rx)
}

fn scripted(base: &str, userinfo: bool) -> Provider {
    Provider {
        issuer: ISSUER.into(),
        authorization_endpoint: format!("{base}/auth"),
        token_endpoint: format!("{base}/token"),
        jwks_uri: format!("{base}/jwks"),
        userinfo_endpoint: userinfo.then(|| format!("{base}/me")),
    }
}

fn pending() -> Pending {
    Pending {
        state: "st".into(),
        nonce: NONCE.into(),
        code_verifier: "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into(),
    }
}

#[test]
fn the_code_exchange_reads_the_email_from_userinfo_when_the_token_has_none() {
    let key = TestKey::es256("k1");
    let id_token = key.sign(&with(
        claims(),
        json!({"email": null, "email_verified": null}),
    ));
    let (base, seen) = scripted_provider(|_| {
        vec![
            (
                200,
                json!({"access_token": "at-77", "token_type": "Bearer", "id_token": id_token}),
            ),
            (200, jwks(&[&key])),
            (
                200,
                json!({"sub": "alice-sub", "email": "alice@example.com", "email_verified": true}),
            ),
        ]
    });
    let redirect = "http://127.0.0.1:9/sso/callback";
    let identity = exchange_code(
        &scripted(&base, true),
        &settings("openid email", Some("s3cret")),
        redirect,
        "code-42",
        &pending(),
    )
    .unwrap();
    assert_eq!(identity.subject, "alice-sub");
    assert_eq!(identity.email.as_deref(), Some("alice@example.com"));
    assert!(identity.email_verified);

    let token = seen.recv().unwrap();
    assert_eq!(token.line, "POST /token HTTP/1.1");
    assert_eq!(
        token.authorization.as_deref(),
        Some(basic_auth(CLIENT_ID, "s3cret").as_str())
    );
    let form: Vec<(String, String)> = form_urlencoded::parse(token.body.as_bytes())
        .into_owned()
        .collect();
    let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(
        form,
        pairs(&[
            ("grant_type", "authorization_code"),
            ("code", "code-42"),
            ("redirect_uri", redirect),
            (
                "code_verifier",
                "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
            ),
        ])
    );
    assert_eq!(seen.recv().unwrap().line, "GET /jwks HTTP/1.1");
    let userinfo = seen.recv().unwrap();
    assert_eq!(userinfo.line, "GET /me HTTP/1.1");
    assert_eq!(userinfo.authorization.as_deref(), Some("Bearer at-77"));
}

#[test]
fn a_public_client_sends_its_id_in_the_form() {
    let key = TestKey::es256("k1");
    let (base, seen) = scripted_provider(|_| {
        vec![
            (
                200,
                json!({"access_token": "at", "id_token": key.sign(&claims())}),
            ),
            (200, jwks(&[&key])),
        ]
    });
    let identity = exchange_code(
        &scripted(&base, true),
        &settings("openid", None),
        "http://127.0.0.1:9/sso/callback",
        "code-42",
        &pending(),
    )
    .unwrap();
    // The token had the email: no userinfo call.
    assert_eq!(identity.email.as_deref(), Some("Alice@Example.com"));
    let token = seen.recv().unwrap();
    assert_eq!(token.authorization, None);
    assert!(
        token.body.ends_with("&client_id=llm-proxy"),
        "{}",
        token.body
    );
    seen.recv().unwrap();
    assert!(seen.try_recv().is_err(), "userinfo was not needed");
}

#[test]
fn token_endpoint_refusals_say_what_to_check_and_hide_the_secrets() {
    let (base, _seen) = scripted_provider(|_| {
        vec![(
            401,
            json!({"error": "invalid_client", "error_description": "client s3cret rejected for code-42"}),
        )]
    });
    let error = exchange_code(
        &scripted(&base, false),
        &settings("openid", Some("s3cret")),
        "http://127.0.0.1:9/sso/callback",
        "code-42",
        &pending(),
    )
    .unwrap_err();
    let text = error.to_string();
    assert!(
        matches!(error, OidcError::Provider { status: 401, .. }),
        "{error:?}"
    );
    assert!(text.contains("invalid_client"), "{text}");
    assert!(
        text.contains("check OIDC_CLIENT_ID and OIDC_CLIENT_SECRET"),
        "{text}"
    );
    assert!(
        !text.contains("s3cret") && !text.contains("code-42"),
        "{text}"
    );
}

#[test]
fn discovery_reads_the_endpoints_and_checks_the_issuer() {
    let doc = |issuer: String| {
        json!({
            "issuer": issuer, "authorization_endpoint": "https://idp.example/auth?x=1",
            "token_endpoint": "https://idp.example/token", "jwks_uri": "https://idp.example/jwks",
            "userinfo_endpoint": "https://idp.example/me",
            "code_challenge_methods_supported": ["plain", "S256"],
        })
    };
    let (base, seen) = scripted_provider(|base| {
        vec![
            // Some providers write the issuer with a trailing slash.
            (200, doc(format!("{base}/"))),
            (200, doc("https://elsewhere.example".into())),
            (200, json!({"issuer": base})),
            (
                200,
                with(
                    doc(base.into()),
                    json!({"code_challenge_methods_supported": ["plain"]}),
                ),
            ),
            (404, json!({"error": "not_found"})),
        ]
    });
    let at = OidcSettings {
        issuer: base.clone(),
        ..settings("openid", None)
    };
    let found = discover(&at).unwrap();
    // The tokens carry the issuer exactly as the document writes it.
    assert_eq!(found.issuer, format!("{base}/"));
    assert_eq!(found.authorization_endpoint, "https://idp.example/auth?x=1");
    assert_eq!(found.token_endpoint, "https://idp.example/token");
    assert_eq!(found.jwks_uri, "https://idp.example/jwks");
    assert_eq!(
        found.userinfo_endpoint.as_deref(),
        Some("https://idp.example/me")
    );
    assert_eq!(
        seen.recv().unwrap().line,
        "GET /.well-known/openid-configuration HTTP/1.1"
    );
    let failure = |needle: &str| {
        let text = discover(&at).unwrap_err().to_string();
        assert!(text.contains(needle), "{needle:?} not in {text:?}");
    };
    failure("set OIDC_ISSUER to https://elsewhere.example");
    failure("no `authorization_endpoint`");
    failure("PKCE with S256");
    failure("with 404: not_found: is OIDC_ISSUER the provider's issuer URL?");
    // Nobody listens there any more.
    match discover(&at) {
        Err(OidcError::Unreachable { url, .. }) => {
            assert_eq!(url, format!("{base}/.well-known/openid-configuration"))
        }
        other => panic!("{other:?}"),
    }
}
