//! What a routed answer cost: read from the token usage the answer
//! reports, priced at its deployment's rates, charged to the key (and its
//! user) and settled against the budget hold taken by `admit`.
//!
//! A small whole answer is read before its head goes out, so that its
//! cost is reported in the head (`x-litellm-response-cost`); any other is
//! scanned as it is relayed and charged afterwards, a stream cut short
//! included. The pass-through is not priced: its meter does nothing.

use std::time::Duration;

use super::Session;
use super::forward::{Destination, ResponseStart};
use super::relay::{AddedFields, Extras};
use crate::error::ProxyError;
use crate::http::io::read_append;
use crate::http::{Framing, RequestHead};
use crate::record::usage::{Usage, UsageScan};
use crate::store::{Money, Spend};
use crate::worker::keys::CachedKey;
use crate::worker::models::Deployment;
use crate::worker::quota::BudgetHold;

/// Largest answer read whole to report its cost in the response head.
const MAX_COSTED_ANSWER: u64 = 1 << 20;

/// Meters one answer. Made once the answer's head has come.
pub struct Meter<'a> {
    /// The deployment that answered; `None` for the pass-through.
    deployment: Option<&'a Deployment>,
    key: &'a CachedKey,
    /// What the key had spent when the request was admitted.
    spend: Spend,
    hold: Option<BudgetHold<'a>>,
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
        destination: &'a Destination<'_>,
        stream: bool,
        key: &'a CachedKey,
        (spend, hold): (Spend, BudgetHold<'a>),
    ) -> Self {
        let deployment = destination.deployment();
        Self {
            deployment,
            key,
            spend,
            hold: Some(hold),
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
        if self.deployment.is_none() || self.charged {
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
        let Some(deployment) = self.deployment else {
            return Extras::default();
        };
        if !self.charged {
            // The spend before this answer: what is known when its head goes.
            self.spend_text = format!("{}", self.spend.key.dollars());
        }
        let Self {
            cost_text,
            spend_text,
            scan,
            charged,
            ..
        } = self;
        Extras {
            headers: if *charged {
                AddedFields::of(&[
                    ("x-litellm-response-cost", cost_text.as_bytes()),
                    ("x-litellm-key-spend", spend_text.as_bytes()),
                    ("x-litellm-model-id", deployment.id.as_bytes()),
                ])
            } else {
                AddedFields::of(&[
                    ("x-litellm-key-spend", spend_text.as_bytes()),
                    ("x-litellm-model-id", deployment.id.as_bytes()),
                ])
            },
            usage: (!*charged).then_some(scan),
        }
    }

    /// After the relay: charges what the answer reported using, unless it
    /// was charged before.
    pub fn charge(mut self, s: &mut Session<'_>) {
        if self.deployment.is_none() || self.charged {
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
        s.worker
            .quota
            .borrow_mut()
            .charge(self.key.view.key_id, cost);
        if let Some(hold) = self.hold.take() {
            hold.settle(cost);
        }
        s.record.usage = usage;
        s.record.cost = cost;
        cost
    }
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
