//! The entities service's wire types ([`EntityPayload`], [`NewEntity`]) and domain types
//! ([`EntityId`], [`Entity`], [`EntityStatus`]). Payloads are what the service sends; they are
//! validated, then mapped to domain types, so the rest of a service never sees a half-valid
//! entity.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use egress_core::{Invalid, Validate};
use serde::{Deserialize, Serialize};

/// The longest entity ID accepted, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// The ID of an entity: 1 to 64 ASCII letters, digits, `-` or `_`.
///
/// The restriction keeps an ID a single, literal path segment: no `/`, no `..`, nothing to
/// escape, so `GET /entities/{id}` can never address another resource.
///
/// ```
/// use egress_vendors::entities::EntityId;
/// let id: EntityId = "ent_42".parse().unwrap();
/// assert_eq!(id.as_str(), "ent_42");
/// assert!("../admin".parse::<EntityId>().is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityId(Arc<str>);

/// Why a string is not an [`EntityId`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid entity id: {reason}")]
pub struct InvalidEntityId {
    reason: &'static str,
}

impl EntityId {
    /// Checks and wraps an ID.
    pub fn new(id: impl AsRef<str>) -> Result<Self, InvalidEntityId> {
        let id = id.as_ref();
        check_id(id).map_err(|reason| InvalidEntityId { reason })?;
        Ok(Self(id.into()))
    }

    /// The ID as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn check_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        return Err("it is empty");
    }
    if id.len() > MAX_ID_LEN {
        return Err("it is longer than 64 bytes");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("only ASCII letters, digits, '-' and '_' are allowed");
    }
    Ok(())
}

impl FromStr for EntityId {
    type Err = InvalidEntityId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntityId({:?})", &*self.0)
    }
}

/// The lifecycle state of an entity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EntityStatus {
    /// In use.
    Active,
    /// Kept for the record; read-only.
    Archived,
}

/// An entity, as the rest of a service sees it: every field checked.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Entity {
    /// Its ID.
    pub id: EntityId,
    /// Its display name, never empty.
    pub name: String,
    /// Its lifecycle state.
    pub status: EntityStatus,
    /// Its version, incremented by the service on every change (starts at 1).
    pub version: u64,
    /// Its tags, none of them empty.
    pub tags: Vec<String>,
}

/// An entity exactly as the service sends it (`GET /entities/{id}`, `POST /entities`).
///
/// Unknown fields are ignored, so the service may add some. [`Validate`] checks what the types
/// cannot: the ID's shape, a non-empty name, a known status, a version of at least 1, no empty
/// tag. Only a valid payload becomes an [`Entity`].
///
/// ```json
/// {"id": "ent_42", "name": "Widget", "status": "active", "version": 3, "tags": ["blue"]}
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[non_exhaustive]
pub struct EntityPayload {
    /// The entity's ID.
    pub id: String,
    /// The display name.
    pub name: String,
    /// `active` or `archived`.
    pub status: String,
    /// The version.
    pub version: u64,
    /// The tags (absent means none).
    #[serde(default)]
    pub tags: Vec<String>,
}

impl Validate for EntityPayload {
    fn validate(&self) -> Result<(), Invalid> {
        check_id(&self.id).map_err(|reason| Invalid::new("id", reason))?;
        if self.name.trim().is_empty() {
            return Err(Invalid::new("name", "must not be empty"));
        }
        parse_status(&self.status).ok_or_else(|| {
            Invalid::new(
                "status",
                format!(
                    "unknown status {:?}; expected active or archived",
                    self.status
                ),
            )
        })?;
        if self.version == 0 {
            return Err(Invalid::new("version", "must be at least 1"));
        }
        if let Some(i) = self.tags.iter().position(|t| t.trim().is_empty()) {
            return Err(Invalid::new(format!("tags[{i}]"), "must not be empty"));
        }
        Ok(())
    }
}

fn parse_status(status: &str) -> Option<EntityStatus> {
    match status {
        "active" => Some(EntityStatus::Active),
        "archived" => Some(EntityStatus::Archived),
        _ => None,
    }
}

impl TryFrom<EntityPayload> for Entity {
    type Error = Invalid;

    /// Validates the payload, then maps it.
    fn try_from(payload: EntityPayload) -> Result<Self, Invalid> {
        payload.validate()?;
        let status = parse_status(&payload.status)
            .ok_or_else(|| Invalid::new("status", "unknown status"))?;
        Ok(Entity {
            id: EntityId(payload.id.into()),
            name: payload.name,
            status,
            version: payload.version,
            tags: payload.tags,
        })
    }
}

/// What `POST /entities` takes to create an entity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct NewEntity {
    /// The display name.
    pub name: String,
    /// The tags.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

impl NewEntity {
    /// An entity named `name`, with no tags.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            tags: Vec::new(),
        }
    }

    /// Sets the tags.
    pub fn with_tags<S: Into<String>>(mut self, tags: impl IntoIterator<Item = S>) -> Self {
        self.tags = tags.into_iter().map(Into::into).collect();
        self
    }
}
