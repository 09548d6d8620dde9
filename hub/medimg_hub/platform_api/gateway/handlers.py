"""The DICOMweb gateway: QIDO-RS filtered to the caller's datasets, WADO-RS and STOW-RS checked
against their grants, everything forwarded to Orthanc with the hub-side credentials and audited.

Routes (below ``/services/platform/``): ``dicom-web/studies``, ``dicom-web/series``,
``dicom-web/instances`` and every QIDO/WADO/STOW resource below ``dicom-web/studies/{uid}``
(metadata, frames, rendered included). Rules:

* QIDO-RS returns only results in studies of datasets the caller may ``read``. The query sent to
  Orthanc is restricted to those StudyInstanceUIDs (a UID list, so ``limit``/``offset`` stay
  exact); when the list would be too long for a URL the gateway fetches without paging, filters
  and pages itself. Results are filtered again by StudyInstanceUID either way.
* WADO-RS: the study in the path must be in a dataset the caller may ``read``; otherwise 403,
  the same body whether or not the study exists. The response is streamed.
* STOW-RS: every instance's study must be in a dataset the caller may ``write``; a new study
  joins the dataset named by ``?dataset=`` or, by default, the one of its InstitutionName, and
  must not exist in Orthanc outside every dataset. Otherwise 403 and nothing is stored.
"""

from __future__ import annotations

import json
import logging
import re
from contextlib import aclosing
from http import HTTPStatus
from typing import Any

from tornado.iostream import SSLIOStream, StreamClosedError
from tornado.web import stream_request_body

from medimg_kernel import qido
from medimg_kernel.dicom_json import first_value

from medimg_hub.access.datasets import Rights
from medimg_hub.access.models import Right
from medimg_hub.platform_api.base import PlatformHandler
from medimg_hub.platform_api.gateway import relay
from medimg_hub.platform_api.gateway.paths import (BadRequest, DicomPath, NoSuchRoute, Transaction, clean_header,
                                                   clean_query, encode_query, parse_dicomweb_path)
from medimg_hub.platform_api.gateway.stow import MAX_STOW_BYTES, SPOOL_MEMORY_BYTES, StowInstance, scan_instances
from medimg_hub.platform_api.gateway.upstream import UpstreamError

log = logging.getLogger(__name__)

#: Longest StudyInstanceUID list put in a QIDO-RS query (characters) before over-fetching instead.
MAX_UID_LIST_CHARS = 4000
DICOM_JSON = "application/dicom+json"
_STUDY_UID_KEYS = ("StudyInstanceUID", "0020000D")
_PAGING_KEYS = ("limit", "offset")


def upstream_refusal(status: int, resource: str) -> int:
    """The status the caller gets when Orthanc refuses a WADO-RS request (its text is never passed on).

    Orthanc's 400/404/406 stand; it answers 500 for frames, rendered images and bulk data of an
    instance that has none (an SR, a SEG's frames rendered): the caller asked for something that
    does not exist, so 404; any other Orthanc error is the gateway's upstream failing (502).
    """
    if status in (400, 404, 406):
        return status
    if status == 500 and resource in ("frames", "rendered", "bulk"):
        return 404
    return 502


def _with(rights: Rights, right: Right) -> set[str]:
    return {name for name, granted in rights.items() if right.value in granted}


