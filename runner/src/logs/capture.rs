//! [`CaptureLayer`]: a handler's `tracing` events also go to its attempt's
//! log.
//!
//! The runner attaches the attempt's [`LogSink`] to the attempt's span
//! ([`attach`]); the layer copies every event inside that span (or a
//! span within it, e.g. a task spawned with `ctx.span()`) to that sink.
//! Events outside any attempt span stay on the console only. The events
//! reach the layer after the subscriber's level filter (`RUST_LOG`).

use std::fmt::Write as _;

use jobs::LogStream;
use tracing::field::{Field, Visit};
use tracing::span::Id;
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use super::LogSink;

/// Install it with the subscriber (the runner's `main` does).
#[derive(Clone, Copy, Debug, Default)]
pub struct CaptureLayer;

impl<S> Layer<S> for CaptureLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        for span in scope {
            if let Some(sink) = span.extensions().get::<LogSink>() {
                sink.push(LogStream::Log, &render(event));
                return;
            }
        }
    }
}

/// Makes events inside `span` go to `sink`. A no-op when the process's
/// subscriber keeps no span data (not built on `tracing_subscriber`'s
/// registry): then only command output and `ctx.log` are captured.
pub(crate) fn attach(span: &tracing::Span, sink: &LogSink) {
    span.with_subscriber(|(id, dispatch): (&Id, &tracing::Dispatch)| {
        if let Some(registry) = dispatch.downcast_ref::<tracing_subscriber::Registry>() {
            if let Some(data) = registry.span(id) {
                data.extensions_mut().replace(sink.clone());
            }
        }
    });
}

/// `LEVEL message key=value ...`, like the console's compact form.
fn render(event: &Event<'_>) -> String {
    let mut visitor = Render {
        message: String::new(),
        fields: String::new(),
    };
    event.record(&mut visitor);
    let mut line = format!("{} {}", event.metadata().level(), visitor.message);
    line.push_str(&visitor.fields);
    line
}

struct Render {
    message: String,
    fields: String,
}

impl Visit for Render {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}
