//! The deployment files checked against the edge they deploy: compose.yaml and the
//! Kubernetes manifests route to what exists, on the right networks and ports, with the
//! config the edge accepts. `infrastructure/validate.sh` runs too. (What every file of the
//! repository must be, whatever it deploys, is in `policy.rs`.)

use crate::support::{repo, repo_file, repo_yaml};
use serde_yaml::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// The config in `text` as `edge check` reads it, or the test fails with its errors.
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

/// The strings of a YAML list, of a string's words, or of a mapping's keys.
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
    let compose = repo_yaml("compose.yaml").remove(0);
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
    let config = edge_config(&host_file, &repo_file(&host_file));

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
    // HTTP/3 listens on UDP at every https port.
    if config.edge.http3 {
        for addr in &config.edge.https_listen {
            let published = format!("{}:{}/udp", addr.port(), addr.port());
            assert!(
                ports.contains(&published),
                "{published} (HTTP/3) not published: {ports:?}"
            );
        }
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
fn kubernetes_manifests_run_replicas_that_share_limits_and_probe_the_admin_health() {
    let mut docs = Vec::new();
    for file in [
        "deployment.yaml",
        "service.yaml",
        "configmap.yaml",
        "pdb.yaml",
        "hpa.yaml",
    ] {
        docs.extend(repo_yaml(&format!("infrastructure/k8s/{file}")));
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
    if config.edge.http3 {
        for addr in &config.edge.https_listen {
            assert!(
                ports.iter().any(|p| p["protocol"] == "UDP"
                    && p["containerPort"].as_u64() == Some(u64::from(addr.port()))),
                "HTTP/3 at {addr} has no UDP container port"
            );
        }
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
    let udp: BTreeSet<u64> = service["spec"]["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .filter(|p| p["protocol"] == "UDP")
        .filter_map(|p| p["port"].as_u64())
        .collect();
    assert_eq!(udp, BTreeSet::from([443]), "HTTP/3 on 443/udp");
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
