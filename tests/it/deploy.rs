//! The deployment files under ops/deploy/ hold together with what the binary expects: each node of
//! the compose file starts with a configuration `bridge check-config` accepts, Prometheus scrapes
//! the port the nodes serve metrics on, every metric the alert rules name is one a server exports,
//! the image runs as non-root with a health check on /healthz, and the systemd unit drains on
//! SIGTERM. (Docker Compose is not on this machine; where it is, `docker compose -f
//! ops/deploy/compose.yaml config` checks the file's own syntax too.)

use crate::common::TestApp;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use wazion_bridge::config::Secret;

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ops/deploy").join(file)
}

/// A YAML file as JSON (read by PyYAML from the test venv, merge keys resolved).
fn yaml(file: &str) -> Value {
    let out = std::process::Command::new(crate::openapi::venv_bin("python"))
        .args(["-c", "import sys, yaml, json; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)"])
        .arg(deploy(file))
        .output()
        .unwrap();
    assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `${NAME:?message}` and `${NAME}` replaced as Compose would, from `values`.
fn interpolate(text: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("a closed ${…}") + start;
        let name = rest[start + 2..end].split([':', '-', '?']).next().unwrap();
        let value = values.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("no test value for ${{{name}}}")).1;
        out.push_str(value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

#[tokio::test]
async fn the_compose_file_starts_nodes_the_binary_accepts_and_prometheus_scrapes_them() {
    let compose = yaml("compose.yaml");
    let services = compose["services"].as_object().unwrap();
    let names: BTreeSet<&str> = services.keys().map(String::as_str).collect();
    assert_eq!(names, BTreeSet::from(["node-1", "node-2", "postgres", "prometheus", "replica"]));
    let values = [
        ("POSTGRES_PASSWORD", "pw"),
        ("BRIDGE_MASTER_KEY", crate::common::TEST_MASTER_KEY),
        ("BRIDGE_OPERATOR_TOKEN", "an-operator-token-of-forty-characters-xx"),
    ];
    let mut metrics_ports = Vec::new();
    for node in ["node-1", "node-2"] {
        let service = &services[node];
        assert_eq!(service["build"]["dockerfile"], "ops/deploy/Dockerfile");
        let context = deploy(service["build"]["context"].as_str().unwrap());
        assert!(context.join("Cargo.toml").exists(), "{node} builds from the repository's root");
        let env = service["environment"].as_object().unwrap();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_bridge"));
        command.env_clear().env("PATH", std::env::var("PATH").unwrap()).arg("check-config").arg("--json");
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("deploy-{node}"));
        std::fs::create_dir_all(&dir).unwrap();
        command.current_dir(&dir);
        for (name, value) in env {
            command.env(name, interpolate(value.as_str().unwrap(), &values));
        }
        let out = command.output().unwrap();
        assert!(out.status.success(), "{node}'s configuration: {}", String::from_utf8_lossy(&out.stderr));
        let checked: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(checked["roles"], serde_json::json!(["api", "dispatch", "webhooks", "projections"]), "{node}: {checked}");
        assert_eq!(checked["node_id"], node);
        assert_eq!(checked["log_format"], "json");
        for set in ["database_url", "read_database_url", "master_key", "operator_token"] {
            assert_eq!(checked[set], true, "{node} sets {set}");
        }
        let metrics = checked["metrics_listen"].as_str().expect("the nodes serve metrics on a listener of their own");
        metrics_ports.push(format!("{node}:{}", metrics.rsplit(':').next().unwrap()));
    }
    // Every file the services mount is in the repository.
    for service in services.values() {
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let source = volume.as_str().unwrap().split(':').next().unwrap();
            if source.starts_with("./") {
                assert!(deploy(source).exists(), "{source} is mounted but missing");
            }
        }
    }

    let prometheus = yaml("prometheus.yml");
    let targets: Vec<String> = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(targets, metrics_ports, "Prometheus scrapes each node's metrics listener");
    assert_eq!(prometheus["scrape_configs"][0]["metrics_path"], "/metrics");

    // Every metric the alert rules use is one a server exports.
    let alerts = std::fs::read_to_string(deploy("alerts.yml")).unwrap();
    let used: BTreeSet<String> =
        regex::Regex::new(r"bridge_[a-z_]+").unwrap().find_iter(&alerts).map(|m| m.as_str().to_owned()).collect();
    assert!(used.len() >= 8, "{used:?}");
    let app = TestApp::spawn_with(|c| c.operator_token = Some(Secret::new("an-operator-token-of-forty-characters-xx"))).await;
    let scraped = app
        .http
        .get(app.url("/metrics"))
        .bearer_auth("an-operator-token-of-forty-characters-xx")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let declared: BTreeSet<&str> =
        scraped.lines().filter_map(|l| l.strip_prefix("# TYPE ")).map(|l| l.split(' ').next().unwrap()).collect();
    for metric in &used {
        let family = ["_bucket", "_sum", "_count"].iter().find_map(|s| metric.strip_suffix(s)).unwrap_or(metric);
        assert!(declared.contains(family), "alerts.yml uses {metric}, which the server does not export");
    }
    assert_eq!(yaml("alerts.yml")["groups"][0]["rules"].as_array().unwrap().len(), alerts.matches("- alert:").count());
    app.shutdown().await;
}

#[test]
fn the_image_is_multi_stage_runs_as_non_root_and_checks_health() {
    let dockerfile = std::fs::read_to_string(deploy("Dockerfile")).unwrap();
    assert_eq!(dockerfile.lines().filter(|l| l.starts_with("FROM ")).count(), 2, "a build stage and a slim run stage");
    let user = dockerfile.lines().rev().find_map(|l| l.strip_prefix("USER ")).expect("a USER line");
    assert!(user.trim() != "root" && user.trim() != "0", "runs as {user}");
    assert!(dockerfile.contains("HEALTHCHECK"), "a health check");
    assert!(dockerfile.contains("http://127.0.0.1:8080/healthz"), "on /healthz of the listen port");
    assert!(dockerfile.contains("BRIDGE_LISTEN=0.0.0.0:8080"));
    assert!(dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/bridge\"]"));
    let ignored = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(".dockerignore")).unwrap();
    assert!(ignored.lines().any(|l| l.trim() == "target/"), "the build context leaves target/ out");
}

#[test]
fn the_systemd_unit_runs_the_server_as_its_own_user_and_drains_on_sigterm() {
    let unit = std::fs::read_to_string(deploy("wazion-bridge.service")).unwrap();
    let setting =
        |key: &str| unit.lines().find_map(|l| l.strip_prefix(&format!("{key}="))).unwrap_or_else(|| panic!("no {key}="));
    assert_eq!(setting("ExecStart"), "/usr/local/bin/bridge serve");
    assert_eq!(setting("ExecStartPre"), "/usr/local/bin/bridge check-config");
    assert_eq!(setting("KillSignal"), "SIGTERM");
    assert_eq!(setting("User"), "bridge");
    assert_eq!(setting("Restart"), "on-failure");
    assert!(setting("TimeoutStopSec").parse::<u64>().unwrap() >= 30, "time to drain");
}
