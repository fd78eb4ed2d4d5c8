#!/usr/bin/env bash
# Infrastructure validation (the content engine's "validate-infrastructure.sh", made
# real): checks every deployment and monitoring file of this repository without starting
# anything.
#
#   infrastructure/validate.sh            # from anywhere; exits 1 if any check fails
#   VALIDATE_STRICT=1 infrastructure/validate.sh   # a missing tool is a failure, not a skip
#
# What it checks, with what (each tool is optional; without it the check falls back or is
# skipped, and says so):
#   compose files      `docker compose config -q` (base, +staging, +production; .env, or
#                      .env.example when there is no .env), else a YAML parse; and every
#                      host the edge configs route to is a compose service
#   Kubernetes         kubeconform -strict (rendered with kustomize), else `kubectl kustomize`
#                      + a YAML parse, else a YAML parse of each manifest
#   Prometheus         promtool check config, check rules, test rules
#   Grafana            dashboards are JSON; every metric their queries and the alert rules
#                      use is one the edge exports (edge/src/observe/*.rs, edge/src/scrape.rs)
#   Loki / Promtail    YAML parse
#   edge configs       `edge check` on upstreams.toml and on every copy under infrastructure/
#                      (the Kubernetes ConfigMap's is extracted), and each copy differs from
#                      upstreams.toml only in the keys it is meant to change
#   scripts            sh -n, and shellcheck when installed
# The edge binary is taken from PATH, else target/release/edge, else target/debug/edge.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
INFRA=infrastructure
STRICT="${VALIDATE_STRICT:-0}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

failures=0
skips=0
ok() { echo "✓ $*"; }
bad() {
    echo "✗ $*"
    failures=$((failures + 1))
}
skip() {
    if [ "$STRICT" = 1 ]; then
        bad "$* (VALIDATE_STRICT=1)"
    else
        echo "- skipped: $*"
        skips=$((skips + 1))
    fi
}
section() { printf '\n== %s\n' "$*"; }
# run LABEL CMD...: ✓ when CMD succeeds, else ✗ with its output indented.
run() {
    local label="$1" out
    shift
    if out="$("$@" 2>&1)"; then
        ok "$label"
    else
        bad "$label"
        printf '%s\n' "$out" | sed 's/^/    /'
    fi
}

PY=""
for p in python3 /usr/bin/python3; do
    if command -v "$p" > /dev/null 2>&1 && "$p" -c 'import yaml' 2> /dev/null; then
        PY="$p"
        break
    fi
done

yaml_parse() { # FILE...: every document of every file parses
    "$PY" - "$@" << 'EOF'
import sys, yaml
for f in sys.argv[1:]:
    with open(f) as fh:
        list(yaml.safe_load_all(fh))
EOF
}

COMPOSE_FILES=(compose.yaml compose.staging.yaml compose.production.yaml)

# ---------------------------------------------------------------------------- compose
section "Docker Compose"
env_file=.env
[ -f .env ] || env_file=.env.example
if docker compose version > /dev/null 2>&1; then
    run "compose.yaml (docker compose config, env from $env_file)" \
        docker compose --env-file "$env_file" -f compose.yaml config -q
    run "compose.yaml + compose.staging.yaml" \
        docker compose --env-file "$env_file" -f compose.yaml -f compose.staging.yaml config -q
    run "compose.yaml + compose.production.yaml" \
        docker compose --env-file "$env_file" -f compose.yaml -f compose.production.yaml config -q
elif [ -n "$PY" ]; then
    for f in "${COMPOSE_FILES[@]}"; do
        run "$f parses (YAML; no docker compose plugin for a full check)" yaml_parse "$f"
    done
    skip "docker compose config (the docker compose plugin is not installed)"
else
    skip "compose files (neither docker compose nor python3 with PyYAML)"
fi

if [ -n "$PY" ]; then
    # Every server host of the compose edge config is a compose service; the config the
    # compose edge mounts exists; the monitoring files compose mounts exist.
    run "edge upstream hosts are compose services; mounted files exist; .env.example lists every variable" "$PY" - << 'EOF'
import os, re, sys, yaml
compose = yaml.safe_load(open("compose.yaml"))
services = set(compose["services"])
errors = []
text = open("infrastructure/edge/upstreams.toml").read()
for host, port in re.findall(r'addr\s*=\s*"([A-Za-z0-9.-]+):(\d+)"', text):
    if host not in services:
        errors.append(f"upstream server {host}:{port} is not a service of compose.yaml")
for m in re.finditer(r'url\s*=\s*"redis://([A-Za-z0-9.-]+):', text):
    if m.group(1) not in services:
        errors.append(f"[redis] host {m.group(1)} is not a service of compose.yaml")
