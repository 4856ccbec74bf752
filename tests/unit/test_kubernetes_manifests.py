"""deploy/kubernetes/ offline: every manifest is valid for the API server, strictly (an
unknown or misspelt field fails, where a real server would drop it silently), the Dask
resources against the operator's own CRDs, and the pieces name each other correctly.

No cluster runs here, so this is what stands between a typo and a failed `kubectl apply`.
The CRDs are vendored from the dask-kubernetes wheel (scripts/dask-crds.sh says why).
"""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
CRDS = KUBE / "crds"
# The oldest Kubernetes release still maintained upstream when this was written, and the
# newest that kubernetes-validate knows: a manifest must be valid on both.
VERSIONS = ["1.31.0", kubernetes_validate.latest_version()]

Doc = dict[str, Any]


def _manifest_files() -> list[Path]:
    return sorted(p for p in KUBE.glob("*.yaml") if p.name != "kustomization.yaml")


# libyaml when present: the DaskCluster CRD alone is 280 kB of YAML.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _docs(path: Path) -> list[Doc]:
    return [doc for doc in yaml.load_all(path.read_text(), Loader=_Loader) if doc]


def _all_docs() -> list[Doc]:
    return [doc for path in _manifest_files() for doc in _docs(path)]


def _one(kind: str, docs: list[Doc] | None = None) -> Doc:
    found = [d for d in (docs if docs is not None else _all_docs()) if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


@functools.cache
def _crds() -> dict[tuple[str, str], Doc]:
    """(apiVersion, kind) -> the served version's strict openAPIV3Schema (see `_strict`),
    from the vendored CRDs."""
    out: dict[tuple[str, str], Doc] = {}
    for path in sorted(CRDS.glob("*.yaml")):
        for crd in _docs(path):
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if version.get("served"):
                    schema = _strict(version["schema"]["openAPIV3Schema"])
                    out[(f"{group}/{version['name']}", kind)] = schema
    return out


def _strict(schema: Any) -> Any:
    """The schema as the API server prunes with it, turned into errors: an object that lists
    its properties and does not preserve unknown fields accepts no others."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _strict(value) for key, value in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def _validate_custom(doc: Doc, crds: dict[tuple[str, str], Doc]) -> None:
    key = (doc["apiVersion"], doc["kind"])
    assert key in crds, f"no CRD serves {key}; known: {sorted(crds)}"
    assert set(doc) <= {"apiVersion", "kind", "metadata", "spec"}, sorted(doc)
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
    body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
    jsonschema.Draft7Validator(crds[key]).validate(body)


def _is_builtin(doc: Doc) -> bool:
    return not doc["apiVersion"].startswith("kubernetes.dask.org/")


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", _manifest_files(), ids=lambda p: p.name)
def test_every_manifest_is_strictly_valid(path: Path, version: str) -> None:
    crds = _crds()
    docs = _docs(path)
    assert docs, f"{path.name} holds no resource"
    for doc in docs:
        if _is_builtin(doc):
            kubernetes_validate.validate(doc, version, strict=True)
        else:
            _validate_custom(doc, crds)


def test_the_vendored_crds_are_valid_crds_for_the_dask_kinds() -> None:
    for path in sorted(CRDS.glob("*.yaml")):
        assert path.read_text().startswith("# Source: dask-kubernetes "), path.name
        for crd in _docs(path):
            kubernetes_validate.validate(crd, VERSIONS[-1], strict=True)
    assert {kind for _, kind in _crds()} >= {"DaskCluster", "DaskAutoscaler"}


@pytest.mark.parametrize(
    ("kind", "break_it"),
    [
        (
            "StatefulSet",
            lambda d: d["spec"]["template"]["spec"]["containers"][0].update(
                {
                    "livenessProbe": {
                        "httpGet": {"path": "/healthz", "port": 8000},
                        "timeoutSecond": 2,
                    }
                }
            ),
        ),
        ("DaskCluster", lambda d: d["spec"]["worker"].update({"replica": 3})),
        (
            "DaskCluster",
            lambda d: d["spec"]["scheduler"]["spec"]["containers"][0].update(
                {"imagePullPolice": "Always"}
            ),
        ),
        ("DaskAutoscaler", lambda d: d["spec"].pop("maximum")),
    ],
    ids=["probe-typo", "worker-typo", "pod-spec-typo", "autoscaler-missing-maximum"],
)
def test_validation_is_strict_enough_to_catch_a_typo(kind: str, break_it: Any) -> None:
    """The checks above would pass vacuously if the schemas accepted anything."""
    doc = copy.deepcopy(_one(kind))
    break_it(doc)
    with pytest.raises((kubernetes_validate.ValidationError, jsonschema.ValidationError)):
        if _is_builtin(doc):
            kubernetes_validate.validate(doc, VERSIONS[-1], strict=True)
        else:
            _validate_custom(doc, _crds())


def test_kustomization_applies_every_manifest() -> None:
    listed = yaml.safe_load((KUBE / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in _manifest_files())


def _pod_specs() -> dict[str, Doc]:
    cluster = _one("DaskCluster")["spec"]
    return {
        "sfa": _one("StatefulSet")["spec"]["template"]["spec"],
        "dask-scheduler": cluster["scheduler"]["spec"],
        "dask-worker": cluster["worker"]["spec"],
    }


def test_every_pod_has_no_service_links_runs_as_non_root_and_bounds_its_probes() -> None:
    for name, spec in _pod_specs().items():
        assert spec.get("enableServiceLinks") is False, name
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] == 10001, name  # the image's user
        for container in spec["containers"]:
            probes = [k for k in container if k.endswith("Probe")]
            assert probes, f"{name}/{container['name']} has no probe"
            for probe in probes:
                assert "timeoutSeconds" in container[probe], f"{name} {probe}: no timeout"
                port = container[probe]["httpGet"]["port"]
                assert port in {p["name"] for p in container["ports"]}, f"{name} {probe}"


def test_the_statefulset_has_its_headless_service_and_its_configuration() -> None:
    docs = _all_docs()
    sts = _one("StatefulSet", docs)
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    service = services[sts["spec"]["serviceName"]]
    assert service["spec"]["clusterIP"] == "None"
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert sts["spec"]["selector"]["matchLabels"].items() <= labels.items()

    pod = sts["spec"]["template"]
    container = pod["spec"]["containers"][0]
    refs = {next(iter(ref)): ref[next(iter(ref))]["name"] for ref in container["envFrom"]}
    assert refs["configMapRef"] == _one("ConfigMap", docs)["metadata"]["name"]
    assert refs["secretRef"] == _one("Secret", docs)["metadata"]["name"]
    config = _one("ConfigMap", docs)["data"]
    assert all(re.fullmatch(r"(KAFKA|SFA|DASK)_[A-Z0-9_]+", key) for key in config)
    # The instance id is the pod's stable name, so its transactional.id survives restarts.
    env = {e["name"]: e for e in container["env"]}
    assert env["SFA_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"

    metrics_port = int(config["SFA_METRICS_PORT"])
    assert {"metrics": metrics_port} == {p["name"]: p["containerPort"] for p in container["ports"]}
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == metrics_port
    # The grace period covers the 30 s drain of SPEC 7.
    assert pod["spec"]["terminationGracePeriodSeconds"] > 30


def test_the_service_points_at_the_operators_scheduler_service() -> None:
    cluster = _one("DaskCluster")
    name = cluster["metadata"]["name"]
    ports = {p["name"]: p["port"] for p in cluster["spec"]["scheduler"]["service"]["ports"]}
    address = _one("ConfigMap")["data"]["DASK_SCHEDULER_ADDRESS"]
    assert address == f"tcp://{name}-scheduler:{ports['tcp-comm']}"
    assert cluster["spec"]["scheduler"]["service"]["selector"]["dask.org/cluster-name"] == name
    assert _one("DaskAutoscaler")["spec"]["cluster"] == name
    scaler = _one("DaskAutoscaler")["spec"]
    assert 1 <= scaler["minimum"] <= cluster["spec"]["worker"]["replicas"] <= scaler["maximum"]


def test_the_dask_pods_run_the_service_image_with_the_dask_entrypoint() -> None:
    image = _one("StatefulSet")["spec"]["template"]["spec"]["containers"][0]["image"]
    for name, spec in _pod_specs().items():
        if name == "sfa":
            continue
        (container,) = spec["containers"]
        assert container["image"] == image, name
        assert container["command"] == ["dask"], name
        assert container["args"][0] == name.removeprefix("dask-"), name
