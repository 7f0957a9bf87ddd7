//! The image catalog as the API shows it: the matrix, one image with its history, and
//! "build the missing providers".

use super::schema;
use kiln_core::images::ImageDetail;
use kiln_domain::BuildId;
use kiln_domain::catalog::{CatalogImage, ImageRecord};
use kiln_domain::status::ImageStatus;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One image for one provider: where its latest build stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = ImageRecord)]
pub struct ImageRecordView {
    pub image: String,
    pub provider: String,
    #[schema(schema_with = schema::image_status)]
    pub status: ImageStatus,
    /// 0 to 100.
    pub percent: u8,
    /// Why it failed (failed only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The build this record is about.
    #[schema(value_type = String)]
    pub build: BuildId,
    /// Where the artifact is (complete only, when the step said).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    pub updated_ms: u64,
    /// 1 for the first write, one more for each write after.
    pub version: u64,
}

impl From<ImageRecord> for ImageRecordView {
    fn from(r: ImageRecord) -> Self {
        let ImageRecord { image, provider, status, percent, error, build, uri, updated_ms, version } = r;
        ImageRecordView { image, provider, status, percent, error, build, uri, updated_ms, version }
    }
}

/// One image and its records, one per provider: a row of the catalog's matrix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = CatalogImage)]
pub struct CatalogImageView {
    pub name: String,
    pub providers: Vec<ImageRecordView>,
}

impl From<CatalogImage> for CatalogImageView {
    fn from(i: CatalogImage) -> Self {
        CatalogImageView { name: i.name, providers: i.providers.into_iter().map(Into::into).collect() }
    }
}

/// The catalog: images by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImageList {
    pub images: Vec<CatalogImageView>,
}

impl ImageList {
    pub fn new(catalog: Vec<CatalogImage>) -> Self {
        ImageList { images: catalog.into_iter().map(Into::into).collect() }
    }
}

/// One image: its record per provider, and every version of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = ImageDetail)]
pub struct ImageDetailView {
    pub name: String,
    /// Sorted by provider.
    pub providers: Vec<ImageRecordView>,
    /// Sorted by build (oldest first), provider, version.
    pub history: Vec<ImageRecordView>,
}

impl From<ImageDetail> for ImageDetailView {
    fn from(d: ImageDetail) -> Self {
        ImageDetailView {
            name: d.name,
            providers: d.providers.into_iter().map(Into::into).collect(),
            history: d.history.into_iter().map(Into::into).collect(),
        }
    }
}

/// Which providers to build (all that are missing or failed when absent or empty). The
/// body may also be empty.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
pub struct BuildMissingRequest {
    #[serde(default)]
    pub providers: Option<Vec<String>>,
}

/// The build that was started, and the providers it builds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BuildMissingAnswer {
    #[schema(value_type = String)]
    pub id: BuildId,
    pub providers: Vec<String>,
    pub url: String,
}
