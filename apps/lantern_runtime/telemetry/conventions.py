"""The semantic-conventions version Lantern's own spans and metrics follow, and its resource.

Messaging attributes are still incubating in the conventions, so their constants come from the
package's `_incubating` modules, where opentelemetry-semantic-conventions publishes them.
"""

from __future__ import annotations

import os
import uuid
from importlib.metadata import PackageNotFoundError, version

from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.semconv.attributes.service_attributes import SERVICE_VERSION
from opentelemetry.semconv.schemas import Schemas

SCHEMA_URL = Schemas.V1_44_0.value
SERVICE_NAMESPACE = "service.namespace"
SERVICE_INSTANCE_ID = "service.instance.id"
DEPLOYMENT_ENVIRONMENT_NAME = "deployment.environment.name"
# Where LANTERN_ENVIRONMENT is not set: `make run` and kind are development.
DEFAULT_ENVIRONMENT = "development"


def lantern_version() -> str:
    """The installed Lantern's version; in the image, where the code is not pip-installed, the
    version the chart passes (SERVICE_VERSION), else "unknown"."""
    try:
        return version("lantern")
    except PackageNotFoundError:
        return os.environ.get("SERVICE_VERSION") or "unknown"


def lantern_resource(service_name: str) -> Resource:
    """service.name is always the service's own; namespace, version, instance and environment
    are defaults that OTEL_RESOURCE_ATTRIBUTES overrides."""
    defaults = Resource(
        {
            SERVICE_NAMESPACE: "lantern",
            SERVICE_VERSION: lantern_version(),
            SERVICE_INSTANCE_ID: str(uuid.uuid4()),
            DEPLOYMENT_ENVIRONMENT_NAME: os.environ.get("LANTERN_ENVIRONMENT") or DEFAULT_ENVIRONMENT,
        },
        SCHEMA_URL,
    )
    return defaults.merge(Resource.create({SERVICE_NAME: service_name}, SCHEMA_URL))
