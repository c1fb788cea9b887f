"""Audit cannot be fooled by editing derived data: it checks the files against the verified
chain itself; projections are caches, and a cache that disagrees with the chain, or has seen
events the chain no longer has, is a finding."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from PIL import Image

from tests.support.cli import Sandbox


def _generate(box: Sandbox, prompt: str) -> Path:
    result = box.run("generate", prompt)
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip())


def _sql(box: Sandbox, *statements: str) -> None:
    conn = sqlite3.connect(box.root / "ledger.db")
    try:
        for s in statements:
            conn.execute(s)
        conn.commit()
    finally:
        conn.close()


def _audit(box: Sandbox) -> dict:  # type: ignore[type-arg]
    result = box.run("audit", "--json")
    assert "Traceback" not in result.stderr, result.stderr
    report = json.loads(result.stdout)
    assert result.returncode == (0 if report["ok"] else 4)
    return report


def test_replacing_an_image_and_its_sha256_in_the_projection_is_found(sandbox: Sandbox) -> None:
    image = _generate(sandbox, "a cat")
    assert _audit(sandbox)["ok"]
    Image.new("RGB", (64, 64), (0, 0, 255)).save(image, "PNG")
    import hashlib

    forged = hashlib.sha256(image.read_bytes()).hexdigest()
    _sql(sandbox, f"UPDATE imagen_jobs_v5 SET sha256 = '{forged}'")
    report = _audit(sandbox)
    kinds = {p["kind"] for p in report["problems"]}
    assert "image_modified" in kinds  # from the chain's sha256, not the table's
    assert "projection" in kinds
    [proj] = [p for p in report["problems"] if p["kind"] == "projection"]
    assert proj["columns"] == ["sha256"]


def test_deleted_projection_rows_are_a_finding_and_their_images_still_checked(
    sandbox: Sandbox,
) -> None:
    first = _generate(sandbox, "one")
    _generate(sandbox, "two")
    first.unlink()
    _sql(sandbox, "DELETE FROM imagen_jobs_v5")
    report = _audit(sandbox)
    kinds = [p["kind"] for p in report["problems"]]
    # (rows after the projection's checkpoint are folded back by the catch-up; the rest are gone)
    assert any("missing from the jobs projection" in p["message"] for p in report["problems"])
    assert "image_missing" in kinds and report["images_checked"] == 2


def test_a_sidecar_that_is_not_the_chains_is_a_finding(sandbox: Sandbox) -> None:
    image = _generate(sandbox, "a cat")
    side = Path(f"{image}.json")
    data = json.loads(side.read_text())
    data["image"]["sha256"] = "0" * 64
    side.write_text(json.dumps(data))
    assert [p["kind"] for p in _audit(sandbox)["problems"]] == ["sidecar"]
    assert sandbox.run("rebuild").returncode == 4  # it differed, and was rewritten
    assert _audit(sandbox)["ok"]
    assert sandbox.run("rebuild").returncode == 0


def _drop_tail(box: Sandbox, count: int) -> int:
    conn = sqlite3.connect(box.root / "ledger.db")
    [(head,)] = conn.execute("SELECT max(position) FROM events").fetchall()
    conn.close()
    _sql(
        box,
        "DROP TRIGGER events_no_delete",
        f"DELETE FROM events WHERE position > {head - count}",
    )
    return head - count


def test_deleting_the_last_events_shows_in_checkpoints_and_the_head_file(
    sandbox: Sandbox,
) -> None:
    for n in range(5):
        _generate(sandbox, f"cat {n}")
    assert _audit(sandbox)["ok"]
    assert (sandbox.root / "ledger.db.head").exists()
    kept = _drop_tail(sandbox, 30)
    report = _audit(sandbox)
    assert report["events_verified"] == kept  # what is left is a valid chain
    kinds = {p["kind"] for p in report["problems"]}
    assert {"checkpoint_past_head", "head_file"} <= kinds, report["problems"]


def test_the_head_file_keeps_the_evidence_when_new_events_follow_a_truncation(
    sandbox: Sandbox,
) -> None:
    for n in range(3):
        _generate(sandbox, f"cat {n}")
    _drop_tail(sandbox, 10)
    _sql(sandbox, "DELETE FROM projection_checkpoints")  # the projections hide it too
    _sql(sandbox, "DELETE FROM imagen_jobs_v5")
    for n in range(3):
        _generate(sandbox, f"dog {n}")  # the chain grows past where it was
    report = _audit(sandbox)
    assert any(
        p["kind"] == "head_file" and "rewritten" in p["message"] for p in report["problems"]
    ), report["problems"]


def test_edited_or_deleted_usage_rows_are_a_finding(sandbox: Sandbox) -> None:
    # The usage table is the outbox of what was spent: a cache like the jobs table.
    _generate(sandbox, "usage row one")
    _generate(sandbox, "usage row two")
    assert _audit(sandbox)["ok"]
    _sql(sandbox, "UPDATE imagen_usage_v3 SET cost_micros = 0, caller = 'someone-else'")
    report = _audit(sandbox)
    edited = [p for p in report["problems"] if p.get("projection") == "usage"]
    assert len(edited) == 2 and all(set(p["columns"]) >= {"caller"} for p in edited)
    assert sandbox.run("rebuild").returncode == 4
    assert _audit(sandbox)["ok"]
    _sql(sandbox, "DELETE FROM imagen_usage_v3 WHERE seq = (SELECT min(seq) FROM imagen_usage_v3)")
    report = _audit(sandbox)
    assert any("missing from the usage table" in p["message"] for p in report["problems"])


def _drop_last_job(box: Sandbox) -> str:
    """Delete the last job's events (triggers dropped): the tail a careless attacker removes.
    Its image and sidecar stay on disk."""
    last = [e for e in box.events() if e.type == "JobRequested"][-1]
    _sql(
        box,
        "DROP TRIGGER events_no_delete",
        f"DELETE FROM events WHERE position >= {last.position}",
    )
    return last.stream_id


@pytest.mark.parametrize("how", ["deleted", "blanked"])
def test_a_tail_removed_with_its_head_file_is_found_and_rebuild_does_not_hide_it(
    sandbox: Sandbox, how: str
) -> None:
    for n in range(3):
        _generate(sandbox, f"cat {n}")
    assert _audit(sandbox)["ok"]
    gone = _drop_last_job(sandbox)
    head_file = sandbox.root / "ledger.db.head"
    if how == "deleted":
        head_file.unlink()
    else:
        head_file.write_bytes(b"")
    assert sandbox.run("rebuild").returncode in (0, 4)  # the projections forget the job
    report = _audit(sandbox)
    kinds = {p["kind"] for p in report["problems"]}
    assert {"head_file", "unknown_job_files"} <= kinds, report["problems"]
    [files] = [p for p in report["problems"] if p["kind"] == "unknown_job_files"]
    assert files["job_id"] == gone and "does not have" in files["message"]
    [head] = [p for p in report["problems"] if p["kind"] == "head_file"]
    assert f"is {'missing' if how == 'deleted' else 'blank'}" in head["message"]
    # Carrying on does not write a new head file over the evidence, nor does another rebuild.
    _generate(sandbox, "dog")
    sandbox.run("rebuild")
    again = _audit(sandbox)
    assert "head_file" in {p["kind"] for p in again["problems"]}, again["problems"]


def test_files_of_a_job_the_ledger_does_not_have_are_a_finding(sandbox: Sandbox) -> None:
    """Even on a ledger from before head files were recorded: an imagen sidecar (and its
    image) in the output folder naming a job the chain lacks."""
    image = _generate(sandbox, "a cat")
    side = Path(f"{image}.json")
    copy = image.with_name("copy.png")
    copy.write_bytes(image.read_bytes())
    data = json.loads(side.read_text())
    data["job_id"], data["image"]["path"] = "0" * 26, str(copy)
    Path(f"{copy}.json").write_text(json.dumps(data))
    Path(image.parent / "notes.json").write_text('{"job_id": "x"}')  # not a sidecar: ignored
    report = _audit(sandbox)
    [found] = report["problems"]
    assert (found["kind"], found["job_id"]) == ("unknown_job_files", "0" * 26)
    assert str(copy) in found["message"]


def _sidecar(image: Path, job_id: str) -> None:
    """An imagen sidecar beside `image` naming `job_id`."""
    Path(f"{image}.json").write_text(json.dumps({"job_id": job_id, "image": {"path": str(image)}}))


def test_the_search_for_unknown_jobs_files_reads_only_sidecars_the_scan_did_not_match(
    sandbox: Sandbox,
) -> None:
    """The scan keeps (in constant memory) the sidecars it found naming their own job; the
    search for files of jobs the chain lacks reads the rest, not those again."""
    from imagen.app import audit
    from ledger import open_store

    image, other = _generate(sandbox, "a cat"), _generate(sandbox, "a dog")
    _sidecar(other, "1" * 26)  # no longer names its job: a finding, and read again
    stray = image.with_name("stray.png")
    stray.write_bytes(b"png")
    _sidecar(stray, "0" * 26)
    store = open_store(f"sqlite:///{sandbox.root / 'ledger.db'}", create=False)
    try:
        scanned = audit.scan(store, store.head())
        only = audit.KeySet()
        only.flip(f"{image}.json")
        assert scanned.sidecars is not None and not only.differing(scanned.sidecars)

        def unknown(known: audit.KeySet | None) -> list[str]:
            found = audit.check_unknown_files(
                store, store.head().position, scanned.folders, [], known
            )
            return sorted(p["job_id"] for p in found)

        assert unknown(scanned.sidecars) == unknown(None) == ["0" * 26, "1" * 26]
        # What the set holds is not read again: one that (falsely) holds the stray sidecar
        # hides it, which without the set would be read.
        forged = audit.KeySet()
        forged.add(scanned.sidecars)
        forged.flip(f"{stray}.json")
        assert unknown(forged) == ["1" * 26]
    finally:
        store.close()


def test_a_new_ledger_records_its_head_file_and_no_crash_leaves_it_without_one(
    tmp_path: Path,
) -> None:
    from ledger import NewEvent, open_store
    from ledger.chain import Head, HeadFile
    from ledger.events import GENESIS_HASH

    path = tmp_path / "ledger.db"
    store = open_store(f"sqlite:///{path}", identity=True)
    head_file = HeadFile(Path(f"{path}.head"))
    try:
        with store.transaction() as conn:
            store.append("job-1", [NewEvent("Noted", {"n": 1})], 0, conn=conn)
            # Before the first commit: a head file at position 0 (it can only lag the chain).
            assert head_file.read() == Head(0, GENESIS_HASH)
        first = next(iter(store.read_all(0)))
        assert first.type == "LedgerCreated" and first.data["head_file"] is True
        assert head_file.read() == store.head()
        # A kill between the commit and the head file's write leaves position 0: the next
        # commit writes the head as usual, and audit has nothing to say.
        head_file.write(Head(0, GENESIS_HASH))
        assert store.head_file_problems(store.head()) == []
        store.append("job-1", [NewEvent("Noted", {"n": 2})], 1)
        assert head_file.read() == store.head()
        # Gone: a finding, and the next commit does not make a new one over the evidence.
        head_file.path.unlink()
        [problem] = store.head_file_problems(store.head())
        assert "is missing" in str(problem["message"])
        store.append("job-1", [NewEvent("Noted", {"n": 3})], 2)
        assert not head_file.path.exists()
        assert store.head_file_problems(store.head()) != []
    finally:
        store.close()


def test_an_incremental_audit_trusts_only_a_checkpoint_the_chain_still_holds(
    sandbox: Sandbox,
) -> None:
    """--since / --from-position start from the checkpoint a full audit recorded: only what
    was appended since is read, yet the head file is still checked, and a checkpoint whose
    hash the chain no longer holds is refused."""
    from ledger.chain import Head, HeadFile

    _generate(sandbox, "one")
    full = _audit(sandbox)  # records its checkpoint beside the ledger
    assert full["ok"]
    _generate(sandbox, "two")
    since = sandbox.run("audit", "--json", "--since", "2099-01-01")
    report = json.loads(since.stdout)
    assert report["ok"] and report["images_checked"] == 1, since.stderr
    assert report["events_verified"] == report["head"]["position"] - full["head"]["position"]
    before = sandbox.run("audit", "--since", "2001-01-01")  # no audit had run by then
    assert before.returncode == 2 and "no audit recorded a verified checkpoint" in before.stderr

    head = report["head"]
    HeadFile(sandbox.root / "ledger.db.head").write(Head(head["position"] + 5, head["hash"]))
    tampered = json.loads(sandbox.run("audit", "--json", "--from-position", "last").stdout)
    assert "head_file" in {p["kind"] for p in tampered["problems"]}, tampered

    marks = sandbox.root / "ledger.db.audit"
    recorded = json.loads(marks.read_text())
    for c in recorded["verified"]:
        c["hash"] = "f" * 64  # not what the chain holds there
    marks.write_text(json.dumps(recorded))
    refused = sandbox.run("audit", "--json", "--from-position", "last")
    assert refused.returncode == 4
    assert "checkpoint" in {p["kind"] for p in json.loads(refused.stdout)["problems"]}


def test_an_incremental_audit_knows_the_versions_streams_other_than_jobs_had(
    sandbox: Sandbox,
) -> None:
    """A budget set after the checkpoint is its stream's next version, not a jump: the
    incremental audit takes the version the stream had at the checkpoint from the ledger."""
    assert sandbox.run("budget", "set", "alice", "5", "--per", "day").returncode == 0
    assert _audit(sandbox)["ok"]
    assert sandbox.run("budget", "set", "bob", "3", "--per", "day").returncode == 0
    _generate(sandbox, "one")
    report = json.loads(sandbox.run("audit", "--json", "--from-position", "last").stdout)
    assert report["ok"] and report["images_checked"] == 1, report["problems"]


def test_an_image_replaced_by_a_fifo_or_a_directory_is_missing_and_never_hangs(
    sandbox: Sandbox,
) -> None:
    """Audit opens each image and sidecar without blocking: a FIFO in an image's place (which
    would block a plain open for as long as nobody writes) is reported like a directory
    there, missing; one in a sidecar's place, a sidecar that differs."""
    import os

    fifo, folder, side, loop = (
        _generate(sandbox, p) for p in ("a cat", "a dog", "a fox", "an owl")
    )
    fifo.unlink()
    os.mkfifo(fifo)
    folder.unlink()
    folder.mkdir()
    loop.unlink()
    loop.symlink_to(loop.name)  # a link to itself: opening it fails (ELOOP), never raises here
    sidecar = Path(f"{side}.json")
    sidecar.unlink()
    os.mkfifo(sidecar)
    report = _audit(sandbox)
    missing = {p["path"]: p["message"] for p in report["problems"] if p["kind"] == "image_missing"}
    assert missing.keys() == {str(fifo), str(folder), str(loop)}
    assert "unreadable" in missing[str(loop)] and "unreadable" in missing[str(fifo)]
    [differs] = [p for p in report["problems"] if p["kind"] == "sidecar"]
    assert differs["path"] == str(sidecar) and "differs" in differs["message"]


