#!/usr/bin/python3
"""A Kubernetes API server for tests, speaking the real wire protocol over HTTPS.

    kube_apiserver.py --cert FILE --key FILE --admin-token TOKEN [--port N]
        [--ready-file FILE] [--tokens FILE] [--rbac FILE] [--state FILE | --seed FILE]
        [--bookmark-interval SECONDS] [--max-watch-seconds SECONDS] [--client-ca FILE]
        [--front-proxy-ca FILE [--front-proxy-allowed-name NAME]...]
        [--front-proxy-client-cert FILE --front-proxy-client-key FILE]

Listens on 127.0.0.1 (port 0: any free port); once listening it writes the port to the
ready file. Standard library only. What it implements, as the Kubernetes API documents it:

- Authentication by bearer token: --admin-token (user "admin", allowed everything), the
  --tokens file ({"token": "username"}, re-read when it changes) and tokens issued through
  the control endpoints. Service accounts are "system:serviceaccount:<ns>:<name>", in the
  groups system:serviceaccounts, system:serviceaccounts:<ns> and system:authenticated; their
  tokens are JWTs with the claims of the TokenRequest API (aud, exp, iat, nbf, iss, jti, sub,
  kubernetes.io: namespace, serviceaccount, and pod and node when bound to them). A token
  has audiences (the API server's own, API_AUDIENCE, when issued without) and may expire; the
  server's own API takes only an unexpired token with its audience, and a token bound to a
  pod only while that pod exists with the uid it was issued for.
- TokenReview (authentication.k8s.io/v1): the same checks for the audiences asked for; the
  user, groups and extras of an authenticated token (a service account's credential-id,
  pod-name, pod-uid, node-name, node-uid, as Kubernetes 1.30+ gives them) and the audiences
  both have; otherwise status.error. SubjectAccessReview (authorization.k8s.io/v1): resource
  or non-resource attributes of the user and groups given, decided as a request of theirs
  would be. Both are answered (201) and not stored.
- Authorization by RBAC when --rbac names a JSON list (or a List) of ClusterRole,
  ClusterRoleBinding, Role and RoleBinding objects, beside the bootstrap roles every cluster
  has (ClusterRole system:auth-delegator, Role kube-system/extension-apiserver-
  authentication-reader); otherwise every valid token may do anything. Group system:masters
  may do anything. Discovery paths (/api, /apis, /version...) are open to every
  authenticated user, as the default system:discovery binding makes them.
- With --front-proxy-ca, the kube-system/extension-apiserver-authentication ConfigMap that
  extension API servers read, as kube-apiserver publishes it: the front proxy's CA, the
  allowed common names (--front-proxy-allowed-name) and the X-Remote-* header names.
- The aggregation layer, as kube-aggregator runs it. A request for /apis/GROUP/VERSION or
  below, where the APIService VERSION.GROUP names a spec.service, is authenticated and
  authorized as any other (/apis/GROUP/VERSION itself as discovery), then passed to that
  service: to the first ready address of its EndpointSlice with the port named as the
  Service's port spec.service.port (endpoint routing), over TLS verified with spec.caBundle
  for the name <service>.<namespace>.svc, with the front proxy's client certificate
  (--front-proxy-client-cert). The client's Authorization, X-Remote-*, Impersonate-* and
  hop-by-hop headers are dropped; X-Remote-User, one X-Remote-Group per group and one
  X-Remote-Extra-<key> per extra value (the key escaped and capitalised as Go does:
  X-Remote-Extra-Authentication.kubernetes.io%2fpod-Name), Audit-Id and X-Forwarded-For are
  added; the path goes on decoded and the query re-encoded with its keys sorted. The answer
  is relayed as it comes: without a Content-Length, chunk by chunk, each at once. The
  extension's connection is closed when the client goes. Requests other than watches time
  out after 60 s (504). An APIService that is not Available, or whose service has no
  endpoint, answers 503 "service unavailable" (plain text).
  Availability: when an APIService is created or changed, at start, every second while it
  is not Available, and on request (/_test/apiservices/<name>/probe), GET /apis/GROUP/VERSION as system:kube-aggregator in
  system:masters (5 s, one attempt) sets its Available condition (Passed,
  FailedDiscoveryCheck, ServiceNotFound, ServicePortError, MissingEndpoints); when
  available, discovery follows: GET /apis asking for the aggregated (v2) document, and if
  the answer is not one, GET /apis/GROUP/VERSION as system:kube-aggregator without groups.
  /apis and /apis/GROUP list the group of every such APIService.
- In-memory objects: pods, services, namespaces, serviceaccounts, nodes, configmaps (v1);
  deployments, replicasets, statefulsets, daemonsets (apps/v1); jobs, cronjobs (batch/v1);
  endpointslices (discovery.k8s.io/v1); apiservices (apiregistration.k8s.io/v1). get, list,
  watch, create, update (PUT), patch (merge, strategic merge, JSON patch), delete;
  labelSelector and fieldSelector; the status subresource.
- One resourceVersion counter for everything, and the history of every change, from which
  watches replay. Watches are chunked streams of JSON events, with bookmarks.

Simplifications, each chosen because tests do not need more:
- Objects are taken as sent, status included (a real server takes the status only through
  the status subresource, and resets a new pod's status). Missing pod phases become
  "Pending" and missing namespace phases "Active", as a real server sets them.
- Deletion is immediate: no graceful deletion of pods, no finalizers, and deleting a
  namespace leaves the objects in it. DELETE answers with the object as deleted.
- Objects may be created in namespaces that do not exist.
- list ignores limit/continue and returns everything at once (a real server does the same
  when it answers from its watch cache); sendInitialEvents is not supported.
- A strategic merge patch is applied as a JSON merge patch (RFC 7386): right for labels,
  annotations and scalar fields, but lists are replaced instead of merged by key.

Watch semantics follow the real watch cache: a MODIFIED event for an object that stops
matching the watch's selectors is sent as DELETED, and one for an object that starts
matching as ADDED (both with the object's new state). A watch without resourceVersion, or
with "0", starts with a synthetic ADDED event per current object. After a restart from
--state the history is empty: a watch from the stored resourceVersion resumes, one from an
older version is too old (410), as with a freshly started server's watch cache.

--seed FILE starts the server with the objects of FILE (the state file's form: {"objects":
[{"group", "resource", "object"}]}), read once and never written: tens of thousands of
objects (a benchmark's Services) at no cost per request, where --state would write them all
at every change.

Control endpoints, admin token only, JSON bodies:
  POST   /_test/expire-history   {"mode": "status"|"event"}  every resourceVersion up to
         the current one becomes too old; the counter then moves on by one, so that a list
         made after it returns a version a watch can start from. A watch from a too-old
         version gets an HTTP 410 Status ("status") or a 200 stream with one ERROR event
         carrying that Status ("event").
  POST   /_test/stall-watches    {"stalled": true|false}  while stalled, watch streams
         (open and new) send nothing at all, a new one not even its response headers, and
         stay open past their timeout; they carry on when the stall ends.
  POST   /_test/close-watches    ends every open watch stream and closes its connection.
  POST   /_test/tokens           {"user", ["token"], ["groups"], ["extra": {name: [values]}],
         ["audiences"], ["expirationSeconds"], ["uid"], ["pod": {"name", ["uid"]}],
         ["node": {"name", ["uid"]}]} -> {"token", "user", ["expirationTimestamp"]}. Only a
         service account's token may be bound to a pod (of its namespace; the uid is the
         stored pod's unless given) or carry a node.
  DELETE /_test/tokens/<token>   revokes a token, wherever it came from.
  POST   /_test/reviews          {"delaySeconds": S, "unavailable": false|true}  reviews are
         answered S seconds late (lifting the delay releases those waiting), then with 503
         ServiceUnavailable while unavailable.
  GET    /_test/requests         {"requests": [{method, path, user, status, watch, rule,
         [review]}]} every API request answered (control requests excluded), oldest first;
         each is recorded before its answer is sent, so a client that has its answer finds
         it. A review's entry says what it decided: {audiences, authenticated, user|error}
         or {user, groups, extra, resourceAttributes|nonResourceAttributes, allowed, rule}.
  DELETE /_test/requests         forgets them.
  POST   /_test/bookmark-interval {"seconds": 0.5}
  GET    /_test/rbac             {"rules": [{"rule", "uses"}]}: every RBAC rule and how
         many requests it allowed.
  GET    /_test/watches          {"open": N}: watch streams currently open.
  POST   /_test/apiservices/<name>/probe  checks APIService <name> now, as the availability
         controller does, and answers what it found; GET answers the last check's findings:
         {"apiService", "available", "reason", "message", "discovery": "aggregated"|"legacy"|
         "failed"|"", "probes": [{"purpose": "availability"|"discovery"|"legacy discovery",
         "path", "user", "groups", "accept", "status", "contentType", "body" | "error"}]}.

A rule is named "<Kind>/<name>#<index>" ("Role/<namespace>/<name>#<index>" for a Role);
requests allowed by the admin token have the rule "admin", group system:masters
"system:masters", discovery "system:discovery", and requests without --rbac "". The rules
of bootstrap roles are listed by /_test/rbac once they have been used.

Every request is logged to stderr as one line: method, path, user, status; like the record
of /_test/requests, before its answer is sent.
"""

import argparse
import base64
import copy
import datetime
import hashlib
import hmac
import json
import os
import re
import secrets
import select
import socket
import ssl
import sys
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, parse_qsl, quote, unquote, urlencode, urlsplit

ADMIN_USER = "admin"
# Granularity of a watch's loop: how soon it notices a deadline, a bookmark that is due,
# the end of a stall or a client that went away. Changes wake it at once.
WATCH_TICK_SECONDS = 0.05


class Resource:
    def __init__(self, group, version, plural, kind, namespaced, fields=()):
        self.group = group
        self.version = version
        self.plural = plural
        self.kind = kind
        self.namespaced = namespaced
        # Field selectors this resource supports besides metadata.name/namespace.
        self.fields = ("metadata.name", "metadata.namespace") + tuple(fields)

    @property
    def api_version(self):
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self):
        # As Kubernetes prints a GroupResource in messages: "pods", "deployments.apps".
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def key(self):
        return (self.group, self.plural)


POD_FIELDS = ("spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
              "spec.serviceAccountName", "status.phase", "status.podIP",
              "status.nominatedNodeName")
RESOURCE_LIST = [
    Resource("", "v1", "pods", "Pod", True, POD_FIELDS),
    Resource("", "v1", "services", "Service", True),
    Resource("", "v1", "namespaces", "Namespace", False, ("status.phase",)),
    Resource("", "v1", "serviceaccounts", "ServiceAccount", True),
    Resource("", "v1", "nodes", "Node", False, ("spec.unschedulable",)),
    Resource("apps", "v1", "deployments", "Deployment", True),
    Resource("apps", "v1", "replicasets", "ReplicaSet", True),
    Resource("apps", "v1", "statefulsets", "StatefulSet", True),
    Resource("apps", "v1", "daemonsets", "DaemonSet", True),
    Resource("batch", "v1", "jobs", "Job", True),
    Resource("batch", "v1", "cronjobs", "CronJob", True),
    Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True),
    Resource("", "v1", "configmaps", "ConfigMap", True),
    Resource("apiregistration.k8s.io", "v1", "apiservices", "APIService", False),
]
RESOURCES = {(r.group, r.version, r.plural): r for r in RESOURCE_LIST}
RESOURCES_BY_KEY = {r.key: r for r in RESOURCE_LIST}
# Reviews are created and answered, never stored: only "create" exists for them.
REVIEW_LIST = [
    Resource("authentication.k8s.io", "v1", "tokenreviews", "TokenReview", False),
    Resource("authorization.k8s.io", "v1", "subjectaccessreviews", "SubjectAccessReview", False),
]
REVIEWS = {(r.group, r.version, r.plural): r for r in REVIEW_LIST}
GROUP_VERSIONS = sorted({(r.group, r.version) for r in RESOURCE_LIST + REVIEW_LIST})
SUBRESOURCES = ("status",)

