//! Repository policy: checks over the repository's files rather than the running edge. Every
//! image built here is multi-stage, runs as no root and has a health check; no secret is
//! committed.

use crate::support::{repo, repo_file, repo_yaml};
use std::path::Path;
use std::process::Command;

#[test]
fn every_image_built_here_has_a_multi_stage_non_root_dockerfile() {
    for file in [
        "compose.yaml",
        "compose.staging.yaml",
        "compose.production.yaml",
    ] {
        let compose = repo_yaml(file).remove(0);
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
        // Spelt in two halves, so that this file does not hold the marker it looks for.
        assert!(
            !text.contains(concat!("PRIVATE", " KEY-----")),
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
        let compose = repo_yaml(file).remove(0);
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
    for line in repo_file(".env.example").lines() {
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
        for doc in repo_yaml(&rel) {
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

/// The text a base64 string encodes.
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
