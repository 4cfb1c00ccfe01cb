//! The Kubernetes manifests under `deploy/`: every overlay renders with `kubectl
//! kustomize`, and every Folio container in it starts `folio serve` with flags and
//! environment that `folio serve --check-config` accepts, so each flag and variable the
//! manifests use exists and parses. Environment values come from the rendered objects
//! (ConfigMaps, Secrets, `$(VAR)` references); the pod's own fields (its IP and name)
//! and Secrets the operator creates are given sample values.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use base64::Engine as _;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every object `kubectl kustomize` renders for `overlay`.
fn render(overlay: &str) -> Vec<Value> {
    let dir = root().join("deploy/overlays").join(overlay);
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(&dir)
        .output()
        .expect("kubectl is installed (scripts/test.sh installs it when missing)");
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| {
            let value: serde_yaml_ng::Value =
                serde::Deserialize::deserialize(doc).expect("a YAML document");
            serde_json::to_value(value).expect("JSON-compatible")
        })
        .collect()
}

/// The key-value data of the rendered ConfigMaps and Secrets, by kind and name.
fn data(objects: &[Value]) -> BTreeMap<(String, String), BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for object in objects {
        let kind = object["kind"].as_str().unwrap_or_default();
        if kind != "ConfigMap" && kind != "Secret" {
            continue;
        }
        let name = object["metadata"]["name"]
            .as_str()
            .expect("a name")
            .to_owned();
        let mut values = BTreeMap::new();
        for (key, value) in object["data"].as_object().into_iter().flatten() {
            let text = value.as_str().expect("string data");
            let text = if kind == "Secret" {
                let compact: String = text.split_whitespace().collect();
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(compact)
                    .expect("base64 secret data");
                String::from_utf8(bytes).expect("utf-8 secret")
            } else {
                text.to_owned()
            };
            values.insert(key.clone(), text);
        }
        out.insert((kind.to_owned(), name), values);
    }
    out
}

/// Sample values of Secrets the operator creates (deploy/README.md).
fn operator_secret(name: &str, key: &str) -> Option<String> {
    (name == "folio-store" && key == "url").then(|| {
        "s3://bucket/folio/?region=us-east-1&access_key_id=AKIDEXAMPLE&secret_access_key=example"
            .to_owned()
    })
}

/// `$(NAME)` references in `value` expanded from `env`, as Kubernetes does.
fn expand(value: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = value.to_owned();
    for (name, v) in env {
        out = out.replace(&format!("$({name})"), v);
    }
    out
}

/// Each Folio container of `objects`: its workload's name, argv after the binary, env.
fn folio_containers(objects: &[Value]) -> Vec<(String, Vec<String>, BTreeMap<String, String>)> {
    let data = data(objects);
    let mut out = Vec::new();
    for object in objects {
        let kind = object["kind"].as_str().unwrap_or_default();
        if kind != "StatefulSet" && kind != "Deployment" {
            continue;
        }
        let workload = object["metadata"]["name"]
            .as_str()
            .expect("name")
            .to_owned();
        for container in object["spec"]["template"]["spec"]["containers"]
            .as_array()
            .expect("containers")
        {
            let image = container["image"].as_str().unwrap_or_default();
            if !image.contains("folio") {
                continue;
            }
            let mut env = BTreeMap::new();
            for var in container["env"].as_array().into_iter().flatten() {
                let name = var["name"].as_str().expect("env name").to_owned();
                let from = &var["valueFrom"];
                let value = if let Some(v) = var["value"].as_str() {
                    expand(v, &env)
                } else if let Some(path) = from["fieldRef"]["fieldPath"].as_str() {
                    match path {
                        "status.podIP" => "10.1.2.3".to_owned(),
                        "metadata.name" => format!("{workload}-0"),
                        other => panic!("{workload}: env {name} reads field {other}, unknown here"),
                    }
                } else {
                    let (kind, reference) = if from["configMapKeyRef"].is_object() {
                        ("ConfigMap", &from["configMapKeyRef"])
                    } else {
                        ("Secret", &from["secretKeyRef"])
                    };
                    let source = reference["name"].as_str().expect("ref name");
                    let key = reference["key"].as_str().expect("ref key");
                    data.get(&(kind.to_owned(), source.to_owned()))
                        .and_then(|d| d.get(key).cloned())
                        .or_else(|| operator_secret(source, key))
                        .unwrap_or_else(|| {
                            panic!("{workload}: env {name} reads {kind} {source} key {key}, which is not rendered")
                        })
                };
                env.insert(name, value);
            }
            let command: Vec<String> = container["command"]
                .as_array()
                .expect("an explicit command")
                .iter()
                .map(|c| c.as_str().expect("string").to_owned())
                .collect();
            assert_eq!(
                command[0], "/usr/local/bin/folio",
                "{workload}: the image's binary"
            );
            let mut argv: Vec<String> = command[1..].to_vec();
            argv.extend(
                container["args"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| expand(a.as_str().expect("string"), &env)),
            );
            out.push((workload.clone(), argv, env));
        }
    }
    out
}

