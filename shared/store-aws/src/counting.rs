//! Counts the requests the SDK clients really send (by service and operation, every attempt)
//! and the capacity DynamoDB reports, for the cost benchmark. Attached only by
//! [`crate::Clients::from_sdk_config_counted`]; clients made without it carry no interceptor.

use aws_sdk_dynamodb::config::interceptors::{
    BeforeSerializationInterceptorContextMut, BeforeTransmitInterceptorContextRef,
    FinalizerInterceptorContextRef,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::types::{ConsumedCapacity, ReturnConsumedCapacity};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{Input, Output};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::retries::RequestAttempts;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// What a [`RequestCounter`] has seen so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestCounts {
    /// Requests sent, by `service.Operation` (`dynamodb.TransactWriteItems`, `s3.PutObject`,
    /// `sqs.SendMessage`...); a retried request counts once per attempt, as AWS bills it.
    pub requests: BTreeMap<String, u64>,
    /// Of `requests`, the SDK's retries (attempts after an operation's first), by operation.
    pub retries: BTreeMap<String, u64>,
    /// `sqs.ReceiveMessage` requests that returned no message (idle long polls), also
    /// counted in `requests`.
    pub empty_receives: u64,
    /// SQS requests to FIFO queues (priced apart), also counted in `requests`.
    pub sqs_fifo: u64,
    /// Of `empty_receives`, those on FIFO queues.
    pub empty_receives_fifo: u64,
    /// DynamoDB read and write capacity units, by operation, as the responses reported them
    /// (`ReturnConsumedCapacity::Total` is set on every request that did not ask already).
    /// Requests that failed (a condition not met, a transaction canceled) report none, so
    /// they are missing here but present in `requests`.
    pub dynamodb_capacity: BTreeMap<String, Capacity>,
}

/// DynamoDB capacity units.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Capacity {
    pub read_units: f64,
    pub write_units: f64,
}

impl RequestCounts {
    /// The requests of one service (`dynamodb`, `s3`, `sqs`, `ssm`), summed.
    pub fn service_total(&self, service: &str) -> u64 {
        let prefix = format!("{service}.");
        self.requests.iter().filter(|(k, _)| k.starts_with(&prefix)).map(|(_, n)| n).sum()
    }

    /// The operations called (requests less the SDK's retries), by operation.
    pub fn operations(&self) -> BTreeMap<String, u64> {
        minus(&self.requests, &self.retries)
    }

    /// What was counted after `earlier` (a snapshot of the same counter).
    pub fn since(&self, earlier: &RequestCounts) -> RequestCounts {
        let requests = minus(&self.requests, &earlier.requests);
        let dynamodb_capacity = self
            .dynamodb_capacity
            .iter()
            .map(|(k, c)| {
                let e = earlier.dynamodb_capacity.get(k).copied().unwrap_or_default();
                (
                    k.clone(),
                    Capacity {
                        read_units: c.read_units - e.read_units,
                        write_units: c.write_units - e.write_units,
                    },
                )
            })
            .filter(|(_, c)| c.read_units > 0.0 || c.write_units > 0.0)
            .collect();
        RequestCounts {
            requests,
            retries: minus(&self.retries, &earlier.retries),
            empty_receives: self.empty_receives.saturating_sub(earlier.empty_receives),
            sqs_fifo: self.sqs_fifo.saturating_sub(earlier.sqs_fifo),
            empty_receives_fifo: self.empty_receives_fifo.saturating_sub(earlier.empty_receives_fifo),
            dynamodb_capacity,
        }
    }
}

