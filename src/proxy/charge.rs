//! What a routed answer cost: read from the token usage the answer
//! reports, priced at its deployment's rates, charged to the key (and its
//! user) and settled against the budget hold taken by `admit`.
//!
//! A small whole answer is read before its head goes out, so that its
//! cost is reported in the head (`x-litellm-response-cost`); any other is
//! scanned as it is relayed and charged afterwards, a stream cut short
//! included. The pass-through is not priced; its answers are scanned for
//! their usage only when the key has a tokens-per-minute limit to draw on.

use std::time::Duration;

use super::Session;
use super::admit::{Admitted, RateFields};
use super::forward::{Destination, ResponseStart};
use super::relay::{AddedFields, Extras};
use crate::error::ProxyError;
use crate::http::io::read_append;
use crate::http::{Framing, RequestHead};
use crate::record::usage::{Usage, UsageScan};
use crate::store::{Money, Spend};
use crate::worker::keys::CachedKey;
use crate::worker::models::Deployment;
use crate::worker::quota::Hold;

/// Largest answer read whole to report its cost in the response head.
const MAX_COSTED_ANSWER: u64 = 1 << 20;

/// Meters one answer. Made once the answer's head has come.
pub struct Meter<'a> {
    /// The deployment that answered; `None` for the pass-through.
    deployment: Option<&'a Deployment>,
    key: &'a CachedKey,
    /// What the key had spent when the request was admitted.
    spend: Spend,
    /// Dropped with the meter, when the request ends.
    hold: Hold<'a>,
    /// The answer's usage is needed: it is priced, or the key has a
    /// tokens-per-minute limit.
    metered: bool,
    /// The model, when the key counts its spend on it apart.
    model: Option<&'a str>,
    /// `x-ratelimit-*` values, as text.
    rate_text: Option<Box<[String; 4]>>,
    /// The client asked for a stream.
    stream: bool,
    /// The answer's usage, scanned as it is relayed.
    scan: UsageScan,
    /// The answer was read whole and charged before the relay.
    charged: bool,
    /// The response head fields the relay adds: cost, spend, deployment.
    cost_text: String,
    spend_text: String,
}

impl<'a> Meter<'a> {
    /// `stream`: the client asked for a stream.
    pub fn new(
        (destination, response): (&'a Destination<'_>, &ResponseStart),
        stream: bool,
        key: &'a CachedKey,
        admitted: Admitted<'a>,
        model: Option<&'a str>,
    ) -> Self {
        let deployment = destination.deployment();
        let Admitted {
            spend, hold, rate, ..
        } = admitted;
        let metered = deployment.is_some() || hold.draws_tokens_at_all();
        // The pass-through's body was not read for `stream`: when its usage
        // is wanted, the answer says whether it is a stream.
        let stream = stream
            || (metered
                && deployment.is_none()
                && response
                    .head
                    .header(&response.buf, "content-type")
                    .is_some_and(|t| t.trim_ascii_start().starts_with(b"text/event-stream")));
        Self {
            deployment,
            key,
            spend,
            metered,
            hold,
            model,
            rate_text: rate_text(rate),
            stream,
            scan: UsageScan::new(stream),
            charged: false,
            cost_text: String::new(),
            spend_text: String::new(),
        }
    }

    /// The length of a priced answer that is read whole and charged before
    /// its head goes out: not a stream, and small enough.
    pub fn whole_answer(&self, request: &RequestHead, response: &ResponseStart) -> Option<u64> {
        self.deployment?;
        match response.head.framing(&request.method) {
            Framing::Length(n) if !self.stream && n <= MAX_COSTED_ANSWER => Some(n),
            _ => None,
        }
    }

    /// Reads the answer's `length` bytes whole and charges it now, so that
    /// its head can say what it cost.
    pub async fn price_whole_answer(
        &mut self,
        s: &mut Session<'_>,
        response: &mut ResponseStart,
        length: u64,
    ) -> Result<(), ProxyError> {
        let Some(deployment) = self.deployment else {
            return Ok(());
        };
        read_whole_body(response, length, deployment.provider.timeouts.read).await?;
        let mut scan = UsageScan::new(false);
        scan.feed(&response.buf[response.head.len..]);
        self.charge_now(s, scan.finish());
        Ok(())
    }

