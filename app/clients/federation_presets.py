"""Federated-credential presets and the rule of a credential in plain words (docs/federation.md).

A preset asks only for a platform's own terms (a GitHub repository and
branch, a GitLab project path, a Kubernetes namespace and service account, a
SPIFFE trust domain and path) and builds the credential body of
docs/api.md §2.8 from them: `issuer`, `subject` or `subject_pattern`,
`claims`, and the key source. The body then goes through the same schema and
service (app.clients.federation) as one typed by hand, so a preset can make
nothing the API would refuse and adds no rule of its own on the credential;
its checks are only about its own fields, so an error names the field the
user typed.

`rule_in_words` renders any credential's matching rule as a sentence, for
the console, the command line and the docs alike.

Pure: no database, no request, no configuration; the server's issuer (the
default audience) is passed in.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from app.errors import ValidationError

WILDCARDS = frozenset("*?")
NAME_MAX_LENGTH = 63
DEFAULT_TOKEN_AGE = 3600

GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
GITLAB_ISSUER = "https://gitlab.com"

# The platforms' own syntax, checked so a typo is named here and not as a
# credential that silently never matches. Wildcards are allowed where the
# platform's names cannot hold them, so a `*` can only mean "any".
_GITHUB_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
# Git refuses space, ~ ^ : ? * [ \ and controls in a ref (git check-ref-format); * and ? are ours.
_GIT_REF = re.compile(r"^[^\x00-\x20~^:\[\\\x7f]{1,255}$")
_GITHUB_ENVIRONMENT = re.compile(r"^[^\x00-\x1f\x7f,;:'\"`\\]{1,255}$")
_GITLAB_PATH = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)+$")
# Kubernetes names: a DNS label (namespace) and a DNS subdomain (service account), RFC 1123.
_K8S_NAMESPACE = re.compile(r"^[a-z0-9*?]([-a-z0-9*?]{0,61}[a-z0-9*?])?$")
_K8S_SERVICE_ACCOUNT = re.compile(r"^[a-z0-9*?]([-.a-z0-9*?]{0,251}[a-z0-9*?])?$")
# SPIFFE ID: trust domain of lowercase letters, digits, '.', '-', '_'; path segments of
# letters, digits, '.', '-', '_' (the SPIFFE ID standard, §2.1 and §2.2).
_TRUST_DOMAIN = re.compile(r"^[a-z0-9._-]{1,255}$")
_SPIFFE_PATH = re.compile(r"^(/[A-Za-z0-9._*?-]+)+$")
_NAME_CHARS = re.compile(r"[^a-z0-9_-]+")


@dataclass(frozen=True)
class PresetField:
    """One term a preset asks for."""

    name: str
    label: str
    help: str = ""
    placeholder: str = ""
    required: bool = True
    #: "text", "checkbox" or "textarea" (JSON).
    kind: str = "text"
    default: str = ""


@dataclass(frozen=True)
class Preset:
    """A platform: what it asks for and how its answers become a credential."""

    key: str
    title: str
    summary: str
    #: The issuer filled in for the user ("" when the user must give it).
    issuer_hint: str
    #: What the workload must request as its token's audience, in words.
    audience_hint: str
    fields: tuple[PresetField, ...]
    build: Callable[[Mapping[str, str]], dict[str, Any]]
    max_token_age: int = DEFAULT_TOKEN_AGE
    #: The guide's anchor in docs/federation.md.
    guide: str = ""


def _error(field: str, message: str) -> dict[str, str]:
    return {"field": field, "message": message}


def _text(values: Mapping[str, Any], name: str) -> str:
    value = values.get(name)
    return value.strip() if isinstance(value, str) else ""


def _ticked(values: Mapping[str, Any], name: str) -> bool:
    return values.get(name) in ("on", "true", "1", "yes", True)


def has_wildcard(text: str) -> bool:
    return any(ch in WILDCARDS for ch in text)


def _subject_rule(subject: str) -> dict[str, str]:
    """`subject` when the text is literal, `subject_pattern` when it holds * or ?."""
    return {"subject_pattern": subject} if has_wildcard(subject) else {"subject": subject}


def _require(
    values: Mapping[str, Any],
    name: str,
    errors: list[dict[str, str]],
    pattern: re.Pattern[str] | None = None,
    what: str = "",
) -> str:
    value = _text(values, name)
    if not value:
        errors.append(_error(name, "is required"))
    elif pattern is not None and not pattern.fullmatch(value):
        errors.append(_error(name, f"must be {what}"))
    return value


def suggested_name(*parts: str) -> str:
    """A credential name (`^[a-z0-9][a-z0-9_-]{0,62}$`) made of the platform's terms."""
    words = [_NAME_CHARS.sub("-", part.lower()).strip("-_") for part in parts]
    name = "-".join(word for word in words if word)[:NAME_MAX_LENGTH].strip("-_")
    return name or "federated"