# The audience of tokens for the API server itself: a token issued without audiences has it,
# and the server's own API accepts only tokens that have it.
API_AUDIENCE = "https://kubernetes.default.svc.cluster.local"
EXTRA_PREFIX = "authentication.kubernetes.io/"

VERSION_INFO = {
    "major": "1", "minor": "29", "gitVersion": "v1.29.0", "gitCommit": "",
    "gitTreeState": "clean", "buildDate": "2024-01-01T00:00:00Z", "goVersion": "go1.21.5",
    "compiler": "gc", "platform": "linux/amd64",
}


class ApiError(Exception):
    """An error answered as a Kubernetes Status object."""

    def __init__(self, code, reason, message, details=None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details


def status_object(code, reason, message, details=None):
    status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
              "message": message, "reason": reason, "code": code}
    if details:
        status["details"] = details
    return status


def error_details(resource, name):
    details = {}
    if name:
        details["name"] = name
    if resource.group:
        details["group"] = resource.group
    details["kind"] = resource.plural
    return details


def not_found(resource, name):
    return ApiError(404, "NotFound", f'{resource.group_resource} "{name}" not found',
                    error_details(resource, name))


def conflict(resource, name):
    return ApiError(409, "Conflict",
                    f'Operation cannot be fulfilled on {resource.group_resource} "{name}": the '
                    "object has been modified; please apply your changes to the latest version "
                    "and try again", error_details(resource, name))


def bad_request(message):
    return ApiError(400, "BadRequest", message)


def invalid(resource, name, message):
    return ApiError(422, "Invalid", f'{resource.kind} "{name}" is invalid: {message}',
                    error_details(resource, name))


NO_ROUTE = ApiError(404, "NotFound", "the server could not find the requested resource",
                    {"causes": [{"reason": "UnexpectedServerResponse", "message": "404 page not found"}]})


def timestamp(seconds):
    """RFC 3339 in UTC, as Kubernetes writes times."""
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc) \
        .strftime("%Y-%m-%dT%H:%M:%SZ")


def now_timestamp():
    return timestamp(time.time())


# ---------------------------------------------------------------------------------------
# Selectors

LABEL_KEY = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
SET_REQUIREMENT = re.compile(r"^(\S+)\s+(in|notin)\s*\((.*)\)$")
COMPARISON = re.compile(r"^([^!=<>\s]+)\s*(==|!=|=|<|>)\s*(.*)$")


def split_top_level(text):
    """Splits at commas outside parentheses: "a in (x,y),b" -> ["a in (x,y)", "b"]."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(text):
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def check_label(key, values=()):
    if not LABEL_KEY.match(key):
        raise bad_request(f"unable to parse requirement: invalid label key \"{key}\"")
    for value in values:
        if not LABEL_VALUE.match(value):
            raise bad_request(f"unable to parse requirement: invalid label value: \"{value}\"")


def parse_label_selector(text):
    """A list of (key, operator, values) requirements, all of which must hold."""
    requirements = []
    if not text or not text.strip():
        return requirements
    for part in split_top_level(text):
        part = part.strip()
        if not part:
            raise bad_request("unable to parse requirement: found '', expected: identifier")
        match = SET_REQUIREMENT.match(part)
        if match:
            values = [v.strip() for v in match.group(3).split(",")]
            check_label(match.group(1), values)
            requirements.append((match.group(1), match.group(2), values))
            continue
        if part.startswith("!"):
            key = part[1:].strip()
            check_label(key)
            requirements.append((key, "!", []))
            continue
        match = COMPARISON.match(part)
        if match:
            key, op, value = match.group(1), match.group(2), match.group(3).strip()
            if op in ("<", ">"):
                check_label(key)
                try:
                    int(value)
                except ValueError:
                    raise bad_request("unable to parse requirement: for 'gt', 'lt' operators, "
                                      "the value must be an integer")
            else:
                check_label(key, [value])
            requirements.append((key, "=" if op == "==" else op, [value]))
            continue
        check_label(part)
        requirements.append((part, "exists", []))
    return requirements


def labels_match(requirements, labels):
    for key, op, values in requirements:
        present = key in labels
        value = labels.get(key)
        if op == "=" and value != values[0]:
            return False
        if op == "!=" and value == values[0]:
            return False
        if op == "in" and value not in values:
            return False
        if op == "notin" and present and value in values:
            return False
        if op == "exists" and not present:
            return False
        if op == "!" and present:
            return False
        if op in ("<", ">"):
            try:
                number = int(value)
            except (TypeError, ValueError):
                return False
            if (op == "<" and not number < int(values[0])) or \
               (op == ">" and not number > int(values[0])):
                return False
    return True


def parse_field_selector(text, resource):
    requirements = []
    if not text or not text.strip():
        return requirements
    for part in text.split(","):
        match = COMPARISON.match(part.strip())
        if not match or match.group(2) in ("<", ">"):
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        field, op, value = match.group(1), match.group(2), match.group(3)
        if field not in resource.fields:
            raise bad_request(f'field label not supported: {field}')
        requirements.append((field, "!=" if op == "!=" else "=", value))
    return requirements


def field_value(obj, field):
    value = obj
    for step in field.split("."):
        value = value.get(step) if isinstance(value, dict) else None
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def fields_match(requirements, obj):
    for field, op, value in requirements:
        if (field_value(obj, field) == value) != (op == "="):
            return False
    return True


class Selector:
    def __init__(self, query, resource):
        self.labels = parse_label_selector(query_value(query, "labelSelector"))
        self.fields = parse_field_selector(query_value(query, "fieldSelector"), resource)

    def matches(self, obj):
        if obj is None:
            return False
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return labels_match(self.labels, labels) and fields_match(self.fields, obj)


def query_value(query, name, default=""):
    values = query.get(name)
    return values[-1] if values else default


def query_bool(query, name):
    return query_value(query, name).lower() in ("1", "t", "true")


# ---------------------------------------------------------------------------------------
# Patches

def merge_patch(target, patch, strategic=False):
    """RFC 7386. A strategic merge patch's "$..." directives are dropped (see the module doc)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if strategic and key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value, strategic)
    return result


class JsonPatchError(Exception):
    pass


def pointer_steps(pointer):
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise JsonPatchError(f"invalid JSON pointer {pointer!r}")
    return [s.replace("~1", "/").replace("~0", "~") for s in pointer[1:].split("/")]


def resolve_parent(document, pointer):
    steps = pointer_steps(pointer)
    if not steps:
        raise JsonPatchError("the whole document cannot be the target")
    parent = document
    for step in steps[:-1]:
        parent = child_of(parent, step, pointer)
    return parent, steps[-1]


def child_of(node, step, pointer):
    if isinstance(node, dict):
        if step not in node:
            raise JsonPatchError(f"path {pointer} does not exist")
        return node[step]
    if isinstance(node, list):
        index = list_index(node, step, pointer, allow_end=False)
        return node[index]
    raise JsonPatchError(f"path {pointer} does not exist")


def list_index(node, step, pointer, allow_end):
    if allow_end and step == "-":
        return len(node)
    if not step.isdigit() or (len(step) > 1 and step.startswith("0")):
        raise JsonPatchError(f"invalid index {step!r} in {pointer}")
    index = int(step)
    if index > len(node) or (index == len(node) and not allow_end):
        raise JsonPatchError(f"index {index} out of range in {pointer}")
    return index


def pointer_get(document, pointer):
    node = document
    for step in pointer_steps(pointer):
        node = child_of(node, step, pointer)
    return node


def pointer_add(document, pointer, value):
    parent, last = resolve_parent(document, pointer)
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(list_index(parent, last, pointer, allow_end=True), value)
    else:
        raise JsonPatchError(f"path {pointer} does not exist")


def pointer_remove(document, pointer):
    parent, last = resolve_parent(document, pointer)
    if isinstance(parent, dict):
        if last not in parent:
            raise JsonPatchError(f"path {pointer} does not exist")
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(list_index(parent, last, pointer, allow_end=False))
    raise JsonPatchError(f"path {pointer} does not exist")


def json_patch(document, operations):
    """RFC 6902: add, remove, replace, move, copy, test."""
    if not isinstance(operations, list):
        raise JsonPatchError("a JSON patch must be a list of operations")
    document = copy.deepcopy(document)
    for operation in operations:
        if not isinstance(operation, dict) or "op" not in operation or "path" not in operation:
            raise JsonPatchError(f"invalid operation {operation!r}")
        op, path = operation["op"], operation["path"]
        if op in ("add", "replace", "test") and "value" not in operation:
            raise JsonPatchError(f"operation {op} on {path} has no value")
        if op == "add":
            pointer_add(document, path, copy.deepcopy(operation["value"]))
        elif op == "remove":
            pointer_remove(document, path)
        elif op == "replace":
            pointer_remove(document, path)
            pointer_add(document, path, copy.deepcopy(operation["value"]))
        elif op == "move":
            value = pointer_remove(document, operation.get("from", ""))
            pointer_add(document, path, value)
        elif op == "copy":
            pointer_add(document, path, copy.deepcopy(pointer_get(document, operation.get("from", ""))))
        elif op == "test":
            if pointer_get(document, path) != operation["value"]:
                raise JsonPatchError(f"testing value {path} failed")
        else:
            raise JsonPatchError(f"unknown operation {op!r}")
    return document


# ---------------------------------------------------------------------------------------
# Requests as Kubernetes sees them (RequestInfo), and RBAC

class RequestInfo:
    def __init__(self):
        self.is_resource = False
        self.path = "/"
        self.verb = ""
        self.group = ""
        self.version = ""
        self.plural = ""
        self.subresource = ""
        self.namespace = ""
        self.name = ""


