//! What a route is: its method and path, who may call it, and the bodies it takes and
//! answers with (as types, for the document's schemas). The table itself is
//! [`crate::routes::ROUTES`]; the document ([`crate::openapi`]) and the router are both
//! built from it, and neither depends on the other.

use axum::http::Method;
use axum::routing::{MethodFilter, MethodRouter};
use utoipa::openapi::{Ref, RefOr, Schema};

/// Who may call a route: enforced by the layer the router puts on each route
/// ([`crate::access`]), and stated in the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token needed (health only).
    Open,
    /// No bearer token: a git host's webhook, authenticated by its body's signature with
    /// the repository's webhook secret (checked by the handler). Bodies up to the host's
    /// own cap (`MAX_HOOK_BYTES`, 25 MB).
    Signed,
    /// An admin token.
    Admin,
    /// An admin token, or a runner token for the build in the path (`{id}`).
    BuildWriter,
    /// Only a runner token for the build in the path (`{id}`); admin tokens are refused:
    /// such a route answers with what only a runner may see (secret values), never a person.
    BuildRunner,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamIn {
    Path,
    Query,
}

#[derive(Debug, Clone, Copy)]
pub struct Param {
    pub name: &'static str,
    pub at: ParamIn,
    pub integer: bool,
    pub description: &'static str,
}

/// Named schemas a document collects, with those they refer to.
pub type Schemas = Vec<(String, RefOr<Schema>)>;

/// Registers a body type's schema (and those it refers to) and returns a reference to it.
pub type SchemaFn = fn(&mut Schemas) -> RefOr<Schema>;

/// The [`SchemaFn`] of a type: `Content::Json(json::<BuildView>)`.
pub fn json<T: utoipa::ToSchema>(schemas: &mut Schemas) -> RefOr<Schema> {
    T::schemas(schemas);
    schemas.push((T::name().into_owned(), T::schema()));
    RefOr::Ref(Ref::from_schema_name(T::name()))
}

/// What a request or a success response carries.
#[derive(Clone, Copy)]
pub enum Content {
    None,
    /// JSON of the type whose schema this gives.
    Json(SchemaFn),
    /// Pipeline YAML.
    Yaml,
    /// Raw bytes (log data).
    Bytes,
}

pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub summary: &'static str,
    pub access: Access,
    pub params: &'static [Param],
    pub body: Content,
    pub ok: (u16, Content, &'static str),
    /// Error statuses this route answers with, besides 401/403 for auth.
    pub errors: &'static [(u16, &'static str)],
    /// The handler, for the method.
    pub make: fn(MethodFilter) -> MethodRouter<crate::AppState>,
}

pub const fn path(name: &'static str, description: &'static str) -> Param {
    Param { name, at: ParamIn::Path, integer: false, description }
}

pub const fn query(name: &'static str, integer: bool, description: &'static str) -> Param {
    Param { name, at: ParamIn::Query, integer, description }
}