# --- GitHub Actions ------------------------------------------------------------------------


def _github(values: Mapping[str, Any]) -> dict[str, Any]:
    errors: list[dict[str, str]] = []
    org = _require(values, "org", errors, _GITHUB_NAME, "a GitHub organization or user name")
    repo = _require(values, "repo", errors, _GITHUB_NAME, "a repository name (without the owner)")
    branch, environment = _text(values, "branch"), _text(values, "environment")
    if bool(branch) == bool(environment):
        errors.append(_error("branch", "give a branch or an environment, not both"))
    elif branch:
        branch = branch.removeprefix("refs/heads/")
        if branch.startswith("refs/") or not _GIT_REF.fullmatch(branch):
            errors.append(_error("branch", "must be a branch name such as main or release/*"))
    elif not _GITHUB_ENVIRONMENT.fullmatch(environment):
        errors.append(_error("environment", "must be an environment name such as production"))
    if errors:
        raise ValidationError(errors)
    if branch:
        subject = f"repo:{org}/{repo}:ref:refs/heads/{branch}"
        name = suggested_name("github", repo, branch)
    else:
        subject = f"repo:{org}/{repo}:environment:{environment}"
        name = suggested_name("github", repo, environment)
    return {
        "name": name,
        "issuer": GITHUB_ISSUER,
        **_subject_rule(subject),
        # The subject names the owner already; the claim keeps holding when a
        # pattern is widened later, and is what GitHub's docs advise checking.
        "claims": {"repository_owner": org},
    }


# --- GitLab CI -----------------------------------------------------------------------------


def _gitlab(values: Mapping[str, Any]) -> dict[str, Any]:
    errors: list[dict[str, str]] = []
    issuer = _text(values, "issuer") or GITLAB_ISSUER
    path = _require(
        values, "project_path", errors, _GITLAB_PATH, "a project path such as acme/billing"
    )
    ref = _text(values, "ref")
    if ref and not _GIT_REF.fullmatch(ref):
        errors.append(_error("ref", "must be a branch name such as main or release-*"))
    if errors:
        raise ValidationError(errors)
    # GitLab's sub: project_path:{path}:ref_type:{branch|tag}:ref:{ref}.
    if ref:
        subject = f"project_path:{path}:ref_type:branch:ref:{ref}"
    else:
        subject = f"project_path:{path}:ref_type:*"
    claims: dict[str, Any] = {"project_path": path}
    if _ticked(values, "protected_only"):
        claims["ref_protected"] = "true"  # GitLab sends it as a string
    return {
        "name": suggested_name("gitlab", path.rsplit("/", 1)[-1], ref or "any"),
        "issuer": issuer,
        **_subject_rule(subject),
        "claims": claims,
    }


# --- Kubernetes service accounts -----------------------------------------------------------


def _jwks(values: Mapping[str, Any], errors: list[dict[str, str]]) -> Any:
    text = _text(values, "jwks")
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        errors.append(_error("jwks", 'must be a JSON Web Key Set: {"keys": [...]}'))
        return None


def _kubernetes(values: Mapping[str, Any]) -> dict[str, Any]:
    errors: list[dict[str, str]] = []
    issuer = _require(values, "issuer", errors)
    namespace = _require(values, "namespace", errors, _K8S_NAMESPACE, "a namespace name")
    account = _text(values, "service_account") or "*"
    if not _K8S_SERVICE_ACCOUNT.fullmatch(account):
        errors.append(_error("service_account", "must be a service account name"))
    jwks = _jwks(values, errors)
    if errors:
        raise ValidationError(errors)
    body: dict[str, Any] = {
        "name": suggested_name("k8s", namespace, "any" if account == "*" else account),
        "issuer": issuer,
        **_subject_rule(f"system:serviceaccount:{namespace}:{account}"),
    }
    if jwks is not None:
        body["jwks"] = jwks
    return body


# --- SPIFFE --------------------------------------------------------------------------------


