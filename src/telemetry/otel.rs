//! The OTLP/HTTP exporter: spans batched by the OpenTelemetry SDK on its own
//! thread and posted as protobuf through the crate's reqwest client, which runs
//! on the daemon's runtime.

use crate::config::TelemetryConfig;
use anyhow::Context;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::time::Duration;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{FilterExt, Targets, filter_fn};
use tracing_subscriber::registry::LookupSpan;

/// How long one export request may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the last export at shutdown may take, after `shutdown_grace`
/// (at most 25 s, under the unit's 30 s stop timeout).
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);
/// The largest collector answer read back (it is only checked for its status).
const MAX_ANSWER: usize = 64 * 1024;

/// The running trace exporter; [`Traces::shutdown`] sends what is still batched.
pub struct Traces {
    provider: SdkTracerProvider,
    endpoint: String,
}

impl Traces {
    /// Starts the exporter for `config`, if there is one. Call it on the runtime
    /// that should carry the export requests.
    pub fn start(config: Option<&TelemetryConfig>) -> anyhow::Result<Option<Traces>> {
        let Some(config) = config else {
            return Ok(None);
        };
        let endpoint = config.traces_url();
        let client = reqwest::Client::builder()
            .timeout(EXPORT_TIMEOUT)
            .build()
            .context("telemetry: cannot build the HTTP client for the trace exporter")?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(endpoint.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .with_http_client(OnRuntime {
                client,
                runtime: tokio::runtime::Handle::current(),
            })
            .build()
            .with_context(|| {
                format!("telemetry.otlp_endpoint {endpoint}: cannot build the trace exporter")
            })?;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(config.service_name.clone())
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        Ok(Some(Traces { provider, endpoint }))
    }

    /// Logs where traces go (once logging is set up).
    pub fn announce(&self) {
        tracing::info!(endpoint = %self.endpoint, "sending traces over OTLP/HTTP");
    }

    /// The tracing layer that turns the crate's `paystar.*` spans into
    /// OpenTelemetry spans; `None` without traces.
    pub fn layer<S>(traces: Option<&Traces>) -> Option<impl Layer<S> + Send + Sync + 'static>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        let traces = traces?;
        let tracer = traces.provider.tracer("paystar-sync");
        let ours = Targets::new().with_target("paystar_sync", tracing::Level::INFO);
        // Only the named spans: the log events inside them stay in the log.
        let spans_only = filter_fn(|meta| meta.is_span() && meta.name().starts_with("paystar."));
        Some(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_location(false)
                .with_threads(false)
                .with_filter(ours.and(spans_only)),
        )
    }

    /// Sends the spans still batched and stops the exporter (bounded by the
    /// export timeout).
    pub async fn shutdown(self) {
        let endpoint = self.endpoint;
        let provider = self.provider;
        let result =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT))
                .await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::warn!(endpoint = %endpoint, error = %err, "cannot send the last traces")
            }
            Err(err) => {
                tracing::warn!(endpoint = %endpoint, error = %err, "the trace exporter's shutdown failed")
            }
        }
    }
}

/// A W3C `traceparent` (and `tracestate`) on a request becomes `span`'s parent;
/// a missing or malformed one leaves it a root span.
pub fn adopt_traceparent(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    if !headers.contains_key("traceparent") {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    let _ = span.set_parent(parent);
}

struct Headers<'a>(&'a axum::http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Sends the exporter's requests with reqwest on the daemon's runtime: the SDK
/// exports from its own thread, where no runtime runs.
#[derive(Debug)]
struct OnRuntime {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let task = self.runtime.spawn(async move {
            let (parts, body) = request.into_parts();
            let mut response = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await?;
            let status = response.status();
            let headers = std::mem::take(response.headers_mut());
            let mut answer = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                if answer.len() + chunk.len() > MAX_ANSWER {
                    break;
                }
                answer.extend_from_slice(&chunk);
            }
            let mut out = http::Response::new(Bytes::from(answer));
            *out.status_mut() = status;
            *out.headers_mut() = headers;
            Ok::<_, HttpError>(out)
        });
        task.await?
    }
}
