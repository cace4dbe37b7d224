"""LocalStack ready hook: create the SQS queues of template.yaml, as `notify-local` does.

LocalStack runs each ``*.py`` in /etc/localstack/init/ready.d with ``exec`` inside its own Python
once its gateway is up (docker-compose.yml mounts this folder there and the repository at
/opt/notify). The queues, their attributes and redrive policies come from the same code the local
runtime and the tests use (localdev/notify_local/stack.py: Stack.create_queues), with parameter
overrides from local.env, so there is no second list of resources to keep in step. Creating a queue
that exists with the same attributes is a no-op, so `notify-local` can start against this LocalStack
afterwards.

Environment: NOTIFY_PROJECT_DIR (/opt/notify), NOTIFY_STACK_NAME (notify-local, as the runtime's
default --stack-name), NOTIFY_SQS_ENDPOINT (http://localhost:4566, LocalStack seen from inside).
"""

import importlib
import importlib.util
import os
import sys
from pathlib import Path

import boto3


def _import_notify_local(project: Path) -> None:
    """Import localdev/notify_local as a package without adding anything to sys.path."""
    package_dir = project / "localdev" / "notify_local"
    spec = importlib.util.spec_from_file_location(
        "notify_local", package_dir / "__init__.py", submodule_search_locations=[str(package_dir)]
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import notify_local from {package_dir}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["notify_local"] = module
    spec.loader.exec_module(module)


def create_queues() -> None:
    project = Path(os.environ.get("NOTIFY_PROJECT_DIR", "/opt/notify"))
    stack_name = os.environ.get("NOTIFY_STACK_NAME", "notify-local")
    endpoint = os.environ.get("NOTIFY_SQS_ENDPOINT", "http://localhost:4566")
    _import_notify_local(project)
    overrides = importlib.import_module("notify_local.overrides")
    stack_module = importlib.import_module("notify_local.stack")

    template = project / "template.yaml"
    parameters = list(stack_module.Stack.load(stack_name, {}, template).template.get("Parameters", {}))
    local = overrides.read_overrides(project / "local.env", parameters)
    stack = stack_module.Stack.load(stack_name, local.parameters, template)
    sqs = boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        aws_access_key_id="test",
        aws_secret_access_key="test",  # noqa: S106 - LocalStack accepts any credentials
    )
    for queue in stack.create_queues(sqs).values():
        print(f"notify: queue {queue.name} ready ({queue.url})", flush=True)


create_queues()
