//! The few fields of a request body that routing needs, read without
//! building a document: `model` (with its position, so that it can be
//! replaced in place), `stream`, whether `stream_options` is there, and the
//! fields that bound the answer's length (for a budget's estimate).
//! Everything else in the body is passed on byte for byte.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::ProxyError;

/// What routing reads from a JSON request body.
#[derive(Debug)]
pub struct RoutingFields<'a> {
    pub model: &'a str,
    /// Byte range of the `model` value (its quotes included) in the body.
    pub model_span: (usize, usize),
    pub stream: bool,
    pub has_stream_options: bool,
    pub limits: AnswerLimits,
}

/// The fields of a request body that bound the length of its answer.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AnswerLimits {
    pub max_tokens: Option<u64>,
    pub max_completion_tokens: Option<u64>,
    pub n: Option<u64>,
    pub best_of: Option<u64>,
}

impl AnswerLimits {
    /// From the raw values; one that is not a whole number (a string, a
    /// negative number) makes them all unknown: the budget's default
    /// applies, and the upstream judges the field.
    fn read(raw: [Option<&RawValue>; 4]) -> Self {
        let mut values = [None; 4];
        for (value, raw) in values.iter_mut().zip(raw) {
            match raw.map(RawValue::get) {
                None | Some("null") => {}
                Some(text) => match text.parse::<u64>() {
                    Ok(number) => *value = Some(number),
                    Err(_) => return Self::default(),
                },
            }
        }
        let [max_tokens, max_completion_tokens, n, best_of] = values;
        Self {
            max_tokens,
            max_completion_tokens,
            n,
            best_of,
        }
    }
}

#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    stream: Option<bool>,
    #[serde(borrow)]
    stream_options: Option<&'a RawValue>,
    #[serde(borrow)]
    max_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    max_completion_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    n: Option<&'a RawValue>,
    #[serde(borrow)]
    best_of: Option<&'a RawValue>,
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
            limits: AnswerLimits::read([
                fields.max_tokens,
                fields.max_completion_tokens,
                fields.n,
                fields.best_of,
            ]),
        }))
    }
}

/// Room to keep free after a routed body so that rewriting it in place
/// (`Rewrite::apply`: a longer model name, the stream usage option) does
/// not have to move it to a larger buffer.
pub const REWRITE_HEADROOM: usize = 256;

const USAGE: &[u8] = br#""stream_options":{"include_usage":true},"#;

/// Rewrites a body in place for one deployment after another: its `model`
/// value replaced by the deployment's model name, and, when asked,
/// `"stream_options":{"include_usage":true}` added so that a stream ends
/// with its token counts. The body is held once: no copy per deployment.
#[derive(Debug, Clone, Copy)]
pub struct Rewrite {
    /// Byte range of the `model` value (its quotes included) in the body.
    span: (usize, usize),
    usage_added: bool,
}

impl Rewrite {
    pub fn new(fields: &RoutingFields) -> Self {
        Self {
            span: fields.model_span,
            usage_added: false,
        }
    }

    pub fn apply(&mut self, body: &mut Vec<u8>, model: &str, ask_usage: bool) {
        if ask_usage && !self.usage_added {
            self.usage_added = true;
            let open = body.iter().position(|&b| b == b'{').unwrap_or(0);
            if open < self.span.0 {
                // `splice` grows a short buffer by doubling it; an exact
                // reservation (a no-op within the headroom) does not.
                body.reserve_exact(USAGE.len());
                body.splice(open + 1..open + 1, USAGE.iter().copied());
                self.span.0 += USAGE.len();
                self.span.1 += USAGE.len();
            }
        }
        let (start, end) = self.span;
        let quoted = model.len() + 2;
        body.reserve_exact(quoted.saturating_sub(end - start));
        let value = std::iter::once(b'"')
            .chain(model.bytes())
            .chain(std::iter::once(b'"'));
        body.splice(start..end, value);
        self.span = (start, start + quoted);
    }
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
        let mut rewrite = Rewrite::new(&fields);
        let mut out = Vec::with_capacity(body.len() + REWRITE_HEADROOM);
        out.extend_from_slice(body);
        let capacity = out.capacity();
        rewrite.apply(&mut out, "gpt-4o-mini", true);
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["model"], "gpt-4o-mini");
        assert_eq!(value["stream_options"]["include_usage"], true);
        assert_eq!(value["messages"], serde_json::json!([]));
        // The next deployment's name replaces the last one's; the usage
        // option is not added twice. The buffer never moved.
        rewrite.apply(&mut out, "m", true);
        assert_eq!(
            out,
            br#"{"stream_options":{"include_usage":true},"model":"m","stream":true,"messages":[]}"#
        );
        assert_eq!(out.capacity(), capacity);

        let mut out = body.to_vec();
        Rewrite::new(&fields).apply(&mut out, "m", false);
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
