//! The answers routes share, added to the OpenAPI document in one place
//! so no route can forget one: the document lists every status the server
//! really answers (a fuzzer, `scripts/fuzz-api`, holds it to that).
//!
//! - every protected route: 401 (no valid token), 400 (more than one
//!   credential), 429 (the token's request rate is over its limit, with
//!   `Retry-After`) and 503 (store unavailable, with `Retry-After`);
//! - a route with an `{id}`: the id is a UUID (`format: uuid`), 400 when it
//!   is not one, 404 when there is no such thing;
//! - a route with query parameters: 400 for a bad one;
//! - a route with a JSON body: 400 (malformed), 408 (sent too slowly),
//!   413 (too large), 415 (not JSON), 422 (invalid, naming the field);
//! - a `text/event-stream` answer: the schema of one event (`event` and
//!   `data`), the way OpenAPI 3.0/3.1 tools (schemathesis among them) read
//!   a stream's schema.
//!
//! Errors are all [`super::ApiError`] JSON. Wrong methods answer a JSON 405
//! too (not documented per route: OpenAPI lists what a route does).

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{Content, OpenApi, PathItem, Ref, RefOr};

/// Adds the shared answers to every operation of `protected`, the routes
/// behind the token check.
pub fn complete_protected(protected: &mut OpenApi) {
    for (path, item) in protected.paths.paths.iter_mut() {
        for operation in operations(item) {
            add(operation, "401", "no valid bearer token or session");
            add(
                operation,
                "429",
                "this token's request rate is over its limit; retry after `Retry-After`",
            );
            add(
                operation,
                "503",
                "the job store is unavailable; retry after `Retry-After`",
            );
            if path.contains("{id}") {
                ids_are_uuids(operation);
                add(operation, "400", "the id is not a UUID");
                add(operation, "404", "no such id");
            }
            let has_query = operation
                .parameters
                .iter()
                .flatten()
                .any(|p| p.parameter_in == ParameterIn::Query);
            if has_query {
                add(
                    operation,
                    "400",
                    "a query parameter is invalid; `field` names it",
                );
            }
            sse_events(operation, path);
            if operation.request_body.is_some() {
                add(operation, "400", "malformed JSON");
                add(operation, "408", "the body did not arrive in time");
                add(operation, "413", "body too large");
                add(
                    operation,
                    "415",
                    "not JSON (`Content-Type: application/json`)",
                );
                add(
                    operation,
                    "422",
                    "invalid request; `field` names the problem",
                );
            }
            add(operation, "400", "more than one credential in the request");
        }
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
    ]
    .into_iter()
    .flatten()
}

/// Adds an [`super::ApiError`] answer for `status` unless the route
/// describes it already.
fn add(operation: &mut Operation, status: &str, description: &str) {
    operation
        .responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    Content::new(Some(Ref::from_schema_name("ApiError"))),
                )
                .build()
                .into()
        });
}

/// Each event of a stream: its name and, as JSON text, the job (or the
/// batch).
fn sse_events(operation: &mut Operation, path: &str) {
    // The job's own stream, or its log's (`?follow=true`).
    let (events, data): (&[&str], &str) = if path.starts_with("/batches") {
        (
            &["batch", "done"],
            "the batch as `GET /batches/{id}` shows it, as JSON",
        )
    } else if path.ends_with("/logs") {
        (
            &["line", "end"],
            "`line`: one log line as JSON (`GET /jobs/{id}/logs?format=jsonl`); `end`: the job's status once it is final",
        )
    } else if path == "/jobs/events" {
        (
            &["status", "resync"],
            "`status`: a job as `GET /jobs` lists it, in the status it changed to; `resync`: changes were missed, list again",
        )
    } else {
        (
            &["status", "progress", "done"],
            "the job as `GET /jobs/{id}` shows it, as JSON",
        )
    };
    for response in operation.responses.responses.values_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        if let Some(content) = response.content.get_mut("text/event-stream") {
            let name = ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(events.iter().copied()));
            let data = ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some(data));
            content.schema = Some(RefOr::T(
                ObjectBuilder::new()
                    .property("event", name)
                    .property("data", data)
                    .required("data")
                    .into(),
            ));
        }
    }
}

fn ids_are_uuids(operation: &mut Operation) {
    for parameter in operation.parameters.iter_mut().flatten() {
        if parameter.parameter_in == ParameterIn::Path && parameter.name == "id" {
            parameter.schema = Some(RefOr::T(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
                    .into(),
            ));
        }
    }
}
