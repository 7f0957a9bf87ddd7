//! Commits: the build read, the domain's rules applied (`Build::apply_commit`,
//! `commit::apply_catalog`), then one TransactWriteItems.

use super::DynamoStateStore;
use super::keys::*;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use kiln_domain::BuildId;
use kiln_domain::catalog::{CatalogWrite, ImageRecord};
use kiln_domain::commit::{Applied, CatalogDocs, apply_catalog, images_written};
use kiln_domain::event::now_ms;
use kiln_domain::ids::is_valid_name;
use kiln_domain::state::StageState;
use kiln_store::{Commit, CommitOutcome, StoreError};

impl DynamoStateStore {
    /// A new stage's item, at place `idx` in the build.
    pub(super) fn stage_item(
        &self,
        id: &BuildId,
        idx: u64,
        st: &StageState,
        expires: &AttributeValue,
    ) -> Result<Item, StoreError> {
        let mut item = key(pk(id), stage_sk(&st.name));
        item.insert(EXPIRES_AT.into(), expires.clone());
        item.insert("idx".into(), n(idx));
        item.insert("version".into(), n(1));
        item.insert("status".into(), s(status_str(st.status)?));
        item.insert("dispatched".into(), AttributeValue::Bool(st.dispatched));
        item.insert("doc".into(), s(stage_doc(st)?));
        Ok(item)
    }

