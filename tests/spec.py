"""Unkey's published OpenAPI spec, read from ``../shared/unkey/openapi.yaml`` for contract tests.

The spec is never copied into the project: it lies beside the checkout for developers and CI.
"""

from __future__ import annotations

import copy
import functools
import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(
    os.environ.get(
        "UNKEY_OPENAPI_SPEC", Path(__file__).resolve().parents[1].parent / "shared" / "unkey" / "openapi.yaml"
    )
)


@functools.cache
def load_spec() -> dict[str, Any]:
    """The parsed spec; the tests that need it are skipped (or fail under CI) when it is missing."""
    if not SPEC_PATH.exists():
        if os.environ.get("CI"):
            raise FileNotFoundError(f"Unkey's OpenAPI spec is missing at {SPEC_PATH}")
        pytest.skip(f"Unkey's OpenAPI spec is not at {SPEC_PATH} (set UNKEY_OPENAPI_SPEC)")
    with SPEC_PATH.open() as f:
        spec: dict[str, Any] = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    # BEHAVIOUR.md: BadRequestErrorDetails is allOf[BaseError, {errors}] while BaseError forbids
    # additional properties, so no real 400 body (which carries errors[]) could pass. Relax
    # BaseError for that one composition only.
    schemas = spec["components"]["schemas"]
    relaxed = copy.deepcopy(schemas["BaseError"])
    relaxed.pop("additionalProperties", None)
    schemas["BaseErrorRelaxedForBadRequest"] = relaxed
    bad = schemas["BadRequestErrorDetails"]
    bad["allOf"][0] = {"$ref": "#/components/schemas/BaseErrorRelaxedForBadRequest"}
    return spec


def _ecma_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Any:
    # JSON Schema patterns are ECMA-262: '$' (no multiline) matches only at the very end, while
    # Python's '$' also matches before a trailing newline.
    if not validator.is_type(instance, "string"):
        return
    if not re.search(re.sub(r"(?<!\\)\$$", r"\\Z", pattern), instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


_EcmaValidator = jsonschema.validators.extend(Draft202012Validator, {"pattern": _ecma_pattern})


@functools.cache
def _registry() -> Registry:
    spec = load_spec()
    resource = Resource.from_contents(spec, default_specification=DRAFT202012)
    return Registry().with_resource("urn:unkey-openapi", resource)


@functools.cache
def validator_for(schema_name: str) -> Any:
    """A validator for ``#/components/schemas/<schema_name>``."""
    schema = {"$ref": f"urn:unkey-openapi#/components/schemas/{schema_name}"}
    return _EcmaValidator(schema, registry=_registry())


def schema_errors(schema_name: str, instance: Any) -> list[str]:
    """Every error the spec finds in ``instance``; empty when it validates."""
    return [e.message for e in validator_for(schema_name).iter_errors(instance)]


def _schema_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def request_schema_name(path: str) -> str:
    """The request body schema of ``POST path``."""
    op = load_spec()["paths"][path]["post"]
    return _schema_name(op["requestBody"]["content"]["application/json"]["schema"]["$ref"])


def response_schema_name(path: str, status: int, method: str = "post") -> str:
    """The response schema of ``method path`` for ``status`` (any declared content type)."""
    op = load_spec()["paths"][path][method]
    response = op["responses"].get(str(status))
    if response is None:
        raise AssertionError(f"{method.upper()} {path} declares no {status} response")
    content = response["content"]
    (media,) = content.values() if len(content) == 1 else (content["application/json"],)
    return _schema_name(media["schema"]["$ref"])


def assert_valid_request(path: str, body: Any) -> None:
    """Fail unless ``body`` is a valid request body for ``POST path``."""
    errors = schema_errors(request_schema_name(path), body)
    assert not errors, f"request to {path} does not validate: {errors[:5]}"


def assert_valid_response(path: str, status: int, body: Any, method: str = "post") -> None:
    """Fail unless ``body`` is a valid ``status`` response of ``method path``."""
    errors = schema_errors(response_schema_name(path, status, method), body)
    assert not errors, f"{status} response of {path} does not validate: {errors[:5]}"
