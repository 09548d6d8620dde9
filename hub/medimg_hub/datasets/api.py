"""The datasets API under ``{prefix}api/datasets`` (hub admins only; every call audited).

``GET datasets`` · ``POST datasets`` (``{"name", "description", "institution"}``) ·
``GET|PATCH datasets/{name}`` (``{"name": new name, "description"}``) ·
``POST datasets/{name}/studies`` and ``POST datasets/{name}/studies/remove``
(``{"study_uids": [...]}``) · ``POST datasets/{name}/grants`` (``{"group", "right"}``) ·
``DELETE datasets/{name}/grants/{group}/{right}`` · ``POST datasets/{name}/rules``
(``{"query": {"Attribute": "value"}}``) · ``DELETE datasets/rules/{id}`` · ``GET datasets-unassigned``.

Refusals say what is wrong (400 malformed, 404 unknown dataset or rule, 409 a name taken or an
open review) and change nothing. The operations live in :mod:`.operations`, shared with the
admin page and the CLI.
"""

from __future__ import annotations

from typing import Any

from medimg_hub.datasets.administration import DatasetAdminError
from medimg_hub.platform_api.base import PlatformHandler

_NAME = r"([A-Za-z0-9][A-Za-z0-9._-]{0,63})"


class DatasetsHandler(PlatformHandler):
    """Base: admins only, :class:`DatasetAdminError` as a clear answer."""

    action = "dataset.admin"

    async def prepare(self) -> None:
        await super().prepare()
        if not self.user.admin:
            self.refuse(403, "datasets are administered by hub admins")

    async def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run an operation in a thread as this admin; a refusal answers its status with the reason."""
        try:
            return await self.ctx.run(lambda: fn(*args, actor=self.user.name, groups=self.user.groups, **kwargs))
        except DatasetAdminError as exc:
            self.audit_fields["detail"] = str(exc)
            self.set_status(exc.status)
            self.write_json({"error": str(exc)})
            return None


class DatasetListHandler(DatasetsHandler):
    route = "api:datasets"

    async def get(self) -> None:
        self.action = "dataset.list"
        views = await self.ctx.run(self.ctx.datasets.admin.list)
        self.audit_fields["detail"] = f"{len(views)} datasets"
        self.write_json([v.as_json() for v in views])

    async def post(self) -> None:
        body = self.body()
        self.audit_fields["dataset"] = str(body.get("name", ""))[:128]
        view = await self.call(self.ctx.datasets.admin.create, body.get("name", ""),
                               description=str(body.get("description", "")),
                               institution=str(body.get("institution", "")))
        if view is not None:
            self.set_status(201)
            self.write_json(view.as_json())


class DatasetHandler(DatasetsHandler):
    route = "api:dataset"

    async def get(self, name: str) -> None:
        self.action = "dataset.show"
        self.audit_fields["dataset"] = name
        view = await self.call(lambda **_: self.ctx.datasets.admin.get(name))
        if view is not None:
            self.write_json(view.as_json())

    async def patch(self, name: str) -> None:
        body = self.body()
        self.audit_fields["dataset"] = name
        result = await self.call(self.ctx.datasets.update, name, new_name=body.get("name"),
                                 description=body.get("description"))
        if result is not None:
            self.write_json(result)


class StudiesHandler(DatasetsHandler):
    route = "api:dataset:studies"

    async def post(self, name: str, remove: str | None = None) -> None:
        body = self.body()
        self.audit_fields["dataset"] = name
        uids = body.get("study_uids")
        if not isinstance(uids, list) or not uids:
            self.refuse(400, "study_uids must be a non-empty list of StudyInstanceUIDs")
        if remove:
            removed = await self.call(self.ctx.datasets.admin.remove_studies, name, uids)
            if removed is not None:
                self.write_json({"removed": removed})
            return
        membership = await self.call(self.ctx.datasets.admin.add_studies, name, uids)
        if membership is not None:
            self.write_json(membership.as_json())


class GrantsHandler(DatasetsHandler):
    route = "api:dataset:grants"

    async def post(self, name: str) -> None:
        body = self.body()
        self.audit_fields["dataset"] = name
        added = await self.call(self.ctx.datasets.grant, name, str(body.get("group", "")), str(body.get("right", "")))
        if added is not None:
            self.set_status(201 if added else 200)
            self.write_json({"granted": added})

    async def delete(self, name: str, group: str, right: str) -> None:
        self.audit_fields["dataset"] = name
        removed = await self.call(self.ctx.datasets.admin.revoke, name, group, right)
        if removed is not None:
            self.write_json({"revoked": removed})


class RulesHandler(DatasetsHandler):
    route = "api:dataset:rules"

    async def post(self, name: str) -> None:
        body = self.body()
        self.audit_fields["dataset"] = name
        query = body.get("query")
        if not isinstance(query, dict):
            self.refuse(400, 'query must be an object of DICOM attribute filters, e.g. {"StudyDescription": "LIVER*"}')
        result = await self.call(self.ctx.datasets.add_rule, name, query)
        if result is not None:
            rule_id, membership = result
            self.set_status(201)
            self.write_json({"id": rule_id, **membership.as_json()})

    async def delete(self, rule_id: str) -> None:
        done = await self.call(self.ctx.datasets.admin.remove_rule, int(rule_id))
        if done is not None:
            self.write_json({"removed": done})


class UnassignedHandler(DatasetsHandler):
    route = "api:datasets:unassigned"

    async def get(self) -> None:
        self.action = "dataset.unassigned"
        studies = await self.call(lambda **_: self.ctx.datasets.unassigned())
        if studies is not None:
            self.audit_fields["detail"] = f"{len(studies)} studies"
            self.write_json(studies)


default_handlers = [
    (r"api/datasets/?", DatasetListHandler),
    (r"api/datasets-unassigned/?", UnassignedHandler),
    (r"api/datasets/rules/([0-9]{1,12})", RulesHandler),
    (rf"api/datasets/{_NAME}/?", DatasetHandler),
    (rf"api/datasets/{_NAME}/studies(/remove)?", StudiesHandler),
    (rf"api/datasets/{_NAME}/grants", GrantsHandler),
    (rf"api/datasets/{_NAME}/grants/([^/]{{1,128}})/([a-z]{{1,16}})", GrantsHandler),
    (rf"api/datasets/{_NAME}/rules", RulesHandler),
]