for f in ("compose.yaml", "compose.staging.yaml", "compose.production.yaml"):
    doc = yaml.safe_load(open(f))
    for name, svc in (doc.get("services") or {}).items():
        for v in svc.get("volumes") or []:
            src = v.split(":")[0] if isinstance(v, str) else v.get("source", "")
            if src.startswith("./") and "${" not in src and not os.path.exists(src):
                errors.append(f"{f}: {name} mounts {src}, which does not exist")
        build = svc.get("build")
        ctx = build.get("context") if isinstance(build, dict) else build
        if ctx and not os.path.isdir(ctx):
            errors.append(f"{f}: {name} builds {ctx}, which does not exist")
# Every variable the compose files read is listed in .env.example.
documented = set(re.findall(r'^#?\s*([A-Z][A-Z0-9_]*)=', open(".env.example").read(), re.M))
for f in ("compose.yaml", "compose.staging.yaml", "compose.production.yaml"):
    text = re.sub(r'(^|\s)#.*$', '', open(f).read(), flags=re.M)  # not in comments
    for var in sorted(set(re.findall(r'(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)', text))):
        if var not in documented:
            errors.append(f"{f} reads ${{{var}}}, which .env.example does not list")
print("\n".join(errors))
sys.exit(1 if errors else 0)
EOF
fi