    /// Charges `usage` now, before the relay: for an answer read whole
    /// (its head then says what it cost) or one whose usage was found
    /// otherwise (a translated stream's).
    pub fn charge_now(&mut self, s: &mut Session<'_>, usage: Option<Usage>) {
        if !self.metered || self.charged {
            return;
        }
        let cost = self.settle(s, usage);
        self.charged = true;
        self.cost_text = format!("{}", cost.dollars());
        self.spend_text = format!("{}", self.spend.key.saturating_add(cost).dollars());
    }

    /// What the relay adds: the cost fields for the head, and the usage
    /// scan of an answer not charged yet.
    pub fn extras(&mut self) -> Extras<'_> {
        // A key's rate fields go on every answer, metered or not (a
        // pass-through key with only a requests-per-minute limit).
        if !self.charged && self.deployment.is_some() {
            // The spend before this answer: what is known when its head goes.
            self.spend_text = format!("{}", self.spend.key.dollars());
        }
        let Self {
            deployment,
            cost_text,
            spend_text,
            scan,
            charged,
            rate_text,
            metered,
            ..
        } = self;
        let mut headers = AddedFields::default();
        if let Some(deployment) = deployment {
            if *charged {
                headers.push("x-litellm-response-cost", cost_text.as_bytes());
            }
            headers.push("x-litellm-key-spend", spend_text.as_bytes());
            headers.push("x-litellm-model-id", deployment.id.as_bytes());
        }
        for (name, text) in RATE_FIELDS
            .iter()
            .zip(rate_text.iter().flat_map(|t| t.iter()))
        {
            if !text.is_empty() {
                headers.push(name, text.as_bytes());
            }
        }
        Extras {
            headers,
            usage: (*metered && !*charged).then_some(scan),
        }
    }

    /// After the relay: charges what the answer reported using, unless it
    /// was charged before.
    pub fn charge(mut self, s: &mut Session<'_>) {
        if !self.metered || self.charged {
            return;
        }
        let scan = std::mem::replace(&mut self.scan, UsageScan::new(false));
        if let Some(usage) = scan.finish() {
            self.settle(s, Some(usage));
        }
    }

    /// Charges `usage` at the deployment's rates and settles the hold;
    /// returns the cost.
    fn settle(&mut self, s: &mut Session<'_>, usage: Option<Usage>) -> Money {
        let cost = match (self.deployment, usage) {
            (Some(deployment), Some(u)) => deployment.cost(u.prompt_tokens, u.completion_tokens),
            _ => Money(0),
        };
        if self.deployment.is_some() {
            s.worker
                .quota
                .borrow_mut()
                .charge(self.key.view.key_id, cost, self.model);
        }
        let tokens = usage.map_or(0, |u| u.prompt_tokens + u.completion_tokens);
        self.hold.settle(cost, tokens);
        if let Some((_, id)) = self.deployment.and_then(|d| d.tpm.as_ref()) {
            s.worker.quota.borrow_mut().counters.draw_tokens(id, tokens);
        }
        s.record.usage = usage;
        s.record.cost = cost;
        cost
    }
}

/// The `x-ratelimit-*` fields, in the order of `rate_text`.
const RATE_FIELDS: [&str; 4] = [
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
];

/// The fields' values as text; `None` for a key without per-minute limits.
fn rate_text(rate: RateFields) -> Option<Box<[String; 4]>> {
    if rate.requests.is_none() && rate.tokens.is_none() {
        return None;
    }
    let text = |value: Option<u64>| value.map(|n| n.to_string()).unwrap_or_default();
    Some(Box::new([
        text(rate.requests.map(|(limit, _)| limit)),
        text(rate.requests.map(|(_, left)| left)),
        text(rate.tokens.map(|(limit, _)| limit)),
        text(rate.tokens.map(|(_, left)| left)),
    ]))
}

/// Reads the rest of a `Content-Length` body of `length` bytes into
/// `response.buf`.
async fn read_whole_body(
    response: &mut ResponseStart,
    length: u64,
    inactivity: Duration,
) -> Result<(), ProxyError> {
    let end = response.head.len + length as usize;
    while response.buf.len() < end {
        let buf = std::mem::take(&mut response.buf);
        let wanted = end - buf.len();
        let read = read_append(&mut response.stream, buf, wanted);
        match monoio::time::timeout(inactivity, read).await {
            Err(_) => return Err(ProxyError::UpstreamTimeout),
            Ok((Ok(n), buf)) if n > 0 => response.buf = buf,
            Ok((Ok(_), _)) => return Err(ProxyError::UpstreamClosed),
            Ok((Err(error), _)) => return Err(ProxyError::UpstreamIo(error)),
        }
    }
    Ok(())
}
