"""A staged completion follows the transaction that claimed its session (plumbing of sessions).

On a staging store, :func:`storeroom.uploads.complete` claims the session row, then copies the
verified upload from its staging path to its final path, all before the caller commits. The
two objects then follow that transaction, through SQLAlchemy events:

``rollback`` / ``rollback_savepoint`` of the claim's connection
    The claim is undone (``rollback()``; ``close()`` or a ``with`` block left without
    committing; a failed flush; the rollback of a SAVEPOINT opened before the claim; the
    rollback of an outer transaction the session joined): the final copy is deleted. These
    connection events run *before* the database rolls back, so while the transaction still
    holds the session row's lock: another completion of the same session, waiting for that
    lock to claim the row, has not copied to the final path yet, and this delete cannot
    remove its copy. The staging upload stays, so a retried completion verifies it again.
``commit`` of the connection, then the session's ``after_commit``
    The claim is durable: the staging upload is deleted by the job queue
    (:mod:`storeroom.jobs`), outside ``commit()`` (in ``after_commit`` itself when the
    completion was given a registry of its own, which the job could not look it up in).
the session's ``after_transaction_end``
    A COMMIT that failed in the database (a deferred constraint, a serialization failure)
    rolled the claim back without a rollback event: the final copy is deleted then, after
    the lock was released (a completion racing in that moment is the one case not covered).
    So did a connection that lost its transaction without a rollback (invalidated). A
    session that joined an outer transaction still open leaves the decision to that
    transaction's events; an outer COMMIT keeps the final copy and leaves the staging upload
    to :func:`~storeroom.uploads.remove_expired`.

A transaction that ends with no event at all (the process dies, a session is
garbage-collected with its transaction open) leaves the final copy of a session that is
still pending: ``storeroom gc`` counts the final path of a pending session as
referenced, a retried completion overwrites it, and
:func:`~storeroom.uploads.remove_expired` deletes it once the session expired.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, SessionTransaction
from sqlalchemy.util.concurrency import await_only, in_greenlet

from storeroom.backends.base import StorageBackend

__all__ = ["StagedCompletion", "watch"]

logger = logging.getLogger("storeroom.uploads")

_WATCHED = "storeroom.uploads.staged_completions"
"""``session.info`` key: the staged completions of the session's current transaction."""
_COMMITTING = "storeroom.uploads.committing"
"""``session.info`` key present while ``Session.commit()`` runs."""

State = Literal["claimed", "committing", "done"]


@dataclass(eq=False, slots=True)
class StagedCompletion:
    """One completion's final copy, waiting for the outcome of the claim's transaction."""

    backend: StorageBackend
    staging: str
    final: str
    session: weakref.ref[Session]
    connection: weakref.ref[Connection]
    savepoints: frozenset[str]
    """The SAVEPOINTs open at the claim: rolling back any of them undoes it."""
    queued: bool
    """Whether the job queue can delete the staging upload (its backend is registered in
    :data:`storeroom.storages`, where the job looks it up)."""
    state: State = "claimed"

    def undo(self, why: str) -> None:
        """The claim did not commit: delete the final copy (once)."""
        if self.state == "done":
            return
        self.state = "done"
        _delete(self.backend, self.final, f"the final copy of an upload whose completion {why}")

    def committed(self) -> None:
        """The claim committed: the staging upload is nobody's now (deleted once)."""
        if self.state == "done":
            return
        self.state = "done"
        if not self.queued:
            _delete(self.backend, self.staging, "a completed upload's staging copy")
            return
        from storeroom.jobs import get_queue
        from storeroom.orm.lifecycle import DELETE_JOB

        try:
            get_queue().enqueue(
                DELETE_JOB,
                {
                    "objects": [[self.backend.key, self.staging]],
                    "reason": "the staging copy of a completed upload",
                },
            )
        except Exception as error:
            logger.warning(
                "could not schedule the deletion of %s:%s, the staging copy of a completed "
                "upload: %s; remove_expired (storeroom gc) deletes it once its session expired",
                self.backend.key,
                self.staging,
                error,
            )

    def forget(self) -> None:
        """Stop following the transaction (the flow dealt with the final copy itself)."""
        self.state = "done"


