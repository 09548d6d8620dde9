"""The review API under ``{prefix}api/review/`` (rules in :mod:`.access`).

``GET review/worklist`` · ``GET review/jobs/{id}`` · ``POST|DELETE review/jobs/{id}/claim``
(``{"force": bool}``) · ``GET|PUT|DELETE review/jobs/{id}/draft`` (``application/octet-stream``)
· ``GET review/jobs/{id}/proposals/{n}/labels`` · ``GET review/statistics``. Decisions go
through the tasks API (``POST api/jobs/{id}/decide``). Every call is audited.
"""

from __future__ import annotations

import logging
from typing import Any

from medimg_hub.pipeline.access import TaskAccessError
from medimg_hub.pipeline.api import TasksHandler
from medimg_hub.review.access import ClaimConflict

log = logging.getLogger(__name__)

_JOB = r"([0-9a-f-]{36})"


class ReviewHandler(TasksHandler):
    """Base of the review handlers: refusals that hide existence (403/404) keep fixed bodies;
    conflicts about a job the caller may see (409, 413, 400) say what is wrong."""

    async def review(self, fn: Any, *args: Any) -> Any:
        try:
            return await self.ctx.run(fn, self.user, *args)
        except ClaimConflict as exc:
            self.audit_fields["detail"] = f"claimed by {exc.claim.get('actor')}"
            self.set_status(409)
            self.write_json({"error": str(exc), "claim": exc.claim})
            return None
        except TaskAccessError as exc:
            self.audit_fields["dataset"] = exc.dataset
            if exc.status in (401, 403, 404):
                self.refuse(exc.status, exc.detail)
            self.audit_fields["detail"] = exc.detail
            self.set_status(exc.status)
            self.write_json({"error": exc.detail})
            return None


class WorklistHandler(ReviewHandler):
    route = "api:review:worklist"

    async def get(self) -> None:
        self.action = "review.worklist"
        items = await self.review(self.ctx.review.worklist)
        self.audit_fields["detail"] = f"{len(items)} jobs"
        self.write_json(items)


class ReviewJobHandler(ReviewHandler):
    route = "api:review:job"

    async def get(self, job_id: str) -> None:
        self.action = "review.show"
        self.audit_fields["detail"] = f"job {job_id}"
        item = await self.review(self.ctx.review.item, job_id)
        if item is not None:
            self.audit_fields.update(dataset=item["dataset"], study=item["study_instance_uid"],
                                     series=item["series_instance_uid"])
            self.write_json(item)


class ClaimHandler(ReviewHandler):
    route = "api:review:claim"

    async def post(self, job_id: str) -> None:
        body = self.body()
        force = body.get("force") is True
        self.action = "review.takeover" if force else "review.claim"
        self.audit_fields["detail"] = f"job {job_id}"
        result = await self.review(self.ctx.review.claim, job_id, force)
        if result is not None:
            claim, self.audit_fields["dataset"] = result
            self.write_json(claim)

    async def delete(self, job_id: str) -> None:
        self.action = "review.release"
        self.audit_fields["detail"] = f"job {job_id}"
        dataset = await self.review(self.ctx.review.release, job_id)
        self.audit_fields["dataset"] = dataset
        self.set_status(204)


class DraftHandler(ReviewHandler):
    route = "api:review:draft"

    async def get(self, job_id: str) -> None:
        self.action = "review.draft.get"
        self.audit_fields["detail"] = f"job {job_id}"
        result = await self.review(self.ctx.review.get_draft, job_id)
        if result is not None:
            payload, updated_at, self.audit_fields["dataset"] = result
            self.set_header("Content-Type", "application/octet-stream")
            self.set_header("X-Draft-Updated-At", updated_at)
            self.bytes_out = len(payload)
            self.write(payload)

    async def put(self, job_id: str) -> None:
        self.action = "review.draft.save"
        payload = self.request.body or b""
        self.bytes_in = len(payload)
        self.audit_fields["detail"] = f"job {job_id}, {len(payload)} bytes"
        result = await self.review(self.ctx.review.put_draft, job_id, payload)
        if result is not None:
            updated_at, self.audit_fields["dataset"] = result
            self.write_json({"updated_at": updated_at})

    async def delete(self, job_id: str) -> None:
        self.action = "review.draft.delete"
        self.audit_fields["detail"] = f"job {job_id}"
        self.audit_fields["dataset"] = await self.review(self.ctx.review.delete_draft, job_id)
        self.set_status(204)


class ProposalLabelsHandler(ReviewHandler):
    route = "api:review:proposal"

    async def get(self, job_id: str, proposal_id: str) -> None:
        self.action = "review.proposal.labels"
        self.audit_fields["detail"] = f"job {job_id}, proposal {proposal_id}"
        result = await self.review(self.ctx.review.proposal_mask, job_id, int(proposal_id))
        if result is not None:
            payload, self.audit_fields["dataset"] = result
            self.set_header("Content-Type", "application/octet-stream")
            self.bytes_out = len(payload)
            self.write(payload)


class StatisticsHandler(ReviewHandler):
    route = "api:review:statistics"

    async def get(self) -> None:
        self.action = "review.statistics"
        rows = await self.review(self.ctx.review.statistics)
        self.audit_fields["detail"] = f"{len(rows)} decisions"
        self.write_json(rows)


default_handlers = [
    (r"api/review/worklist/?", WorklistHandler),
    (rf"api/review/jobs/{_JOB}/?", ReviewJobHandler),
    (rf"api/review/jobs/{_JOB}/claim/?", ClaimHandler),
    (rf"api/review/jobs/{_JOB}/draft/?", DraftHandler),
    (rf"api/review/jobs/{_JOB}/proposals/([0-9]{{1,9}})/labels/?", ProposalLabelsHandler),
    (r"api/review/statistics/?", StatisticsHandler),
]