def parse_request(method, path, query):
    """The attributes RBAC sees, derived from the path as Kubernetes' RequestInfoFactory does."""
    info = RequestInfo()
    info.path = path
    info.verb = method.lower()
    parts = path.strip("/").split("/")
    if not parts or parts[0] not in ("api", "apis"):
        return info
    if parts[0] == "api":
        if len(parts) < 3:
            return info
        info.version, rest = parts[1], parts[2:]
    else:
        if len(parts) < 4:
            return info
        info.group, info.version, rest = parts[1], parts[2], parts[3:]
    info.is_resource = True
    watch_path = False
    if rest and rest[0] == "watch":
        watch_path, rest = True, rest[1:]
    if rest and rest[0] == "namespaces" and len(rest) > 1:
        info.namespace = rest[1]
        if len(rest) > 2 and rest[2] not in ("status", "finalize"):
            rest = rest[2:]
    if len(rest) >= 3:
        info.subresource = rest[2]
    if len(rest) >= 2:
        info.name = rest[1]
    if rest:
        info.plural = rest[0]
    verbs = {"post": "create", "put": "update", "patch": "patch", "get": "get", "head": "get",
             "delete": "delete"}
    info.verb = verbs.get(info.verb, info.verb)
    if watch_path:
        info.verb = "watch"
    elif info.verb == "get" and not info.name:
        info.verb = "watch" if query_bool(query, "watch") else "list"
    elif info.verb == "delete" and not info.name:
        info.verb = "deletecollection"
    if info.verb in ("list", "watch") and not info.name:
        # A list or watch of one name (fieldSelector=metadata.name=x) is authorized for that
        # name, so rules with resourceNames can allow it.
        for part in query_value(query, "fieldSelector").split(","):
            match = re.match(r"^\s*metadata\.name\s*==?\s*(\S+)\s*$", part)
            if match:
                info.name = match.group(1)
    return info


def extra_parts(path):
    """Path segments after the resource/name/subresource Kubernetes reads, which no handler
    here serves."""
    parts = path.strip("/").split("/")
    rest = parts[2:] if parts[0] == "api" else parts[3:]
    if rest and rest[0] == "watch":
        rest = rest[1:]
    if rest and rest[0] == "namespaces" and len(rest) > 2 and rest[2] not in ("status", "finalize"):
        rest = rest[2:]
    return rest[3:]


# Roles every cluster has (Kubernetes' bootstrap policy) that extension API servers are
# bound to; only the bindings come from the --rbac file.
BOOTSTRAP_ROLES = [
    {"kind": "ClusterRole", "metadata": {"name": "system:auth-delegator"},
     "rules": [{"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"],
                "verbs": ["create"]},
               {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"],
                "verbs": ["create"]}]},
    {"kind": "Role",
     "metadata": {"name": "extension-apiserver-authentication-reader",
                  "namespace": "kube-system"},
     "rules": [{"apiGroups": [""], "resources": ["configmaps"],
                "resourceNames": ["extension-apiserver-authentication"],
                "verbs": ["get", "list", "watch"]}]},
]
MASTERS_GROUP = "system:masters"


class Rbac:
    def __init__(self, path):
        with open(path) as f:
            document = json.load(f)
        items = document.get("items", []) if isinstance(document, dict) else document
        self.cluster_roles = {}
        self.roles = {}
        self.cluster_bindings = []
        self.bindings = []
        for role in BOOTSTRAP_ROLES:
            if role["kind"] == "ClusterRole":
                self.cluster_roles[role["metadata"]["name"]] = role
            else:
                self.roles[(role["metadata"]["namespace"], role["metadata"]["name"])] = role
        bootstrap_rules = set(self.rule_names())
        for item in items:
            kind = item.get("kind")
            metadata = item.get("metadata", {})
            if kind == "ClusterRole":
                self.cluster_roles[metadata["name"]] = item
            elif kind == "Role":
                self.roles[(metadata.get("namespace", ""), metadata["name"])] = item
            elif kind == "ClusterRoleBinding":
                self.cluster_bindings.append(item)
            elif kind == "RoleBinding":
                self.bindings.append(item)
            else:
                raise ValueError(f"{path}: unexpected kind {kind!r}")
        # The file's rules, each listed even while unused; a bootstrap rule once it is used.
        self.uses = {rule: 0 for rule in self.rule_names() if rule not in bootstrap_rules}

    def rule_names(self):
        """The name of every rule of every role known."""
        for name, role in self.cluster_roles.items():
            for i in range(len(role.get("rules") or [])):
                yield f"ClusterRole/{name}#{i}"
        for (namespace, name), role in self.roles.items():
            for i in range(len(role.get("rules") or [])):
                yield f"Role/{namespace}/{name}#{i}"

    @staticmethod
    def subject_matches(subject, user, groups, binding_namespace):
        kind, name = subject.get("kind"), subject.get("name")
        if kind == "User":
            return name == user
        if kind == "Group":
            return name in groups
        if kind == "ServiceAccount":
            namespace = subject.get("namespace") or binding_namespace
            return user == f"system:serviceaccount:{namespace}:{name}"
        return False

    @staticmethod
    def rule_allows(rule, info):
        verbs = rule.get("verbs") or []
        if "*" not in verbs and info.verb not in verbs:
            return False
        if not info.is_resource:
            for url in rule.get("nonResourceURLs") or []:
                if url == "*" or url == info.path or \
                   (url.endswith("*") and info.path.startswith(url[:-1])):
                    return True
            return False
        groups = rule.get("apiGroups") or []
        if "*" not in groups and info.group not in groups:
            return False
        combined = info.plural + ("/" + info.subresource if info.subresource else "")
        resources = rule.get("resources") or []
        if not ("*" in resources or combined in resources or
                (info.subresource and "*/" + info.subresource in resources)):
            return False
        names = rule.get("resourceNames") or []
        return not names or info.name in names

    def authorize(self, user, groups, info):
        """The name of the first rule that allows the request, or None."""
        candidates = []
        for binding in self.cluster_bindings:
            candidates.append((binding, ""))
        if info.namespace:
            for binding in self.bindings:
                if binding.get("metadata", {}).get("namespace", "") == info.namespace:
                    candidates.append((binding, info.namespace))
        for binding, namespace in candidates:
            if not any(self.subject_matches(s, user, groups, namespace)
                       for s in binding.get("subjects") or []):
                continue
            ref = binding.get("roleRef", {})
            if ref.get("kind") == "ClusterRole":
                role, prefix = self.cluster_roles.get(ref.get("name")), f"ClusterRole/{ref.get('name')}"
            elif ref.get("kind") == "Role" and namespace:
                role, prefix = self.roles.get((namespace, ref.get("name"))), \
                    f"Role/{namespace}/{ref.get('name')}"
            else:
                continue
            if role is None:
                continue
            for i, rule in enumerate(role.get("rules") or []):
                if self.rule_allows(rule, info):
                    name = f"{prefix}#{i}"
                    self.uses[name] = self.uses.get(name, 0) + 1
                    return name
        return None


def forbidden(user, info):
    resource = info.plural + ("/" + info.subresource if info.subresource else "")
    if not info.is_resource:
        return ApiError(403, "Forbidden", f'forbidden: User "{user}" cannot {info.verb} path '
                        f'"{info.path}"', {})
    scope = f'in the namespace "{info.namespace}"' if info.namespace else "at the cluster scope"
    reason = (f'User "{user}" cannot {info.verb} resource "{resource}" in API group '
              f'"{info.group}" {scope}')
    group_resource = f"{info.plural}.{info.group}" if info.group else info.plural
    details = {}
    if info.name:
        details["name"] = info.name
    if info.group:
        details["group"] = info.group
    details["kind"] = info.plural
    if info.name:
        message = f'{group_resource} "{info.name}" is forbidden: {reason}'
    else:
        message = f"{group_resource} is forbidden: {reason}"
    return ApiError(403, "Forbidden", message, details)


DISCOVERY_PATHS = ("/api", "/apis", "/version", "/healthz", "/livez", "/readyz")


def is_discovery(path):
    return any(path == p or path.startswith(p + "/") for p in DISCOVERY_PATHS) or \
        path.startswith("/openapi/")


# ---------------------------------------------------------------------------------------
# The store

class Change:
    __slots__ = ("rv", "type", "key", "obj", "old")

    def __init__(self, rv, type_, key, obj, old):
        self.rv, self.type, self.key, self.obj, self.old = rv, type_, key, obj, old


class Store:
    """Objects, the resourceVersion counter, the change history, tokens and test switches.
    Everything is guarded by `cond`; stored objects are never modified in place (a change
    stores a new dict), so they can be shared with the history and serialized unlocked."""

    def __init__(self, state_path, bookmark_interval):
        self.cond = threading.Condition()
        self.state_path = state_path
        self.objects = {}  # (group, plural, namespace, name) -> object
        self.rv = 1
        self.history = []  # Change, rv increasing
        self.expired_at = 0  # a watch from this version or older is too old
        self.gone_mode = "status"
        self.tokens = {}  # token -> {"user", "groups", "extra", "audiences", "exp", "pod"...}
        self.revoked = set()
        self.review_delay = 0.0  # seconds before a TokenReview or SubjectAccessReview answer
        self.reviews_unavailable = False
        self.stalled = False
        self.close_generation = 0
        self.open_watches = 0
        self.bookmark_interval = bookmark_interval
        self.requests = []
        self.probes = {}  # APIService name -> what its last probe found
        if state_path and os.path.exists(state_path):
            self.load()

    def load(self):
        with open(self.state_path) as f:
            state = json.load(f)
        self.rv = int(state["resourceVersion"])
        for entry in state.get("objects", []):
            obj = entry["object"]
            metadata = obj["metadata"]
            self.objects[(entry["group"], entry["resource"], metadata.get("namespace", ""),
                          metadata["name"])] = obj
        self.tokens = dict(state.get("tokens", {}))
        self.revoked = set(state.get("revoked", []))
        self.gone_mode = state.get("goneMode", "status")
        # The history did not survive: only the current version can be watched from.
        self.expired_at = self.rv - 1

    def seed(self, path):
        with open(path) as f:
            for entry in json.load(f)["objects"]:
                obj = entry["object"]
                metadata = obj["metadata"]
                metadata["resourceVersion"] = str(self.rv)
                self.objects[(entry["group"], entry["resource"], metadata.get("namespace", ""),
                              metadata["name"])] = obj

    def save(self):
        if not self.state_path:
            return
        state = {
            "resourceVersion": str(self.rv),
            "objects": [{"group": k[0], "resource": k[1], "object": o}
                        for k, o in sorted(self.objects.items())],
            "tokens": self.tokens,
            "revoked": sorted(self.revoked),
            "goneMode": self.gone_mode,
        }
        temporary = f"{self.state_path}.tmp"
        with open(temporary, "w") as f:
            json.dump(state, f)
        os.replace(temporary, self.state_path)

    def history_after(self, position):
        """True if a change newer than `position` is recorded."""
        return bool(self.history) and self.history[-1].rv > position

    def commit(self, type_, key, obj, old):
        """Records a change: the new version, the object stored (or removed), the history."""
        self.rv += 1
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self.rv)
        if type_ == "DELETED":
            del self.objects[key]
        else:
            self.objects[key] = obj
        self.history.append(Change(self.rv, type_, key, obj, old))
        self.save()
        self.cond.notify_all()
        return obj


# ---------------------------------------------------------------------------------------
# The aggregation layer, as kube-aggregator runs it

AGGREGATOR_USER = "system:kube-aggregator"
# What kube-aggregator's discovery asks /apis of an extension for first: the aggregated
# discovery document (v2). Anything else in answer makes it fall back to /apis/GROUP/VERSION.
AGGREGATED_DISCOVERY_ACCEPT = ("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
                               "application/json;g=apidiscovery.k8s.io;v=v2beta1;"
                               "as=APIGroupDiscoveryList,application/json")
# kube-aggregator's availability and discovery checks give up after this long.
PROBE_TIMEOUT_SECONDS = 5.0
# How often an APIService that is not Available is checked again.
RECHECK_SECONDS = 1.0
# kube-apiserver's --request-timeout: every proxied request but a watch is cut after it.
PROXY_TIMEOUT_SECONDS = 60.0
# Headers of one connection, never passed on by a proxy (RFC 7230 section 6.1).
HOP_BY_HOP = frozenset(("connection", "keep-alive", "proxy-connection", "proxy-authenticate",
                        "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"))
