"""The Kubernetes manifests under configs/kubernetes/ against the Kubernetes OpenAPI schema.

Every document of every manifest is validated with `kubernetes-validate` (pinned in
requirements.txt) in strict mode, so a misspelled or misplaced field fails as well as a wrong
type, for the oldest and the newest Kubernetes version we claim (the schemas ship with the
package, nothing is fetched). Broken copies of the DaemonSet check that the validation can
fail. The ConfigMap's `sluice.yaml` must be configs/agent.yaml byte for byte, so the agent
config in the repository and the one the DaemonSet mounts cannot drift apart.
"""

from __future__ import annotations

import copy
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
MANIFEST_DIR = REPO_ROOT / "configs" / "kubernetes"
MANIFESTS = sorted(p for p in MANIFEST_DIR.rglob("*") if p.suffix in (".yaml", ".yml"))
# The oldest Kubernetes release still supported upstream when this was written, and the newest
# one the pinned package bundles.
K8S_VERSIONS = ["1.31.0", kubernetes_validate.latest_version()]


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def validate(doc: dict, version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


def daemonset() -> dict:
    docs = documents(MANIFEST_DIR / "daemonset.yaml")
    return next(d for d in docs if d["kind"] == "DaemonSet")


def test_there_are_manifests():
    assert MANIFESTS, f"no manifests under {MANIFEST_DIR}"
    kinds = {d["kind"] for p in MANIFESTS for d in documents(p)}
    assert {"DaemonSet", "ConfigMap", "ServiceAccount"} <= kinds, kinds


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.name)
def test_manifest_matches_the_kubernetes_schema(manifest: Path, version: str):
    docs = documents(manifest)
    assert docs, f"{manifest} is empty"
    errors = []
    for doc in docs:
        name = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
        try:
            validate(doc, version)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{name}: {'.'.join(map(str, e.path))}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            errors.append(f"{name}: no schema: {e}")
    assert not errors, "\n".join(errors)


def _misspelled_field(ds: dict) -> None:
    container = ds["spec"]["template"]["spec"]["containers"][0]
    container["volumeMount"] = container.pop("volumeMounts")


def _unknown_top_level_spec_field(ds: dict) -> None:
    ds["spec"]["replicas"] = 3  # a Deployment field, not a DaemonSet one


def _wrong_type(ds: dict) -> None:
    ds["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "4317"


def _missing_required(ds: dict) -> None:
    del ds["spec"]["selector"]


def _misspelled_probe_field(ds: dict) -> None:
    ds["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSecond"] = 5


@pytest.mark.parametrize("breakage", [_misspelled_field, _unknown_top_level_spec_field, _wrong_type,
                                      _missing_required, _misspelled_probe_field],
                         ids=lambda f: f.__name__.strip("_"))
def test_a_broken_daemonset_is_rejected(breakage):
    ds = daemonset()
    validate(ds, K8S_VERSIONS[-1])  # the intact one passes
    broken = copy.deepcopy(ds)
    breakage(broken)
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken, K8S_VERSIONS[-1])


def test_a_broken_manifest_file_is_rejected(tmp_path):
    """The same through the file path the test above uses: a misspelled field in the text."""
    text = (MANIFEST_DIR / "daemonset.yaml").read_text()
    assert "readOnlyRootFilesystem: true" in text
    broken = tmp_path / "daemonset.yaml"
    broken.write_text(text.replace("readOnlyRootFilesystem: true", "readOnlyRootFileSystem: true"))
    with pytest.raises(kubernetes_validate.ValidationError, match="readOnlyRootFileSystem"):
        for doc in documents(broken):
            validate(doc, K8S_VERSIONS[-1])