@stream_request_body
class DicomWebHandler(PlatformHandler):
    """Every DICOMweb request below ``{prefix}dicom-web/``."""

    route = "dicom-web"
    spool: Any = None
    #: Set while worker threads read the spool (post()): then post() closes it, never the event loop.
    spool_in_use = False
    close_on_refusal = True

    async def prepare(self) -> None:
        self.action = "dicomweb"
        await super().prepare()  # authentication first: refused callers' bodies are never read
        try:
            self.target: DicomPath = parse_dicomweb_path(self.request.path, f"{self.ctx.prefix}dicom-web/",
                                                         self.request.method or "")
            self.query = clean_query(self.request.query_arguments)
        except BadRequest as exc:
            self.refuse(400, exc.detail)
        except NoSuchRoute:
            self.refuse(404, "not a DICOMweb resource served by the gateway")
        self.action = self.target.transaction.value
        self.route = f"{self.action}:{self.target.level}"
        self.audit_fields.update(study=self.target.study, series=self.target.series, sop=self.target.sop)
        if self.target.transaction is Transaction.STOW:
            import tempfile

            self.request.connection.set_max_body_size(MAX_STOW_BYTES)
            self.spool = tempfile.SpooledTemporaryFile(SPOOL_MEMORY_BYTES)
        self.prepared()

    def data_received(self, chunk: bytes) -> None:
        if self.spool is not None:
            self.spool.write(chunk)
            self.bytes_in += len(chunk)

    def on_connection_close(self) -> None:
        # Closing a file that a worker thread reads would free its descriptor number for the next
        # accepted connection (whose bytes the thread would then read): post() closes it instead.
        if self.spool is not None and not self.spool_in_use:
            self.spool.close()

    async def _rights(self) -> Rights:
        return await self.ctx.run(self.ctx.directory.rights, self.user.groups)

    # --- QIDO-RS ----------------------------------------------------------------------------------

    async def get(self, *_: str) -> None:
        try:
            if self.target.transaction is Transaction.QIDO:
                await self._qido()
            else:
                await self._wado()
        except BadRequest as exc:
            self.refuse(400, exc.detail)
        except UpstreamError as exc:
            self.refuse(502, str(exc))

    async def _qido(self) -> None:
        self._paging({k: v for k, v in self.query if k in _PAGING_KEYS})  # Orthanc answers 500 to limit=-1
        readable = _with(await self._rights(), Right.READ)
        studies = await self.ctx.run(self.ctx.directory.studies_in, readable)
        if self.target.study is not None:
            if self.target.study not in studies:
                self.audit_fields["detail"] = "study not in a readable dataset: empty result"
                return self._answer_qido([])
            self.audit_fields["dataset"] = await self.ctx.run(self.ctx.directory.dataset_of, self.target.study)
            if not qido.approximated(self.query):
                return self._answer_qido(await self._search(self.query, studies))
            offset, limit = self._paging({k: v for k, v in self.query if k in _PAGING_KEYS})
            found = await self._search([(k, v) for k, v in self.query if k not in _PAGING_KEYS], studies)
            return self._answer_qido(found[offset:offset + limit if limit is not None else None])
        asked = [uid for key, value in self.query if key in _STUDY_UID_KEYS for uid in value.split(",")]
        allowed = sorted(studies.intersection(asked) if asked else studies)
        if not allowed:
            return self._answer_qido([])
        query = [(k, v) for k, v in self.query if k not in _STUDY_UID_KEYS]
        uid_list = ",".join(allowed)
        if len(uid_list) <= MAX_UID_LIST_CHARS and not qido.approximated(query):
            return self._answer_qido(await self._search([*query, ("StudyInstanceUID", uid_list)], studies))
        if len(uid_list) <= MAX_UID_LIST_CHARS:
            query.append(("StudyInstanceUID", uid_list))
        paging = {k: v for k, v in query if k in _PAGING_KEYS}
        query = [(k, v) for k, v in query if k not in _PAGING_KEYS]
        found = [i for i in await self._search(query, studies) if first_value(i, "0020000D", None) in allowed]
        offset, limit = self._paging(paging)
        return self._answer_qido(found[offset:offset + limit if limit is not None else None])

    @staticmethod
    def _paging(paging: dict[str, str]) -> tuple[int, int | None]:
        try:
            offset = int(paging.get("offset", "0"))
            limit = int(paging["limit"]) if "limit" in paging else None
        except ValueError as exc:
            raise BadRequest("limit and offset must be integers") from exc
        if offset < 0 or (limit is not None and limit < 0):
            raise BadRequest("limit and offset must not be negative")
        return offset, limit

    async def _search(self, query: list[tuple[str, str]], studies: frozenset[str]) -> list[dict[str, Any]]:
        """Forward a QIDO-RS query; keep only results in ``studies``.

        A filter value with an inner space goes to Orthanc with ``?`` in its place (Orthanc matches
        no value with a space, :mod:`medimg_kernel.qido`); results that carry the attribute are
        then checked against the exact value. The caller pages such answers itself.
        """
        exact = qido.approximated(query)
        try:
            fields = qido.include_fields(exact, ["0020000D"])
        except qido.QueryError as exc:
            raise BadRequest(str(exc)) from exc
        query = [*qido.upstream_pairs(query), *(("includefield", f) for f in fields)]
        answer = await self.ctx.orthanc.get(self.target.path, encode_query(query), {"Accept": DICOM_JSON})
        if answer.status == 204 or not answer.body.strip():
            return []
        if answer.status >= 400:
            self.refuse(400 if answer.status == 400 else 502, f"Orthanc answered {answer.status}")
        try:
            items = json.loads(answer.body)
        except ValueError:
            self.refuse(502, "Orthanc's QIDO-RS answer is not JSON")
        found = [item for item in items if isinstance(item, dict) and first_value(item, "0020000D", None) in studies]
        if not exact:
            return found
        kept = []
        for item in found:
            verdict = qido.item_matches(item, exact)
            if verdict is None:
                verdict = await self._verify_on_instance(item, exact)
            if verdict:
                kept.append(item)
        return kept

    async def _verify_on_instance(self, item: dict[str, Any], exact: dict[str, str]) -> bool:
        """Check ``exact`` on one instance of the result's study (or series): Orthanc returns some
        attributes (InstitutionName) only at the instance level. The values found are added to
        ``item``, so the caller gets the attributes it filtered on."""
        study, series = first_value(item, "0020000D"), first_value(item, "0020000E", None)
        path = f"studies/{study}/series/{series}/instances" if series else f"studies/{study}/instances"
        fields = qido.include_fields(exact)
        query = [*qido.upstream_pairs(list(exact.items())), *(("includefield", f) for f in fields), ("limit", "1")]
        answer = await self.ctx.orthanc.get(path, encode_query(query), {"Accept": DICOM_JSON})
        try:
            instances = json.loads(answer.body) if answer.status == 200 and answer.body.strip() else []
        except ValueError:
            instances = []
        if not instances or qido.item_matches(instances[0], exact) is not True:
            return False
        item.update({tag: instances[0][tag] for tag in fields if tag in instances[0]})
        return True

    def _answer_qido(self, items: list[dict[str, Any]]) -> None:
        self.audit_fields.setdefault("detail", f"{len(items)} results")
        self.set_header("Content-Type", DICOM_JSON)
        self.finish(json.dumps(items))

    # --- WADO-RS ----------------------------------------------------------------------------------

    async def _wado(self) -> None:
        study = self.target.study
        assert study is not None  # noqa: S101 - every WADO-RS path names a study
        dataset = await self.ctx.run(self.ctx.directory.dataset_of, study)
        if dataset is None or Right.READ.value not in (await self._rights()).get(dataset, ()):
            self.refuse(403, "study not in a dataset the caller may read")
        self.audit_fields["dataset"] = dataset
        accept = clean_header(self.request.headers.get("Accept"), "*/*")
        if self.target.resource == "metadata":
            await self._wado_metadata()
            return
        if (relay.AVAILABLE and self.ctx.orthanc.can_relay
                and not isinstance(self.request.connection.stream, SSLIOStream)):  # type: ignore[attr-defined]
            await self._wado_relay(accept)
            return
        status, headers, chunks = await self.ctx.orthanc.open_stream(self.target.path, encode_query(self.query),
                                                                     {"Accept": accept})
        if status >= 400:
            async for _ in chunks:  # drain and close; Orthanc's error text is not passed on
                pass
            self.refuse(upstream_refusal(status, self.target.resource), f"Orthanc answered {status}")
        self.set_status(status)
        for name, value in headers.items():
            self.set_header(name, value)
        try:
            async with aclosing(chunks):  # the Orthanc connection is released even if the caller leaves
                async for chunk in chunks:
                    self.write(chunk)
                    self.bytes_out += len(chunk)
                    await self.flush()  # back-pressure: read on from Orthanc only as fast as the caller reads
        except StreamClosedError:
            self.audit_fields["detail"] = "caller closed the connection"

    def public_root(self) -> str:
        """The gateway's DICOMweb root as the caller reached it (what Orthanc's own URLs become)."""
        return f"{self.request.protocol}://{self.request.host}{self.ctx.prefix}dicom-web"

    async def _wado_metadata(self) -> None:
        """WADO-RS metadata (JSON), with Orthanc's BulkDataURIs pointing at the gateway instead.

        Orthanc writes its own address into each BulkDataURI (pixel data and other large values):
        unusable by the caller, and the PACS's internal address leaked. The answer is small, so it
        is read whole and every Orthanc URL is replaced by the gateway's, where the same
        ``.../bulk/...`` resource is served under the same grant.
        """
        answer = await self.ctx.orthanc.get(self.target.path, encode_query(self.query), {"Accept": DICOM_JSON})
        if answer.status >= 400:
            self.refuse(upstream_refusal(answer.status, self.target.resource), f"Orthanc answered {answer.status}")
        body = answer.body.replace(self.ctx.orthanc.dicomweb_url.encode(), self.public_root().encode())
        self.bytes_out = len(body)
        self.set_header("Content-Type", DICOM_JSON)
        self.finish(body)

    async def _wado_relay(self, accept: str) -> None:
        """Pass Orthanc's response body to the caller with ``splice`` (:mod:`.relay`), then close.

        The relay thread gets a descriptor of the caller's connection that only it holds, and
        tornado's own is closed before the relay starts: when the caller hangs up, no descriptor
        number the relay writes to can be handed to another connection (:mod:`.relay`).
        """
        try:
            answer = await self.ctx.orthanc.open_relay(self.target.path, encode_query(self.query), {"Accept": accept})
        except UpstreamError as exc:
            self.refuse(502, str(exc))
        if answer.status >= 400:
            answer.close()  # Orthanc's error text is not passed on
            self.refuse(upstream_refusal(answer.status, self.target.resource), f"Orthanc answered {answer.status}")
        framing = [(name, answer.headers[name.lower()]) for name in ("Content-Type", "Content-Length", "Transfer-Encoding")
                   if name.lower() in answer.headers]
        lines = [f"HTTP/1.1 {answer.status} {HTTPStatus(answer.status).phrase}", *(f"{k}: {v}" for k, v in framing),
                 f"X-Request-Id: {self.request_id}", "Cache-Control: no-store", "Connection: close"]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.set_status(answer.status)
        stream = self.detach()  # the connection is ours now; tornado will not finish this request
        self._finished = True
        try:
            caller = relay.adopt(stream.socket)
        except OSError as exc:
            answer.close()
            self.audit_fields["detail"] = f"relay not started: {type(exc).__name__}"
            self.set_status(502)
            return self.on_finish()
        finally:
            stream.close()  # tornado's descriptor: from here on only the relay holds the connection
        result = relay.RelayResult(0, "caller")  # if this coroutine is cancelled, the relay still ends on its own
        try:
            result = await self.ctx.run(relay.relay, answer.sock, caller, head + answer.body_start)
        finally:
            self.bytes_out = max(0, result.sent - len(head))
            if result.failed == "caller":
                self.audit_fields["detail"] = f"caller closed the connection after {self.bytes_out} body bytes"
            elif result.failed == "orthanc":
                self.audit_fields["detail"] = f"Orthanc stopped sending after {self.bytes_out} body bytes"
            self.on_finish()  # audit and metrics, as finish() would

    # --- STOW-RS ----------------------------------------------------------------------------------

    async def post(self, *_: str) -> None:
        self.spool_in_use = True
        try:
            await self._stow()
        except BadRequest as exc:
            self.refuse(400, exc.detail)
        except UpstreamError as exc:
            self.refuse(502, str(exc))
        finally:
            self.spool.close()

    async def _stow(self) -> None:
        content_type = clean_header(self.request.headers.get("Content-Type"), "")
        instances = await self.ctx.run(scan_instances, self.spool, content_type)
        by_study: dict[str, list[StowInstance]] = {}
        for item in instances:
            if self.target.study is not None and item.study_instance_uid != self.target.study:
                raise BadRequest("an instance's StudyInstanceUID differs from the study in the path")
            by_study.setdefault(item.study_instance_uid, []).append(item)
        self.audit_fields["study"] = next(iter(by_study)) if len(by_study) == 1 else None
        rights = await self._rights()
        writable, finalisable = _with(rights, Right.WRITE), _with(rights, Right.FINALISE)
        wanted = self.get_query_argument("dataset", None)
        datasets = set()
        for study, items in by_study.items():
            # finalisers store review results (SEG, SR) into studies that already are in their dataset
            results_only = all(i.review_result for i in items)
            datasets.add(await self._writable_dataset(study, items[0].institution, wanted, writable,
                                                      finalisable if results_only else set()))
        self.audit_fields["dataset"] = ",".join(sorted(datasets))
        self.audit_fields["detail"] = f"{len(instances)} instances in {len(by_study)} studies"
        answer = await self.ctx.orthanc.post(self.target.path, self.spool, {
            "Content-Type": content_type, "Accept": DICOM_JSON})
        self.set_status(answer.status if answer.status < 400 else (409 if answer.status == 409 else 502))
        self.set_header("Content-Type", DICOM_JSON)
        # RetrieveURLs point at Orthanc: give the caller the gateway's address instead
        self.finish(answer.body.replace(self.ctx.orthanc.dicomweb_url.encode(), self.public_root().encode()))

    async def _writable_dataset(self, study: str, institution: str | None, wanted: str | None,
                                writable: set[str], existing_only: frozenset[str] | set[str] = frozenset()) -> str:
        """The dataset ``study`` is (or will be) in, if the caller may write it; else refuse (403).

        ``existing_only`` are more datasets the caller may write into, but only studies already in them.
        """
        directory = self.ctx.directory
        current = await self.ctx.run(directory.dataset_of, study)
        if current is None:
            target = wanted or (await self.ctx.run(directory.dataset_for_institution, institution)
                                if institution else None)
            if target is None or target not in writable:
                self.refuse(403, "new study: no dataset the caller may write")
            existing = await self.ctx.orthanc.get("studies", encode_query([("StudyInstanceUID", study), ("limit", "1")]),
                                                  {"Accept": DICOM_JSON})
            if existing.status == 200 and existing.body.strip() not in (b"", b"[]"):
                self.refuse(403, "study exists in the PACS outside every dataset")
            current = await self.ctx.run(directory.assign, study, target)
        if current is None or current not in (writable | existing_only) or (wanted is not None and wanted != current):
            self.refuse(403, "study not in a dataset the caller may write")
        return current


#: Routes of this module (``{prefix}`` is filled in by :func:`medimg_hub.platform_api.app.make_app`).
ROUTE_PATTERN = re.escape("dicom-web/") + r"(.*)"
default_handlers = [(ROUTE_PATTERN, DicomWebHandler)]
