//! `run_status`: a build's and one stage's status for log ingest's answer to a runner,
//! read from the two items that hold them, not from the whole build.

use super::DynamoStateStore;
use super::keys::{BUILD_SK, Item, backend, get_s, key, pk, sdk, stage_sk};
use kiln_domain::{BuildId, StageName, Status};
use kiln_store::{RunStatus, StoreError};

impl DynamoStateStore {
    /// Two GetItems at once (the build item `BUILD`, the stage item `BUILD#STAGE#<name>`),
    /// projecting only their `status` attribute, eventually consistent: half a read unit
    /// each, however many stages the build has — where `get_build` reads every stage
    /// item consistently (a runner asks after every log batch and heartbeat).
    ///
    /// Eventually consistent is enough: the answer is a hint (cancel, or "your stage was
    /// ended by an event") that makes a runner stop sooner. What decides whether a runner
    /// may go on is its lease, renewed with a consistent read and a conditional write
    /// (`claim_job`); a stop read a moment late only lets one more batch through.
    pub(super) async fn read_run_status(
        &self,
        id: &BuildId,
        stage: Option<&StageName>,
    ) -> Result<Option<RunStatus>, StoreError> {
        let build = self.item_status(id, BUILD_SK.to_string());
        let (build, stage) = match stage {
            Some(stage) => {
                let (b, s) = tokio::join!(build, self.item_status(id, stage_sk(stage)));
                (b?, s?)
            }
            None => (build.await?, None),
        };
        Ok(build.map(|build| RunStatus { build, stage }))
    }

    /// The `status` attribute of one item of the build (None: no such item).
    async fn item_status(&self, id: &BuildId, sk: String) -> Result<Option<Status>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(pk(id), sk)))
            .projection_expression("#status")
            .expression_attribute_names("#status", "status")
            .send()
            .await
            .map_err(|e| sdk("get status", &e))?;
        out.item.as_ref().map(status_of).transpose()
    }
}

fn status_of(item: &Item) -> Result<Status, StoreError> {
    let text = get_s(item, "status")?;
    serde_json::from_value(serde_json::Value::String(text.to_string()))
        .map_err(|e| backend("parse", format!("status {text:?}: {e}")))
}
