//! The deployment files checked against the edge they deploy: compose.yaml and the
//! Kubernetes manifests route to what exists, on the right networks and ports, build from
//! files that exist, and commit no secret. `infrastructure/validate.sh` runs too.

use serde_yaml::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every document of a YAML file, with `<<` merge keys applied.
fn yaml(path: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(&read(path))
        .map(|doc| {
            let mut value = Value::deserialize(doc).unwrap_or_else(|e| panic!("{path}: {e}"));
            value.apply_merge().expect("merge keys");
            value
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn edge_config(name: &str, text: &str) -> edge::config::Config {
    match edge::config::validate(name, text) {
        Ok(v) => v.config,
        Err(e) => panic!("{name} does not pass edge check:\n{e}"),
    }
}

/// (host, port) of every upstream server.
fn upstream_hosts(config: &edge::config::Config) -> BTreeSet<(String, u16)> {
    config
        .upstreams
        .values()
        .flat_map(|u| &u.servers)
        .map(|s| {
            let (host, port) = s.addr.rsplit_once(':').expect("host:port");
            (host.to_string(), port.parse().expect("port"))
        })
        .collect()
}

fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::Sequence(items) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Value::String(s) => s.split_whitespace().map(str::to_string).collect(),
        Value::Mapping(m) => m
            .keys()
            .filter_map(|k| k.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// The port a compose service listens on for the edge: this repo's services from their
/// catalogue entry, the third-party images from their documented defaults.
fn listening_port(name: &str, service: &Value) -> Option<u16> {
    let entrypoint = strings(&service["entrypoint"]);
    if entrypoint.first().map(String::as_str) == Some("services") {
        return services::find_service(entrypoint.get(1)?).map(|s| s.port);
    }
    let image = service["image"].as_str()?;
    let defaults = [
        ("grafana/grafana", 3000),
        ("prom/prometheus", 9090),
        ("redis", 6379),
    ];
    let port = defaults
        .iter()
        .find(|(prefix, _)| image.starts_with(prefix))
        .map(|(_, p)| *p)?;
    // A changed listen address would show in the command.
    let command = strings(&service["command"]).join(" ");
    assert!(
        !command.contains("listen-address") && !command.contains("--port"),
        "{name} changes its port in its command: {command}"
    );
    Some(port)
}

#[test]
fn compose_routes_every_upstream_to_a_service_on_the_edge_network_and_port() {
    let compose = yaml("compose.yaml").remove(0);
    let services = &compose["services"];
    let edge = &services["edge"];
    assert!(edge.is_mapping(), "compose.yaml has an edge service");

    // The config the edge reads is the one this test checks.
    let command = strings(&edge["command"]);
    let config_at = command
        .windows(2)
        .find(|w| w[0] == "--config")
        .map(|w| w[1].clone())
        .expect("edge run --config PATH");
    let mounts = strings(&edge["volumes"]);
    let host_file = mounts
        .iter()
        .find_map(|m| {
            let mut parts = m.split(':');
            let (host, target) = (parts.next()?, parts.next()?);
            let rest = config_at.strip_prefix(target)?;
            Some(format!("{}{}", host.trim_start_matches("./"), rest))
        })
        .expect("the config's directory is mounted");
    let config = edge_config(&host_file, &read(&host_file));

    let edge_networks: BTreeSet<String> = strings(&edge["networks"]).into_iter().collect();
    for (host, port) in upstream_hosts(&config) {
        let service = &services[host.as_str()];
        assert!(
            service.is_mapping(),
            "upstream host {host} is not a compose service"
        );
        let networks: BTreeSet<String> = strings(&service["networks"]).into_iter().collect();
        assert!(
            !edge_networks.is_disjoint(&networks),
            "{host} ({networks:?}) shares no network with the edge ({edge_networks:?})"
        );
        assert_eq!(
            listening_port(&host, service),
            Some(port),
            "{host}: the edge routes to port {port}"
        );
    }

    // Published ports are the listeners'; certificates are inside a mount.
    let ports = strings(&edge["ports"]);
    for addr in config
        .edge
        .http_listen
        .iter()
        .chain(&config.edge.https_listen)
    {
        let published = format!("{}:{}", addr.port(), addr.port());
        assert!(
            ports.contains(&published),
            "{published} not published: {ports:?}"
        );
    }
    let workdir = edge["working_dir"].as_str().unwrap_or("/");
    for cert in config.tls.iter().flat_map(|t| &t.certificates) {
        for file in [&cert.cert, &cert.key] {
            let absolute = Path::new(workdir).join(file);
            assert!(
                mounts.iter().any(|m| m
                    .split(':')
                    .nth(1)
                    .is_some_and(|target| absolute.starts_with(target))),
                "{} is not inside a mounted directory",
                absolute.display()
            );
        }
    }
    // The admin listener is reachable by Prometheus on the monitoring network.
    assert!(!config.edge.admin_listen.ip().is_loopback());
    assert!(edge_networks.contains("monitoring"));

    // Health checks need no curl: the edge's image has `edge healthcheck` for itself and the
    // services; every image built here has a health check.
    for (name, service) in services.as_mapping().expect("services") {
        let test = strings(&service["healthcheck"]["test"]).join(" ");
        let edge_image = service["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("aquascene/edge"));
        if edge_image {
            assert!(
                test.contains("edge healthcheck"),
                "{name:?} health check: {test}"
            );
        }
        if service["build"].is_mapping() {
            assert!(!test.is_empty(), "{name:?} has no health check");
            assert!(
                !test.contains("curl") && !test.contains("wget"),
                "{name:?} health check needs a tool the image lacks: {test}"
            );
        }
    }
}

#[test]
fn every_image_built_here_has_a_multi_stage_non_root_dockerfile() {
    for file in [
        "compose.yaml",
        "compose.staging.yaml",
        "compose.production.yaml",
    ] {
        let compose = yaml(file).remove(0);
        let Some(services) = compose["services"].as_mapping() else {
            continue;
        };
        for (name, service) in services {
            let build = &service["build"];
            if !build.is_mapping() {
                continue;
            }
            let context = build["context"].as_str().unwrap_or(".");
            let dockerfile = build["dockerfile"].as_str().unwrap_or("Dockerfile");
            let path = repo().join(context).join(dockerfile);
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{file} {name:?}: {}: {e}", path.display()));
            let from = text.lines().filter(|l| l.starts_with("FROM ")).count();
            assert!(
                from >= 2 || context != ".",
                "{}: multi-stage",
                path.display()
            );
            let user = text
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix("USER "))
                .unwrap_or_else(|| panic!("{}: no USER", path.display()));
            assert!(
                !matches!(user.trim(), "root" | "0" | "0:0"),
                "{}: runs as root",
                path.display()
            );
            assert!(
                text.contains("HEALTHCHECK"),
                "{}: no HEALTHCHECK",
                path.display()
            );
        }
    }
}

/// Whether a value is a reference to the environment (`${VAR}`), empty, or a placeholder.
fn not_a_secret(value: &str) -> bool {
    value.is_empty()
        || value.starts_with("${")
        || value.contains("change-me")
        || value.starts_with("REPLACE")
}

#[test]
fn no_secret_is_committed() {
    let tracked = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(repo())
        .output()
        .expect("git ls-files");
    let files: Vec<String> = String::from_utf8_lossy(&tracked.stdout)
        .split('\0')
        .filter(|f| !f.is_empty())
        .map(str::to_string)
        .collect();
    assert!(
        files.iter().any(|f| f == "compose.yaml"),
        "run inside the git checkout"
    );
    for file in &files {
        let name = Path::new(file)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("");
        assert!(
            name != ".env",
            "{file} is committed; only .env.example may be"
        );
        assert!(
            !name.ends_with(".key") && !name.ends_with(".pem"),
            "{file}: key material is committed"
        );
        let Ok(text) = std::fs::read_to_string(repo().join(file)) else {
            continue;
        };
        // This file names the marker it looks for.
        if file.ends_with("deployment.rs") {
            continue;
        }
        assert!(
            !text.contains("PRIVATE KEY-----"),
            "{file} contains a private key"
        );
    }

    // Compose: every secret-looking variable comes from the environment.
    let secret_key = |k: &str| {
        let k = k.to_ascii_uppercase();
        ["PASSWORD", "SECRET", "TOKEN", "API_KEY", "ACCESS_KEY"]
            .iter()
            .any(|s| k.contains(s))
    };
    for file in [
        "compose.yaml",
        "compose.staging.yaml",
        "compose.production.yaml",
    ] {
        let compose = yaml(file).remove(0);
        for (name, service) in compose["services"].as_mapping().into_iter().flatten() {
            for (key, value) in service["environment"].as_mapping().into_iter().flatten() {
                let (Some(key), Some(value)) = (key.as_str(), value.as_str()) else {
                    continue;
                };
                if secret_key(key) {
                    assert!(
                        not_a_secret(value),
                        "{file} {name:?} {key} is written in the file"
                    );
                }
            }
        }
    }
    for line in read(".env.example").lines() {
        if let Some((key, value)) = line.split_once('=') {
            if secret_key(key) && !line.starts_with('#') {
                assert!(
                    not_a_secret(value.trim()),
                    ".env.example {key} is not a placeholder"
                );
            }
        }
    }

    // Kubernetes: Secrets in the repo are templates only.
    for entry in std::fs::read_dir(repo().join("infrastructure/k8s")).expect("k8s dir") {
        let path = entry.expect("entry").path();
        let rel = path
            .strip_prefix(repo())
            .expect("in repo")
            .display()
            .to_string();
        for doc in yaml(&rel) {
            if doc["kind"] != "Secret" {
                continue;
            }
            assert!(rel.contains("example"), "{rel}: a real Secret is committed");
            for (key, value) in doc["data"].as_mapping().into_iter().flatten() {
                let decoded = decode_base64(value.as_str().unwrap_or(""));
                assert!(
                    decoded.starts_with("REPLACE"),
                    "{rel} {key:?} holds more than a placeholder"
                );
            }
        }
    }
}

fn decode_base64(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for b in text.bytes().filter(|b| *b != b'=') {
        let Some(v) = ALPHABET.iter().position(|a| *a == b) else {
            continue;
        };
        bits = (bits << 6) | v as u32;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    String::from_utf8_lossy(&out).to_string()
}

#[test]
fn kubernetes_manifests_run_replicas_that_share_limits_and_probe_the_admin_health() {
    let mut docs = Vec::new();
    for file in [
        "deployment.yaml",
        "service.yaml",
        "configmap.yaml",
        "pdb.yaml",
        "hpa.yaml",
    ] {
        docs.extend(yaml(&format!("infrastructure/k8s/{file}")));
    }
    let find = |kind: &str| -> Vec<&Value> { docs.iter().filter(|d| d["kind"] == kind).collect() };
    let deployment = find("Deployment")[0];
    let name = deployment["metadata"]["name"].as_str().expect("name");
    assert!(
        deployment["spec"]["replicas"].as_u64() >= Some(2),
        "several replicas"
    );
    let pod = &deployment["spec"]["template"];
    let pod_labels = &pod["metadata"]["labels"];
    let container = &pod["spec"]["containers"][0];

    // The ConfigMap's config: valid, redis-backed zones, admin reachable by the kubelet.
    let configmap = find("ConfigMap")[0];
    let text = configmap["data"]["upstreams.toml"]
        .as_str()
        .expect("upstreams.toml");
    let config = edge_config("configmap.yaml (upstreams.toml)", text);
    assert!(!config.zones.is_empty());
    for (zone, settings) in &config.zones {
        assert_eq!(
            format!("{:?}", settings.store),
            "Redis",
            "zone {zone} must be shared across replicas"
        );
    }
    let admin_port = config.edge.admin_listen.port();

    // Probes: /health on the container port that is the admin listener.
    let ports = container["ports"].as_sequence().expect("ports");
    let port_of = |name: &str| {
        ports
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("container port {name}"))
    };
    for probe in ["readinessProbe", "livenessProbe"] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], "/health", "{probe}");
        let port = get["port"]
            .as_u64()
            .or_else(|| get["port"].as_str().map(port_of))
            .expect("probe port");
        assert_eq!(port, u64::from(admin_port), "{probe} port");
    }
    for addr in config
        .edge
        .http_listen
        .iter()
        .chain(&config.edge.https_listen)
    {
        assert!(
            ports
                .iter()
                .any(|p| p["containerPort"].as_u64() == Some(u64::from(addr.port()))),
            "listener {addr} has no container port"
        );
    }
    assert!(
        container["resources"]["requests"].is_mapping(),
        "resource requests"
    );

    // The ConfigMap is mounted as a directory where --config points.
    let args = strings(&container["args"]);
    let config_path = args
        .windows(2)
        .find(|w| w[0] == "--config")
        .map(|w| w[1].clone())
        .expect("--config");
    let volume_name = pod["spec"]["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .find(|v| v["configMap"]["name"] == configmap["metadata"]["name"])
        .and_then(|v| v["name"].as_str())
        .expect("the ConfigMap is a volume");
    let mount = container["volumeMounts"]
        .as_sequence()
        .expect("mounts")
        .iter()
        .find(|m| m["name"] == volume_name)
        .expect("mounted");
    assert!(
        mount["subPath"].is_null(),
        "a subPath mount never sees ConfigMap updates"
    );
    assert_eq!(
        Path::new(&config_path).parent(),
        Some(Path::new(mount["mountPath"].as_str().expect("mountPath")))
    );

    // Service on 80/443, PDB and HPA select this Deployment.
    let service = find("Service")
        .into_iter()
        .find(|s| s["spec"]["type"] == "LoadBalancer")
        .expect("a LoadBalancer Service");
    let service_ports: BTreeSet<u64> = service["spec"]["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .filter_map(|p| p["port"].as_u64())
        .collect();
    assert_eq!(service_ports, BTreeSet::from([80, 443]));
    for selector in [
        &service["spec"]["selector"],
        &find("PodDisruptionBudget")[0]["spec"]["selector"]["matchLabels"],
    ] {
        for (k, v) in selector.as_mapping().expect("selector") {
            assert_eq!(&pod_labels[k.as_str().expect("key")], v, "selector {k:?}");
        }
    }
    let hpa = find("HorizontalPodAutoscaler")[0];
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "Deployment");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], name);
    assert!(hpa["spec"]["minReplicas"].as_u64() >= Some(2));
}

#[test]
fn infrastructure_validate_sh_passes() {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_edge"))
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg(repo().join("infrastructure/validate.sh"))
        .env("PATH", path)
        .output()
        .expect("run validate.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "validate.sh failed:\n{text}");
    // promtool is installed by scripts/test.sh: the Prometheus checks must not be skipped.
    assert!(text.contains("✓ promtool test rules"), "{text}");
    assert!(text.contains("✓ edge check upstreams.toml"), "{text}");
}