def test_configmap_embeds_configs_agent_yaml_verbatim():
    agent = (REPO_ROOT / "configs" / "agent.yaml").read_text()
    configmaps = [d for d in documents(MANIFEST_DIR / "daemonset.yaml") if d["kind"] == "ConfigMap"]
    assert len(configmaps) == 1
    embedded = configmaps[0]["data"]["sluice.yaml"]
    if embedded != agent:
        import difflib
        diff = "".join(difflib.unified_diff(agent.splitlines(True), embedded.splitlines(True),
                                            "configs/agent.yaml", "daemonset.yaml ConfigMap sluice.yaml"))
        pytest.fail("the ConfigMap's sluice.yaml differs from configs/agent.yaml:\n" + diff)


def test_the_daemonset_mounts_the_configmap_it_runs():
    ds = daemonset()
    pod = ds["spec"]["template"]["spec"]
    container = pod["containers"][0]
    config_volume = next(v for v in pod["volumes"] if "configMap" in v)
    assert config_volume["configMap"]["name"] == "sluice-agent"
    mount = next(m for m in container["volumeMounts"] if m["name"] == config_volume["name"])
    assert container["args"] == ["--config", f"{mount['mountPath']}/sluice.yaml"]
    # The checkpoint directory the agent config names is the hostPath mounted writable.
    agent = yaml.safe_load((REPO_ROOT / "configs" / "agent.yaml").read_text())
    directory = agent["extensions"]["file_storage"]["directory"]
    default = directory.split(":-", 1)[1].rstrip("}") if directory.startswith("${") else directory
    checkpoints = next(m for m in container["volumeMounts"] if m["mountPath"] == default)
    assert not checkpoints.get("readOnly", False)


def gateway_docs() -> dict:
    return {d["kind"]: d for d in documents(MANIFEST_DIR / "gateway.yaml")}


def test_gateway_configmap_embeds_configs_gateway_yaml_verbatim():
    gateway = (REPO_ROOT / "configs" / "gateway.yaml").read_text()
    embedded = gateway_docs()["ConfigMap"]["data"]["sluice.yaml"]
    if embedded != gateway:
        import difflib
        diff = "".join(difflib.unified_diff(gateway.splitlines(True), embedded.splitlines(True),
                                            "configs/gateway.yaml", "gateway.yaml ConfigMap sluice.yaml"))
        pytest.fail("the gateway ConfigMap's sluice.yaml differs from configs/gateway.yaml:\n" + diff)


def test_gateway_tier_is_what_the_agents_resolve():
    docs = gateway_docs()
    assert {"ConfigMap", "Service", "Deployment", "PodDisruptionBudget"} <= set(docs), set(docs)
    svc, deploy, pdb = docs["Service"], docs["Deployment"], docs["PodDisruptionBudget"]
    # Headless, so DNS answers one address per ready gateway pod.
    assert svc["spec"]["clusterIP"] == "None"
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    # The agents' loadbalancing exporter resolves this Service's name on its OTLP port.
    agent = yaml.safe_load((REPO_ROOT / "configs" / "agent-to-gateway.yaml").read_text())
    dns = agent["exporters"]["loadbalancing/gateways"]["resolver"]["dns"]
    hostname = dns["hostname"]
    default = hostname.split(":-", 1)[1].rstrip("}") if hostname.startswith("${") else hostname
    assert default == svc["metadata"]["name"] == "sluice-gateway-headless"
    assert int(dns["port"]) in {p["port"] for p in svc["spec"]["ports"]}
    pod = deploy["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert any(p["containerPort"] == 4317 for p in container["ports"])
    config_volume = next(v for v in pod["volumes"] if "configMap" in v)
    assert config_volume["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == config_volume["name"])
    assert container["args"] == ["--config", f"{mount['mountPath']}/sluice.yaml"]


def test_a_broken_gateway_deployment_is_rejected():
    deploy = gateway_docs()["Deployment"]
    validate(deploy, K8S_VERSIONS[-1])
    broken = copy.deepcopy(deploy)
    broken["spec"]["updateStrategy"] = broken["spec"].pop("strategy")  # a DaemonSet field
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken, K8S_VERSIONS[-1])