/// `a - b` by key, keeping the keys left above zero.
fn minus(a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    a.iter()
        .map(|(k, n)| (k.clone(), n - b.get(k).copied().unwrap_or(0).min(*n)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// Shared by the interceptors of every client it is attached to.
#[derive(Debug, Default)]
pub struct RequestCounter(Mutex<RequestCounts>);

impl RequestCounter {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn snapshot(&self) -> RequestCounts {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RequestCounts> {
        // A panic elsewhere while counting leaves the counts usable.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The interceptor; one per client, all sharing one [`RequestCounter`].
#[derive(Debug, Clone)]
pub(crate) struct CountRequests(pub Arc<RequestCounter>);

/// `service.Operation` from the operation's metadata (`DynamoDB`/`TransactWriteItems` →
/// `dynamodb.TransactWriteItems`).
fn operation(cfg: &ConfigBag) -> Option<String> {
    let m = cfg.load::<Metadata>()?;
    Some(format!("{}.{}", m.service().to_ascii_lowercase(), m.name()))
}

/// Whether an SQS request's JSON body names a FIFO queue (a message body's quotes are
/// escaped, so only the `QueueUrl` value ends in `.fifo"`).
fn to_fifo(body: Option<&[u8]>) -> bool {
    body.is_some_and(|b| b.windows(6).any(|w| w == b".fifo\""))
}

/// Asks DynamoDB to report the capacity an operation consumed, unless it already asked.
fn ask_capacity(input: &mut Input) {
    use aws_sdk_dynamodb::operation as op;
    macro_rules! ask {
        ($($t:ty),*) => {$(
            if let Some(i) = input.downcast_mut::<$t>() {
                i.return_consumed_capacity.get_or_insert(ReturnConsumedCapacity::Total);
                return;
            }
        )*};
    }
    ask!(
        op::get_item::GetItemInput,
        op::query::QueryInput,
        op::put_item::PutItemInput,
        op::update_item::UpdateItemInput,
        op::delete_item::DeleteItemInput,
        op::transact_write_items::TransactWriteItemsInput,
        op::transact_get_items::TransactGetItemsInput,
        op::batch_get_item::BatchGetItemInput,
        op::batch_write_item::BatchWriteItemInput,
        op::scan::ScanInput
    );
}

/// The capacity a DynamoDB output reports (reads and writes, from the totals when the
/// per-kind figures are absent: the operation's kind says which).
fn capacity_of(output: &Output, name: &str) -> Option<Capacity> {
    use aws_sdk_dynamodb::operation as op;
    let list: Vec<&ConsumedCapacity> = if let Some(o) = output.downcast_ref::<op::get_item::GetItemOutput>() {
        o.consumed_capacity.iter().collect()
    } else if let Some(o) = output.downcast_ref::<op::query::QueryOutput>() {
        o.consumed_capacity.iter().collect()
    } else if let Some(o) = output.downcast_ref::<op::put_item::PutItemOutput>() {
        o.consumed_capacity.iter().collect()
    } else if let Some(o) = output.downcast_ref::<op::update_item::UpdateItemOutput>() {
        o.consumed_capacity.iter().collect()
    } else if let Some(o) = output.downcast_ref::<op::delete_item::DeleteItemOutput>() {
        o.consumed_capacity.iter().collect()
    } else if let Some(o) = output.downcast_ref::<op::transact_write_items::TransactWriteItemsOutput>() {
        o.consumed_capacity.iter().flatten().collect()
    } else if let Some(o) = output.downcast_ref::<op::transact_get_items::TransactGetItemsOutput>() {
        o.consumed_capacity.iter().flatten().collect()
    } else if let Some(o) = output.downcast_ref::<op::batch_get_item::BatchGetItemOutput>() {
        o.consumed_capacity.iter().flatten().collect()
    } else if let Some(o) = output.downcast_ref::<op::batch_write_item::BatchWriteItemOutput>() {
        o.consumed_capacity.iter().flatten().collect()
    } else if let Some(o) = output.downcast_ref::<op::scan::ScanOutput>() {
        o.consumed_capacity.iter().collect()
    } else {
        return None;
    };
    let reads = matches!(name, "GetItem" | "BatchGetItem" | "Query" | "Scan" | "TransactGetItems");
    let mut c = Capacity::default();
    for cc in list {
        let total = cc.capacity_units.unwrap_or(0.0);
        match (cc.read_capacity_units, cc.write_capacity_units) {
            (None, None) if reads => c.read_units += total,
            (None, None) => c.write_units += total,
            (r, w) => {
                c.read_units += r.unwrap_or(0.0);
                c.write_units += w.unwrap_or(0.0);
            }
        }
    }
    Some(c)
}

impl Intercept for CountRequests {
    fn name(&self) -> &'static str {
        "kiln.CountRequests"
    }

    fn modify_before_serialization(
        &self,
        context: &mut BeforeSerializationInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if cfg.load::<Metadata>().is_some_and(|m| m.service() == "DynamoDB") {
            ask_capacity(context.input_mut());
        }
        Ok(())
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(op) = operation(cfg) {
            // The queue's URL is in the JSON body (a message body's quotes are escaped).
            let fifo = op.starts_with("sqs.") && to_fifo(context.request().body().bytes());
            let retry = cfg.load::<RequestAttempts>().is_some_and(|a| a.attempts() > 1);
            let mut counts = self.0.lock();
            if retry {
                *counts.retries.entry(op.clone()).or_default() += 1;
            }
            *counts.requests.entry(op).or_default() += 1;
            counts.sqs_fifo += u64::from(fifo);
        }
        Ok(())
    }

    fn read_after_execution(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let (Some(m), Some(Ok(output))) = (cfg.load::<Metadata>(), context.output_or_error()) else {
            return Ok(());
        };
        match m.service() {
            "DynamoDB" => {
                if let Some(c) = capacity_of(output, m.name()) {
                    let key = format!("dynamodb.{}", m.name());
                    let mut counts = self.0.lock();
                    let e = counts.dynamodb_capacity.entry(key).or_default();
                    e.read_units += c.read_units;
                    e.write_units += c.write_units;
                }
            }
            "SQS" => {
                if let Some(o) =
                    output.downcast_ref::<aws_sdk_sqs::operation::receive_message::ReceiveMessageOutput>()
                    && o.messages.as_ref().is_none_or(Vec::is_empty)
                {
                    let fifo = to_fifo(context.request().and_then(|r| r.body().bytes()));
                    let mut counts = self.0.lock();
                    counts.empty_receives += 1;
                    counts.empty_receives_fifo += u64::from(fifo);
                }
            }
            _ => {}
        }
        Ok(())
    }
}
