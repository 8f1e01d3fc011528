//! The few fields of a request body that routing needs, read without
//! building a document: `model` (with its position, so that it can be
//! replaced in place), `stream` and whether `stream_options` is there.
//! Everything else in the body is passed on byte for byte.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::error::ProxyError;

/// What routing reads from a JSON request body.
#[derive(Debug)]
pub struct RoutingFields<'a> {
    pub model: &'a str,
    /// Byte range of the `model` value (its quotes included) in the body.
    pub model_span: (usize, usize),
    pub stream: bool,
    pub has_stream_options: bool,
}

#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    stream: Option<bool>,
    #[serde(borrow)]
    stream_options: Option<&'a RawValue>,
}

impl<'a> RoutingFields<'a> {
    /// Reads the routing fields; `Ok(None)` when the body has no `model`.
    /// (The fields are borrowed: a model name with escapes is refused rather
    /// than copied, as no real model name has one.)
    pub fn parse(body: &'a [u8]) -> Result<Option<Self>, ProxyError> {
        let fields: Fields<'a> = serde_json::from_slice(body)
            .map_err(|e| ProxyError::InvalidBody(format!("invalid JSON body: {e}")))?;
        let Some(raw) = fields.model else {
            return Ok(None);
        };
        let text = raw.get();
        let model = text
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .filter(|m| !m.contains('\\'))
            .ok_or_else(|| ProxyError::InvalidField {
                field: "model".into(),
                message: "must be a plain string".into(),
            })?;
        // A borrowed `RawValue` points into `body`.
        let start = text.as_ptr() as usize - body.as_ptr() as usize;
        Ok(Some(Self {
            model,
            model_span: (start, start + text.len()),
            stream: fields.stream.unwrap_or(false),
            has_stream_options: fields.stream_options.is_some(),
        }))
    }
}

/// The body with its `model` value replaced by `model`, and, when
/// `ask_usage`, `"stream_options":{"include_usage":true}` added so that a
/// stream ends with its token counts.
pub fn rewrite(body: &[u8], fields: &RoutingFields, model: &str, ask_usage: bool) -> Vec<u8> {
    const USAGE: &[u8] = br#""stream_options":{"include_usage":true},"#;
    let (start, end) = fields.model_span;
    let mut out = Vec::with_capacity(body.len() + model.len() + USAGE.len() + 2);
    let open = body.iter().position(|&b| b == b'{').unwrap_or(0);
    if ask_usage && open < start {
        out.extend_from_slice(&body[..=open]);
        out.extend_from_slice(USAGE);
        out.extend_from_slice(&body[open + 1..start]);
    } else {
        out.extend_from_slice(&body[..start]);
    }
    out.push(b'"');
    out.extend_from_slice(model.as_bytes());
    out.push(b'"');
    out.extend_from_slice(&body[end..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_model_and_stream() {
        let body = br#"{"messages":[{"role":"user","content":"hi \"model\""}], "model" : "gpt-4o", "stream":true}"#;
        let fields = RoutingFields::parse(body).unwrap().unwrap();
        assert_eq!(fields.model, "gpt-4o");
        assert_eq!(
            &body[fields.model_span.0..fields.model_span.1],
            br#""gpt-4o""#
        );
        assert!(fields.stream && !fields.has_stream_options);
    }

    #[test]
    fn rewrites_in_place() {
        let body = br#"{"model":"fast","stream":true,"messages":[]}"#;
        let fields = RoutingFields::parse(body).unwrap().unwrap();
        let out = rewrite(body, &fields, "gpt-4o-mini", true);
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["model"], "gpt-4o-mini");
        assert_eq!(value["stream_options"]["include_usage"], true);
        assert_eq!(value["messages"], serde_json::json!([]));
        let out = rewrite(body, &fields, "m", false);
        assert_eq!(out, br#"{"model":"m","stream":true,"messages":[]}"#);
    }

    #[test]
    fn refuses_what_is_not_a_request() {
        assert!(RoutingFields::parse(b"not json").is_err());
        assert!(RoutingFields::parse(br#"{"model":7}"#).is_err());
        assert!(
            RoutingFields::parse(br#"{"messages":[]}"#)
                .unwrap()
                .is_none()
        );
        assert!(RoutingFields::parse(br#"{"model":"a\"b"}"#).is_err());
    }
}
