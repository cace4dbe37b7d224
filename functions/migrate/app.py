"""Database migrations on deploy: a CloudFormation custom resource (Custom::DatabaseMigrations)
whose Create/Update applies pending migrations before the other functions are updated."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from notify_core import custom_resource, db
from notify_core.config import get_settings
from notify_core.observability import logger

get_settings()  # a wrong setting fails the cold start


def migrate(event: dict[str, Any]) -> dict[str, Any]:
    applied = db.migrate()
    logger.info("migrations applied", extra={"applied": applied})
    return {"Applied": ",".join(applied) or "none"}


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> str:
    return custom_resource.handle(event, migrate)
