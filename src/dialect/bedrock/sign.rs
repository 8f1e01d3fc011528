//! AWS Signature Version 4 for Bedrock requests, with the `aws-sigv4`
//! crate: [`sign`] gives the header lines that sign a request, [`verify`]
//! recomputes a request's signature from its `Authorization` (what the mock
//! does, as Bedrock would).
//!
//! The path is signed as sent, percent-encoded once more (SigV4's rule for
//! every service but S3): `/model/a%3A0/converse` is signed as
//! `/model/a%253A0/converse`, as boto3 does.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;

use super::SERVICE;
use crate::dialect::TranslateError;

/// The AWS credentials of a deployment (LiteLLM's `aws_access_key_id`,
/// `aws_secret_access_key`, `aws_session_token`, `aws_region_name`).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    pub region: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .field("region", &self.region)
            .finish()
    }
}

fn err(message: impl std::fmt::Display) -> TranslateError {
    TranslateError::new(
        "aws credentials",
        format!("cannot sign the request: {message}"),
    )
}

/// The signature of a request: the headers the signer adds, with their
/// values, and the signature itself.
fn signature(
    credentials: &Credentials,
    host: &str,
    target: &str,
    body: &[u8],
    headers: &[(&str, &str)],
    at: SystemTime,
) -> Result<(Vec<(String, String)>, String), TranslateError> {
    let identity = aws_credential_types::Credentials::new(
        &credentials.access_key_id,
        &credentials.secret_access_key,
        credentials.session_token.clone(),
        None,
        "llm-proxy",
    )
    .into();
    let params: aws_sigv4::http_request::SigningParams = v4::SigningParams::builder()
        .identity(&identity)
        .region(&credentials.region)
        .name(SERVICE)
        .time(at)
        .settings(SigningSettings::default())
        .build()
        .map_err(err)?
        .into();
    let headers = headers
        .iter()
        .copied()
        .filter(|(name, _)| !name.eq_ignore_ascii_case("host"))
        .chain([("host", host)]);
    let request = SignableRequest::new(
        "POST",
        format!("https://{host}{target}"),
        headers,
        SignableBody::Bytes(body),
    )
    .map_err(err)?;
    let output = aws_sigv4::http_request::sign(request, &params).map_err(err)?;
    let (instructions, signature) = output.into_parts();
    let added = instructions
        .headers()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    Ok((added, signature))
}

/// The header lines (each `Name: value\r\n`) that sign a `POST` of `body`
/// to `target` (path and query, as sent) at `host` (the Host header's
/// value), with `headers` (the other fields sent, `Content-Type` say)
/// signed too: `Authorization`, `X-Amz-Date`, and `X-Amz-Security-Token`
/// with a session token.
pub fn sign(
    credentials: &Credentials,
    host: &str,
    target: &str,
    body: &[u8],
    headers: &[(&str, &str)],
    at: SystemTime,
) -> Result<Vec<u8>, TranslateError> {
    let (added, _) = signature(credentials, host, target, body, headers, at)?;
    let mut out = Vec::with_capacity(512);
    for (name, value) in added {
        let name = match name.as_str() {
            "authorization" => "Authorization",
            "x-amz-date" => "X-Amz-Date",
            "x-amz-security-token" => "X-Amz-Security-Token",
            "x-amz-content-sha256" => "X-Amz-Content-Sha256",
            other => other,
        };
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    Ok(out)
}

/// Why a request's signature does not hold.
#[derive(Debug, PartialEq, Eq)]
pub enum VerifyError {
    /// No `Authorization`, or one that is not SigV4 (Bedrock's
    /// `MissingAuthenticationTokenException` / `IncompleteSignatureException`).
    Malformed(String),
    /// An access key id that is not the expected one
    /// (`UnrecognizedClientException`).
    UnknownKey,
    /// The signature differs (`InvalidSignatureException`).
    Mismatch,
}

/// The parts of a SigV4 `Authorization` value.
struct Authorization<'a> {
    key_id: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Result<Authorization<'_>, VerifyError> {
    let malformed = |what: &str| VerifyError::Malformed(what.to_string());
    let rest = value
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or_else(|| malformed("Authorization must be AWS4-HMAC-SHA256"))?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (name, value) = part.trim().split_once('=').unwrap_or(("", ""));
        match name {
            "Credential" => credential = Some(value),
            "SignedHeaders" => signed = Some(value),
            "Signature" => signature = Some(value),
            _ => {}
        }
    }
    let credential = credential.ok_or_else(|| malformed("Authorization has no Credential"))?;
    let mut scope = credential.split('/');
    let (Some(key_id), Some(_date), Some(region), Some(service), Some("aws4_request"), None) = (
        scope.next(),
        scope.next(),
        scope.next(),
        scope.next(),
        scope.next(),
        scope.next(),
    ) else {
        return Err(malformed(
            "Credential must be KEY/DATE/REGION/SERVICE/aws4_request",
        ));
    };
    Ok(Authorization {
        key_id,
        region,
        service,
        signed_headers: signed
            .ok_or_else(|| malformed("Authorization has no SignedHeaders"))?
            .split(';')
            .collect(),
        signature: signature.ok_or_else(|| malformed("Authorization has no Signature"))?,
    })
}

/// `YYYYMMDDTHHMMSSZ` (`X-Amz-Date`) as a time.
pub fn parse_amz_date(value: &str) -> Option<SystemTime> {
    let b = value.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num =
        |range: std::ops::Range<usize>| -> Option<i64> { value.get(range)?.parse::<i64>().ok() };
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).ok()?))
}

/// Checks a `POST` request's SigV4 signature: `authorization` is its
/// `Authorization` value, `header` gives the value of any of its fields
/// (for those it signed: `Host`, `X-Amz-Date`, ...). The key id must be
/// `key_id` when one is given; the signature is recomputed with `secret`
/// when one is given (without, only the form of the signature is checked).
pub fn verify<'a>(
    authorization: &str,
    header: impl Fn(&str) -> Option<&'a str>,
    target: &str,
    body: &[u8],
    key_id: Option<&str>,
    secret: Option<&str>,
) -> Result<(), VerifyError> {
    let auth = parse_authorization(authorization)?;
    if key_id.is_some_and(|k| k != auth.key_id) {
        return Err(VerifyError::UnknownKey);
    }
    if auth.service != SERVICE {
        return Err(VerifyError::Mismatch);
    }
    let date = header("x-amz-date")
        .and_then(parse_amz_date)
        .ok_or_else(|| VerifyError::Malformed("X-Amz-Date is missing or not valid".into()))?;
    let host = header("host").ok_or_else(|| VerifyError::Malformed("Host is missing".into()))?;
    let Some(secret) = secret else {
        return Ok(());
    };
    let mut signed = Vec::new();
    for name in &auth.signed_headers {
        if matches!(*name, "host" | "x-amz-date" | "x-amz-security-token") {
            continue;
        }
        let value = header(name)
            .ok_or_else(|| VerifyError::Malformed(format!("signed header {name} is missing")))?;
        signed.push((*name, value));
    }
    let credentials = Credentials {
        access_key_id: auth.key_id.to_string(),
        secret_access_key: secret.to_string(),
        session_token: header("x-amz-security-token").map(str::to_string),
        region: auth.region.to_string(),
    };
    let (_, expected) = signature(&credentials, host, target, body, &signed, date)
        .map_err(|e| VerifyError::Malformed(e.message))?;
    if expected == auth.signature {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}
