"""Where what-if studies live: in memory while the service runs (bounded), and in the
history database when one is configured, so they survive restarts and can be listed
from any replica."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict

import psycopg
from google.protobuf import json_format

from twin.whatif.v1 import whatif_pb2

log = logging.getLogger(__name__)

STATE_NAMES = {
    whatif_pb2.STUDY_STATE_RUNNING: "running",
    whatif_pb2.STUDY_STATE_DONE: "done",
    whatif_pb2.STUDY_STATE_FAILED: "failed",
}
_UPSERT = """
INSERT INTO studies (study_id, site_id, name, state, created_at, variants, wall_s, study, result)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb)
ON CONFLICT (study_id) DO UPDATE SET state = EXCLUDED.state, wall_s = EXCLUDED.wall_s,
    study = EXCLUDED.study, result = EXCLUDED.result
"""


def summary_of(study: whatif_pb2.Study, variants: int) -> whatif_pb2.StudySummary:
    return whatif_pb2.StudySummary(
        study_id=study.study_id,
        name=study.name,
        site_id=study.site_id,
        state=study.state,
        variants=variants,
        created_at=study.created_at,
        wall_s=study.wall_s,
    )


class StudyStore:
    """Studies by id; ``keep`` most recent in memory, all of them in the database."""

    def __init__(self, database_url: str | None = None, keep: int = 256) -> None:
        self.database_url = database_url
        self.keep = keep
        self._studies: OrderedDict[str, tuple[whatif_pb2.Study, int]] = OrderedDict()

    async def put(self, study: whatif_pb2.Study, variants: int) -> None:
        self._studies[study.study_id] = (study, variants)
        self._studies.move_to_end(study.study_id)
        while len(self._studies) > self.keep:
            self._studies.popitem(last=False)
        if self.database_url:
            try:
                await asyncio.to_thread(self._save, study, variants)
            except psycopg.Error as exc:  # the study still answers from memory
                log.warning("study %s not stored in history: %s", study.study_id, exc)

    def _connect(self) -> psycopg.Connection:
        assert self.database_url
        return psycopg.connect(
            self.database_url, autocommit=True, prepare_threshold=None, connect_timeout=5
        )

    def _save(self, study: whatif_pb2.Study, variants: int) -> None:
        with self._connect() as conn:
            conn.execute(
                _UPSERT,
                (
                    study.study_id,
                    study.site_id,
                    study.name,
                    STATE_NAMES.get(study.state, "running"),
                    study.created_at.ToDatetime().isoformat() + "+00:00",
                    variants,
                    study.wall_s,
                    study.SerializeToString(),
                    json_format.MessageToJson(study, indent=None),
                ),
            )

    async def get(self, study_id: str) -> whatif_pb2.Study | None:
        if study_id in self._studies:
            return self._studies[study_id][0]
        if not self.database_url:
            return None
        return await asyncio.to_thread(self._load, study_id)

    def _load(self, study_id: str) -> whatif_pb2.Study | None:
        with self._connect() as conn:
            row = conn.execute(
                "SELECT study FROM studies WHERE study_id = %s", (study_id,)
            ).fetchone()
        return whatif_pb2.Study.FromString(bytes(row[0])) if row else None

    async def list(self, limit: int) -> list[whatif_pb2.StudySummary]:
        found = {sid: summary_of(s, n) for sid, (s, n) in self._studies.items()}
        if self.database_url:
            try:
                for summary in await asyncio.to_thread(self._list, limit):
                    found.setdefault(summary.study_id, summary)
            except psycopg.Error as exc:
                log.warning("studies in history not listed: %s", exc)
        ordered = sorted(found.values(), key=lambda s: s.created_at.ToNanoseconds(), reverse=True)
        return ordered[:limit]

    def _list(self, limit: int) -> list[whatif_pb2.StudySummary]:
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT study, variants FROM studies ORDER BY created_at DESC LIMIT %s", (limit,)
            ).fetchall()
        return [summary_of(whatif_pb2.Study.FromString(bytes(s)), n) for s, n in rows]
