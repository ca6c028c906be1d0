//! The `telemetry` section: where traces go (the `otel` cargo feature).

use super::walk::{self, Walker};

pub const DEFAULT_SERVICE_NAME: &str = "paystar-sync";

/// `telemetry`: traces over OTLP/HTTP (protobuf) to a collector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// `telemetry.otlp_endpoint`: the collector's base URL, e.g.
    /// `http://127.0.0.1:4318`; spans are posted to `<it>/v1/traces`.
    pub otlp_endpoint: String,
    /// `telemetry.service_name`: the `service.name` resource attribute.
    pub service_name: String,
}

impl TelemetryConfig {
    /// Where the exporter posts spans.
    pub fn traces_url(&self) -> String {
        let base = self.otlp_endpoint.trim_end_matches('/');
        if base.ends_with("/v1/traces") {
            base.to_owned()
        } else {
            format!("{base}/v1/traces")
        }
    }
}

pub(super) fn build(w: &mut Walker, root: &walk::Section<'_>) -> Option<TelemetryConfig> {
    if !w.present(root, "telemetry") {
        return None;
    }
    let t = w.section(root, "telemetry", &["otlp_endpoint", "service_name"]);
    let service_name = w
        .string(&t, "service_name")
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
    if service_name.trim().is_empty() {
        w.error(
            "telemetry.service_name",
            "must not be empty; remove it for the default, paystar-sync",
        );
    }
    let Some(endpoint) = w.string(&t, "otlp_endpoint") else {
        w.error(
            "telemetry.otlp_endpoint",
            "is required in telemetry: the OTLP/HTTP collector's URL, e.g. http://127.0.0.1:4318 (or remove telemetry)",
        );
        return None;
    };
    let scheme_ok = endpoint.starts_with("http://") || endpoint.starts_with("https://");
    let host = endpoint
        .split_once("://")
        .map(|(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or(""))
        .unwrap_or("");
    if !scheme_ok || host.is_empty() || endpoint.contains(char::is_whitespace) {
        w.error(
            "telemetry.otlp_endpoint",
            format!(
                "{endpoint:?} must be an http(s) URL of an OTLP/HTTP collector, e.g. http://127.0.0.1:4318"
            ),
        );
        return None;
    }
    if !cfg!(feature = "otel") {
        w.error(
            "telemetry",
            "this paystar-sync was built without the `otel` feature, so it cannot send traces; remove telemetry, or use a build with the feature (the default)",
        );
        return None;
    }
    Some(TelemetryConfig {
        otlp_endpoint: endpoint,
        service_name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_go_to_the_collectors_traces_path_whichever_way_the_endpoint_is_written() {
        let at = |endpoint: &str| TelemetryConfig {
            otlp_endpoint: endpoint.into(),
            service_name: DEFAULT_SERVICE_NAME.into(),
        };
        for endpoint in [
            "http://127.0.0.1:4318",
            "http://127.0.0.1:4318/",
            "http://127.0.0.1:4318/v1/traces",
        ] {
            assert_eq!(at(endpoint).traces_url(), "http://127.0.0.1:4318/v1/traces");
        }
        assert_eq!(
            at("https://otel.example.com/collector").traces_url(),
            "https://otel.example.com/collector/v1/traces"
        );
    }
}