    /// Writes a changed stage's document, conditional on the version it was read at.
    pub(super) fn stage_update(
        &self,
        id: &BuildId,
        st: &StageState,
        version: u64,
    ) -> Result<TransactWriteItem, StoreError> {
        let doc = stage_doc(st)?;
        let mut measured = key(pk(id), stage_sk(&st.name));
        measured.insert("doc".into(), s(doc.as_str()));
        self.note_item(&measured);
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(pk(id), stage_sk(&st.name))))
            .update_expression("SET #doc = :doc, #status = :status, #version = :next")
            .condition_expression("#version = :version")
            .expression_attribute_names("#doc", "doc")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":doc", s(doc))
            .expression_attribute_values(":status", s(status_str(st.status)?))
            .expression_attribute_values(":next", n(version + 1))
            .expression_attribute_values(":version", n(version))
            .build()
            .map_err(|e| backend("build request", e))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// One try at a commit: `None` when the transaction lost a race (retried from a fresh
    /// read).
    pub(super) async fn try_commit(
        &self,
        id: &BuildId,
        c: &Commit,
    ) -> Result<Option<CommitOutcome>, StoreError> {
        // The build item, the stages the commit touches and its event id's item, in one
        // read: a commit costs the same in a build of 10 stages or 1,000.
        let touched: Vec<_> = c.stages_touched().into_iter().collect();
        let (loaded, applied) = self
            .load_part(id, &touched, false, Some(&c.event_id))
            .await?
            .ok_or_else(|| StoreError::NotFound(id.clone()))?;
        if applied {
            return Ok(Some(CommitOutcome::Duplicate));
        }
        let refused = |e| StoreError::refused(id, e);
        let mut build = loaded.build.clone();
        let Applied { first_new, changed } = build.apply_commit(c).map_err(refused)?;
        // The catalog writes' conditions, checked here so a stale one is refused with the
        // versions it saw; the transaction checks them again.
        let mut read = CatalogDocs::new();
        for image in images_written(&c.images).map_err(refused)? {
            let records = self.image_records(&image).await?;
            read.insert(image, records);
        }
        apply_catalog(&c.images, read).map_err(refused)?;

        let pk = pk(id);
        let expires = self.expiry(&build);
        let first_seq = loaded.last_seq + 1;
        let last_seq = loaded.last_seq + c.events.len() as u64;
        let mut items = Vec::new();
        let dedupe = c.dedupes();
        if dedupe {
            let mut item = key(pk.clone(), applied_sk(&c.event_id));
            item.insert("at_ms".into(), n(now_ms()));
            item.insert(EXPIRES_AT.into(), expires.clone());
            items.push(self.put_new(item)?);
        }
        let head_doc = build_doc(&build)?;
        let mut measured = key(pk.clone(), BUILD_SK.to_string());
        measured.insert("doc".into(), s(head_doc.as_str()));
        self.note_item(&measured);
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(pk.clone(), BUILD_SK.to_string())))
            .update_expression(
                "SET #doc = :doc, #summary = :summary, #status = :status, #version = :next, #last_seq = :last_seq, \
                 #stages_n = :stages_n",
            )
            .condition_expression("#version = :version")
            .expression_attribute_names("#doc", "doc")
            .expression_attribute_names("#summary", "summary")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#version", "version")
            .expression_attribute_names("#last_seq", "last_seq")
            .expression_attribute_names("#stages_n", "stages_n")
            .expression_attribute_values(":stages_n", n(loaded.stages_n + (build.stages.len() - first_new) as u64))
            .expression_attribute_values(":doc", s(head_doc.clone()))
            .expression_attribute_values(":summary", s(json(&summary(&build))?))
            .expression_attribute_values(":status", s(status_str(build.status)?))
            .expression_attribute_values(":next", n(loaded.version + 1))
            .expression_attribute_values(":version", n(loaded.version))
            .expression_attribute_values(":last_seq", n(last_seq))
            .build()
            .map_err(|e| backend("build request", e))?;
        items.push(TransactWriteItem::builder().update(update).build());
        for name in &changed {
            let st = build.stage(name.as_str()).expect("a transition's stage exists");
            let version = *loaded.stage_versions.get(name).expect("a loaded stage has a version");
            items.push(self.stage_update(id, st, version)?);
        }
        for (k, st) in build.stages.iter().skip(first_new).enumerate() {
            items.push(self.put_new(self.stage_item(id, loaded.stages_n + k as u64, st, &expires)?)?);
        }
        for (event, seq) in c.events.iter().zip(first_seq..) {
            let mut item = key(pk.clone(), event_sk(seq));
            item.insert("seq".into(), n(seq));
            item.insert("event".into(), s(json(event)?));
            item.insert(EXPIRES_AT.into(), expires.clone());
            items.push(self.put_new(item)?);
        }
        for w in &c.images {
            items.extend(self.catalog_items(w)?);
        }
        if items.len() > MAX_TRANSACTION_ITEMS {
            return Err(StoreError::Backend(format!(
                "commit of event {:?} to build {id} needs {} items, more than one DynamoDB transaction takes \
                 ({MAX_TRANSACTION_ITEMS}): {} transitions on {} stages, {} new stages, {} events, {} catalog writes",
                c.event_id,
                items.len(),
                c.transitions.len(),
                changed.len(),
                c.new_stages.len(),
                c.events.len(),
                c.images.len()
            )));
        }
        match self.transact(items).await {
            Ok(()) => Ok(Some(CommitOutcome::Applied { first_seq })),
            Err(e) => match cancel_reasons(&e) {
                // The event id was recorded meanwhile: a concurrent delivery of this event won.
                Some(r) if dedupe && r.first().is_some_and(|c| c == "ConditionalCheckFailed") => {
                    Ok(Some(CommitOutcome::Duplicate))
                }
                Some(r) if is_race(&r) => Ok(None),
                _ => Err(sdk("commit", &e)),
            },
        }
    }

    /// An image's current records (one per provider), sorted by provider.
    pub(super) async fn image_records(&self, image: &str) -> Result<Vec<ImageRecord>, StoreError> {
        if !is_valid_name(image) {
            return Ok(Vec::new());
        }
        self.query_records(image_pk(image), PROVIDER_PREFIX).await
    }

    /// Every item of partition `pk` whose sort key begins with `prefix`, parsed from its
    /// `record` attribute, in sort key order (consistent read).
    pub(super) async fn query_records(
        &self,
        pk: String,
        prefix: &str,
    ) -> Result<Vec<ImageRecord>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .consistent_read(true)
            .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
            .expression_attribute_values(":pk", s(pk))
            .expression_attribute_values(":p", s(prefix));
        let items = self.query_all(query, usize::MAX, "query image").await?;
        items.iter().map(|item| parse::<ImageRecord>(item, "record")).collect()
    }

    /// A catalog write's two items: the current record (conditional on the version the
    /// write expects) and its history entry.
    pub(super) fn catalog_items(&self, w: &CatalogWrite) -> Result<[TransactWriteItem; 2], StoreError> {
        let r = &w.record;
        let doc = json(r)?;
        let mut item = key(image_pk(&r.image), provider_sk(&r.provider));
        item.insert("gsi1pk".into(), s(CATALOG_GSI_PK));
        item.insert("gsi1sk".into(), s(catalog_gsi_sk(&r.image, &r.provider)));
        item.insert("provider".into(), s(r.provider.as_str()));
        item.insert("version".into(), n(r.version));
        item.insert("record".into(), s(doc.clone()));
        let mut current = Put::builder().table_name(&self.table).set_item(Some(item));
        current = if w.expected_version == 0 {
            current.condition_expression("attribute_not_exists(sk)")
        } else {
            current
                .condition_expression("#version = :expected")
                .expression_attribute_names("#version", "version")
                .expression_attribute_values(":expected", n(w.expected_version))
        };
        let mut hist = key(image_pk(&r.image), history_sk(r));
        hist.insert("record".into(), s(doc));
        let history = Put::builder()
            .table_name(&self.table)
            .set_item(Some(hist))
            .condition_expression("attribute_not_exists(sk)")
            .build()
            .map_err(|e| backend("build request", e))?;
        Ok([
            TransactWriteItem::builder()
                .put(current.build().map_err(|e| backend("build request", e))?)
                .build(),
            TransactWriteItem::builder().put(history).build(),
        ])
    }
}