# ---------------------------------------------------------------------------- kubernetes
section "Kubernetes ($INFRA/k8s)"
K8S_MANIFESTS=("$INFRA"/k8s/*.yaml)
rendered="$TMP/k8s-rendered.yaml"
have_render=0
if command -v kubectl > /dev/null 2>&1 && kubectl kustomize "$INFRA/k8s" > "$rendered" 2> "$TMP/kustomize.err"; then
    have_render=1
    ok "kustomization renders (kubectl kustomize)"
elif command -v kustomize > /dev/null 2>&1 && kustomize build "$INFRA/k8s" > "$rendered" 2> "$TMP/kustomize.err"; then
    have_render=1
    ok "kustomization renders (kustomize build)"
elif command -v kubectl > /dev/null 2>&1 || command -v kustomize > /dev/null 2>&1; then
    bad "kustomization does not render"
    sed 's/^/    /' "$TMP/kustomize.err"
fi
if command -v kubeconform > /dev/null 2>&1; then
    if [ "$have_render" = 1 ]; then
        run "rendered manifests (kubeconform -strict)" kubeconform -strict -summary "$rendered"
    fi
    run "TLS Secret template (kubeconform -strict)" kubeconform -strict -summary "$INFRA/k8s/tls-secret.example.yaml"
elif [ -n "$PY" ]; then
    run "manifests parse (YAML)" yaml_parse "${K8S_MANIFESTS[@]}"
    [ "$have_render" = 1 ] && run "rendered kustomization parses (YAML)" yaml_parse "$rendered"
    skip "schema validation of the manifests (kubeconform is not installed)"
else
    skip "Kubernetes manifests (neither kubeconform nor python3 with PyYAML)"
fi

# ---------------------------------------------------------------------------- prometheus
section "Prometheus ($INFRA/monitoring/prometheus)"
PROM="$INFRA/monitoring/prometheus"
if command -v promtool > /dev/null 2>&1; then
    run "promtool check config prometheus.yml" promtool check config "$PROM/prometheus.yml"
    run "promtool check rules rules/*.yml" promtool check rules "$PROM"/rules/*.yml
    for t in "$PROM"/tests/*.yml; do
        [ -e "$t" ] && run "promtool test rules $(basename "$t")" promtool test rules "$t"
    done
else
    [ -n "$PY" ] && run "prometheus.yml and rules parse (YAML)" yaml_parse "$PROM/prometheus.yml" "$PROM"/rules/*.yml
    skip "promtool check config/rules, test rules (promtool is not installed; Debian: apt-get install prometheus)"
fi

# ---------------------------------------------------------------------------- grafana, logging
section "Grafana, Loki, Promtail"
GRAF="$INFRA/monitoring/grafana"
if [ -n "$PY" ]; then
    run "Grafana provisioning and Loki/Promtail configs parse (YAML)" yaml_parse \
        "$GRAF"/provisioning/datasources/*.yml "$GRAF"/provisioning/dashboards/*.yml \
        "$INFRA"/logging/*.yml
    run "Grafana dashboards are valid JSON with unique panel ids" "$PY" - "$GRAF"/dashboards/*.json << 'EOF'
import json, sys
errors = []
for f in sys.argv[1:]:
    d = json.load(open(f))
    ids = []
    def walk(p):
        for x in p:
            ids.append(x.get("id"))
            walk(x.get("panels", []))
    walk(d.get("panels", []))
    if not d.get("uid") or not d.get("title"):
        errors.append(f"{f}: uid and title are required")
    if len(ids) != len(set(ids)):
        errors.append(f"{f}: duplicate panel ids")
print("\n".join(errors))
sys.exit(1 if errors else 0)
EOF
    if [ -f edge/src/observe/metrics.rs ]; then
        run "dashboards and alert rules use only metrics the edge exports" "$PY" - \
            "$(cat edge/src/observe/*.rs edge/src/scrape.rs)" "$GRAF/dashboards/edge.json" "$PROM"/rules/*.yml << 'EOF'
import json, re, sys, yaml
src = sys.argv[1]
exported = set(re.findall(r'"(edge_[a-z0-9_]+)"', src))
histograms = set(re.findall(r'HistogramOpts::new\(\s*"(edge_[a-z0-9_]+)"', src))
for h in histograms:
    exported |= {h + "_bucket", h + "_sum", h + "_count"}
exprs = []
def walk(o):
    if isinstance(o, dict):
        for k, v in o.items():
            if k in ("expr", "definition") and isinstance(v, str):
                exprs.append(v)
            else:
                walk(v)
    elif isinstance(o, list):
        for v in o:
            walk(v)
for f in sys.argv[2:]:
    walk(json.load(open(f)) if f.endswith(".json") else yaml.safe_load(open(f)))
used = set()
for e in exprs:
    used |= set(re.findall(r'\b(edge_[a-z0-9_]+)\b', e))
unknown = sorted(used - exported)
if unknown:
    print("not exported by the edge:", ", ".join(unknown))
sys.exit(1 if unknown else 0)
EOF
    fi
else
    skip "Grafana/Loki/Promtail files (python3 with PyYAML is not installed)"
fi

# ---------------------------------------------------------------------------- edge configs
section "Edge configs (edge check)"
EDGE=""
if command -v edge > /dev/null 2>&1; then
    EDGE="$(command -v edge)"
elif [ -x target/release/edge ]; then
    EDGE=target/release/edge
elif [ -x target/debug/edge ]; then
    EDGE=target/debug/edge
fi

# The copies: every upstreams.toml under infrastructure/, and the ConfigMap's.
configs=(upstreams.toml)
while IFS= read -r f; do configs+=("$f"); done < <(find "$INFRA" -name 'upstreams*.toml' -type f | sort)
k8s_toml=""
if [ -n "$PY" ] && [ -f "$INFRA/k8s/configmap.yaml" ]; then
    k8s_toml="$TMP/k8s-configmap-upstreams.toml"
    if "$PY" -c '
import sys, yaml
d = yaml.safe_load(open(sys.argv[1]))
open(sys.argv[2], "w").write(d["data"]["upstreams.toml"])' "$INFRA/k8s/configmap.yaml" "$k8s_toml"; then
        configs+=("$k8s_toml")
    else
        bad "$INFRA/k8s/configmap.yaml has no data.upstreams.toml"
        k8s_toml=""
    fi
fi

label_of() { [ "$1" = "$k8s_toml" ] && echo "$INFRA/k8s/configmap.yaml (data.upstreams.toml)" || echo "$1"; }
if [ -n "$EDGE" ]; then
    for c in "${configs[@]}"; do
        run "edge check $(label_of "$c")" "$EDGE" check "$c"
    done
else
    skip "edge check (no edge binary on PATH or in target/; cargo build --release -p edge)"
fi

# Each copy is upstreams.toml with only its intended changes: admin_listen/admin_allow_public
# everywhere, plus `store` in the Kubernetes one.
if [ -n "$PY" ]; then
    for c in "${configs[@]:1}"; do
        run "$(label_of "$c") differs from upstreams.toml only in admin_listen, admin_allow_public, store" \
            "$PY" - upstreams.toml "$c" << 'EOF'
import difflib, re, sys
allowed = re.compile(r'^(admin_listen|admin_allow_public|store)\s*=')
def lines(f):
    out = []
    for line in open(f):
        s = line.split("#", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        if s and not allowed.match(s):
            out.append(s)
    return out
a, b = lines(sys.argv[1]), lines(sys.argv[2])
if a != b:
    print("\n".join(difflib.unified_diff(a, b, sys.argv[1], sys.argv[2], lineterm="", n=1)))
    sys.exit(1)
EOF
    done
fi

# ---------------------------------------------------------------------------- scripts
section "Scripts"
scripts=()
while IFS= read -r f; do scripts+=("$f"); done < <(find "$INFRA" -name '*.sh' -type f | sort)
for s in "${scripts[@]}"; do
    case "$(head -n1 "$s")" in
    *bash*) run "bash -n $s" bash -n "$s" ;;
    *) run "sh -n $s" sh -n "$s" ;;
    esac
done
if command -v shellcheck > /dev/null 2>&1; then
    run "shellcheck (infrastructure/**/*.sh)" shellcheck "${scripts[@]}"
else
    skip "shellcheck (not installed)"
fi

# ---------------------------------------------------------------------------- summary
echo
if [ "$failures" -gt 0 ]; then
    echo "✗ infrastructure validation failed: $failures check(s) failed, $skips skipped"
    exit 1
fi
echo "✓ infrastructure validation passed ($skips check(s) skipped)"