def _spiffe(values: Mapping[str, Any]) -> dict[str, Any]:
    errors: list[dict[str, str]] = []
    domain = _require(
        values, "trust_domain", errors, _TRUST_DOMAIN, "a trust domain such as acme.example"
    )
    path = _require(values, "path", errors, _SPIFFE_PATH, "a path such as /ns/billing/sa/deployer")
    issuer = _require(values, "issuer", errors)
    bundle = _require(values, "bundle_endpoint", errors)
    if errors:
        raise ValidationError(errors)
    return {
        "name": suggested_name("spiffe", domain.split(".")[0], path.rsplit("/", 1)[-1]),
        "issuer": issuer,
        **_subject_rule(f"spiffe://{domain}{path}"),
        "jwks_uri": bundle,
    }


PRESETS: dict[str, Preset] = {
    preset.key: preset
    for preset in (
        Preset(
            key="github",
            title="GitHub Actions",
            summary="A workflow job of one repository, on one branch or deploying to one "
            "environment, with its GitHub OIDC token (permissions: id-token: write).",
            issuer_hint=GITHUB_ISSUER,
            audience_hint="the workflow requests its token with this audience "
            "(core.getIDToken(audience) or &audience= on ACTIONS_ID_TOKEN_REQUEST_URL)",
            fields=(
                PresetField("org", "Organization or user", placeholder="acme"),
                PresetField("repo", "Repository", placeholder="billing"),
                PresetField(
                    "branch",
                    "Branch",
                    help="The workflow runs on this branch (* for any run of characters, "
                    "as in release/*). Leave empty to use an environment.",
                    placeholder="main",
                    required=False,
                ),
                PresetField(
                    "environment",
                    "Environment",
                    help="Or: the job deploys to this environment (its protection rules apply).",
                    placeholder="production",
                    required=False,
                ),
            ),
            build=_github,
            guide="github-actions",
        ),
        Preset(
            key="gitlab",
            title="GitLab CI",
            summary="A pipeline job of one project with an id_tokens token.",
            issuer_hint=GITLAB_ISSUER,
            audience_hint="the job's id_tokens entry sets aud to this audience",
            fields=(
                PresetField(
                    "issuer",
                    "GitLab URL",
                    help="gitlab.com, or your own instance's URL.",
                    default=GITLAB_ISSUER,
                    required=False,
                ),
                PresetField("project_path", "Project path", placeholder="acme/billing"),
                PresetField(
                    "ref",
                    "Branch",
                    help="Empty: any branch or tag. * for any run of characters.",
                    placeholder="main",
                    required=False,
                ),
                PresetField(
                    "protected_only",
                    "Protected branches and tags only",
                    help="Requires ref_protected = true.",
                    kind="checkbox",
                    default="on",
                    required=False,
                ),
            ),
            build=_gitlab,
            guide="gitlab-ci",
        ),
        Preset(
            key="kubernetes",
            title="Kubernetes service account",
            summary="Pods running as one service account, with a projected service-account token.",
            issuer_hint="",
            audience_hint="the pod's projected token volume sets this audience",
            fields=(
                PresetField(
                    "issuer",
                    "Cluster issuer URL",
                    help="The iss of the cluster's service-account tokens: "
                    "kubectl get --raw /.well-known/openid-configuration.",
                    placeholder="https://oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE",
                ),
                PresetField("namespace", "Namespace", placeholder="billing"),
                PresetField(
                    "service_account",
                    "Service account",
                    help="Empty: any service account of the namespace.",
                    placeholder="deployer",
                    required=False,
                ),
                PresetField(
                    "jwks",
                    "Cluster keys (JWKS), when its discovery is not public",
                    help="kubectl get --raw /openid/v1/jwks. Empty: discovered from the issuer.",
                    kind="textarea",
                    required=False,
                ),
            ),
            build=_kubernetes,
            guide="kubernetes-service-accounts",
        ),
        Preset(
            key="spiffe",
            title="SPIFFE (JWT-SVID)",
            summary="Workloads of a SPIFFE trust domain with JWT-SVIDs, keys from its bundle "
            "endpoint.",
            issuer_hint="",
            audience_hint="the workload fetches its JWT-SVID for this audience",
            fields=(
                PresetField("trust_domain", "Trust domain", placeholder="acme.example"),
                PresetField(
                    "path",
                    "Workload path",
                    help="The SPIFFE ID's path; * for any run of characters.",
                    placeholder="/ns/billing/sa/deployer",
                ),
                PresetField(
                    "issuer",
                    "JWT-SVID issuer",
                    help="The iss your SPIFFE server puts in JWT-SVIDs (SPIRE: jwt_issuer).",
                    placeholder="https://spire.acme.example",
                ),
                PresetField(
                    "bundle_endpoint",
                    "Bundle endpoint URL",
                    help="The trust domain's SPIFFE bundle endpoint (https_web profile).",
                    placeholder="https://spire.acme.example/bundle",
                ),
            ),
            build=_spiffe,
            # SPIRE's JWT-SVIDs live 5 minutes by default.
            max_token_age=600,
            guide="spiffe-jwt-svids",
        ),
    )
}