fn check_config(argv: &[String], env: &BTreeMap<String, String>) -> std::process::Output {
    Command::new(folio_tests::folio_binary().expect("folio binary"))
        .args(argv)
        .arg("--check-config")
        .env_clear()
        .envs(env)
        .output()
        .expect("run folio")
}

#[test]
fn every_overlay_renders_and_its_brokers_configuration_checks() {
    for overlay in ["dev", "prod"] {
        let objects = render(overlay);
        let containers = folio_containers(&objects);
        assert!(
            !containers.is_empty(),
            "{overlay}: no Folio container rendered"
        );
        for (workload, argv, env) in &containers {
            assert_eq!(
                argv.first().map(String::as_str),
                Some("serve"),
                "{workload}"
            );
            let out = check_config(argv, env);
            assert!(
                out.status.success(),
                "{overlay}/{workload}: folio {} --check-config with {env:?}: {}",
                argv.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(stdout.starts_with("configuration OK"), "{stdout}");
            assert!(
                stdout.contains("listen 0.0.0.0:8080, etcd http://etcd-0.etcd:2379"),
                "{stdout}"
            );
            eprintln!("{overlay}/{workload}: {}", stdout.trim());

            // The check can fail: a flag the broker does not have is refused.
            let mut wrong = argv.clone();
            wrong.push("--no-such-flag".into());
            assert_eq!(check_config(&wrong, env).status.code(), Some(2));
        }
    }
}

#[test]
fn prod_runs_one_broker_statefulset_per_zone_announcing_that_zone() {
    let objects = render("prod");
    let containers = folio_containers(&objects);
    let mut zones = std::collections::BTreeSet::new();
    for (workload, _, env) in &containers {
        let zone = env
            .get("FOLIO_ZONE")
            .unwrap_or_else(|| panic!("{workload}: no FOLIO_ZONE"));
        let object = objects
            .iter()
            .find(|o| o["kind"] == "StatefulSet" && o["metadata"]["name"] == workload.as_str())
            .expect("the workload");
        let pinned =
            &object["spec"]["template"]["spec"]["nodeSelector"]["topology.kubernetes.io/zone"];
        assert_eq!(
            pinned.as_str(),
            Some(zone.as_str()),
            "{workload}: its pods run in the zone they announce"
        );
        let selector = &object["spec"]["selector"]["matchLabels"];
        assert_eq!(
            selector["folio.example.com/zone"].as_str(),
            Some(zone.as_str()),
            "{workload}: each zone's StatefulSet selects only its own pods"
        );
        zones.insert(zone.clone());
    }
    assert_eq!(zones.len(), 3, "three zones: {zones:?}");
    assert_eq!(containers.len(), 3, "one StatefulSet per zone");
    // One budget over every broker, whatever its zone: one broker down at a time.
    let budgets: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "PodDisruptionBudget" && o["metadata"]["name"] == "folio-broker")
        .collect();
    assert_eq!(budgets.len(), 1);
    assert_eq!(budgets[0]["spec"]["maxUnavailable"], 1);
    let selector = budgets[0]["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("labels");
    assert!(
        !selector.contains_key("folio.example.com/zone"),
        "the budget spans zones: {selector:?}"
    );
}
