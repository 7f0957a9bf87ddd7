//! Leases: one item per stage's lease (`BUILD#LEASE#<stage>`: `runner`, `attempt`,
//! `until_ms`), beside the stage item, so that a heartbeat never touches the stage item
//! whose version commits are conditional on. The decision is the domain's
//! (`StageState::decide_claim`); this writes it.

use super::DynamoStateStore;
use super::keys::*;
use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, Put, TransactWriteItem};
use kiln_domain::commit::ClaimDecision;
use kiln_domain::event::now_ms;
use kiln_domain::state::Lease;
use kiln_domain::{BuildId, StageName};
use kiln_store::{Claim, StoreError};

impl DynamoStateStore {
    /// One try at a claim: `None` when a write lost a race (retried from a fresh read).
    pub(super) async fn try_claim(
        &self,
        id: &BuildId,
        stage: &StageName,
        runner: &str,
        lease_ms: u64,
    ) -> Result<Option<Claim>, StoreError> {
        // The build item, the stage's item and its lease item only.
        let (loaded, _) = self
            .load_part(id, std::slice::from_ref(stage), true, None)
            .await?
            .ok_or_else(|| StoreError::NotFound(id.clone()))?;
        let Some(st) = loaded.build.stage(stage.as_str()) else {
            return Err(StoreError::NotFound(id.clone()));
        };
        let decision = st.decide_claim(loaded.build.status, runner, now_ms(), lease_ms);
        let claim = Claim::from(&decision);
        let won = match &decision {
            ClaimDecision::Finished | ClaimDecision::Busy => return Ok(Some(claim)),
            ClaimDecision::Renew(lease) => self.renew(id, stage, lease).await?,
            ClaimDecision::Take(lease) => {
                let read = (loaded.build.status, st.status, st.lease.as_ref());
                self.take(id, stage, lease, read, self.expiry(&loaded.build)).await?
            }
        };
        Ok(won.then_some(claim))
    }

    /// Moves the end of a live lease: one UpdateItem of the lease item alone, conditional
    /// on the holder and attempt being unchanged (a takeover in between wins). It does not
    /// look at the stage: a stage that ended since the read is seen at the next heartbeat.
    async fn renew(&self, id: &BuildId, stage: &StageName, lease: &Lease) -> Result<bool, StoreError> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(pk(id), lease_sk(stage))))
            .update_expression("SET until_ms = :until")
            .condition_expression("runner = :runner AND attempt = :attempt")
            .expression_attribute_values(":until", n(lease.until_ms))
            .expression_attribute_values(":runner", s(lease.runner.as_str()))
            .expression_attribute_values(":attempt", n(u64::from(lease.attempt)))
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => {
                Ok(false)
            }
            Err(e) => Err(sdk("renew lease", &e)),
        }
    }

    /// Takes the job as a new attempt, atomically with the state it was decided on: the
    /// build and the stage still have the status read (an ended one cannot be taken), and
    /// the lease item is still as read (of two runners taking over, one wins).
    async fn take(
        &self,
        id: &BuildId,
        stage: &StageName,
        lease: &Lease,
        (build, stage_status, old): (kiln_domain::Status, kiln_domain::Status, Option<&Lease>),
        expires: AttributeValue,
    ) -> Result<bool, StoreError> {
        let check = |sk: String, status| {
            ConditionCheck::builder()
                .table_name(&self.table)
                .set_key(Some(key(pk(id), sk)))
                .condition_expression("#status = :status")
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":status", s(status_str(status)?))
                .build()
                .map_err(|e| backend("build request", e))
        };
        let mut item = key(pk(id), lease_sk(stage));
        item.insert("runner".into(), s(lease.runner.as_str()));
        item.insert("attempt".into(), n(u64::from(lease.attempt)));
        item.insert("until_ms".into(), n(lease.until_ms));
        item.insert(EXPIRES_AT.into(), expires);
        let put = Put::builder().table_name(&self.table).set_item(Some(item));
        let put = match old {
            None => put.condition_expression("attribute_not_exists(sk)"),
            Some(old) => put
                .condition_expression("runner = :runner AND attempt = :attempt AND until_ms = :until")
                .expression_attribute_values(":runner", s(old.runner.as_str()))
                .expression_attribute_values(":attempt", n(u64::from(old.attempt)))
                .expression_attribute_values(":until", n(old.until_ms)),
        };
        let items = vec![
            TransactWriteItem::builder().condition_check(check(BUILD_SK.to_string(), build)?).build(),
            TransactWriteItem::builder().condition_check(check(stage_sk(stage), stage_status)?).build(),
            TransactWriteItem::builder().put(put.build().map_err(|e| backend("build request", e))?).build(),
        ];
        match self.transact(items).await {
            Ok(()) => Ok(true),
            Err(e) => match cancel_reasons(&e) {
                Some(r) if is_race(&r) => Ok(false),
                _ => Err(sdk("claim", &e)),
            },
        }
    }
}
