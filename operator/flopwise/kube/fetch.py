"""Read one TrainingCampaign from a cluster, for the commands people run against it (`flopwise status NS/NAME`,
`flopwise report NS/NAME`): one GET of the object, its spec and status parsed with the API models. Read-only:
it needs `get` on trainingcampaigns and nothing else.

Credentials: `--kubeconfig FILE`, else $KUBECONFIG or ~/.kube/config, else the in-cluster service account (a
command run in a Pod). Every failure becomes one line that says what to fix, never a traceback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from flopwise.api.load import describe
from flopwise.api.spec import GROUP, PLURAL, VERSION, TrainingCampaignSpec
from flopwise.api.status import TrainingCampaignStatus

_NAME = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
REF = re.compile(rf"^(?P<namespace>{_NAME})/(?P<name>{_NAME})$")


class FetchError(ValueError):
    """The campaign could not be read; the message says why and what to do."""


@dataclass(frozen=True)
class ClusterCampaign:
    namespace: str
    name: str
    spec: TrainingCampaignSpec
    status: TrainingCampaignStatus

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


def parse_ref(text: str) -> tuple[str, str] | None:
    """`research/llm-50k` → ('research', 'llm-50k'); None when ``text`` is not a NAMESPACE/NAME reference."""
    match = REF.match(text)
    return (match["namespace"], match["name"]) if match else None


def api_client(kubeconfig: str | None = None) -> Any:
    """A Kubernetes ApiClient: the kubeconfig given, else the default one, else the in-cluster account."""
    from kubernetes import client, config

    if kubeconfig:
        try:
            return config.new_client_from_config(config_file=kubeconfig)
        except (config.ConfigException, OSError) as error:
            raise FetchError(f"--kubeconfig {kubeconfig}: {error}") from None
    try:
        return config.new_client_from_config()
    except (config.ConfigException, OSError):
        pass
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        raise FetchError("no cluster credentials: give --kubeconfig FILE, set $KUBECONFIG, or run inside a Pod "
                         "with a service account") from None
    return client.ApiClient(configuration)


def fetch_campaign(namespace: str, name: str, *, kubeconfig: str | None = None) -> ClusterCampaign:
    """GET the campaign and parse its spec and status (a status the operator has not written yet is empty)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    api = client.CustomObjectsApi(api_client(kubeconfig))
    try:
        body = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, _request_timeout=30)
    except ApiException as error:
        if error.status == 404:
            raise FetchError(f"trainingcampaign {namespace}/{name} not found (is the CRD installed and the name "
                             "right? `kubectl get tc -A` lists them)") from None
        if error.status in (401, 403):
            raise FetchError(f"not allowed to read trainingcampaign {namespace}/{name} ({error.status} "
                             f"{error.reason}): it needs `get` on trainingcampaigns.{GROUP}") from None
        raise FetchError(f"reading trainingcampaign {namespace}/{name}: {error.status} {error.reason}") from None
    except HTTPError as error:
        raise FetchError(f"cannot reach the API server: {error}") from None
    try:
        spec = TrainingCampaignSpec.model_validate(body.get("spec") or {})
        status = TrainingCampaignStatus.model_validate(body.get("status") or {})
    except ValidationError as error:
        raise FetchError(f"trainingcampaign {namespace}/{name} does not match this flopwise's API "
                         f"({'; '.join(describe(error)[:3])}): use the flopwise version its operator runs") from None
    return ClusterCampaign(namespace=namespace, name=name, spec=spec, status=status)
