"""With an OIDC key set (auth.jwksUrl) the chart needs the issuer and the audience: without
either, `helm template` and `helm install` fail naming the values; with both, the gateway's
configuration carries them and loads with the gateway's own settings."""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING

import pytest
import yaml

from gateway.settings import EdgeSettings
from tests.deploy.deploy_support import CHART, NAMESPACE, RELEASE, template_args

if TYPE_CHECKING:
    from collections.abc import Callable

ISSUER = "https://idp.example.com/"
AUDIENCE = "lantern-api"
# What an OIDC install needs besides the three values under test.
OIDC_REST = (
    "auth.jwksUrl=https://idp.example.com/jwks",
    "auth.jwksEgressTo[0].cidr=198.51.100.0/24",
    "auth.jwksEgressTo[0].ports[0]=443",
    "smokeTest.tokenSecret.name=smoke-token",
)


def sets(*values: str) -> list[str]:
    return [arg for value in values for arg in ("--set", value)]


def install_args(*extra: str) -> list[str]:
    """`helm install --dry-run=client`: the install path, rendered without a cluster."""
    return [
        "install",
        RELEASE,
        str(CHART),
        "--dry-run=client",
        "--namespace",
        NAMESPACE,
        "--set",
        "ingress.gatewayAPI.capabilityCheck=false",
        *extra,
    ]


@pytest.mark.parametrize("command", ["template", "install"])
@pytest.mark.parametrize(
    ("given", "named"),
    [
        ([f"auth.audience={AUDIENCE}"], "auth.issuer must be set too"),
        ([f"auth.issuer={ISSUER}"], "auth.audience must be set too"),
        ([], "auth.issuer and auth.audience must be set too"),
        (["auth.issuer= ", f"auth.audience={AUDIENCE}"], "auth.issuer must be set too"),
    ],
    ids=["no-issuer", "no-audience", "neither", "blank-issuer"],
)
def test_a_key_set_without_issuer_or_audience_fails_naming_the_values(
    helm: Callable[..., subprocess.CompletedProcess[str]], command: str, given: list[str], named: str
) -> None:
    values = sets(*OIDC_REST, *given)
    args = template_args(*values) if command == "template" else install_args(*values)
    result = helm(*args, check=False)
    assert result.returncode != 0, f"helm {command} accepted a key set without {named}"
    assert f"auth.jwksUrl is set, so {named}" in result.stderr
    assert "GATEWAY_JWT_ISSUER and GATEWAY_JWT_AUDIENCE" in result.stderr


@pytest.mark.parametrize("command", ["template", "install"])
def test_a_key_set_with_issuer_and_audience_installs_and_the_gateway_loads_them(
    helm: Callable[..., subprocess.CompletedProcess[str]], command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = sets(*OIDC_REST, f"auth.issuer={ISSUER}", f"auth.audience={AUDIENCE}")
    result = helm(*(template_args(*values) if command == "template" else install_args(*values)))
    manifest = result.stdout.split("MANIFEST:", 1)[-1].split("\nNOTES:", 1)[0]
    objects = [o for o in yaml.safe_load_all(manifest) if o]
    (config,) = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "gateway-config"]
    data = config["data"]
    assert (data["GATEWAY_JWT_ISSUER"], data["GATEWAY_JWT_AUDIENCE"]) == (ISSUER, AUDIENCE)
    for name, value in data.items():
        if name.startswith("GATEWAY_"):
            monkeypatch.setenv(name, value)
    edge = EdgeSettings()
    assert (edge.jwks_url, edge.jwt_issuer, edge.jwt_audience) == (data["GATEWAY_JWKS_URL"], ISSUER, AUDIENCE)


def test_development_keys_need_neither(helm: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    assert helm(*template_args()).returncode == 0
