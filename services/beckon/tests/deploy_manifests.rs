//! The Kubernetes manifests in deploy/kubernetes hang together and start the real binary with
//! settings it accepts: every Deployment's command line and environment resolve with
//! `--print-config`, probes and listen addresses agree, Services, autoscalers and disruption
//! budgets point at Deployments that exist, and the URLs between services name real Services.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize as _;
use serde_json::Value;

fn folder() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes")
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("read manifest");
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("manifest is YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// The numeric user every Dockerfile under docker/ ends with, the same in all of them.
fn numeric_image_user() -> u64 {
    let docker = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docker");
    let mut users = BTreeSet::new();
    for entry in std::fs::read_dir(&docker).expect("read docker/") {
        let path = entry.expect("entry").path();
        if !path.to_string_lossy().ends_with("Dockerfile") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read Dockerfile");
        let user = text
            .lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix("USER "))
            .unwrap_or_else(|| panic!("{}: no USER", path.display()));
        let (uid, gid) = user.trim().split_once(':').unwrap_or((user.trim(), ""));
        let uid: u64 = uid
            .parse()
            .unwrap_or_else(|_| panic!("{}: USER {user} is not numeric", path.display()));
        assert!(uid != 0, "{}: USER is root", path.display());
        assert_eq!(gid, uid.to_string(), "{}: group", path.display());
        users.insert(uid);
    }
    assert_eq!(users.len(), 1, "one image user across docker/: {users:?}");
    users.into_iter().next().unwrap_or_default()
}