# RFC 7230 token characters: an extra's key is sent as itself where it has only these.
TOKEN_CHARS = frozenset("!#$&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def escape_extra_key(key):
    """The header name part of an extra's key, as kube-aggregator's headerKeyEscape writes it:
    every byte that is not a token character, and "%", becomes %XX."""
    return "".join(chr(b) if chr(b) in TOKEN_CHARS else f"%{b:02X}" for b in key.encode())


def canonical_header(name):
    """Go's CanonicalMIMEHeaderKey: the first letter and each one after "-" upper case, the
    rest lower case (so "%2F" goes out as "%2f")."""
    out, upper = [], True
    for c in name:
        out.append(c.upper() if upper else c.lower())
        upper = c == "-"
    return "".join(out)


def identity_headers(identity):
    """The X-Remote-* headers kube-aggregator sets for the authenticated user."""
    headers = [("X-Remote-User", identity["username"])]
    headers += [("X-Remote-Group", g) for g in identity.get("groups") or []]
    for key, values in sorted((identity.get("extra") or {}).items()):
        name = canonical_header("X-Remote-Extra-" + escape_extra_key(key))
        headers += [(name, v) for v in values]
    return headers


def go_path(raw_path):
    """The request path as Go's proxy sends it on: decoded ("%2F" is a "/"), then escaped
    again as url.URL.EscapedPath does."""
    return quote(unquote(raw_path), safe="/$&+,:;=@")


def go_query(raw_query):
    """The query as url.Values.Encode writes it: keys sorted, each key's values in order."""
    pairs = parse_qsl(raw_query, keep_blank_values=True)
    return urlencode(sorted(pairs, key=lambda pair: pair[0]))


def apiservice_key(name):
    return ("apiregistration.k8s.io", "apiservices", "", name)


def available_condition(apiservice):
    for condition in (apiservice.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Available":
            return condition
    return None


class Unresolvable(Exception):
    """An APIService's service has no endpoint to call: `reason` as kube-aggregator's
    availability controller names it."""

    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason


def resolve_endpoint(store, service_ref):
    """(host, port) of the extension behind an APIService's spec.service, as endpoint routing
    picks it: the Service's port with that port number (443 when not given), then the first
    ready address of an EndpointSlice of the Service with a port of the same name. Called with
    the store's lock held."""
    namespace, name = service_ref.get("namespace", ""), service_ref.get("name", "")
    port = service_ref.get("port") or 443
    service = store.objects.get(("", "services", namespace, name))
    if service is None:
        raise Unresolvable("ServiceNotFound", f'service/{name} in "{namespace}" is not present')
    ports = [p for p in (service.get("spec") or {}).get("ports") or [] if p.get("port") == port]
    if not ports:
        raise Unresolvable("ServicePortError",
                           f'service/{name} in "{namespace}" is not listening on port {port}')
    port_name = ports[0].get("name", "")
    for key, slice_ in sorted(store.objects.items()):
        if key[:3] != ("discovery.k8s.io", "endpointslices", namespace) or \
           ((slice_.get("metadata") or {}).get("labels") or {}).get(
               "kubernetes.io/service-name") != name:
            continue
        numbers = [p.get("port") for p in slice_.get("ports") or []
                   if p.get("name", "") == port_name and p.get("port")]
        for endpoint in slice_.get("endpoints") or []:
            if numbers and endpoint.get("addresses") and \
               (endpoint.get("conditions") or {}).get("ready", True):
                return endpoint["addresses"][0], numbers[0]
    raise Unresolvable("MissingEndpoints", f'endpoints for service/{name} in "{namespace}" have '
                                           f'no addresses with port name "{port_name}"')


class ClientGone(Exception):
    """The client of a proxied request went away."""


class UpstreamError(Exception):
    """The extension could not be reached or did not answer HTTP."""


class Upstream:
    """One HTTPS request to an extension API server, made as kube-aggregator's proxy makes it:
    the front proxy's client certificate, the APIService's caBundle, and the name
    <service>.<namespace>.svc for the certificate check; HTTP/1.1, a connection per request.
    The answer is read as it arrives, so a streamed one can be relayed chunk by chunk."""

    def __init__(self, apiservice, address, client_cert, client_key):
        spec = apiservice.get("spec") or {}
        service = spec.get("service") or {}
        self.server_name = f'{service.get("name")}.{service.get("namespace")}.svc'
        self.url = f"https://{address[0]}:{address[1]}"
        self.buffer = b""
        ca_bundle = spec.get("caBundle")
        try:
            context = ssl.create_default_context(
                cadata=base64.b64decode(ca_bundle).decode() if ca_bundle else None)
            if spec.get("insecureSkipTLSVerify"):
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            if client_cert:
                context.load_cert_chain(client_cert, client_key)
            context.set_alpn_protocols(["http/1.1"])
            raw = socket.create_connection(address, timeout=PROBE_TIMEOUT_SECONDS)
        except (OSError, ValueError, ssl.SSLError) as e:
            raise UpstreamError(f"dial tcp {address[0]}:{address[1]}: {e}")
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock = context.wrap_socket(raw, server_hostname=self.server_name)
        except (OSError, ssl.SSLError, ssl.CertificateError) as e:
            raw.close()
            raise UpstreamError(f"tls: {e}")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, method, target, headers, body):
        lines = [f"{method} {target} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        lines.append("Connection: close")
        try:
            self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        except OSError as e:
            raise UpstreamError(f"write: {e}")
        # Reads wait in select() so that a deadline and a client that went away are noticed.
        self.sock.settimeout(0)

    def fill(self, deadline, gone):
        """Reads what the extension sent next into the buffer; False at its end. Raises
        TimeoutError past `deadline` (None: never), ClientGone once gone() says so."""
        while True:
            if not self.sock.pending():
                readable, _, _ = select.select([self.sock], [], [], WATCH_TICK_SECONDS)
                if not readable:
                    if deadline is not None and time.monotonic() >= deadline:
                        raise TimeoutError()
                    if gone():
                        raise ClientGone()
                    continue
            try:
                data = self.sock.recv(65536)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                continue
            except OSError as e:
                raise UpstreamError(f"read: {e}")
            if not data:
                return False
            self.buffer += data
            return True

    def take_line(self, deadline, gone):
        while b"\r\n" not in self.buffer:
            if not self.fill(deadline, gone):
                raise UpstreamError("unexpected EOF")
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def take(self, size, deadline, gone):
        """The next `size` bytes, in pieces as they arrive."""
        while size:
            if not self.buffer and not self.fill(deadline, gone):
                raise UpstreamError("unexpected EOF")
            piece, self.buffer = self.buffer[:size], self.buffer[size:]
            size -= len(piece)
            yield piece

    def read_head(self, deadline, gone):
        """(status, reason, [(name, value)]) of the answer."""
        while b"\r\n\r\n" not in self.buffer:
            if not self.fill(deadline, gone):
                raise UpstreamError("malformed HTTP response: the connection closed in the "
                                    "response head")
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise UpstreamError(f"malformed HTTP response {lines[0]!r}")
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
        return int(parts[1]), parts[2] if len(parts) > 2 else "", headers

    def body_pieces(self, method, status, headers, deadline, gone):
        """The body, in pieces as they arrive: a chunked one chunk by chunk (or a part of one,
        never waiting for more than has come)."""
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return
        names = {k.lower(): v for k, v in headers}
        if "chunked" in names.get("transfer-encoding", "").lower():
            while True:
                size = int(self.take_line(deadline, gone).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.take_line(deadline, gone):  # trailers, then the empty line
                        pass
                    return
                yield from self.take(size, deadline, gone)
                self.take_line(deadline, gone)
        elif "content-length" in names:
            yield from self.take(int(names["content-length"]), deadline, gone)
        else:
            while self.buffer or self.fill(deadline, gone):
                piece, self.buffer = self.buffer, b""
                yield piece

    def get(self, path, headers):
        """A whole GET, for the availability and discovery checks: (status, headers, body)."""
        deadline = time.monotonic() + PROBE_TIMEOUT_SECONDS
        self.send("GET", path, headers, b"")
        status, _, answer_headers = self.read_head(deadline, lambda: False)
        body = b"".join(self.body_pieces("GET", status, answer_headers, deadline, lambda: False))
        return status, answer_headers, body


def probe_apiservice(server, name):
    """kube-aggregator's availability check of APIService `name` (GET /apis/GROUP/VERSION as
    system:kube-aggregator in system:masters; Available when it answers 2xx), then, when
    available, its discovery (GET /apis for the aggregated document; if the answer is not one,
    GET /apis/GROUP/VERSION as system:kube-aggregator without groups). Sets the Available
    condition; returns and keeps what the extension answered. One probe at a time."""
    store = server.store
    with server.probe_lock:
        with store.cond:
            apiservice = store.objects.get(apiservice_key(name))
            if apiservice is None:
                raise not_found(RESOURCES_BY_KEY[apiservice_key(name)[:2]], name)
            spec = apiservice.get("spec") or {}
            try:
                address = resolve_endpoint(store, spec["service"]) if spec.get("service") \
                    else None
                unresolvable = None
            except Unresolvable as e:
                address, unresolvable = None, e
        record = {"apiService": name, "probes": [], "discovery": ""}
        group_version = f'/apis/{spec.get("group")}/{spec.get("version")}'

        def call(purpose, path, user, groups, accept):
            probe = {"purpose": purpose, "path": path, "user": user, "groups": groups,
                     "accept": accept}
            record["probes"].append(probe)
            headers = [("Host", f"{address[0]}:{address[1]}"), ("Accept", accept)] + \
                identity_headers({"username": user, "groups": groups})
            try:
                upstream = Upstream(apiservice, address, server.options.front_proxy_client_cert,
                                    server.options.front_proxy_client_key)
                try:
                    status, answer_headers, body = upstream.get(path, headers)
                finally:
                    upstream.close()
            except (UpstreamError, TimeoutError) as e:
                probe["error"] = str(e) or "timed out"
                return None, "", b""
            content_type = dict((k.lower(), v) for k, v in answer_headers).get("content-type", "")
            probe.update(status=status, contentType=content_type,
                         body=body.decode("utf-8", "replace"))
            return status, content_type, body

        if not spec.get("service"):
            available, reason, message = True, "Local", "Local APIServices are always available"
        elif unresolvable is not None:
            available, reason, message = False, unresolvable.reason, str(unresolvable)
        else:
            status, _, _ = call("availability", group_version, AGGREGATOR_USER, [MASTERS_GROUP],
                                "*/*")
            url = f"https://{address[0]}:{address[1]}{group_version}"
            available = status is not None and 200 <= status < 300
            reason = "Passed" if available else "FailedDiscoveryCheck"
            message = "all checks passed" if available else \
                f'failing or missing response from {url}: ' + \
                (record["probes"][-1].get("error") or f"bad status from {url}: {status}")
        if available and address is not None:
            status, content_type, _ = call("discovery", "/apis", AGGREGATOR_USER, [MASTERS_GROUP],
                                           AGGREGATED_DISCOVERY_ACCEPT)
            if status == 200 and "g=apidiscovery.k8s.io" in content_type:
                record["discovery"] = "aggregated"
            else:
                status, _, body = call("legacy discovery", group_version, AGGREGATOR_USER, [],
                                       "application/json")
                try:
                    legacy = json.loads(body) if status == 200 else None
                except ValueError:
                    legacy = None
                record["discovery"] = "legacy" if isinstance(legacy, dict) and \
                    legacy.get("kind") == "APIResourceList" else "failed"
        record.update(available=available, reason=reason, message=message)
        with store.cond:
            set_available(store, name, apiservice["metadata"]["resourceVersion"], available,
                          reason, message)
            store.probes[name] = record
        return record


def set_available(store, name, resource_version, available, reason, message):
    """Writes the Available condition of APIService `name`, keeping its lastTransitionTime
    while its status stays, unless it is gone or was changed since the check read it at
    `resource_version` (as a controller's update conflicts: a later check decides). Called
    with the store's lock held."""
    key = apiservice_key(name)
    old = store.objects.get(key)
    if old is None or old["metadata"]["resourceVersion"] != resource_version:
        return
    status = "True" if available else "False"
    previous = available_condition(old) or {}
    condition = {"type": "Available", "status": status,
                 "lastTransitionTime": previous.get("lastTransitionTime") if
                 previous.get("status") == status else now_timestamp(),
                 "reason": reason, "message": message}
    if previous == condition:
        return
    new = copy.deepcopy(old)
    conditions = [c for c in (new.get("status") or {}).get("conditions") or []
                  if c.get("type") != "Available"]
    new["status"] = {"conditions": conditions + [condition]}
    store.commit("MODIFIED", key, new, old)


def probe_quietly(server, name):
    try:
        probe_apiservice(server, name)
    except ApiError:
        pass  # deleted meanwhile
    except Exception:
        log(traceback.format_exc())


def probe_in_background(server, name):
    """The availability controller noticing a new or changed APIService."""
    threading.Thread(target=probe_quietly, args=(server, name), daemon=True).start()


def recheck_unavailable(server):
    """The availability controller retrying what failed: every APIService with a service
    that is not Available is checked again each RECHECK_SECONDS (so an extension that was
    not ready yet becomes Available by itself, as in a cluster). Runs forever."""
    store = server.store
    while True:
        time.sleep(RECHECK_SECONDS)
        with store.cond:
            names = [k[3] for k, o in store.objects.items()
                     if k[:2] == apiservice_key("")[:2] and (o.get("spec") or {}).get("service")
                     and (available_condition(o) or {}).get("status") != "True"]
        for name in names:
            probe_quietly(server, name)


# ---------------------------------------------------------------------------------------
# HTTP

class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, context, store, options):
        self.context = context
        self.store = store
        self.options = options
        self.rbac = Rbac(options.rbac) if options.rbac else None
        self.tokens_file_state = None
        self.file_tokens = {}
        self.probe_lock = threading.Lock()
        super().__init__(address, Handler)

    def get_request(self):
        # The TLS handshake happens in the connection's own thread (Handler.setup), so a
        # client that never completes it cannot hold up the others.
        sock, address = self.socket.accept()
        # Headers, body and watch events are separate writes: without this, Nagle's algorithm
        # holds each one back until the client's delayed ACK (40 ms). Go servers do the same.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self.context.wrap_socket(sock, server_side=True,
                                        do_handshake_on_connect=False), address

    def handle_error(self, request, client_address):
        error = sys.exc_info()[1]
        if isinstance(error, (ssl.SSLError, ConnectionError, TimeoutError, OSError)):
            log(f"connection from {client_address[0]}:{client_address[1]} ended: {error}")
        else:
            log(f"error on connection from {client_address[0]}:{client_address[1]}:\n"
                f"{traceback.format_exc()}")

    def token_record(self, token):
        """What the server knows of a token ({"user", ...} as /_test/tokens stores it), or
        None. The tokens file is re-read when it changes. Called with the store's lock held."""
        if not token:
            return None
        if token == self.options.admin_token:
            return {"user": ADMIN_USER}
        path = self.options.tokens
        if path:
            try:
                st = os.stat(path)
                current = (st.st_mtime_ns, st.st_size, st.st_ino)
            except OSError:
                current = None
            if current != self.tokens_file_state:
                try:
                    with open(path) as f:
                        self.file_tokens = json.load(f) if current else {}
                except (OSError, ValueError) as e:
                    log(f"cannot read tokens file {path}: {e}")
                    self.file_tokens = {}
                self.tokens_file_state = current
        if token in self.store.revoked:
            return None
        if token in self.store.tokens:
            return self.store.tokens[token]
        user = self.file_tokens.get(token)
        return {"user": user} if user else None

    def authenticate(self, token, audiences=()):
        """(user info, audiences, None) for a token valid for one of `audiences` (the API
        server's own when empty), or (None, [], why not), as a TokenReview answers. Called
        with the store's lock held."""
        record = self.token_record(token)
        if record is None:
            return None, [], "invalid bearer token"
        wanted = list(audiences) or [API_AUDIENCE]
        accepted = record.get("audiences") or [API_AUDIENCE]
        common = [a for a in wanted if a in accepted]
        if not common:
            return None, [], (f"token audiences {json.dumps(accepted)} is invalid for the target "
                              f"audiences {json.dumps(wanted)}")
        expires = record.get("exp")
        if expires is not None and time.time() >= expires:
            return None, [], "service account token has expired"
        pod = record.get("pod")
        if pod:
            stored = self.store.objects.get(("", "pods", pod["namespace"], pod["name"]))
            if stored is None:
                return None, [], (f'service account token has been invalidated: the pod '
                                  f'{pod["namespace"]}/{pod["name"]} it is bound to no longer '
                                  f'exists')
            uid = stored["metadata"].get("uid")
            if uid != pod["uid"]:
                return None, [], f'pod UID ({uid}) does not match claim ({pod["uid"]})'
        user = record["user"]
        info = {"username": user}
        if record.get("uid"):
            info["uid"] = record["uid"]
        info["groups"] = groups_of(user, record.get("groups") or [])
        if record.get("extra"):
            info["extra"] = record["extra"]
        return info, common, None


    def authorize(self, user, groups, info):
        """The name of what allows `user` in `groups` the request `info`, or None: "admin",
        "system:masters", "system:discovery", an RBAC rule, or "" without RBAC."""
        if user == ADMIN_USER:
            return "admin"
        if MASTERS_GROUP in groups:
            return MASTERS_GROUP
        if self.rbac is None:
            return ""
        # The system:discovery ClusterRole, bound to every authenticated user.
        if not info.is_resource and is_discovery(info.path) and \
                "system:authenticated" in groups:
            return "system:discovery"
        with self.store.cond:
            return self.rbac.authorize(user, groups, info)


def groups_of(user, groups=()):
    """The groups of a user: those its token was issued with, then the ones Kubernetes adds."""
    groups = list(groups)
    match = re.match(r"^system:serviceaccount:([^:]+):([^:]+)$", user)
    if match:
        groups += ["system:serviceaccounts", f"system:serviceaccounts:{match.group(1)}"]
    groups.append("system:authenticated")
    if user == ADMIN_USER:
        groups.append(MASTERS_GROUP)
    return groups


def base64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def issue_token(request, store, signing_key):
    """A token and what the server keeps of it, from a /_test/tokens request. A service
    account's token is a JWT with Kubernetes' claims, as the TokenRequest API issues it (the
    signature is an HMAC: only this server checks it, by looking the token up). Called with
    the store's lock held."""
    user = request.get("user")
    if not user:
        raise bad_request("user is required")
    groups = request.get("groups") or []
    extra = request.get("extra") or {}
    audiences = request.get("audiences") or []
    if not all(isinstance(a, str) and a for a in audiences):
        raise bad_request("audiences must be non-empty strings")
    if not isinstance(extra, dict) or \
       not all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in extra.values()):
        raise bad_request("extra must map names to lists of strings")
    now = int(time.time())
    record = {"user": user, "groups": groups, "extra": dict(extra), "audiences": audiences}
    seconds = request.get("expirationSeconds")
    if seconds is not None:
        if not isinstance(seconds, (int, float)) or seconds <= 0:
            raise bad_request("expirationSeconds must be a positive number")
        record["exp"] = now + seconds
    service_account = re.match(r"^system:serviceaccount:([^:]+):([^:]+)$", user)
    token = request.get("token")
    if service_account is None:
        if request.get("pod") or request.get("node"):
            raise bad_request("only a service account's token can be bound to a pod or node")
        record["uid"] = request.get("uid") or ""
        return token or secrets.token_hex(24), record
    namespace, name = service_account.groups()
    account = store.objects.get(("", "serviceaccounts", namespace, name))
    record["uid"] = account["metadata"]["uid"] if account else \
        str(uuid.uuid5(uuid.NAMESPACE_URL, user))
    jti = str(uuid.uuid4())
    claims = {"aud": audiences or [API_AUDIENCE]}
    if "exp" in record:
        claims["exp"] = int(record["exp"])
    claims.update({"iat": now, "iss": API_AUDIENCE, "jti": jti, "nbf": now, "sub": user})
    kubernetes = {"namespace": namespace}
    extra[EXTRA_PREFIX + "credential-id"] = [f"JTI={jti}"]
    node = request.get("node") or {}
    if node:
        if not node.get("name"):
            raise bad_request("node.name is required")
        kubernetes["node"] = {"name": node["name"], "uid": node.get("uid", "")}
        extra[EXTRA_PREFIX + "node-name"] = [node["name"]]
        if node.get("uid"):
            extra[EXTRA_PREFIX + "node-uid"] = [node["uid"]]
    pod = request.get("pod") or {}
    if pod:
        stored = store.objects.get(("", "pods", namespace, pod.get("name", "")))
        uid = pod.get("uid") or (stored["metadata"]["uid"] if stored else "")
        if not pod.get("name") or not uid:
            raise bad_request(f'pod "{pod.get("name", "")}" not found in namespace {namespace}: '
                              f'a token is bound to an existing pod (or give its uid)')
        kubernetes["pod"] = {"name": pod["name"], "uid": uid}
        record["pod"] = {"namespace": namespace, "name": pod["name"], "uid": uid}
        extra[EXTRA_PREFIX + "pod-name"] = [pod["name"]]
        extra[EXTRA_PREFIX + "pod-uid"] = [uid]
    kubernetes["serviceaccount"] = {"name": name, "uid": record["uid"]}
    claims["kubernetes.io"] = kubernetes
    record["groups"] = []  # a service account's groups are always the ones Kubernetes adds
    record["extra"] = extra
    header = base64url(to_json({"alg": "HS256", "kid": "test"}))
    payload = base64url(to_json(claims))
    signature = base64url(hmac.new(signing_key, f"{header}.{payload}".encode(),
                                   hashlib.sha256).digest())
    return token or f"{header}.{payload}.{signature}", record