def watch(
    session: Session,
    connection: Connection,
    backend: StorageBackend,
    staging: str,
    final: str,
    *,
    queued: bool,
) -> StagedCompletion:
    """Follow the claim just made through ``connection`` in ``session`` (before the copy).

    ``session`` and ``connection`` are the sync objects (an ``AsyncSession``'s
    ``sync_session`` and its connection's ``sync_connection``).
    """
    _install()
    completion = StagedCompletion(
        backend,
        staging,
        final,
        weakref.ref(session),
        weakref.ref(connection),
        _open_savepoints(connection),
        queued,
    )
    watched = _by_connection.get(connection)
    if watched is None:
        watched = _by_connection[connection] = []
        event.listen(connection, "rollback", _rolled_back)
        event.listen(connection, "rollback_savepoint", _rolled_back_to)
        event.listen(connection, "commit", _committing)
    watched.append(completion)
    session.info.setdefault(_WATCHED, []).append(completion)
    return completion


def _open_savepoints(connection: Connection) -> frozenset[str]:
    # SQLAlchemy keeps a connection's open SAVEPOINTs as a chain, innermost first, with no
    # public accessor for the outer ones.
    names = set()
    nested = getattr(connection, "_nested_transaction", None)
    while nested is not None:
        name = getattr(nested, "_savepoint", None)
        if isinstance(name, str):
            names.add(name)
        nested = getattr(nested, "_previous_nested", None)
    return frozenset(names)


# -- connection events: they run before the database acts --------------------------------------

_by_connection: weakref.WeakKeyDictionary[Connection, list[StagedCompletion]] = (
    weakref.WeakKeyDictionary()
)


def _take(
    connection: Connection, which: Callable[[StagedCompletion], bool]
) -> list[StagedCompletion]:
    watched = _by_connection.get(connection)
    if not watched:
        return []
    taken = [c for c in watched if which(c)]
    watched[:] = [c for c in watched if not which(c) and c.state != "done"]
    return [c for c in taken if c.state != "done"]


def _rolled_back(connection: Connection) -> None:
    for completion in _take(connection, lambda c: True):
        completion.undo("was rolled back")


def _rolled_back_to(connection: Connection, name: str, _context: object) -> None:
    for completion in _take(connection, lambda c: name in c.savepoints):
        completion.undo("was rolled back to a savepoint")


def _committing(connection: Connection) -> None:
    for completion in _take(connection, lambda c: True):
        session = completion.session()
        if session is not None and _COMMITTING in session.info:
            completion.state = "committing"  # the session's after_commit confirms it
        else:
            # An outer transaction the session joined, committed by its owner: the final
            # copy is the row's; the staging upload is left to remove_expired.
            completion.forget()


# -- session events: after the database acted ---------------------------------------------------


def _before_commit(session: Session) -> None:
    if session.info.get(_WATCHED):
        session.info[_COMMITTING] = True


def _after_commit(session: Session) -> None:
    session.info.pop(_COMMITTING, None)
    watched = session.info.get(_WATCHED)
    if not watched:
        return
    for completion in list(watched):
        connection = completion.connection()
        if completion.state == "committing" and (
            connection is None or not connection.in_transaction()
        ):
            watched.remove(completion)
            completion.committed()


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is not None:
        return  # a SAVEPOINT (its connection events decide) or a flush's subtransaction
    session.info.pop(_COMMITTING, None)
    watched = session.info.pop(_WATCHED, None)
    for completion in watched or ():
        connection = completion.connection()
        if completion.state == "committing":
            completion.undo("failed to commit")
        elif completion.state == "claimed" and (
            connection is None or not connection.in_transaction()
        ):
            completion.undo("ended without a rollback")
        # else: joined to an outer transaction still open, whose end decides


_installed = False


def _install() -> None:
    global _installed
    if _installed:
        return
    event.listen(Session, "before_commit", _before_commit)
    event.listen(Session, "after_commit", _after_commit)
    event.listen(Session, "after_transaction_end", _after_transaction_end)
    _installed = True


# -- deleting from inside an event ---------------------------------------------------------------

_background: set[asyncio.Future[None]] = set()


async def _shielded(operation: Awaitable[None]) -> None:
    # A cancellation of the caller must not stop the delete halfway.
    task = asyncio.ensure_future(operation)
    _background.add(task)
    task.add_done_callback(_background.discard)
    await asyncio.shield(task)


def _delete(backend: StorageBackend, path: str, what: str) -> None:
    """Delete ``path`` (an AsyncSession's events run in its greenlet: the async form, awaited)."""
    try:
        if in_greenlet():
            await_only(_shielded(backend.delete_async(path)))
        else:
            backend.delete(path)
    except Exception as error:
        logger.warning(
            "could not delete %s:%s, %s: %s; remove_expired (storeroom gc) deletes it once "
            "its session expired",
            backend.key,
            path,
            what,
            error,
        )
