//! The Kubernetes manifests in deploy/kubernetes hang together and start the real binary with
//! settings it accepts: every Deployment's command line and environment resolve with
//! `--print-config`, probes and listen addresses agree, Services, autoscalers and disruption
//! budgets point at Deployments that exist, and the URLs between services name real Services.
//! Every process that serves or makes one of the calls internal to Beckon reads the internal
//! token from the `beckon-internal-token` secret, and the network policies keep the
//! scheduler's gRPC port to Beckon's pods while every other port stays open as before.

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

/// The secret holding the internal token, under the key `token`.
const TOKEN_SECRET: &str = "beckon-internal-token";

/// The services that serve an internal call (ingest, gateway, scheduler) or make one
/// (gateway, user-state).
const TOKEN_USERS: [&str; 4] = ["ingest", "gateway", "scheduler", "user-state"];

const FAKE_TOKEN: &str = "test-only-internal-token-0123456789";

/// The file a Deployment's `BECKON_INTERNAL_TOKEN_FILE` names, when it is the `token` key of
/// the token secret, mounted read-only, and the secret is required: a pod without it would
/// otherwise start with its internal calls refused.
fn internal_token_file(d: &Value) -> Option<String> {
    let pod = &d["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let path = container["env"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == "BECKON_INTERNAL_TOKEN_FILE")
        .and_then(|v| v["value"].as_str())?;
    let volume = pod["volumes"]
        .as_array()?
        .iter()
        .find(|v| v["secret"]["secretName"] == TOKEN_SECRET && v["secret"]["optional"] != true)?;
    let mount = container["volumeMounts"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == volume["name"] && m["readOnly"] == true)?;
    let dir = mount["mountPath"].as_str()?;
    (path == format!("{dir}/token")).then(|| path.to_string())
}

/// Whether a label selector (`matchLabels` and `In` expressions) selects pods with `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let by_labels = selector["matchLabels"]
        .as_object()
        .is_none_or(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let by_expressions = selector["matchExpressions"].as_array().is_none_or(|es| {
        es.iter().all(|e| {
            assert_eq!(e["operator"], "In", "only In is read here: {e}");
            let values = e["values"].as_array().expect("values");
            labels
                .get(e["key"].as_str().unwrap_or_default())
                .is_some_and(|v| values.contains(v))
        })
    });
    by_labels && by_expressions
}

/// The `app.kubernetes.io/name` values a peer selector admits, when it admits only those
/// (by `matchLabels` or an `In` expression); `None` when it admits any name.
fn names_admitted(selector: &Value) -> Option<BTreeSet<String>> {
    const KEY: &str = "app.kubernetes.io/name";
    if let Some(name) = selector["matchLabels"][KEY].as_str() {
        return Some(BTreeSet::from([name.to_string()]));
    }
    selector["matchExpressions"]
        .as_array()?
        .iter()
        .find(|e| e["key"] == KEY && e["operator"] == "In")
        .map(|e| {
            e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
}

/// Who reaches a pod with `labels` on the container port `port` (its name and number).
#[derive(Debug, PartialEq)]
enum Reach {
    Anyone,
    /// Only pods of these Deployments (by their `app.kubernetes.io/name`).
    Only(BTreeSet<String>),
    Nobody,
}

fn reach(policies: &[&Value], labels: &Value, port: (&str, u64)) -> Reach {
    let isolating: Vec<&&Value> = policies
        .iter()
        .filter(|p| selects(&p["spec"]["podSelector"], labels))
        .filter(|p| {
            p["spec"]["policyTypes"]
                .as_array()
                .is_none_or(|t| t.iter().any(|t| t == "Ingress"))
        })
        .collect();
    if isolating.is_empty() {
        return Reach::Anyone;
    }
    let mut only = BTreeSet::new();
    let rules = isolating
        .iter()
        .flat_map(|p| p["spec"]["ingress"].as_array().into_iter().flatten());
    for rule in rules {
        let covers = rule["ports"].as_array().is_none_or(|ports| {
            ports
                .iter()
                .any(|p| p["port"].as_str() == Some(port.0) || p["port"].as_u64() == Some(port.1))
        });
        if !covers {
            continue;
        }
        let Some(from) = rule["from"].as_array() else {
            return Reach::Anyone;
        };
        for peer in from {
            // A namespace or address range reaches past this deployment's pods.
            let pods = &peer["podSelector"];
            let names = (peer["namespaceSelector"].is_null() && peer["ipBlock"].is_null())
                .then(|| names_admitted(pods))
                .flatten();
            match names {
                Some(names) => only.extend(names),
                None => return Reach::Anyone,
            }
        }
    }
    if only.is_empty() {
        Reach::Nobody
    } else {
        Reach::Only(only)
    }
}

/// The scheduler's gRPC port is reached only from Beckon's pods; every other service's gRPC
/// port, and every pod's metrics port, from anyone, as without the policies.
fn network_policies(deployments: &[&Value], policies: &[&Value]) {
    assert!(
        !policies.is_empty(),
        "networkpolicy.yaml holds the policies"
    );
    let beckon: BTreeSet<String> = deployments
        .iter()
        .map(|d| str_at(d, "/spec/template/metadata/labels/app.kubernetes.io~1name").to_string())
        .collect();
    for d in deployments {
        let name = str_at(d, "/metadata/name");
        let labels = &d["spec"]["template"]["metadata"]["labels"];
        let container = &d["spec"]["template"]["spec"]["containers"][0];
        let service = str_at(container, "/args/1");
        for port in container["ports"].as_array().expect("ports") {
            let port_name = str_at(port, "/name");
            let number = port["containerPort"].as_u64().unwrap_or_default();
            let got = reach(policies, labels, (port_name, number));
            if service == "scheduler" && port_name == "grpc" {
                match &got {
                    Reach::Only(names) => assert!(
                        names.is_subset(&beckon) && names.contains("beckon-user-state"),
                        "{name}: grpc reached from {names:?}"
                    ),
                    other => panic!("{name}: grpc must be reached only from Beckon: {other:?}"),
                }
            } else {
                assert_eq!(got, Reach::Anyone, "{name}: port {port_name}");
            }
        }
    }
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

        // Those that serve or make an internal call read the token from the secret.
        let token_file = internal_token_file(d);
        if TOKEN_USERS.contains(&args[1]) {
            assert!(
                token_file.is_some(),
                "{name}: BECKON_INTERNAL_TOKEN_FILE names a file of the {TOKEN_SECRET} secret"
            );
        }

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
            } else if key == "BECKON_INTERNAL_TOKEN_FILE" {
                // The secret's file as the pod would see it, with a token of the test's.
                let file = dir.path().join(format!("{name}-token"));
                std::fs::write(&file, format!("{FAKE_TOKEN}\n")).expect("write token");
                file.to_string_lossy().to_string()
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
        assert!(
            !printed.contains(FAKE_TOKEN),
            "{name}: the internal token is not printed"
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
    network_policies(&deployments, &of_kind("NetworkPolicy"));

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