def log(line):
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kube-apiserver-test"
    # Idle keep-alive connections are closed after this long.
    timeout = 300

    def setup(self):
        self.request.settimeout(10)
        self.request.do_handshake()
        super().setup()

    def version_string(self):
        return self.server_version

    def log_message(self, format, *args):  # record() writes the one line per request
        pass

    def do_GET(self):
        self.dispatch()

    def do_POST(self):
        self.dispatch()

    def do_PUT(self):
        self.dispatch()

    def do_PATCH(self):
        self.dispatch()

    def do_DELETE(self):
        self.dispatch()

    # -- plumbing

    @property
    def store(self):
        return self.server.store

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def record(self, status, watch=False):
        """Logs the request and keeps it for /_test/requests. Called before the answer goes
        out, never after: a client holding its answer must find its request recorded."""
        line = f"{self.command} {self.path} {self.user or '-'} {status}{' watch' if watch else ''}"
        log(line)
        if not self.control:
            entry = {"method": self.command, "path": self.path, "user": self.user or "",
                     "status": status, "watch": watch, "rule": self.rule or ""}
            if self.review is not None:
                entry["review"] = self.review
            with self.store.cond:
                self.store.requests.append(entry)

    def answer(self, code, body, watch=False):
        payload = to_json(body)
        self.record(code, watch)
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Audit-Id", str(uuid.uuid4()))
        self.end_headers()
        self.wfile.write(payload)

    def answer_error(self, error, watch=False):
        self.answer(error.code, status_object(error.code, error.reason, error.message,
                                              error.details), watch)

    def dispatch(self):
        self.user = None
        self.groups = []
        self.rule = None
        self.review = None
        self.control = False
        self.watching = False
        self.responding = False  # a proxied answer's head has gone out
        try:
            body = self.read_body()
            url = urlsplit(self.path)
            path = url.path.rstrip("/") or "/"
            query = parse_qs(url.query, keep_blank_values=True)
            self.control = path.startswith("/_test/") or path == "/_test"
            info = parse_request(self.command, path, query)
            watch = info.verb == "watch"
            auth = self.headers.get("Authorization", "")
            token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
            with self.store.cond:
                identity, _, _ = self.server.authenticate(token)
            if identity is None:
                self.answer_error(ApiError(401, "Unauthorized", "Unauthorized"), watch)
                return
            self.user, self.groups = identity["username"], identity["groups"]
            if self.control:
                if self.user != ADMIN_USER:
                    raise ApiError(403, "Forbidden", "control endpoints need the admin token")
                self.handle_control(path, body)
                return
            self.authorize(info)
            apiservice = self.aggregated_apiservice(path)
            if apiservice is not None:
                self.proxy(apiservice, identity, watch, body)
                return
            if not info.is_resource:
                self.handle_discovery(path)
                return
            self.handle_resource(info, query, body)
        except ApiError as error:
            self.answer_error(error, self.watching)
        except (ConnectionError, TimeoutError, ssl.SSLError, OSError):
            self.close_connection = True
        except Exception:
            log(traceback.format_exc())
            self.answer_error(ApiError(500, "InternalError", "internal error in the test server"))

    def authorize(self, info):
        self.rule = self.server.authorize(self.user, self.groups, info)
        if self.rule is None:
            raise forbidden(self.user, info)

    # -- the aggregation layer

    def aggregated_apiservice(self, path):
        """The APIService that serves `path` (/apis/GROUP/VERSION or below) from a service of
        its own, or None: such paths are proxied to it; /apis and /apis/GROUP never are."""
        parts = path.strip("/").split("/")
        if len(parts) < 3 or parts[0] != "apis":
            return None
        with self.store.cond:
            apiservice = self.store.objects.get(apiservice_key(f"{parts[2]}.{parts[1]}"))
        if apiservice is None or not (apiservice.get("spec") or {}).get("service"):
            return None
        return apiservice

    def answer_text(self, code, text, watch=False):
        """A plain-text answer, as Go's http.Error writes it."""
        payload = (text + "\n").encode()
        self.record(code, watch)
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def proxy(self, apiservice, identity, watch, body):
        """Passes an authorized request on to the extension API server of `apiservice` as
        kube-aggregator does, as the front proxy: its client certificate, the user in
        X-Remote-* headers in place of the client's credentials, the path decoded and the query
        re-encoded as Go's proxy sends them; the answer relayed as it comes, chunk by chunk
        when it has no length. The extension's connection is closed when the client goes; all
        but a watch time out after PROXY_TIMEOUT_SECONDS."""
        self.watching = watch
        condition = available_condition(apiservice) or {}
        if condition.get("status") != "True":
            return self.answer_text(503, "service unavailable", watch)
        with self.store.cond:
            try:
                address = resolve_endpoint(self.store, apiservice["spec"]["service"])
            except Unresolvable:
                address = None
        if address is None:
            return self.answer_text(503, "service unavailable", watch)
        headers = [(k, v) for k, v in self.headers.items()
                   if k.lower() not in HOP_BY_HOP and
                   k.lower() not in ("authorization", "host", "content-length") and
                   not k.lower().startswith(("x-remote-", "impersonate-"))]
        forwarded = [v for k, v in headers if k.lower() == "x-forwarded-for"]
        headers = [(k, v) for k, v in headers if k.lower() not in ("x-forwarded-for", "audit-id")]
        headers.insert(0, ("Host", f"{address[0]}:{address[1]}"))
        headers += identity_headers(identity)
        headers += [("Audit-Id", str(uuid.uuid4())),
                    ("X-Forwarded-For", ", ".join(forwarded + [self.client_address[0]]))]
        url = urlsplit(self.path)
        target = go_path(url.path) + (f"?{go_query(url.query)}" if url.query else "")
        deadline = None if watch else time.monotonic() + PROXY_TIMEOUT_SECONDS
        try:
            upstream = Upstream(apiservice, address, self.server.options.front_proxy_client_cert,
                                self.server.options.front_proxy_client_key)
        except UpstreamError as e:
            return self.answer_text(503, f"Error trying to reach service: '{e}'", watch)
        try:
            upstream.send(self.command, target, headers, body)
            status, reason, answer_headers = upstream.read_head(deadline, self.client_gone)
            self.relay(upstream, status, reason, answer_headers, deadline, watch)
        except TimeoutError:
            if not self.responding:
                self.answer_error(ApiError(504, "Timeout", "Timeout: request did not complete "
                                                           "within the allotted timeout"), watch)
            self.close_connection = True
        except UpstreamError as e:
            if not self.responding:
                self.answer_text(503, f"Error trying to reach service: '{e}'", watch)
            self.close_connection = True
        except ClientGone:
            self.close_connection = True
        finally:
            upstream.close()

    def relay(self, upstream, status, reason, answer_headers, deadline, watch):
        """The extension's answer to the client: status and headers as they came, then the
        body; one without a length in chunks, each sent on as soon as it arrives."""
        names = {k.lower() for k, _ in answer_headers}
        chunked = "content-length" not in names
        self.record(status, watch)
        self.responding = True
        self.send_response_only(status, reason)
        for name, value in answer_headers:
            if name.lower() not in HOP_BY_HOP:
                self.send_header(name, value)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        for piece in upstream.body_pieces(self.command, status, answer_headers, deadline,
                                          self.client_gone):
            if chunked:
                self.write_chunk(piece)
            else:
                self.wfile.write(piece)
        if chunked:
            self.write_chunk(b"")

    # -- discovery

    def handle_discovery(self, path):
        if self.command != "GET":
            raise ApiError(405, "MethodNotAllowed",
                           "the server does not allow this method on the requested resource")
        if path == "/version":
            return self.answer(200, VERSION_INFO)
        if path in ("/healthz", "/livez", "/readyz"):
            body = b"ok"
            self.record(200)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        address = f"127.0.0.1:{self.server.server_address[1]}"
        if path == "/api":
            return self.answer(200, {"kind": "APIVersions", "versions": ["v1"],
                                     "serverAddressByClientCIDRs": [
                                         {"clientCIDR": "0.0.0.0/0", "serverAddress": address}]})
        groups = {}
        with self.store.cond:
            served = [(o["spec"].get("group"), o["spec"].get("version"))
                      for k, o in sorted(self.store.objects.items())
                      if k[:2] == apiservice_key("")[:2] and (o.get("spec") or {}).get("service")]
        for group, version in GROUP_VERSIONS + served:
            if group:
                gv = {"groupVersion": f"{group}/{version}", "version": version}
                groups.setdefault(group, {"name": group, "versions": [], "preferredVersion": gv})
                groups[group]["versions"].append(gv)
        if path == "/apis":
            return self.answer(200, {"kind": "APIGroupList", "apiVersion": "v1",
                                     "groups": list(groups.values())})
        parts = path.strip("/").split("/")
        if parts[0] == "apis" and len(parts) == 2 and parts[1] in groups:
            return self.answer(200, dict(kind="APIGroup", apiVersion="v1", **groups[parts[1]]))
        group, version = ("", parts[1]) if parts[0] == "api" and len(parts) == 2 else \
            (parts[1], parts[2]) if parts[0] == "apis" and len(parts) == 3 else (None, None)
        if (group, version) in GROUP_VERSIONS:
            resources = []
            for r in REVIEW_LIST:
                if (r.group, r.version) == (group, version):
                    resources.append({"name": r.plural, "singularName": r.kind.lower(),
                                      "namespaced": False, "kind": r.kind, "verbs": ["create"]})
            for r in RESOURCE_LIST:
                if (r.group, r.version) != (group, version):
                    continue
                resources.append({"name": r.plural, "singularName": r.kind.lower(),
                                  "namespaced": r.namespaced, "kind": r.kind,
                                  "verbs": ["create", "delete", "get", "list", "patch",
                                            "update", "watch"]})
                resources.append({"name": f"{r.plural}/status", "singularName": "",
                                  "namespaced": r.namespaced, "kind": r.kind,
                                  "verbs": ["get", "patch", "update"]})
            return self.answer(200, {"kind": "APIResourceList", "apiVersion": "v1",
                                     "groupVersion": f"{group}/{version}" if group else version,
                                     "resources": resources})
        raise NO_ROUTE

    # -- resources

    def handle_resource(self, info, query, body):
        review = REVIEWS.get((info.group, info.version, info.plural))
        if review is not None:
            return self.handle_review(review, info, body)
        resource = RESOURCES.get((info.group, info.version, info.plural))
        if resource is None or extra_parts(info.path) or \
           (info.subresource and info.subresource not in SUBRESOURCES):
            raise NO_ROUTE
        # Kubernetes reads /api/v1/namespaces/x as namespace x of the namespaces resource.
        namespace = info.namespace if resource.namespaced else ""
        if not resource.namespaced and info.namespace and info.plural != "namespaces":
            raise NO_ROUTE
        name = info.name
        if info.verb in ("list", "watch"):
            name = ""  # a metadata.name field selector named it for RBAC only
        if not name:
            if self.command == "GET":
                selector = Selector(query, resource)
                if info.verb == "watch":
                    return self.serve_watch(resource, namespace, selector, query)
                return self.serve_list(resource, namespace, selector)
            if self.command == "POST" and (namespace or not resource.namespaced):
                return self.create(resource, namespace, parse_json(body))
            raise ApiError(405, "MethodNotAllowed",
                           "the server does not allow this method on the requested resource")
        if resource.namespaced and not namespace:
            raise NO_ROUTE
        key = (resource.group, resource.plural, namespace, name)
        status_only = info.subresource == "status"
        if self.command == "GET":
            with self.store.cond:
                obj = self.store.objects.get(key)
            if obj is None:
                raise not_found(resource, name)
            return self.answer(200, obj)
        if self.command == "PUT":
            return self.update(resource, key, parse_json(body), status_only)
        if self.command == "PATCH":
            return self.patch(resource, key, body, status_only)
        if self.command == "DELETE" and not status_only:
            with self.store.cond:
                old = self.store.objects.get(key)
                if old is None:
                    raise not_found(resource, name)
                deleted = self.store.commit("DELETED", key, old, old)
            return self.answer(200, deleted)
        raise ApiError(405, "MethodNotAllowed",
                       "the server does not allow this method on the requested resource")

    # -- reviews

    def handle_review(self, resource, info, body):
        """A TokenReview or SubjectAccessReview: answered (201) with its status, not stored."""
        if self.command != "POST" or info.name or info.namespace or extra_parts(info.path):
            raise ApiError(405, "MethodNotAllowed",
                           "the server does not allow this method on the requested resource")
        review = self.prepare(resource, "", parse_json(body))
        spec = review.get("spec")
        if not isinstance(spec, dict):
            raise bad_request(f"spec is required for {resource.kind}")
        self.wait_for_reviews()
        if resource.plural == "tokenreviews":
            status = self.review_token(spec)
        else:
            status = self.review_access(spec)
        review["metadata"] = {"creationTimestamp": None}
        review["status"] = status
        self.answer(201, review)

    def wait_for_reviews(self):
        """Holds a review back while the test makes reviews slow (a delay lifted early lets it
        go at once), then fails it if the test made reviews unavailable."""
        store = self.store
        started = time.monotonic()
        with store.cond:
            while True:
                left = started + store.review_delay - time.monotonic()
                if left <= 0:
                    break
                store.cond.wait(left)
            unavailable = store.reviews_unavailable
        if unavailable:
            raise ApiError(503, "ServiceUnavailable",
                           "the server is currently unable to handle the request")

    def review_token(self, spec):
        token = spec.get("token")
        if not token or not isinstance(token, str):
            raise bad_request("token is required for TokenReview in authentication")
        audiences = spec.get("audiences") or []
        with self.store.cond:
            user, common, error = self.server.authenticate(token, audiences)
        self.review = {"audiences": audiences, "authenticated": user is not None}
        if user is None:
            self.review["error"] = error
            return {"user": {}, "error": error}
        self.review["user"] = user["username"]
        return {"authenticated": True, "user": user, "audiences": common}

    def review_access(self, spec):
        user, groups = spec.get("user") or "", spec.get("groups") or []
        attributes = spec.get("resourceAttributes")
        non_resource = spec.get("nonResourceAttributes")
        details = {"group": "authorization.k8s.io", "kind": "SubjectAccessReview"}
        invalid_review = 'SubjectAccessReview.authorization.k8s.io "" is invalid: '
        if not user and not groups:
            raise ApiError(422, "Invalid", invalid_review + 'spec.user: Invalid value: "": at '
                           "least one of user or group must be specified", details)
        if (attributes is None) == (non_resource is None):
            raise ApiError(422, "Invalid", invalid_review + "spec.resourceAttributes: Required "
                           "value: exactly one of nonResourceAttributes or resourceAttributes "
                           "must be specified", details)
        info = RequestInfo()
        if attributes is not None:
            info.is_resource = True
            info.path = ""
            info.namespace = attributes.get("namespace", "")
            info.verb = attributes.get("verb", "")
            info.group = attributes.get("group", "")
            info.version = attributes.get("version", "")
            info.plural = attributes.get("resource", "")
            info.subresource = attributes.get("subresource", "")
            info.name = attributes.get("name", "")
        else:
            info.path = non_resource.get("path", "")
            info.verb = non_resource.get("verb", "")
        rule = self.server.authorize(user, groups, info)
        self.review = {"user": user, "groups": groups, "extra": spec.get("extra") or {},
                       "allowed": rule is not None, "rule": rule or ""}
        if attributes is not None:
            self.review["resourceAttributes"] = attributes
        else:
            self.review["nonResourceAttributes"] = non_resource
        if rule is None:
            return {"allowed": False}
        return {"allowed": True, "reason": f"RBAC: allowed by {rule}" if rule else ""}

    def serve_list(self, resource, namespace, selector):
        with self.store.cond:
            rv = self.store.rv
            items = [o for k, o in sorted(self.store.objects.items())
                     if k[:2] == resource.key and (not namespace or k[2] == namespace)
                     and selector.matches(o)]
        # The real API leaves kind and apiVersion out of list items.
        items = [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")} for o in items]
        self.answer(200, {"kind": f"{resource.kind}List", "apiVersion": resource.api_version,
                          "metadata": {"resourceVersion": str(rv)}, "items": items})

    def prepare(self, resource, namespace, obj):
        if not isinstance(obj, dict):
            raise bad_request("the body of the request must be a JSON object")
        kind = obj.get("kind")
        if kind is not None and kind != resource.kind or \
           obj.get("apiVersion") not in (None, resource.api_version):
            raise bad_request(f"the API version in the data ({obj.get('apiVersion')}) does not "
                              f"match the expected API version ({resource.api_version}) or kind "
                              f"({kind}) the expected kind ({resource.kind})")
        obj = copy.deepcopy(obj)
        obj.pop("kind", None)
        obj.pop("apiVersion", None)
        obj = {"kind": resource.kind, "apiVersion": resource.api_version, **obj}
        metadata = obj.setdefault("metadata", {})
        if not isinstance(metadata, dict):
            raise bad_request("metadata must be an object")
        if resource.namespaced:
            if metadata.get("namespace", namespace) != namespace:
                raise bad_request("the namespace of the provided object does not match the "
                                  "namespace sent on the request")
            metadata["namespace"] = namespace
        else:
            metadata.pop("namespace", None)
        return obj

    def create(self, resource, namespace, obj):
        obj = self.prepare(resource, namespace, obj)
        metadata = obj["metadata"]
        if not metadata.get("name") and metadata.get("generateName"):
            alphabet = "bcdfghjklmnpqrstvwxz2456789"
            metadata["name"] = metadata["generateName"] + \
                "".join(secrets.choice(alphabet) for _ in range(5))
        name = metadata.get("name")
        if not name:
            raise invalid(resource, "", "metadata.name: Required value: name or generateName is "
                                        "required")
        metadata.pop("resourceVersion", None)
        metadata["uid"] = str(uuid.uuid4())
        metadata["creationTimestamp"] = now_timestamp()
        metadata["generation"] = 1
        if resource.plural == "pods":
            obj.setdefault("status", {}).setdefault("phase", "Pending")
        if resource.plural == "namespaces":
            obj.setdefault("status", {}).setdefault("phase", "Active")
        key = (resource.group, resource.plural, namespace, name)
        with self.store.cond:
            if key in self.store.objects:
                raise ApiError(409, "AlreadyExists",
                               f'{resource.group_resource} "{name}" already exists',
                               error_details(resource, name))
            created = self.store.commit("ADDED", key, obj, None)
        if resource.plural == "apiservices":
            probe_in_background(self.server, name)
        self.answer(201, created)

    def store_update(self, resource, key, old, new, status_only):
        """Stores `new` in place of `old` (both whole objects) and answers. Fields the client
        cannot change keep their stored values; an update that changes nothing is not a
        change (no new resourceVersion), as in Kubernetes."""
        new = self.prepare(resource, key[2], new)
        metadata = new["metadata"]
        given_rv = metadata.get("resourceVersion")
        if given_rv and given_rv != old["metadata"]["resourceVersion"]:
            raise conflict(resource, key[3])
        if metadata.get("name", key[3]) != key[3]:
            raise bad_request("the name of the object does not match the name on the URL")
        if status_only:
            # The status subresource changes the status and nothing else.
            status = new.get("status")
            new = copy.deepcopy(old)
            if status is None:
                new.pop("status", None)
            else:
                new["status"] = status
            metadata = new["metadata"]
        for field in ("name", "uid", "creationTimestamp", "generation", "resourceVersion"):
            if field in old["metadata"]:
                metadata[field] = old["metadata"][field]
        if resource.namespaced:
            metadata["namespace"] = key[2]
        if new == old:
            return self.answer(200, old)
        if {k: v for k, v in new.items() if k not in ("metadata", "status")} != \
           {k: v for k, v in old.items() if k not in ("metadata", "status")}:
            metadata["generation"] = old["metadata"].get("generation", 1) + 1
        stored = self.store.commit("MODIFIED", key, new, old)
        if resource.plural == "apiservices" and not status_only:
            probe_in_background(self.server, key[3])
        self.answer(200, stored)

    def update(self, resource, key, obj, status_only):
        with self.store.cond:
            old = self.store.objects.get(key)
            if old is None:
                raise not_found(resource, key[3])
            self.store_update(resource, key, old, obj, status_only)

    def patch(self, resource, key, body, status_only):
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip()
        if content_type not in ("application/merge-patch+json",
                                "application/strategic-merge-patch+json",
                                "application/json-patch+json"):
            raise ApiError(415, "UnsupportedMediaType",
                           "the body of the request was in an unknown format - accepted media "
                           "types include: application/json-patch+json, "
                           "application/merge-patch+json, application/apply-patch+yaml, "
                           "application/strategic-merge-patch+json")
        patch = parse_json(body)
        with self.store.cond:
            old = self.store.objects.get(key)
            if old is None:
                raise not_found(resource, key[3])
            if content_type == "application/json-patch+json":
                try:
                    new = json_patch(old, patch)
                except JsonPatchError as e:
                    raise ApiError(422, "Invalid", f"the server rejected our request due to an "
                                                   f"error in our request: {e}")
            else:
                if not isinstance(patch, dict):
                    raise bad_request("a merge patch must be a JSON object")
                new = merge_patch(old, patch, content_type.startswith("application/strategic"))
            # A resourceVersion left unchanged by the patch is not a precondition.
            if new.get("metadata", {}).get("resourceVersion") == old["metadata"]["resourceVersion"]:
                new = copy.deepcopy(new)
                new["metadata"].pop("resourceVersion", None)
            self.store_update(resource, key, old, new, status_only)

    # -- watch

    def write_chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def write_event(self, type_, obj):
        self.write_chunk(to_json({"type": type_, "object": obj}) + b"\n")

    def client_gone(self):
        """True if the client closed the connection (or sent something: it may not while
        streaming)."""
        sock = self.connection
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return True
        if not readable:
            return False
        previous = sock.gettimeout()
        try:
            sock.settimeout(0)
            sock.recv(1)
            return True
        except (ssl.SSLWantReadError, BlockingIOError):
            return False
        except OSError:
            return True
        finally:
            try:
                sock.settimeout(previous)
            except OSError:
                pass

    def serve_watch(self, resource, namespace, selector, query):
        self.watching = True
        store = self.store
        options = self.server.options
        try:
            timeout = float(query_value(query, "timeoutSeconds") or 0)
        except ValueError:
            raise bad_request("timeoutSeconds must be a number")
        # As in Kubernetes, no timeout (or 0) means the server's own limit.
        timeout = min(timeout, options.max_watch_seconds) if timeout > 0 else \
            options.max_watch_seconds
        bookmarks = query_bool(query, "allowWatchBookmarks")
        rv_text = query_value(query, "resourceVersion")
        if rv_text not in ("", "0") and not rv_text.isdigit():
            raise bad_request(f'resourceVersion: Invalid value: "{rv_text}": must be an integer')
        with store.cond:
            store.open_watches += 1
            generation = store.close_generation
        try:
            self.stream_watch(resource, namespace, selector, rv_text, timeout, bookmarks,
                              generation)
        except (ConnectionError, TimeoutError, ssl.SSLError, OSError):
            self.close_connection = True
        finally:
            with store.cond:
                store.open_watches -= 1

    def stream_watch(self, resource, namespace, selector, rv_text, timeout, bookmarks, generation):
        store = self.store
        # A stalled server answers nothing at all, not even the response headers.
        while True:
            with store.cond:
                if store.close_generation != generation:
                    self.close_connection = True
                    return
                if not store.stalled:
                    break
                store.cond.wait(WATCH_TICK_SECONDS)
            if self.client_gone():
                self.close_connection = True
                return
        with store.cond:
            gone, pending = None, []
            if rv_text in ("", "0"):
                position = store.rv
                pending = [("ADDED", o) for k, o in sorted(store.objects.items())
                           if k[:2] == resource.key and (not namespace or k[2] == namespace)
                           and selector.matches(o)]
            elif int(rv_text) <= store.expired_at:
                gone = status_object(410, "Expired", f"too old resource version: {rv_text} "
                                                     f"({store.expired_at + 1})")
                gone_mode = store.gone_mode
            else:
                position = int(rv_text)
        if gone is not None and gone_mode == "status":
            return self.answer(410, gone, watch=True)
        self.record(200, watch=True)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Audit-Id", str(uuid.uuid4()))
        self.end_headers()
        if gone is not None:
            self.write_event("ERROR", gone)
            self.write_chunk(b"")
            return
        started = time.monotonic()
        deadline = started + timeout
        next_bookmark = started + store.bookmark_interval
        while True:
            with store.cond:
                if store.close_generation != generation:
                    # Ends the response properly, then drops the connection.
                    self.write_chunk(b"")
                    self.close_connection = True
                    return
                stalled = store.stalled
                events, due = [], False
                if not stalled:
                    events = pending + self.changes_after(position, resource, namespace, selector)
                    pending = []
                    position = store.rv
                    now = time.monotonic()
                    due = bookmarks and now >= next_bookmark
                    if due:
                        next_bookmark = now + store.bookmark_interval
            for type_, obj in events:
                self.write_event(type_, obj)
            if due:
                self.write_event("BOOKMARK", {"kind": resource.kind,
                                              "apiVersion": resource.api_version,
                                              "metadata": {"resourceVersion": str(position)}})
            # A stalled stream stays open past its timeout: it ends once the stall does.
            if not stalled and time.monotonic() >= deadline:
                self.write_chunk(b"")
                return
            if self.client_gone():
                self.close_connection = True
                return
            with store.cond:
                if store.close_generation == generation and \
                        (store.stalled or not store.history_after(position)):
                    store.cond.wait(WATCH_TICK_SECONDS)

    def changes_after(self, position, resource, namespace, selector):
        """The events a watch sees for changes after `position`. Called with the lock held."""
        history = self.store.history
        low, high = 0, len(history)
        while low < high:  # the first change after `position`
            middle = (low + high) // 2
            if history[middle].rv <= position:
                low = middle + 1
            else:
                high = middle
        events = []
        for change in history[low:]:
            if change.key[:2] != resource.key or (namespace and change.key[2] != namespace):
                continue
            now_matches = selector.matches(change.obj)
            if change.type == "MODIFIED":
                before = selector.matches(change.old)
                if now_matches and not before:
                    events.append(("ADDED", change.obj))
                elif before and not now_matches:
                    events.append(("DELETED", change.obj))
                elif now_matches:
                    events.append(("MODIFIED", change.obj))
            elif now_matches:
                events.append((change.type, change.obj))
        return events

    # -- control

    def handle_control(self, path, body):
        store = self.store
        request = parse_json(body) if body else {}
        command = (self.command, path)
        if command == ("POST", "/_test/expire-history"):
            mode = request.get("mode", "status")
            if mode not in ("status", "event"):
                raise bad_request('mode must be "status" or "event"')
            with store.cond:
                store.expired_at = store.rv
                store.gone_mode = mode
                store.rv += 1
                store.save()
                return self.answer(200, {"expiredAt": str(store.expired_at),
                                         "resourceVersion": str(store.rv)})
        if command == ("POST", "/_test/stall-watches"):
            with store.cond:
                store.stalled = bool(request.get("stalled", True))
                store.cond.notify_all()
            return self.answer(200, {"stalled": store.stalled})
        if command == ("POST", "/_test/close-watches"):
            with store.cond:
                store.close_generation += 1
                store.cond.notify_all()
            return self.answer(200, {})
        if command == ("POST", "/_test/tokens"):
            with store.cond:
                signing_key = self.server.options.admin_token.encode()
                token, record = issue_token(request, store, signing_key)
                store.tokens[token] = record
                store.revoked.discard(token)
                store.save()
            answer = {"token": token, "user": record["user"]}
            if "exp" in record:
                answer["expirationTimestamp"] = timestamp(record["exp"])
            return self.answer(200, answer)
        if command == ("POST", "/_test/reviews"):
            delay = request.get("delaySeconds", 0)
            if not isinstance(delay, (int, float)) or delay < 0:
                raise bad_request("delaySeconds must be a number, 0 or more")
            with store.cond:
                store.review_delay = float(delay)
                store.reviews_unavailable = bool(request.get("unavailable", False))
                store.cond.notify_all()
            return self.answer(200, {})
        if self.command == "DELETE" and path.startswith("/_test/tokens/"):
            token = path[len("/_test/tokens/"):]
            with store.cond:
                store.tokens.pop(token, None)
                store.revoked.add(token)
                store.save()
            return self.answer(200, {})
        if command == ("GET", "/_test/requests"):
            with store.cond:
                requests = list(store.requests)
            return self.answer(200, {"requests": requests})
        if command == ("DELETE", "/_test/requests"):
            with store.cond:
                store.requests.clear()
            return self.answer(200, {})
        if command == ("POST", "/_test/bookmark-interval"):
            with store.cond:
                store.bookmark_interval = float(request["seconds"])
            return self.answer(200, {})
        if command == ("GET", "/_test/rbac"):
            rbac = self.server.rbac
            with store.cond:
                rules = [{"rule": r, "uses": n} for r, n in (rbac.uses.items() if rbac else [])]
            return self.answer(200, {"rules": rules})
        match = re.match(r"^/_test/apiservices/([^/]+)/probe$", path)
        if match and self.command in ("GET", "POST"):
            name = match.group(1)
            if self.command == "POST":
                return self.answer(200, probe_apiservice(self.server, name))
            with store.cond:
                record = store.probes.get(name)
            if record is None:
                raise ApiError(404, "NotFound", f"APIService {name} has not been probed")
            return self.answer(200, record)
        if command == ("GET", "/_test/watches"):
            with store.cond:
                return self.answer(200, {"open": store.open_watches})
        raise NO_ROUTE


TRUST_KEY = ("", "configmaps", "kube-system", "extension-apiserver-authentication")


def publish_authentication_trust(store, options):
    """Writes kube-system/extension-apiserver-authentication as kube-apiserver's
    cluster-authentication-trust controller does: who the front proxy is and which headers
    carry the user, for extension API servers to read. Lists are JSON arrays in strings.
    Left as it is when already so (after a restart)."""
    def read(path):
        with open(path) as f:
            return f.read()
    data = {
        "requestheader-client-ca-file": read(options.front_proxy_ca),
        "requestheader-allowed-names": json.dumps(options.front_proxy_allowed_name),
        "requestheader-username-headers": '["X-Remote-User"]',
        "requestheader-uid-headers": "[]",
        "requestheader-group-headers": '["X-Remote-Group"]',
        "requestheader-extra-headers-prefix": '["X-Remote-Extra-"]',
    }
    if options.client_ca:
        data["client-ca-file"] = read(options.client_ca)
    with store.cond:
        old = store.objects.get(TRUST_KEY)
        if old is not None and old.get("data") == data:
            return
        metadata = {"name": TRUST_KEY[3], "namespace": TRUST_KEY[2]}
        trust = {"kind": "ConfigMap", "apiVersion": "v1", "metadata": metadata, "data": data}
        if old is not None:
            metadata.update({k: old["metadata"][k] for k in ("uid", "creationTimestamp")})
            store.commit("MODIFIED", TRUST_KEY, trust, old)
            return
        # There from the start: at the first resourceVersion, which no change has taken.
        metadata.update(uid=str(uuid.uuid4()), creationTimestamp=now_timestamp(),
                        resourceVersion=str(store.rv))
        store.objects[TRUST_KEY] = trust
        store.save()


def to_json(value):
    return json.dumps(value, separators=(",", ":")).encode()


def parse_json(body):
    try:
        return json.loads(body or b"null")
    except ValueError as e:
        raise bad_request(f"the body of the request is not valid JSON: {e}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cert", required=True, help="server certificate (PEM)")
    parser.add_argument("--key", required=True, help="its private key (PEM)")
    parser.add_argument("--admin-token", required=True)
    parser.add_argument("--tokens", help='JSON file {"token": "username"}, re-read on change')
    parser.add_argument("--rbac", help="JSON list of RBAC objects; without it, no authorization")
    parser.add_argument("--state", help="file the objects and tokens are kept in across restarts")
    parser.add_argument("--seed", help="objects to start with, in the state file's form; "
                        "never written")
    parser.add_argument("--ready-file", help="the port is written here once listening")
    parser.add_argument("--client-ca", help="the CA of client certificates (PEM), published as "
                        "client-ca-file")
    parser.add_argument("--front-proxy-ca", help="the CA of the front proxy's client certificate "
                        "(PEM): the extension-apiserver-authentication ConfigMap is published")
    parser.add_argument("--front-proxy-allowed-name", action="append", default=[],
                        help="a common name the front proxy's certificate may have (repeat)")
    parser.add_argument("--front-proxy-client-cert", help="the front proxy's client certificate "
                        "(PEM): what the aggregation layer presents to extension API servers")
    parser.add_argument("--front-proxy-client-key", help="its private key (PEM)")
    parser.add_argument("--bookmark-interval", type=float, default=1.0)
    parser.add_argument("--max-watch-seconds", type=float, default=1800.0)
    options = parser.parse_args()

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(options.cert, options.key)
    store = Store(options.state, options.bookmark_interval)
    if options.seed:
        store.seed(options.seed)
    if options.front_proxy_ca:
        publish_authentication_trust(store, options)
    server = Server(("127.0.0.1", options.port), context, store, options)
    # A restart leaves APIServices as they were; the availability controller checks them.
    for key in [k for k in store.objects if k[:2] == apiservice_key("")[:2]]:
        probe_in_background(server, key[3])
    threading.Thread(target=recheck_unavailable, args=(server,), daemon=True).start()
    port = server.server_address[1]
    if options.ready_file:
        temporary = options.ready_file + ".tmp"
        with open(temporary, "w") as f:
            f.write(f"{port}\n")
        os.replace(temporary, options.ready_file)
    log(f"listening on https://127.0.0.1:{port} (resourceVersion {store.rv})")
    server.serve_forever()


if __name__ == "__main__":
    main()