#[test]
fn the_manifests_start_services_the_binary_accepts() {
    let kustomization = documents(&folder().join("kustomization.yaml"));
    let listed: BTreeSet<String> = kustomization[0]["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(|r| r.as_str().map(str::to_string))
        .collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(folder())
        .expect("read folder")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    assert_eq!(
        listed, on_disk,
        "every manifest is listed in kustomization.yaml"
    );

    let mut all: Vec<Value> = Vec::new();
    for name in &listed {
        all.extend(documents(&folder().join(name)));
    }
    let of_kind =
        |kind: &str| -> Vec<&Value> { all.iter().filter(|d| d["kind"] == kind).collect() };

    // The shared settings file, as the pods see it at /etc/beckon/beckon.yaml.
    let config = of_kind("ConfigMap")
        .into_iter()
        .find(|c| str_at(c, "/metadata/name") == "beckon-config")
        .expect("beckon-config");
    let dir = tempfile::tempdir().expect("tempdir");
    let config_file = dir.path().join("beckon.yaml");
    std::fs::write(&config_file, str_at(config, "/data/beckon.yaml")).expect("write config");

    let services: BTreeMap<&str, &Value> = of_kind("Service")
        .into_iter()
        .map(|s| (str_at(s, "/metadata/name"), s))
        .collect();
    let deployments = of_kind("Deployment");
    let image_user = numeric_image_user();
    let mut started = BTreeSet::new();
    for d in &deployments {
        let name = str_at(d, "/metadata/name");
        let labels = &d["spec"]["template"]["metadata"]["labels"];
        assert!(
            labels_match(&d["spec"]["selector"]["matchLabels"], labels),
            "{name}: selector matches its pods"
        );
        // Under runAsNonRoot the kubelet starts only a numeric, non-zero user; the image's
        // USER is numeric too, and both name the same account.
        let pod_security = &d["spec"]["template"]["spec"]["securityContext"];
        assert_eq!(pod_security["runAsNonRoot"], true, "{name}: runAsNonRoot");
        for field in ["runAsUser", "runAsGroup"] {
            assert_eq!(
                pod_security[field].as_u64(),
                Some(image_user),
                "{name}: {field} is the image's numeric user"
            );
        }

        let container = &d["spec"]["template"]["spec"]["containers"][0];
        let args: Vec<&str> = container["args"]
            .as_array()
            .expect("args")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(args.first(), Some(&"serve"), "{name}");
        started.insert(args[1].to_string());

        // The gRPC port the probes check is the one the service listens on.
        let listen = args
            .windows(2)
            .find(|w| w[0] == "--listen")
            .map(|w| w[1])
            .expect("--listen");
        let port = listen.rsplit(':').next().unwrap_or_default();
        let grpc_port = container["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .find(|p| p["name"] == "grpc")
            .and_then(|p| p["containerPort"].as_u64())
            .expect("grpc port");
        assert_eq!(port, grpc_port.to_string(), "{name}: listen port");
        for probe in ["readinessProbe", "livenessProbe"] {
            assert_eq!(
                container[probe]["grpc"]["port"].as_u64(),
                Some(grpc_port),
                "{name}: {probe} checks the gRPC port"
            );
        }

        // Readiness asks the whole server, which is not serving while Redis does not answer;
        // liveness asks the name that stays serving, or a Redis outage would restart pods.
        assert!(
            container["readinessProbe"]["grpc"]["service"].is_null(),
            "{name}: readiness asks the whole server"
        );
        assert_eq!(
            container["livenessProbe"]["grpc"]["service"].as_str(),
            Some(beckon::grpc::LIVENESS),
            "{name}: liveness asks the liveness name"
        );

        // The binary accepts the command line and environment the pod gets.
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_beckon"));
        cmd.args(&args).arg("--print-config").env_clear();
        for var in container["env"].as_array().expect("env") {
            let key = str_at(var, "/name");
            let value = if key == "BECKON_CONFIG" {
                config_file.to_string_lossy().to_string()
            } else if var.pointer("/valueFrom/secretKeyRef").is_some() {
                "redis://:s3cret@127.0.0.1:1/".to_string()
            } else if var.pointer("/valueFrom/fieldRef").is_some() {
                format!("{name}-0")
            } else {
                str_at(var, "/value").to_string()
            };

            // URLs between services name a Service of this folder on its port.
            if key.starts_with("BECKON_") && key.ends_with("_URL") && key != "BECKON_REDIS_URL" {
                let host_port = value.trim_start_matches("http://");
                let (host, port) = host_port.split_once(':').expect("host:port");
                let service = services
                    .get(host)
                    .unwrap_or_else(|| panic!("{name}: {key}"));
                assert_eq!(
                    service["spec"]["ports"][0]["port"]
                        .as_u64()
                        .map(|p| p.to_string()),
                    Some(port.to_string()),
                    "{name}: {key} port"
                );
            }
            cmd.env(key, value);
        }
        let out = cmd.output().expect("run beckon");
        let printed = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(printed.contains("partitions: 64"), "{name}: {printed}");
        assert!(
            !printed.contains("s3cret"),
            "{name}: the Redis password is hidden"
        );
    }
    let expected: BTreeSet<String> = ["ingest", "journey", "user-state", "scheduler", "gateway"]
        .into_iter()
        .map(str::to_string)
        .collect();
    assert_eq!(started, expected, "one Deployment per service");

    // Services, autoscalers and disruption budgets point at Deployments that exist.
    for (name, s) in &services {
        assert!(
            deployments.iter().any(|d| labels_match(
                &s["spec"]["selector"],
                &d["spec"]["template"]["metadata"]["labels"]
            )),
            "Service {name} selects a Deployment"
        );
    }
    for h in of_kind("HorizontalPodAutoscaler") {
        let target = str_at(h, "/spec/scaleTargetRef/name");
        assert!(
            deployments
                .iter()
                .any(|d| str_at(d, "/metadata/name") == target),
            "HPA target {target}"
        );
    }
    for p in of_kind("PodDisruptionBudget") {
        assert!(
            deployments.iter().any(|d| labels_match(
                &p["spec"]["selector"]["matchLabels"],
                &d["spec"]["template"]["metadata"]["labels"]
            )),
            "PDB {} selects a Deployment",
            str_at(p, "/metadata/name")
        );
    }
}