def test_the_digest_of_a_regular_file_is_sha256_of_its_bytes_at_any_size(tmp_path: Path) -> None:
    import hashlib

    from imagen.app import audit

    for size in (0, 1, 4096, audit._WHOLE - 1, audit._WHOLE, audit._WHOLE + 7):
        path = tmp_path / f"f{size}"
        data = (b"imagen" * (size // 6 + 1))[:size]
        path.write_bytes(data)
        assert audit.file_sha256(str(path)) == hashlib.sha256(data).hexdigest(), size
    assert audit.file_sha256(str(tmp_path / "none")) is None
    assert audit.file_sha256(str(tmp_path / "f0" / "below")) is None
    assert audit.file_sha256(str(tmp_path)) is None
    (tmp_path / "loop").symlink_to("loop")
    assert audit.file_sha256(str(tmp_path / "loop")) is None  # ELOOP
    assert audit.file_sha256(str(tmp_path / ("n" * 5000))) is None  # ENAMETOOLONG
    assert audit.file_sha256(f"{tmp_path}/a\x00b") is None  # a NUL: no path at all


def test_an_audit_checkpoint_is_recorded_whatever_sits_at_a_temporary_name(tmp_path: Path) -> None:
    """The checkpoint is written through a temporary file of its own: a FIFO (which would
    block a plain open for writing) or a directory at `<checkpoint>.tmp`, say another
    audit's, neither hangs nor loses the record."""
    import os

    from imagen.app import audit
    from ledger.chain import Head

    path = tmp_path / "ledger.db.audit"
    os.mkfifo(tmp_path / "ledger.db.audit.tmp")
    audit.record_checkpoint(path, Head(7, "a" * 64), "2026-12-06T12:00:00.000000Z")
    (tmp_path / "ledger.db.audit.tmp").unlink()
    (tmp_path / "ledger.db.audit.tmp").mkdir()
    audit.record_checkpoint(path, Head(9, "b" * 64), "2026-12-06T12:01:00.000000Z")
    assert [c["position"] for c in audit.read_checkpoints(path)] == [7, 9]
    assert audit.choose_checkpoint(path, "last") == Head(9, "b" * 64)
