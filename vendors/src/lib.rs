//! Vendor clients on egress: typed requests in, typed domain results out, on any backend.
//!
//! A vendor client is a thin layer over the base [`egress_core::Client`]: endpoint paths,
//! payload types (validated, then mapped to domain types), and a domain error enum that says
//! what a caller can do about a failure. Timeouts, retries, rate-limit hints, idempotency keys,
//! correlation IDs, redaction and telemetry all come from the base client, so a vendor client
//! is short and never names a runtime: it works the same on `egress-tokio`, `egress-async-std`,
//! or the core's test doubles.
//!
//! Build each vendor client **once** at start-up from the base client your backend made, keep
//! it in your application state, and clone it where it is needed (clones share the connection
//! pool and the retry budget). Never build one per request.
//!
//! # Example
//!
//! Here the base client runs over the core's scripted transport in virtual time, as in a test;
//! in a service it comes from your backend crate, such as `egress_tokio::client(config)`.
//!
//! ```
//! use egress_core::Config;
//! use egress_core::test_util::{ScriptedTransport, block_on, step};
//! use egress_vendors::entities::{EntitiesClient, EntitiesError, EntityId};
//!
//! // A scripted upstream: one transient 503, then the entity; then a 404.
//! let upstream = ScriptedTransport::new();
//! upstream.push(step(503));
//! upstream.push(step(200).json(r#"{"id":"ent_7","name":"Widget","status":"active","version":1}"#));
//! upstream.push(step(404));
//!
//! // At start-up: the base client, then the vendor client, stored in application state.
//! let base = upstream.client(Config::default().with_base_url("https://entities.example.com/v1"))?;
//! let entities = EntitiesClient::new(base);
//!
//! // In a handler: typed in, typed out. The 503 was retried by the base client.
//! let id: EntityId = "ent_7".parse()?;
//! let entity = block_on(entities.get_entity(&id))?;
//! assert_eq!(entity.name, "Widget");
//!
//! let missing: EntityId = "ent_8".parse()?;
//! match block_on(entities.get_entity(&missing)) {
//!     Err(EntitiesError::NotFound(id)) => assert_eq!(id, missing),
//!     other => panic!("expected NotFound, got {other:?}"),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Vendors and features
//!
//! One cargo feature per vendor, all on by default:
//!
//! | feature | module | what |
//! |---|---|---|
//! | `entities` | [`entities`] | the canonical example: `get_entity`, `get_entities` with bounded concurrency, `create_entity` with an idempotency key |
//! | `github` | [`github`] | GitHub's REST API: a repository, a repository's issues with `Link` pagination, the rate-limit status; GitHub's primary and secondary rate-limit rules as a classifier; typed GitHub errors |
//!
//! # Payload types that keep JSON paths precise
//!
//! A validation failure names the JSON path of the problem (`items[3].id: invalid type: null,
//! expected a string`) as long as serde can say where it was. Two serde features hide it:
//! `#[serde(untagged)]` buffers the value and, when no variant fits, reports only "data did not
//! match any variant of untagged enum" at the enum's own path; `#[serde(flatten)]` buffers
//! too. For a field that comes in several shapes (GitHub's labels: a bare name or an object),
//! write a small `Deserialize` with a visitor that picks the shape from what the JSON holds
//! (`visit_str`, `visit_map`) and decodes the object through
//! `serde::de::value::MapAccessDeserializer`: errors inside it keep their path
//! (`labels[1].id`). [`github::Label`] is the worked example.
//!
//! # Testing a vendor client
//!
//! Enable `egress-core`'s `test-util` feature in your `[dev-dependencies]` and run the vendor
//! client over `egress_core::test_util::ScriptedTransport`: scripted
//! statuses, headers, bodies, delays and failures, every request recorded, time virtual (a
//! 60-second rate-limit wait takes no real time). This crate's own tests do exactly that.

#[cfg(feature = "entities")]
mod common;
#[cfg(feature = "entities")]
pub mod entities;
#[cfg(feature = "github")]
pub mod github;
