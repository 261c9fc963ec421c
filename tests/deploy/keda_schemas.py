"""Structural schemas of the KEDA kinds the chart renders (ScaledObject, TriggerAuthentication,
keda.sh/v1alpha1): kubernetes-validate carries only built-in kinds and no KEDA CRD is at hand
offline. They cover the fields the chart uses, as KEDA's CRDs and its RabbitMQ scaler spell
them, not the whole CRDs."""

from __future__ import annotations

from typing import Any

_NAME = {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}
_WHOLE_NUMBER = {"type": "string", "pattern": "^[1-9][0-9]*$"}

_RABBITMQ_TRIGGER = {
    "type": "object",
    "required": ["type", "metadata", "authenticationRef"],
    "additionalProperties": False,
    "properties": {
        "type": {"const": "rabbitmq"},
        # Every metadata value is a string in KEDA's CRD.
        "metadata": {
            "type": "object",
            "required": ["protocol", "queueName", "mode", "value"],
            "additionalProperties": False,
            "properties": {
                # amqp: a passive declare, whose count is the ready messages only.
                "protocol": {"const": "amqp"},
                "queueName": {"type": "string", "minLength": 1},
                "mode": {"const": "QueueLength"},
                "value": _WHOLE_NUMBER,
            },
        },
        "authenticationRef": {
            "type": "object",
            "required": ["name"],
            "additionalProperties": False,
            "properties": {"name": _NAME},
        },
    },
}

KEDA_SCHEMAS: dict[str, dict[str, Any]] = {
    "ScaledObject": {
        "type": "object",
        "required": ["scaleTargetRef", "minReplicaCount", "maxReplicaCount", "triggers"],
        "additionalProperties": False,
        "properties": {
            "scaleTargetRef": {
                "type": "object",
                "required": ["name"],
                "additionalProperties": False,
                "properties": {
                    "apiVersion": {"const": "apps/v1"},
                    "kind": {"const": "Deployment"},
                    "name": _NAME,
                },
            },
            "minReplicaCount": {"type": "integer", "minimum": 0},
            "maxReplicaCount": {"type": "integer", "minimum": 1},
            "pollingInterval": {"type": "integer", "minimum": 1},
            "cooldownPeriod": {"type": "integer", "minimum": 0},
            "advanced": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "horizontalPodAutoscalerConfig": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            # autoscaling/v2 HorizontalPodAutoscalerBehavior, the part used.
                            "behavior": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "scaleDown": {
                                        "type": "object",
                                        "additionalProperties": False,
                                        "properties": {
                                            "stabilizationWindowSeconds": {
                                                "type": "integer",
                                                "minimum": 0,
                                                "maximum": 3600,
                                            }
                                        },
                                    }
                                },
                            }
                        },
                    }
                },
            },
            "triggers": {"type": "array", "minItems": 1, "items": _RABBITMQ_TRIGGER},
        },
    },
    "TriggerAuthentication": {
        "type": "object",
        "required": ["secretTargetRef"],
        "additionalProperties": False,
        "properties": {
            "secretTargetRef": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["parameter", "name", "key"],
                    "additionalProperties": False,
                    "properties": {
                        "parameter": {"const": "host"},
                        "name": _NAME,
                        "key": {"type": "string", "minLength": 1},
                    },
                },
            }
        },
    },
}
