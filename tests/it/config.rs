//! SPEC §8: the config file is checked as a whole before anything runs.

use crate::support::{BASE_CONFIG, Project};

#[test]
fn every_error_in_a_config_file_is_reported_at_once_with_its_key_path() {
    let p = Project::with_config(
        "manifests:\n  on_removal: delete\n  debounce: 30\npaystar:\n  retry: { schedule: [1s, 5s, 5x] }\n  concurrency: 0\nsafety: { max_unenroll_percent: 150 }\nserver: { listen: nowhere }\n",
    );
    let run = p.run(&["validate"]);
    assert_eq!(run.code, 78, "{run:?}");
    for expected in [
        "manifests.on_removal: \"delete\" is not one of: ignore, unenroll",
        "manifests.debounce: 30 is not a duration",
        "paystar.retry.schedule[2]: \"5x\" is not a duration",
        "paystar.concurrency: 0 must be a whole number from 1 to 1024",
        "safety.max_unenroll_percent: 150 must be a number from 0 to 100",
        "server.listen: \"nowhere\" is not an address:port",
    ] {
        assert!(
            run.stderr.contains(expected),
            "missing {expected:?} in:\n{}",
            run.stderr
        );
    }
}

#[test]
fn an_unknown_key_is_an_error_with_a_suggestion() {
    let p = Project::with_config(&BASE_CONFIG.replace(
        "  endpoint: sandbox\n",
        "  endpoint: sandbox\n  concurency: 4\n",
    ));
    let run = p.run(&["plan"]);
    assert_eq!(run.code, 78);
    assert!(
        run.stderr
            .contains("paystar.concurency: unknown key; did you mean concurrency?"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_secret_written_inline_is_a_configuration_error() {
    let p = Project::with_config(&BASE_CONFIG.replace(
        "  endpoint: sandbox\n",
        "  endpoint: sandbox\n  api_key: sk_live_123\n",
    ));
    let run = p.run(&["validate"]);
    assert_eq!(run.code, 78);
    assert!(
        run.stderr
            .contains("paystar.api_key: secrets may not be written in the config file"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("sk_live_123"),
        "the secret must never be echoed"
    );
}

#[test]
fn a_missing_config_file_is_a_configuration_error() {
    let p = Project::new();
    std::fs::remove_file(p.config_path()).unwrap();
    let run = p.run(&["validate"]);
    assert_eq!(run.code, 78);
    assert!(
        run.stderr.contains("cannot read the file"),
        "{}",
        run.stderr
    );
}

#[test]
fn the_configuration_in_the_spec_is_valid() {
    let spec = r#"
state:
  path: ./state/paystar-sync.db
manifests:
  dir: ./manifests
  on_removal: ignore
  rescan_interval: 5m
  debounce: 500ms
  csv: { delimiter: ",", columns: {} }
paystar:
  endpoint: https://dev-gateway.paystar.io/integrations/events
  api_key_env: PAYSTAR_API_KEY
  default_business_unit: water-bill-pay
  concurrency: 8
  timeout: 30s
  retry: { schedule: [1s, 5s, 30s, 2m, 10m, 30m, 1h, 2h, 6h, 12h] }
safety: { max_unenrolls: 50, max_unenroll_percent: 5 }
server:
  listen: 127.0.0.1:8080
telemetry: { otlp_endpoint: http://127.0.0.1:4318, service_name: paystar-sync }
providers:
  lotuspay:
    base_url: https://api-test.lotuspay.com/v1
    secret_key_env: LOTUSPAY_SECRET_KEY
    schedule: "0 */5 * * * *"
    business_unit: water-bill-pay
    account_path: data.object.metadata.paystar_account_number
    sub_account_path: data.object.metadata.paystar_sub_account_number
    return_code_path: data.object.response_code
    stop_codes: ["01", "02", "07", "08", "14", "21", "22", "23", "53", "54", "60", "61", "68", "69"]
  payroc:
    identity_url: https://identity.uat.payroc.com/authorize
    api_url: https://api.uat.payroc.com/v1
    api_key_env: PAYROC_API_KEY
    webhook_secret_env: PAYROC_WEBHOOK_SECRET
    subscription:
      event_types: [processingAccount.status.changed]
      uri: https://sync.example.com/webhooks/payroc
      support_email: ops@example.com
  smarterpay:
    auth: { basic_user_env: SP_USER, basic_password_env: SP_PASSWORD }
    business_unit: water-bill-pay
    account_field: reference
"#;
    let path = std::path::Path::new("/srv/paystar/config.yaml");
    let config = paystar_sync::config::Config::parse(spec, path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.state.backend,
        paystar_sync::config::StateBackend::Sqlite {
            path: "/srv/paystar/./state/paystar-sync.db".into()
        }
    );
    assert_eq!(config.paystar.retry_schedule.len(), 10);
    assert_eq!(config.providers.lotuspay.unwrap().stop_codes.len(), 14);
    assert!(config.providers.payroc.unwrap().subscription.is_some());
    let telemetry = config.telemetry.expect("telemetry");
    assert_eq!(telemetry.traces_url(), "http://127.0.0.1:4318/v1/traces");
    assert_eq!(telemetry.service_name, "paystar-sync");
}

#[test]
fn telemetry_keys_are_checked_each_with_its_path() {
    let p = Project::with_config(&format!(
        "{BASE_CONFIG}telemetry: {{ otlp_endpoint: \"127.0.0.1:4318\", service_name: \"\", sampler: always }}\n"
    ));
    let run = p.run(&["validate"]);
    assert_eq!(run.code, 78, "{run:?}");
    for expected in [
        "telemetry.sampler: unknown key",
        "telemetry.service_name: must not be empty",
        "telemetry.otlp_endpoint: \"127.0.0.1:4318\" must be an http(s) URL of an OTLP/HTTP collector, e.g. http://127.0.0.1:4318",
    ] {
        assert!(
            run.stderr.contains(expected),
            "missing {expected:?} in:\n{}",
            run.stderr
        );
    }
    p.config(&format!(
        "{BASE_CONFIG}telemetry: {{ service_name: billing-sync }}\n"
    ));
    let run = p.run(&["validate"]);
    assert_eq!(run.code, 78, "{run:?}");
    assert!(
        run.stderr
            .contains("telemetry.otlp_endpoint: is required in telemetry"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_bad_cron_schedule_is_reported_with_its_key() {
    let config =
        "providers:\n  lotuspay:\n    secret_key_env: LP\n    schedule: \"every five minutes\"\n";
    let err =
        paystar_sync::config::Config::parse(config, std::path::Path::new("c.yaml")).unwrap_err();
    assert!(
        err.to_string().contains(
            "providers.lotuspay.schedule: \"every five minutes\" is not a cron expression"
        ),
        "{err}"
    );
}

#[test]
fn a_payroc_pause_rule_is_checked_key_by_key() {
    let config = "providers:\n  payroc:\n    pause:\n      business_units: []\n      statuses: [terminated, closed]\n  smarterpay:\n    auth: { basic_user_env: U, basic_password_env: P }\n    precedence: provider\n";
    let err =
        paystar_sync::config::Config::parse(config, std::path::Path::new("c.yaml")).unwrap_err();
    for expected in [
        "providers.payroc.pause.business_units: list the business units",
        "providers.payroc.pause.statuses[1]: \"closed\" is not a Payroc processing-account status",
        "providers.payroc.pause: acts on Payroc's webhooks: set providers.payroc.webhook_secret_env",
        "providers.smarterpay.precedence: \"provider\" is not one of: manifests, over_manifests",
    ] {
        assert!(
            err.to_string().contains(expected),
            "missing {expected:?} in:\n{err}"
        );
    }
}

#[test]
fn the_shipped_example_configs_are_valid() {
    for file in [
        "examples/quickstart.yaml",
        "examples/production.yaml",
        "examples/ha/systemd/config.yaml",
    ] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        if let Err(err) = paystar_sync::config::Config::load(&path) {
            panic!("{file}: {err}");
        }
    }
}

#[test]
fn the_kubernetes_example_runs_two_replicas_on_a_valid_config_with_git_sync_feeding_its_manifests()
{
    use serde::Deserialize;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text =
        std::fs::read_to_string(root.join("examples/ha/kubernetes/paystar-sync.yaml")).unwrap();
    let documents: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_yaml::Value::deserialize(d).expect("each document is YAML"))
        .collect();
    let kind = |k: &str| {
        documents
            .iter()
            .find(|d| d["kind"] == k)
            .unwrap_or_else(|| panic!("no {k}"))
    };
    let config = kind("ConfigMap")["data"]["config.yaml"]
        .as_str()
        .expect("config.yaml in the ConfigMap");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.yaml"), config).unwrap();
    let config = paystar_sync::config::Config::load(&dir.path().join("config.yaml"))
        .unwrap_or_else(|err| panic!("the ConfigMap's config: {err}"));
    assert!(config.ha.is_some(), "the config elects a leader");
    let deployment = kind("Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap();
    let sync = containers
        .iter()
        .find(|c| c["name"] == "git-sync")
        .expect("a git-sync sidecar");
    let args: Vec<&str> = sync["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    // The daemon watches the symlink git-sync swaps.
    assert_eq!(
        config.manifests.dir,
        std::path::Path::new("/git/manifests"),
        "{args:?}"
    );
    assert!(args.contains(&"--root=/git") && args.contains(&"--link=manifests"));
    let service = kind("Service");
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );
}