def build_credential(
    preset_key: str,
    values: Mapping[str, Any],
    *,
    name: str = "",
    audience: str = "",
    max_token_age: int | None = None,
) -> dict[str, Any]:
    """The credential body (docs/api.md §2.8) the preset makes of the platform's terms.

    :param name: the credential's name; empty: one made of the terms.
    :param audience: the audience the workload requests; empty: the API's default.
    :param max_token_age: None: the preset's (the platform's usual token lifetime).
    :raise ValidationError: naming the preset's fields that are missing or malformed.
    """
    preset = PRESETS.get(preset_key)
    if preset is None:
        raise ValidationError([_error("preset", "must be one of " + ", ".join(PRESETS))])
    body = preset.build(values)
    if name.strip():
        body["name"] = name.strip()
    if audience.strip():
        body["audience"] = audience.strip()
    body["max_token_age"] = preset.max_token_age if max_token_age is None else max_token_age
    return body


# --- The rule in plain words ---------------------------------------------------------------


def duration_in_words(seconds: int) -> str:
    """3600 -> '1 hour', 600 -> '10 minutes', 90 -> '90 seconds'."""
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return f"{seconds} second{'' if seconds == 1 else 's'}"


def _claim_in_words(name: str, wanted: Any) -> str:
    if isinstance(wanted, list):
        if len(wanted) == 1:
            return f"{name} = {wanted[0]}"
        return f"{name} one of " + ", ".join(wanted)
    return f"{name} = {wanted}"


def _field(credential: Any, name: str) -> Any:
    if isinstance(credential, Mapping):
        return credential.get(name)
    return getattr(credential, name, None)


def rule_in_words(credential: Any) -> str:
    """The matching rule of a credential (a model row or an API body) as one sentence.

    "Tokens from https://token.actions.githubusercontent.com for audience
    https://auth.example, whose subject is exactly repo:acme/billing:ref:refs/heads/main,
    with repository_owner = acme, at most 1 hour old."
    """
    issuer = _field(credential, "issuer")
    audience = _field(credential, "audience")
    subject = _field(credential, "subject")
    pattern = _field(credential, "subject_pattern")
    pattern = getattr(pattern, "text", pattern)  # a compiled SubjectPattern shows its text
    claims = _field(credential, "claims") or {}
    age = _field(credential, "max_token_age") or DEFAULT_TOKEN_AGE
    parts = [f"Tokens from {issuer}"]
    parts.append(
        f"for audience {audience}" if audience else "for the default audience (this server)"
    )
    if subject is not None:
        parts.append(f", whose subject is exactly {subject}")
    else:
        parts.append(f", whose subject matches {pattern} (* is any run of characters, ? one)")
    if claims:
        parts.append(
            ", with " + ", ".join(_claim_in_words(k, v) for k, v in sorted(claims.items()))
        )
    parts.append(f", at most {duration_in_words(int(age))} old")
    if _field(credential, "single_use"):
        parts.append(", each accepted once")
    return parts[0] + " " + parts[1] + "".join(parts[2:]) + "."


def keys_in_words(credential: Any) -> str:
    """Where the issuer's keys come from."""
    jwks = _field(credential, "jwks")
    if jwks is not None:
        count = len(jwks.get("keys", ())) if isinstance(jwks, Mapping) else 0
        return f"Keys given inline ({count} key{'' if count == 1 else 's'})."
    jwks_uri = _field(credential, "jwks_uri")
    if jwks_uri:
        return f"Keys fetched from {jwks_uri}."
    issuer = str(_field(credential, "issuer") or "").rstrip("/")
    return f"Keys discovered from {issuer}/.well-known/openid-configuration."
